"""The fork server: a clean process that forks local job drivers on request.

Starting a driver as a fresh interpreter costs 60 ms of interpreter start and
imports; forking the caller is fast but is only safe from a single-threaded
caller, and a notebook kernel never is one.  The fork server gives both: a
single-threaded process, started once per user and rxjobs installation
(``python -m rxjobs.engines.forkserver serve``), with the driver's imports
done, that forks a driver for each request it gets on a Unix socket.

A driver forked by the server is the same detached driver a fresh
interpreter would be:

- it runs in its own session, with stdin on ``/dev/null`` and stdout/stderr
  on the job's driver log, so it outlives the caller and the server; its
  parent is the server, which ignores ``SIGCHLD`` so that the kernel reaps
  an ended driver at once (never a zombie that a probe would take for a
  live driver); the driver restores ``SIGCHLD`` for its own pool;
- it is forked ahead of its request: at the start, and once the last driver
  it started has recorded its job's end (it says so on its channel before it
  exits, 5–10 ms sooner than its exit) or exits, or has run
  ``_SPARE_DELAY_S`` (the forks, milliseconds of CPU, stay off a short job's
  start and run), the server forks the next
  driver, a *spare* (``ps`` title ``rxjobs fork-server spare driver (server
  <pid>)``), which waits for the request and the caller's connection on a
  socket pair and exits when the server closes it (at the server's exit, or
  when a request's preloads made it stale); the two forks of a process
  holding scikit-learn are then off the request's path (a request that finds
  no spare, or a stale one, gets one forked at once, without a pool ahead);
- its pool is forked ahead too: a request names how many pool workers its
  driver will want (``pool``), and the next spare forks that many for the
  next request of that driver module (its ``prepare_pool``); the driver uses
  them if its own request wants as many (the local engine's
  :class:`~rxjobs.engines.local.PreparedPool`), else lets them go;
- its command line is ``python -m rxjobs.engines.local <job_id> --share-dir
  …`` (``setproctitle``), so ``ps`` names the job;
- its handle is its pid and start time, probed, awaited (pidfd) and stopped
  as any driver's; a killed driver makes the job FAILED;
- it inherits nothing of the caller: no memory, thread, lock or descriptor.
  It gets what a fresh interpreter would be given, sent in the request: the
  caller's environment (the storage options in ``$RXJOBS_SHARE_DIR_OPTIONS``,
  never on a command line), ``sys.path``, working directory and umask.  Of
  the server it keeps only the imported modules: every descriptor is closed.

The server accepts requests only from processes of its own user
(``SO_PEERCRED``) and only for ``rxjobs.engines.*`` driver modules.  Its
socket and record live in the private runtime directory
(:func:`~rxjobs.runtime.runtime_dir`) as ``forkserver-<key>.sock``
and ``forkserver-<key>.json``, where the key names the Python and the rxjobs
files it was started from (a changed rxjobs gets a new server).  It exits,
removing both, after ``$RXJOBS_FORK_SERVER_IDLE_S`` seconds without a request
(default 1800), on SIGTERM, or when its socket is removed.  ``python -m
rxjobs.engines.forkserver list`` shows the live servers, ``stop`` stops them;
``$RXJOBS_FORK_SERVER=0`` turns the fork server off (drivers are then
started as fresh interpreters).

A request also names the installed modules the job's payload refers to
(:mod:`rxjobs.preload`), each with the file, mtime and size it resolves to
in the caller.  Before forking the driver, the server imports those it may
(installed distributions resolving to that same file in a site directory,
at most :data:`~rxjobs.preload.MAX_MODULES`, within
``_PRELOAD_BUDGET_S``), once: this driver and every later one, and their pool
workers, start with them imported (scikit-learn's seconds are paid once per
server, not per job).  A module that fails to import is skipped and
remembered.  The server retires (answers with an error, so that the caller
starts this driver as a fresh interpreter, and exits, so that the next caller
starts a new one) when a request names a package it holds an older copy of
(reinstalled since), or when an import started a Python thread (forking is
then unsafe; the caller names that package no more).  Threads of C libraries
(OpenBLAS's) are not seen; those libraries make themselves safe to fork, as
they must for ``multiprocessing``'s fork.  ``$RXJOBS_FORK_SERVER_PRELOAD=0``
turns preloading off.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from .. import preload
from ..runtime import FORK_SERVER_PREFIX, TMP_MARK, runtime_dir
from .base import Handle
from .drivers import OPTIONS_ENV, close_all_but, driver_log_path, find_driver, open_driver_log, redirect_stdio

ENABLE_ENV = "RXJOBS_FORK_SERVER"
IDLE_ENV = "RXJOBS_FORK_SERVER_IDLE_S"
_DEFAULT_IDLE_S = 1800.0
_MAX_REQUEST = 1 << 20
_REQUEST_TIMEOUT_S = 10.0
_START_TIMEOUT_S = 60.0
_REPLY_TIMEOUT_S = 30.0
# What a driver imports, imported once by the server so that no driver pays for it.
_PRELOAD = ("rxjobs.engines.local", "rxjobs.runner", "rxjobs.records", "rxjobs.store",
            "rxjobs.store.local", "cloudpickle", "concurrent.futures.process", "multiprocessing",
            "setproctitle", "psutil")
_PREFIX = FORK_SERVER_PREFIX
_MAX_POOL = 64  # the most pool workers a request may ask its next spare to fork ahead
# The next spare is forked once the last driver exits, or this long after its start if it
# runs on: the forks (a few ms of CPU each) are kept off a short job's start and run.
_SPARE_DELAY_S = 0.25
# Preloading stops for this request after this long (what is left is imported at the next).
_PRELOAD_BUDGET_S = 10.0
# Packages whose import started a thread in a fork server, named to no server again.
_unsafe_modules: set[str] = set()


class ForkServerError(RuntimeError):
    """The fork server could not be reached or started, or refused a request."""


def enabled() -> bool:
    """Whether drivers may be forked by the fork server (``$RXJOBS_FORK_SERVER`` not 0)."""
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in ("0", "no", "false", "off")


_key_cache: str | None = None
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def server_key() -> str:
    """One server per Python and per version of the rxjobs files it would preload."""
    global _key_cache
    if _key_cache is None:
        package = _PACKAGE
        stamps = []
        for folder, _dirs, files in os.walk(package):
            for name in sorted(files):
                if name.endswith(".py"):
                    st = os.stat(os.path.join(folder, name))
                    stamps.append((name, st.st_mtime_ns, st.st_size))
        text = json.dumps([sys.executable, sys.prefix, sys.version, package, sorted(stamps)])
        _key_cache = hashlib.sha256(text.encode()).hexdigest()[:16]
    return _key_cache


def socket_path(base: str, key: str) -> str:
    return os.path.join(base, f"{_PREFIX}{key}.sock")


def record_path(base: str, key: str) -> str:
    return os.path.join(base, f"{_PREFIX}{key}.json")


# -- the caller's side ---------------------------------------------------------------------


def fork_driver_via_server(module: str, store: Any, job_id: str, args: list[str],
                           options: dict[str, Any] | None = None,
                           modules: tuple[str, ...] = (), pool: int = 0) -> Handle:
    """Have the fork server start ``module``'s driver for ``job_id``; return its handle.

    The driver is what :func:`rxjobs.engines.drivers.start_driver` would
    start, forked from the fork server (started first if none is running).
    ``modules`` are the top-level modules the job's payload refers to
    (:func:`rxjobs.preload.referenced_modules`): the server imports those it
    may first, unless ``$RXJOBS_FORK_SERVER_PRELOAD=0``.  ``pool`` is how many
    pool workers the driver wants (at most 64): the server's next spare forks
    as many ahead of its request.

    Raises
    ------
    ForkServerError
        The server could not be reached or started, or the driver did not
        start (the caller may then start the driver as a fresh interpreter).
    """
    log_path, local_copy = driver_log_path(store, job_id)
    argv = [job_id, "--share-dir", store.url, *args]
    if local_copy:
        argv += ["--local-log", log_path]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p or os.getcwd() for p in sys.path))
    env.pop(OPTIONS_ENV, None)
    if options:
        env[OPTIONS_ENV] = json.dumps(options)
    umask = os.umask(0o077)
    os.umask(umask)
    message = {"module": module, "argv": argv, "log": log_path, "hold": local_copy, "env": env,
               "cwd": os.getcwd(), "sys_path": list(sys.path), "umask": umask, "pool": pool}
    if modules and preload.preload_enabled():
        named = [name for name in modules if preload.top_level(name) not in _unsafe_modules]
        stamps = preload.caller_stamps(named)
        message["preload"] = {"stamps": stamps,
                              "modules": [m for m in named if preload.top_level(m) in stamps]}
    try:
        with _connect_or_start() as conn:
            _send(conn, message)
            conn.settimeout(_REPLY_TIMEOUT_S)
            reply = _receive(conn)
    except (OSError, ValueError) as exc:
        raise ForkServerError(f"the fork server could not start the driver of job {job_id}: "
                              f"{exc}") from exc
    if "error" in reply:
        unsafe = reply.get("unsafe")
        if isinstance(unsafe, list):
            _unsafe_modules.update(str(name) for name in unsafe)
        raise ForkServerError(f"the fork server could not start the driver of job {job_id}: "
                              f"{reply['error']}")
    try:
        return {"host": socket.gethostname(), "pid": int(reply["pid"]),
                "create_time": float(reply["create_time"])}
    except (KeyError, TypeError, ValueError):
        raise ForkServerError(f"the driver of job {job_id} did not start; see {log_path}") from None


@contextlib.contextmanager
def _connect_or_start() -> Iterator[socket.socket]:
    base = runtime_dir()
    key = server_key()
    path = socket_path(base, key)
    try:
        conn = _connect(path)
    except OSError:
        with _locked(base):
            try:
                conn = _connect(path)  # another caller started it meanwhile
            except OSError:
                _start_server(base, key)
                conn = _connect(path)
    with conn:
        yield conn


def _connect(path: str) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(_REQUEST_TIMEOUT_S)
        conn.connect(path)
    except OSError:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def _locked(base: str) -> Iterator[None]:
    """Held while a fork server is looked for and started (a lock on the runtime dir)."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _start_server(base: str, key: str) -> None:
    """Start a detached fork server and wait until it listens (the lock is held)."""
    path = socket_path(base, key)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a dead server's socket (nobody answered on it)
    # A server of this Python and rxjobs installation with another key runs rxjobs
    # files since changed: it would be idle from now on, so it goes now.
    stop_servers(lambda record: record.get("python") == sys.executable
                 and record.get("package") == _PACKAGE and record.get("key") != key, timeout=0)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p or os.getcwd() for p in sys.path))
    env.pop(OPTIONS_ENV, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rxjobs.engines.forkserver", "serve", "--runtime-dir", base,
         "--key", key],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
        env=env, start_new_session=True, close_fds=True,
    )
    try:
        out, err = proc.communicate(timeout=_START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise ForkServerError("the fork server did not start in time") from None
    if b"ready" not in out:
        raise ForkServerError("the fork server did not start: "
                              + (err.decode(errors="replace").strip().splitlines() or ["no reason"])[-1])


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    conn.sendall(struct.pack("!I", len(data)) + data)


def _receive(conn: socket.socket) -> dict[str, Any]:
    size = struct.unpack("!I", _read_exactly(conn, 4))[0]
    if size > _MAX_REQUEST:
        raise ValueError("message too long")
    message = json.loads(_read_exactly(conn, size))
    if not isinstance(message, dict):
        raise ValueError("not a message")
    return message


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = conn.recv(size)
        if not chunk:
            raise ConnectionError("the connection closed early")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


# -- finding and stopping servers ------------------------------------------------------------


def list_servers() -> list[dict[str, Any]]:
    """The records of this user's live fork servers (pid, start time, socket, key, started)."""
    base = runtime_dir()
    found = []
    for name in sorted(os.listdir(base)):
        if not (name.startswith(_PREFIX) and name.endswith(".json")):
            continue
        try:
            fd = os.open(os.path.join(base, name), os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and find_driver(record) is not None:
            found.append(record)
    return found


def stop_servers(which: Callable[[dict[str, Any]], bool] | None = None,
                 timeout: float = 5.0) -> int:
    """Stop this user's fork servers (their drivers run on); return how many were stopped.

    Parameters
    ----------
    which
        Stop only the servers whose record this returns True for (default: all).
    timeout
        How long to wait for each to exit.
    """
    stopped = 0
    for record in list_servers():
        if which is not None and not which(record):
            continue
        proc = find_driver(record)
        if proc is None or proc.uids().real != os.geteuid():
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            proc.terminate()
            stopped += 1
        if timeout > 0:
            with contextlib.suppress(Exception):
                proc.wait(timeout)
    return stopped


# -- the server ------------------------------------------------------------------------------


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


def _server_signals() -> None:
    """SIGTERM and SIGHUP stop the server; SIGINT (a terminal's Ctrl-C) does not; its
    children (the spares, then drivers) are reaped by the kernel as they end (``SIGCHLD``
    ignored): the server never waits for one."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)


class _Preloader:
    """The modules a server imported for its requests (with their stamps), and those that failed."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self.failed: set[str] = set()
        self._dirs: list[str] | None = None
        self._installed: set[str] = set()

    def load(self, stamps: dict[str, str], modules: list[str]) -> dict[str, Any] | None:
        """Import the ``modules`` a request names that may be imported (:mod:`rxjobs.preload`),
        their packages checked against the caller's ``stamps``.

        Returns None, or the error reply with which the server retires: it holds
        an older copy of a named package, or an import started a thread.
        """
        old = preload.stale(stamps, self.held)
        if old:
            return {"error": f"the fork server holds an older copy of {', '.join(old)} (reinstalled "
                             "since it started); the next job starts a new one"}
        if self._dirs is None:
            self._dirs = preload.site_dirs()
            self._installed = preload.installed_top_level()
        names = preload.modules_to_preload(modules, self._installed, sys.modules, self.held,
                                           self.failed)
        deadline = time.monotonic() + _PRELOAD_BUDGET_S
        for name in names:
            if time.monotonic() > deadline:
                break  # the rest at the next request: a caller waits for this one
            top = preload.top_level(name)
            stamp = stamps.get(top)
            if stamp is None or (top not in self.held
                                 and preload.module_stamp(top, self._dirs) != stamp):
                continue  # not the package the caller would import
            try:
                importlib.import_module(name)
            except _Stop:
                raise
            except (Exception, SystemExit):
                self.failed.add(name)
            finally:
                _server_signals()  # an imported module may have set its own
                if top in sys.modules:
                    self.held[top] = stamp
            if threading.active_count() > 1:  # a Python thread: a lock it holds may be forked
                return {"error": f"importing {name} started a thread in the fork server, which may "
                                 "then fork no more; the next job starts a new one",
                        "unsafe": [top]}
        return None


def serve(base: str, key: str, idle_timeout: float) -> int:
    """Detach, listen on ``forkserver-<key>.sock`` and fork a driver per request."""
    if os.fork() > 0:  # the starter's child exits: the server is nobody's child
        os._exit(0)
    os.setsid()
    for name in _PRELOAD:
        importlib.import_module(name)
    import psutil
    from setproctitle import setproctitle

    path, record = socket_path(base, key), record_path(base, key)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}{TMP_MARK}{os.getpid()}"
    listener.bind(tmp)
    os.chmod(tmp, 0o600)
    listener.listen(128)
    os.rename(tmp, path)
    inode = os.stat(path).st_ino
    me = psutil.Process()
    info = {"pid": me.pid, "create_time": me.create_time(), "host": socket.gethostname(),
            "socket": path, "key": key, "python": sys.executable, "package": _PACKAGE,
            "started": time.time(),
            "idle_timeout_s": idle_timeout}
    tmp_record = f"{record}{TMP_MARK}{os.getpid()}"
    fd = os.open(tmp_record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.rename(tmp_record, record)
    setproctitle(f"rxjobs fork-server {key} (uid {os.geteuid()}, {path})")
    _server_signals()
    os.chdir("/")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    os.close(null)
    last = time.monotonic()
    preloader = _Preloader()
    spare: _Spare | None = None
    ahead = _Ahead()
    driver: _LastDriver | None = None  # the spare last handed a request, until its job ends
    try:
        while True:
            if driver is not None and driver.done():
                driver.close()
                driver = None
            if spare is None and driver is None:
                spare = _Spare.fork(listener, ahead)
            watched: list[socket.socket | int] = [listener]
            wait = min(60.0, idle_timeout)
            if driver is not None and driver.fds:
                watched += driver.fds
                wait = driver.left()
            readable, _, _ = select.select(watched, [], [], wait)
            if listener not in readable:
                if driver is None and (time.monotonic() - last >= idle_timeout
                                       or not _still_ours(path, inode)):
                    return 0
                continue
            last = time.monotonic()
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                spare, serving, handed = _handle(listener, conn, preloader, spare, ahead)
                if handed is not None:
                    if driver is not None:
                        driver.close()
                    driver = _LastDriver.watch(handed.pid, handed.channel)
                if not serving:
                    return 0  # retired
    except _Stop:
        return 0
    finally:
        if driver is not None:
            driver.close()
        if spare is not None:
            spare.channel.close()  # it exits
        with contextlib.suppress(OSError):
            if _still_ours(path, inode):
                os.unlink(path)
        with contextlib.suppress(OSError, ValueError):
            with open(record) as f:
                if json.load(f).get("pid") == info["pid"]:  # not a newer server's record
                    os.unlink(record)


def _still_ours(path: str, inode: int) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _handle(listener: socket.socket, conn: socket.socket, preloader: _Preloader,
            spare: _Spare | None, ahead: _Ahead) -> tuple[_Spare | None, bool, _Spare | None]:
    """Check and read one request, preload its modules and hand it to the spare driver
    (forked anew if there is none, or it was forked before these imports); return the spare
    still unused (None if it was), False if the server must retire (see
    :meth:`_Preloader.load`), and the spare now driving the request (None if none is).
    The request's driver module and pool size become what the next spare prepares
    (``ahead``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    try:
        if uid != os.geteuid():
            raise ValueError(f"requests are accepted from uid {os.geteuid()} only")
        conn.settimeout(_REQUEST_TIMEOUT_S)
        request = _receive(conn)
        module = request.get("module")
        if not isinstance(module, str) or not module.startswith("rxjobs.engines."):
            raise ValueError(f"not an rxjobs driver module: {module!r}")
        argv = request.get("argv")
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError("argv must be a list of strings")
        stamps, modules = _preload_request(request.get("preload") or {})
        pool = request.get("pool", 0)
        if not isinstance(pool, int) or not 0 <= pool <= _MAX_POOL:
            raise ValueError(f"pool must be a number of workers from 0 to {_MAX_POOL}")
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            _send(conn, {"error": str(exc)})
        return spare, True, None
    retire = preloader.load(stamps, modules)
    if retire is not None:
        with contextlib.suppress(OSError):
            _send(conn, retire)
        return spare, False, None
    ahead.module, ahead.pool = module, pool
    for _attempt in range(2):  # a spare that died meanwhile (killed) is replaced once
        if spare is None or spare.modules != len(sys.modules):
            if spare is not None:
                spare.channel.close()  # forked before this request's imports: it exits
            # Forked on the request's path: no pool ahead, the driver forks its own after
            # its reply (a burst of requests is not slowed by forks the caller waits for).
            spare = _Spare.fork(listener, _Ahead())
        if spare.hand_over(conn, request):
            return None, True, spare
        spare = None
    with contextlib.suppress(OSError):
        _send(conn, {"error": "no driver process could be forked"})
    return None, True, None


@dataclasses.dataclass
class _Ahead:
    """What the next spare prepares: the pool of ``pool`` workers of the driver module the
    last request named (nothing before the first request)."""

    module: str = ""
    pool: int = 0


class _LastDriver:
    """The driver the server last started, watched until it says its job's end is
    recorded (a byte on its spare's channel, sent before it exits: its exit, the teardown
    of a 128 MB process, came 5–10 ms later), exits (a pidfd) or has run
    ``_SPARE_DELAY_S``: the next spare is forked then (see :func:`serve`)."""

    def __init__(self, channel: socket.socket, pidfd: int | None) -> None:
        self.channel: socket.socket | None = channel
        self.pidfd = pidfd
        self.deadline = time.monotonic() + _SPARE_DELAY_S

    @classmethod
    def watch(cls, pid: int, channel: socket.socket) -> _LastDriver:
        try:
            pidfd = os.pidfd_open(pid) if pid > 0 and hasattr(os, "pidfd_open") else None
        except OSError:  # gone already: the channel says so too (closed)
            pidfd = None
        return cls(channel, pidfd)

    @property
    def fds(self) -> list[int]:
        """What says the driver's job ended: its channel, and its pidfd if there is one."""
        if self.channel is None:
            return []
        return [self.channel.fileno()] + ([self.pidfd] if self.pidfd is not None else [])

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic()) if self.channel is not None else 0.0

    def done(self) -> bool:
        if self.channel is None or self.left() == 0.0:
            return True
        readable, _, _ = select.select(self.fds, [], [], 0)
        return bool(readable)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.channel is not None:
            self.channel.close()
            self.channel = None


class _Spare:
    """The next request's driver, forked ahead of it (off the request's path).

    Forking a process that holds scikit-learn costs milliseconds (3–5 ms here
    for 128 MB; a detached driver used to take two forks and an exit, 10–20 ms
    of the server's time).  So the server forks the next driver ahead of each
    request, once, and the spare waits, in its own process,
    on a socket pair for the request and the caller's connection
    (``SCM_RIGHTS``); it then becomes the driver (:func:`_run_driver`).  It
    exits when the server closes its end: at the server's exit, or when a
    request's preloads made it stale (it lacks the modules imported since it
    was forked, counted by ``modules``).  While it waits it also forks the pool
    workers the last request's driver wanted (``ahead``; see the module docstring).
    """

    def __init__(self, channel: socket.socket, modules: int, pid: int) -> None:
        self.channel = channel
        self.modules = modules
        self.pid = pid

    @classmethod
    def fork(cls, listener: socket.socket, ahead: _Ahead) -> _Spare:
        """Fork a spare of the server as it is (it detaches itself: its own session)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        server = os.getpid()
        child = os.fork()
        if child == 0:  # the spare
            code = 1
            try:
                listener.close()
                ours.close()
                code = _wait_as_spare(theirs, server, ahead)
            except BaseException:
                with contextlib.suppress(BaseException):
                    traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        return cls(ours, len(sys.modules), child)  # modules are only ever added

    def hand_over(self, conn: socket.socket, request: dict[str, Any]) -> bool:
        """Pass the caller's connection and the request to the spare; False if the spare is
        gone (our end then closed).  The channel stays open: the driver says on it when its
        job's end is recorded (:class:`_LastDriver`)."""
        try:
            socket.send_fds(self.channel, [b"r"], [conn.fileno()])
            _send(self.channel, request)
        except OSError:
            self.channel.close()
            return False
        return True


def _wait_as_spare(channel: socket.socket, server: int, ahead: _Ahead) -> int:
    """In the spare: fork the pool the next request likely wants, wait for a request and the
    caller's connection, then be its driver."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):  # the pool is waited for
        signal.signal(sig, signal.SIG_DFL)
    os.setsid()  # own session and process group (the pool's too): cancel signals the group
    close_all_but(channel.fileno())  # nothing of the server's stays open, in us or the pool
    from setproctitle import setproctitle

    setproctitle(f"rxjobs fork-server spare driver (server {server})")
    prepared = _prepare(ahead)
    try:
        _data, fds, _flags, _address = socket.recv_fds(channel, 1, 1)
        if not fds:
            return 0  # the server closed our channel: it exits, or we are stale (the pool dies with us)
        conn = socket.socket(fileno=fds[0])
        request = _receive(channel)
    except (OSError, ValueError):
        return 0
    if prepared is not None and request.get("module") != ahead.module:
        prepared.close()
        prepared = None
    try:
        return _run_driver(request, conn, prepared)
    finally:
        # The job's end is recorded (or the driver failed): the server may fork the next
        # spare now rather than after this process's exit.  A pool worker holding the
        # channel could at most make that happen early.
        with contextlib.suppress(OSError):
            channel.send(b"e")
        channel.close()


def _prepare(ahead: _Ahead) -> Any:
    """The driver module's ``prepare_pool(workers)``, if it has one and a pool is wanted."""
    if not ahead.pool or not ahead.module:
        return None
    try:
        prepare = getattr(importlib.import_module(ahead.module), "prepare_pool", None)
        return prepare(ahead.pool) if prepare is not None else None
    except Exception:
        traceback.print_exc()
        return None  # the driver forks its pool itself


def _preload_request(part: Any) -> tuple[dict[str, str], list[str]]:
    """A request's ``preload``: the caller's stamps of packages and the modules to import."""
    stamps = part.get("stamps", {}) if isinstance(part, dict) else None
    modules = part.get("modules", []) if isinstance(part, dict) else None
    if not (isinstance(stamps, dict) and isinstance(modules, list)
            and len(stamps) <= preload.MAX_MODULES and len(modules) <= preload.MAX_MODULES
            and all(isinstance(k, str) and isinstance(v, str) for k, v in stamps.items())
            and all(isinstance(m, str) for m in modules)):
        raise ValueError(f"preload must name at most {preload.MAX_MODULES} modules and their "
                         "packages' stamps")
    return stamps, modules


def _run_driver(request: dict[str, Any], conn: socket.socket, prepared: Any = None) -> int:
    """In the driver: become what a fresh interpreter would be, report, then drive the job
    (with the pool its spare ``prepared``, if any)."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    # As in a fresh interpreter: a write to a closed pipe (a killed pool worker's)
    # raises BrokenPipeError instead of killing the driver silently.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.umask(int(request["umask"]))
        os.chdir(request["cwd"])
        # A runtime-dir log is held, as start_driver holds it: doctor and cancel see it live.
        log_fd = open_driver_log(str(request["log"]), request.get("hold") is True)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        _send(conn, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    redirect_stdio(log_fd)  # the spare closed what it inherited of the server's descriptors
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})
    sys.path[:] = [str(p) for p in request["sys_path"]]
    module, argv = str(request["module"]), list(request["argv"])
    sys.argv = [sys.executable, "-m", module, *argv]
    import psutil
    from setproctitle import setproctitle

    setproctitle(" ".join(sys.argv))
    me = psutil.Process()
    _send(conn, {"pid": me.pid, "create_time": me.create_time()})
    conn.close()
    extra = {"prepared": prepared} if prepared is not None else {}
    try:
        code = int(importlib.import_module(module).main(argv, detached=True, **extra) or 0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rxjobs.engines.forkserver",
                                     description="rxjobs' fork server of local job drivers")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run a fork server (started by rx_exec)")
    serve_cmd.add_argument("--runtime-dir", required=True)
    serve_cmd.add_argument("--key", required=True)
    commands.add_parser("list", help="print this user's live fork servers, one JSON per line")
    commands.add_parser("stop", help="stop this user's fork servers (running jobs go on)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        idle = float(os.environ.get(IDLE_ENV) or _DEFAULT_IDLE_S)
        return serve(args.runtime_dir, args.key, max(1.0, idle))
    if args.command == "list":
        for record in list_servers():
            print(json.dumps(record))
        return 0
    print(f"stopped {stop_servers()} fork server(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
