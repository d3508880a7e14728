"""Real Unix users for the tests: rxjobs run as two unprivileged users, a group, and root.

Every other test runs as root, so the code that handles other users' files,
unreadable directories and refused permissions never runs.  This module makes
the users for real (``groupadd``/``useradd``), gives them an interpreter they
can run, and runs code as each of them in a subprocess (``setpriv``, with the
user's groups and a clean environment), as an attacker and a victim would.

Interface (through the ``unix_users`` fixture of ``tests/conftest.py``)::

    users.alice, users.bob          Account(name, uid, gid, home): members of users.team
    users.team, users.team_gid      their shared group
    users.ROOT                      the Account of root (runs without dropping privileges)
    users.shared                    a parent dir as /scratch has it: root-owned, mode 1777
    users.base                      a world-readable directory of this test alone
    users.python(who, code, *argv)  run ``code`` (dedented) with the users' interpreter
    users.rxjobs(who, *args)        run the ``rxjobs`` command (``python -m rxjobs``)
    users.spawn(who, code, *argv)   the same in the background: a Popen (killed at teardown)
    users.mkdir(path, owner, mode, group=None)   a directory owned as asked
    users.team_dir(name, mode=0o3770)            a directory of root:team
    users.canary(path, owner)       files outside any share dir, checked with .check()
    users.default_share_dir(who)    where that user's default share dir is

``python``/``rxjobs`` return a :class:`Ran` (``returncode``, ``stdout``, ``stderr``,
``json()`` of the last stdout line, ``one_line_error()``), never raise on a
non-zero exit, and time out after ``timeout`` seconds (default 120).

The interpreter: the default ``python3`` here lives under root's home, which
other users cannot read, so a venv of Debian's ``/usr/bin/python3`` is built in
a world-readable directory with rxjobs' runtime dependencies pinned to the
versions of the test environment (and Dask's ``distributed`` when the test
environment has it).  It is built once and kept (its name is a hash of what it
holds).  rxjobs itself comes from the source tree under test: ``src/rxjobs``
(with ``tests/factory.py``) is copied, per session, into a world-readable
directory put on ``PYTHONPATH``.
"""

from __future__ import annotations

import grp
import hashlib
import importlib.metadata
import json
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

SYSTEM_PYTHON = "/usr/bin/python3"
# rxjobs' runtime dependencies (pyproject.toml), Dask's client for the forged-handle test, and
# the ui extra for the page served by a user (tests/security/test_ui_users.py).
RUNTIME_DEPS = ("cloudpickle", "fsspec", "psutil", "setproctitle", "platformdirs", "click", "rich")
OPTIONAL_DEPS = ("distributed", "starlette", "uvicorn", "jinja2", "python-multipart")
VENV_PARENT = "/var/tmp"
REPO = Path(__file__).resolve().parent.parent
TOOLS = ("setpriv", "useradd", "userdel", "groupadd", "groupdel")


class UsersUnavailable(Exception):
    """Real users cannot be made here (not root, a tool or the interpreter is missing)."""


@dataclass(frozen=True)
class Account:
    """A Unix account the tests run code as."""

    name: str
    uid: int
    gid: int
    home: Path

    @property
    def is_root(self) -> bool:
        return self.uid == 0


ROOT = Account("root", 0, 0, Path("/root"))


@dataclass
class Ran:
    """What a command run as a user did."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self):
        """stdout parsed as JSON (or, if it holds more, its last non-empty line)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no output from {self.args!r}; stderr:\n{self.stderr}"
        try:
            return json.loads(self.stdout)
        except ValueError:
            return json.loads(lines[-1])

    def one_line_error(self) -> str:
        """The command failed with one ``rxjobs: error: ...`` line and no traceback."""
        assert self.returncode != 0, f"{self.args!r} succeeded:\n{self.stdout}"
        assert "Traceback" not in self.stderr, self.stderr
        errors = [line for line in self.stderr.splitlines() if line.startswith("rxjobs: error:")]
        assert len(errors) == 1, f"expected one error line, got:\n{self.stderr}"
        return errors[0]

    def refused(self, *words: str) -> Ran:
        """The command did not do it (non-zero exit), said why without a traceback, and the
        message has one of ``words`` in it (if given)."""
        assert self.returncode != 0, f"{self.args!r} succeeded:\n{self.stdout}{self.stderr}"
        self.no_traceback()
        said = self.stdout + self.stderr
        assert said.strip(), f"{self.args!r} failed without a word"
        assert not words or any(w.lower() in said.lower() for w in words), said
        return self

    def no_traceback(self) -> Ran:
        assert "Traceback" not in self.stderr + self.stdout, self.stderr + self.stdout
        return self

    def ok(self) -> Ran:
        assert self.returncode == 0, (f"{self.args!r} exited {self.returncode}\n--- stdout\n"
                                      f"{self.stdout}\n--- stderr\n{self.stderr}")
        return self


# -- the interpreter ---------------------------------------------------------------------


def _pinned_requirements() -> list[str]:
    pins = []
    for name in RUNTIME_DEPS:
        pins.append(f"{name}=={importlib.metadata.version(name)}")
    for name in OPTIONAL_DEPS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return pins


def shared_venv() -> Path:
    """A venv of Debian's python3 that every user can run, with rxjobs' dependencies.

    Built once (in a temporary name, then renamed into place), then reused by
    every session whose requirements hash to the same name.
    """
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise UsersUnavailable(f"{SYSTEM_PYTHON} is missing (apt-get install python3 python3-venv)")
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    requirements = _pinned_requirements()
    key = hashlib.sha256("\n".join([version, *requirements]).encode()).hexdigest()[:16]
    venv = Path(VENV_PARENT) / f"rxjobs-users-venv-{key}"
    if (venv / ".complete").exists():
        return venv
    building = Path(tempfile.mkdtemp(prefix=f"{venv.name}.building-", dir=VENV_PARENT))
    try:
        os.chmod(building, 0o755)
        made = subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(building)], capture_output=True, text=True)
        if made.returncode != 0:
            raise UsersUnavailable(f"cannot make a venv of {SYSTEM_PYTHON} (apt-get install "
                                   f"python3-venv): {made.stderr.strip()[-500:]}")
        pip = subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", *requirements],
                             capture_output=True, text=True, timeout=900)
        if pip.returncode != 0:
            raise UsersUnavailable(f"cannot install {requirements} for the test users: "
                                   f"{pip.stderr.strip()[-1000:]}")
        _make_world_readable(building)
        (building / ".complete").write_text("\n".join(requirements) + "\n")
        try:
            os.rename(building, venv)
        except OSError:  # another session built it meanwhile
            shutil.rmtree(building, ignore_errors=True)
        # The venv's scripts name the temporary path; only `bin/python` (a symlink
        # to Debian's interpreter, found relative to pyvenv.cfg) is ever run.
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return venv


def source_copy(into: Path) -> Path:
    """A world-readable copy of the rxjobs source under test (and tests/factory.py)."""
    lib = into / "lib"
    shutil.copytree(REPO / "src" / "rxjobs", lib / "rxjobs",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "tests" / "factory.py", lib / "factory.py")
    _make_world_readable(lib)
    return lib


def _make_world_readable(top: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))


def check_can_make_users() -> None:
    """Raise UsersUnavailable with the reason if real users cannot be made here."""
    if os.geteuid() != 0:
        raise UsersUnavailable("making real Unix users needs root (run the tests as root)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise UsersUnavailable(f"missing {', '.join(missing)} (Debian packages passwd, util-linux)")


# -- the users ---------------------------------------------------------------------------


class Canary:
    """Files outside any share dir that no attack may touch: made, then checked unchanged."""

    @classmethod
    def of(cls, path: Path) -> Canary:
        canary = cls.__new__(cls)
        canary.path = path
        canary.snapshot = canary._look()
        return canary

    def __init__(self, path: Path, owner: Account, mode: int = 0o700) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        (path / "precious.txt").write_text(f"{owner.name}'s precious file\n")
        (path / "rxJob_looks_like_a_job").mkdir(exist_ok=True)
        (path / "rxJob_looks_like_a_job" / "deep.txt").write_text("deep\n")
        (path / "projects").mkdir(exist_ok=True)
        (path / "projects" / "thesis.tex").write_text("\\section{Results}\n")
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [*dirnames, *filenames]:
                os.lchown(os.path.join(dirpath, name), owner.uid, owner.gid)
        os.chown(path, owner.uid, owner.gid)
        os.chmod(path, mode)
        self.snapshot = self._look()

    def _look(self) -> dict[str, tuple[int, int, int, str]]:
        seen = {}
        for dirpath, dirnames, filenames in os.walk(self.path):
            for name in ["", *dirnames, *filenames]:
                full = os.path.join(dirpath, name) if name else dirpath
                st = os.lstat(full)
                digest = ""
                if stat.S_ISREG(st.st_mode):
                    digest = hashlib.sha256(Path(full).read_bytes()).hexdigest()
                seen[os.path.relpath(full, self.path)] = (st.st_mode, st.st_uid, st.st_size, digest)
        return seen

    def check(self) -> None:
        """Every file and directory is still there, with its content, mode and owner; nothing added."""
        now = self._look()
        assert now == self.snapshot, f"canary {self.path} changed: before {self.snapshot}, after {now}"


class UnixUsers:
    """Two users (alice, bob) in one group, made once per test session and removed after it.

    Each test starts with :meth:`start_test` (a fresh ``base`` and ``shared``) and ends with
    :meth:`end_test`, which kills the users' processes and empties their homes and runtime
    dirs, so that no test sees what another one left.
    """

    ROOT = ROOT

    def __init__(self, venv: Path, lib: Path, base: Path) -> None:
        self.venv, self.lib = venv, lib
        self.interpreter = str(venv / "bin" / "python")
        suffix = secrets.token_hex(3)
        self.top = Path(tempfile.mkdtemp(prefix="rxjobs-users-", dir=base))
        os.chmod(self.top, 0o755)
        self.team = f"rxteam-{suffix}"
        self._accounts: list[Account] = []
        self._group_made = False
        self._spawned: list[subprocess.Popen] = []
        self.homes = self.top / "home"
        self.homes.mkdir(mode=0o755)
        self.base = self.shared = self.top  # until start_test
        try:
            _run(["groupadd", self.team])
            self._group_made = True
            self.team_gid = grp.getgrnam(self.team).gr_gid
            self.alice = self._add_user(f"rxalice-{suffix}")
            self.bob = self._add_user(f"rxbob-{suffix}")
        except BaseException:
            self.remove()
            raise

    def start_test(self) -> None:
        """A fresh ``base`` (a world-readable directory of this test) and ``shared`` in it."""
        self.base = Path(tempfile.mkdtemp(prefix="test-", dir=self.top))
        os.chmod(self.base, 0o755)
        self.shared = self.base / "scratch"  # as a cluster's /scratch: anyone may make a dir in it
        self.shared.mkdir()
        os.chmod(self.shared, 0o1777)

    def end_test(self) -> None:
        """Kill the users' processes, and remove what the test made: ``base``, and everything
        in the users' homes and rxjobs runtime dirs (the homes themselves are made again)."""
        self.kill_their_processes()
        self._spawned = []
        for account in self._accounts:
            _remove_tree(account.home)
            self._make_home(account)
            _remove_tree(Path(tempfile.gettempdir()) / f"rxjobs-{account.uid}")
        _remove_tree(self.base)

    def _make_home(self, account: Account) -> None:
        account.home.mkdir(mode=0o755, exist_ok=True)
        os.chown(account.home, account.uid, account.gid)
        os.chmod(account.home, 0o755)  # the old Debian default: only the share dir keeps others out

    def _add_user(self, name: str) -> Account:
        home = self.homes / name
        _run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh",
              "--user-group", "--groups", self.team, "--comment", "rxjobs test user", name])
        entry = pwd.getpwnam(name)
        account = Account(name, entry.pw_uid, entry.pw_gid, home)
        self._accounts.append(account)
        self._make_home(account)
        return account

    # -- running code as a user ------------------------------------------------------------

    def env(self, who: Account, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "HOME": str(who.home),
            "USER": who.name,
            "LOGNAME": who.name,
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": str(self.lib),
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "COLUMNS": "200",
            "TMPDIR": "/tmp",
        }
        env.update(extra or {})
        return env

    def command(self, who: Account, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """``argv`` run as ``who`` (with its groups) in a clean environment."""
        environment = [f"{k}={v}" for k, v in self.env(who, env).items()]
        prefix = [] if who.is_root else ["setpriv", f"--reuid={who.uid}", f"--regid={who.gid}",
                                          "--init-groups"]
        return [*prefix, "env", "-i", *environment, *argv]

    def run(self, who: Account, argv: list[str], *, timeout: float = 120, env: dict[str, str] | None = None,
            input: str | None = None, cwd: str | os.PathLike[str] | None = None) -> Ran:
        args = self.command(who, argv, env)
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input,
                                  cwd=cwd or (self.base if who.is_root else who.home),
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{argv!r} as {who.name} did not end within {timeout} s; "
                                 f"stdout: {exc.stdout!r} stderr: {exc.stderr!r}") from None
        return Ran(argv, done.returncode, done.stdout, done.stderr)

    def python(self, who: Account, code: str, *argv: str, **kwargs) -> Ran:
        """Run Python ``code`` as ``who``; ``argv`` become ``sys.argv[1:]``."""
        return self.run(who, [self.interpreter, "-c", textwrap.dedent(code), *map(str, argv)], **kwargs)

    def rxjobs(self, who: Account, *args: str, **kwargs) -> Ran:
        """Run ``rxjobs ARGS`` (``python -m rxjobs``) as ``who``."""
        return self.run(who, [self.interpreter, "-m", "rxjobs", *map(str, args)], **kwargs)

    def spawn(self, who: Account, code: str, *argv: str, env: dict[str, str] | None = None,
              ) -> subprocess.Popen:
        """Start Python ``code`` as ``who`` in the background (stdout and stderr piped)."""
        args = self.command(who, [self.interpreter, "-c", textwrap.dedent(code), *map(str, argv)], env)
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, cwd=self.base if who.is_root else who.home,
                                start_new_session=True)
        self._spawned.append(proc)
        return proc

    # -- places ----------------------------------------------------------------------------

    def mkdir(self, path: str | os.PathLike[str], owner: Account, mode: int = 0o700,
              group: int | None = None) -> Path:
        path = Path(path)
        path.mkdir(parents=False, exist_ok=False)
        os.chown(path, owner.uid, owner.gid if group is None else group)
        os.chmod(path, mode)
        return path

    def team_dir(self, name: str = "team", mode: int = 0o3770) -> Path:
        """A directory of root and the team group (default: setgid and sticky, 3770)."""
        return self.mkdir(self.shared / name, ROOT, mode, group=self.team_gid)

    def canary(self, path: str | os.PathLike[str], owner: Account, mode: int = 0o700) -> Canary:
        """A new directory of precious files (one named like a job) owned by ``owner``."""
        return Canary(Path(path), owner, mode)

    def snapshot(self, path: str | os.PathLike[str]) -> Canary:
        """A canary of an existing tree (a home, another user's job): checked unchanged later."""
        return Canary.of(Path(path))

    def put(self, path: str | os.PathLike[str], data: bytes | str | object, owner: Account,
            mode: int = 0o600) -> Path:
        """Write a file as ``owner`` would have (bytes, text, or anything else as JSON)."""
        path = Path(path)
        if not isinstance(data, (bytes, str)):
            data = json.dumps(data)
        if isinstance(data, str):
            data = data.encode()
        tmp = path.with_name(f".put-{secrets.token_hex(4)}")
        tmp.write_bytes(data)
        os.chown(tmp, owner.uid, owner.gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        return path

    def make_jobs(self, who: Account, share_dir: str | os.PathLike[str], kinds: list[str],
                  n_tasks: int = 3) -> list[str]:
        """Jobs of the given kinds (``factory.KINDS``) written by ``who``; their ids."""
        ran = self.python(who, """
            import json, sys
            from factory import make_job
            from rxjobs.store import open_store
            store = open_store(sys.argv[1])
            print(json.dumps([make_job(store, kind, n_tasks=int(sys.argv[2])).job_id
                              for kind in sys.argv[3:]]))
        """, share_dir, n_tasks, *kinds).ok()
        return ran.json()

    def make_job(self, who: Account, share_dir: str | os.PathLike[str], kind: str = "unretrieved",
                 n_tasks: int = 3) -> str:
        return self.make_jobs(who, share_dir, [kind], n_tasks)[0]

    def submit(self, who: Account, share_dir: str | os.PathLike[str] | None = None,
               xs: tuple[int, ...] = (1, 2), seconds: float = 0.0, wait: bool = True) -> str:
        """A real job (``rx_exec`` of ``2 * x`` after ``seconds``, on the local engine, not
        waiting) submitted by ``who`` to ``share_dir`` (default: their default share dir); its id.
        With ``wait``, returns once it has ended."""
        ran = self.python(who, """
            import json, sys, time
            from rxjobs import RxLocalParallel, rx_exec, rx_wait_for_job

            def work(x, seconds):
                time.sleep(seconds)
                return 2 * x

            share, seconds, wait, xs = sys.argv[1] or None, float(sys.argv[2]), sys.argv[3], sys.argv[4:]
            cc = RxLocalParallel(num_workers=1, wait=False, share_dir=share)
            job = rx_exec(work, args=[{"x": int(x), "seconds": seconds} for x in xs], compute_context=cc)
            if wait == "wait":
                print(rx_wait_for_job(job, timeout=120).value, file=sys.stderr)
            print(json.dumps(job.job_id))
        """, share_dir or "", seconds, "wait" if wait else "no", *xs).ok()
        return ran.json()

    def default_share_dir(self, who: Account) -> Path:
        return who.home / ".local" / "share" / "rxjobs" / "share" / who.name

    def uids(self) -> set[int]:
        return {a.uid for a in self._accounts}

    # -- teardown --------------------------------------------------------------------------

    def kill_their_processes(self, timeout: float = 15) -> None:
        """Kill every process of the users, and the background commands this started."""
        for proc in self._spawned:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in self._spawned:
            try:
                proc.communicate(timeout=timeout)
            except (subprocess.TimeoutExpired, ValueError):
                pass
        uids = self.uids()
        deadline = time.monotonic() + timeout
        while True:
            theirs = []
            for proc in psutil.process_iter(["uids"]):
                try:
                    if proc.info["uids"] and ({proc.info["uids"].real, proc.info["uids"].effective}
                                              & uids):
                        theirs.append(proc)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            alive = [p for p in theirs if _running(p)]
            if not alive or time.monotonic() > deadline:
                return
            for proc in alive:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(alive, timeout=2)

    def remove(self) -> None:
        """Kill the users' processes, remove the users, their group and every directory made."""
        self.kill_their_processes()
        for account in self._accounts:
            subprocess.run(["userdel", "--force", account.name], capture_output=True)
            _remove_tree(Path(tempfile.gettempdir()) / f"rxjobs-{account.uid}")
        if self._group_made:
            subprocess.run(["groupdel", self.team], capture_output=True)
        _remove_tree(self.top)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _remove_tree(path: Path) -> None:
    """rmtree that also gets through directories their owner made unreadable or immutable-ish."""
    def unblock(func, failed, exc_info):
        try:
            parent = os.path.dirname(failed)
            os.chmod(parent, 0o700, follow_symlinks=False)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
            func(failed)
        except OSError:
            pass

    if path.exists():
        shutil.rmtree(path, onerror=unblock)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise UsersUnavailable(f"{' '.join(argv)} failed: {done.stderr.strip()}")



# Python source an attacker's script starts with: ``exchange(a, b)`` swaps two names
# atomically (renameat2 with RENAME_EXCHANGE), as a hostile co-tenant would.
EXCHANGE = """
import ctypes, os
_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]

def exchange(a, b):
    if _libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) != 0:  # AT_FDCWD, RENAME_EXCHANGE
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), a)
"""

# A pickle that, if anyone ever loads it, writes a proof file (``evil_pickle(path)`` bytes).
EVIL_PICKLE = """
import pickle

class _Pwned:
    def __init__(self, proof):
        self.proof = proof

    def __reduce__(self):
        return (exec, (f"open({self.proof!r}, 'a').write('pwned\\\\n')",))

def evil_pickle(proof):
    return pickle.dumps(_Pwned(proof))
"""
