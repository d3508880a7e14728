"""Shared fixtures: share dirs on real disks (and memory://), and no leaked drivers."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

import rxjobs
from rxjobs.waiting import poll

# A share dir name with what quoting gets wrong: spaces, a shell metacharacter and non-ASCII.
ODD_SHARE_NAME = "my share dir & ünïcode"


@pytest.fixture
def local_share(tmp_path) -> str:
    """A share dir on the local disk.

    Any process still running for a job of this share dir when the test ends
    (passed or failed) is killed, so a broken test cannot leak drivers.
    """
    path = str(tmp_path / "share")
    yield path
    kill_processes_mentioning(path)


@pytest.fixture
def odd_local_share(tmp_path) -> str:
    """A share dir on the local disk whose path has spaces, ``&`` and non-ASCII
    (``ODD_SHARE_NAME``), for the focused tests of each engine that hand the path to another
    process (a driver, a worker, the fork server) or find processes by it.  Processes left
    running for it are killed when the test ends, as for ``local_share``."""
    path = str(tmp_path / ODD_SHARE_NAME)
    yield path
    kill_processes_mentioning(path)


@pytest.fixture(scope="session")
def big_share(tmp_path_factory):
    """A share dir of 20,000 finished jobs of every kind, made once per session
    (:mod:`big_share`); yields (path, ids by kind).  Shared: never change its jobs."""
    from big_share import make_big_share

    path = tmp_path_factory.mktemp("big") / "share"
    yield str(path), make_big_share(path)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-protocol server (moto) on loopback for the whole session, and fake
    credentials in the environment (restored afterwards); skipped without ``rxjobs[s3]``."""
    if os.environ.get("CI"):  # in CI a missing install is a failure, never a skip
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    pytest.importorskip("s3fs", reason='S3 tests need: pip install "rxjobs[s3]"')
    pytest.importorskip("moto.server", reason='S3 tests need: pip install "moto[server]"')
    from moto_s3 import FAKE_CREDENTIALS, MotoS3

    saved = {name: os.environ.get(name) for name in FAKE_CREDENTIALS}
    os.environ.update(FAKE_CREDENTIALS)
    server = MotoS3(tmp_path_factory.mktemp("moto"))
    try:
        yield server.start()
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_share(s3_server):
    """A fresh ``s3://bucket/prefix`` share dir on the moto server; the options reaching it
    are ``s3_server.options``.  Emptied, and its job processes killed, when the test ends."""
    url = s3_server.new_prefix()
    yield url
    kill_processes_mentioning(url)
    s3_server.remove_prefix(url)


@pytest.fixture(params=["file", "memory", "s3"])
def store_url(request, tmp_path, monkeypatch) -> str:
    """A share dir for store-level tests: a local directory, an fsspec memory:// URL, or
    an s3:// prefix on the moto server (reached through the environment's endpoint)."""
    if request.param == "file":
        yield str(tmp_path / "store share")
    elif request.param == "s3":
        server = request.getfixturevalue("s3_server")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
        url = server.new_prefix("store")
        yield url
        server.remove_prefix(url)
    else:
        url = f"memory://rxjobs-test-{uuid.uuid4().hex}"
        yield url
        import fsspec

        fs = fsspec.filesystem("memory")
        if fs.exists(url):
            fs.rm(url, recursive=True)


@pytest.fixture(scope="session", autouse=True)
def _private_runtime_dir(tmp_path_factory):
    """The fork server (and other rxjobs servers) of this test session live in a runtime
    dir of its own, and are stopped when the session ends."""
    from rxjobs.runtime import RUNTIME_DIR_ENV

    saved = os.environ.get(RUNTIME_DIR_ENV)
    runtime = tmp_path_factory.mktemp("runtime")
    runtime.chmod(0o700)
    os.environ[RUNTIME_DIR_ENV] = str(runtime)
    try:
        yield str(runtime)
    finally:
        from rxjobs.engines.forkserver import stop_servers

        os.environ[RUNTIME_DIR_ENV] = str(runtime)
        stop_servers()
        if saved is None:
            os.environ.pop(RUNTIME_DIR_ENV, None)
        else:
            os.environ[RUNTIME_DIR_ENV] = saved


@pytest.fixture(autouse=True)
def _reset_compute_context():
    previous = rxjobs.rx_get_compute_context()
    yield
    rxjobs.rx_set_compute_context(previous)


def process_tree(procs: list[psutil.Process]) -> list[psutil.Process]:
    """``procs`` and every process below them (children of children included)."""
    family: dict[int, psutil.Process] = {}
    for proc in procs:
        try:
            for member in [proc, *proc.children(recursive=True)]:
                family[member.pid] = member
        except psutil.NoSuchProcess:
            continue
    return list(family.values())


def live(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running (a zombie is not)."""
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    return alive


def kill_processes_mentioning(text: str) -> None:
    """Kill every process whose command line contains ``text`` (a share dir path), and
    everything below them (a driver's JVM and workers)."""
    victims = process_tree(processes_mentioning(text))
    for proc in victims:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=15)


def processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if text in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return [p for p in found if p.pid != os.getpid()]


def free_port() -> int:
    """A TCP port free on loopback right now (for servers the tests start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_listening(port: int) -> bool:
    """Whether something accepts connections on ``port`` on loopback."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# A test's polling loop sleeps at most this long between looks: short, so that a test never waits
# long after its condition came true, and long enough not to load a 2-core machine.
POLL_MAX_DELAY = 0.1


def wait_until(check, timeout: float = 60.0, what: str = "condition"):
    """Poll ``check`` (every 0.01 s at first, then at most every ``POLL_MAX_DELAY`` s) until it
    returns a true value; fail the test after ``timeout`` seconds."""
    value = poll(lambda: check() or None, timeout=timeout, first_delay=0.01, max_delay=POLL_MAX_DELAY)
    if value is None:
        pytest.fail(f"timed out after {timeout}s waiting for {what}")
    return value


# -- real Unix users (tests/unix_users.py) ------------------------------------------------


def _users_unavailable(reason: str):
    """Skip with the reason; in CI (CI=true) fail instead: there these tests must run."""
    if os.environ.get("CI"):
        pytest.fail(f"real-user tests cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def users_runtime(tmp_path_factory):
    """The users' interpreter (a venv of Debian's python3) and a world-readable copy of the
    rxjobs source under test, made once per session."""
    import unix_users

    try:
        unix_users.check_can_make_users()
        venv = unix_users.shared_venv()
    except unix_users.UsersUnavailable as exc:
        _users_unavailable(str(exc))
    base = Path(tempfile.mkdtemp(prefix="rxjobs-users-src-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        lib = unix_users.source_copy(base)
        yield venv, lib
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def session_users(users_runtime):
    """The two unprivileged users and their group, made once per session (``useradd`` and
    ``userdel`` cost about a second a test); removed when the session ends."""
    import unix_users

    venv, lib = users_runtime
    try:
        users = unix_users.UnixUsers(venv, lib, Path("/tmp"))
    except unix_users.UsersUnavailable as exc:
        _users_unavailable(str(exc))
    try:
        yield users
    finally:
        users.remove()


@pytest.fixture
def unix_users(session_users):
    """Two unprivileged users (``.alice``, ``.bob``) in one group (``.team``), and a way to
    run code as each (see tests/unix_users.py).  The users last the session; what a test
    leaves (their processes, their homes' contents, their runtime dirs, the test's
    directories) is removed when it ends, passed or failed."""
    session_users.start_test()
    try:
        yield session_users
    finally:
        session_users.end_test()


@pytest.fixture(scope="module")
def module_unix_users(session_users):
    """The same users as ``unix_users``, one start for a whole test module (each test makes
    its own directories under ``.shared``); what the module left is removed when its tests
    are done, passed or failed."""
    session_users.start_test()
    try:
        yield session_users
    finally:
        session_users.end_test()


@pytest.fixture
def new_york(monkeypatch):
    """Local time is America/New_York (UTC-5, UTC-4 in summer) for the test: a time
    without a zone then differs from the same wall time in UTC."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# -- parallel runs (pytest-xdist): which tests share a worker ------------------------------

#: Session fixtures that cost enough (seconds to tens of seconds) that every test using one
#: runs on the same worker, so that each starts once per run.
HEAVY_SESSION_FIXTURES = ("big_share",)

#: Fixture scopes narrower than the session but wider than a test: a module's tests that use
#: one run on one worker, so that the fixture (a cluster, a JVM, a browser) starts once.
_SHARED_SCOPES = ("package", "module", "class")


def worker_groups(tests: list[tuple[str, dict[str, str]]]) -> list[str | None]:
    """The ``xdist_group`` each test joins in a parallel run (``pytest -n 2 --dist loadgroup``),
    or None for a test any worker may run.

    Parameters
    ----------
    tests
        For each collected test, its node id (``tests/test_x.py::TestY::test_z[param]``) and
        the scope of every fixture it uses, directly or through other fixtures.

    Returns
    -------
    list of str or None
        For each test: the name of the heavy session fixture (``HEAVY_SESSION_FIXTURES``) it
        uses, or that a test of its module uses if it shares a module (or class) fixture with
        them (so that the session fixture and the module's fixture both start once); else its
        module path if it uses a module (or class) fixture; else None.
    """
    def module_of(nodeid: str) -> str:
        return nodeid.split("::", 1)[0]

    def heavy_of(scopes: dict[str, str]) -> str | None:
        return next((name for name in HEAVY_SESSION_FIXTURES if name in scopes), None)

    heavy_of_module: dict[str, str] = {}
    for nodeid, scopes in tests:
        heavy = heavy_of(scopes)
        if heavy is not None:
            heavy_of_module.setdefault(module_of(nodeid), heavy)
    groups: list[str | None] = []
    for nodeid, scopes in tests:
        module = module_of(nodeid)
        if any(scope in _SHARED_SCOPES for scope in scopes.values()):
            groups.append(heavy_of_module.get(module, module))
        else:
            groups.append(heavy_of(scopes))
    return groups


def _fixture_scopes(item: pytest.Item) -> dict[str, str]:
    """The scope of each fixture ``item`` uses (its closure).  pytest has no public call for
    it: its ``_fixtureinfo`` is what xdist's own grouping plugins read."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return {}
    scopes = {}
    for name in info.names_closure:
        definitions = info.name2fixturedefs.get(name)
        if definitions:
            scopes[name] = definitions[-1].scope
    return scopes


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test that must share a worker with others (``worker_groups``) with
    ``xdist_group``; ``--dist loadgroup`` then sends each group to one worker, largest first.
    Run serially (no ``-n``), the marks change nothing."""
    groups = worker_groups([(item.nodeid, _fixture_scopes(item)) for item in items])
    for item, group in zip(items, groups, strict=True):
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))


# -- tests that fork: each in a single-threaded child process -----------------------------

#: Set in the child pytest that runs one ``single_threaded`` test: the node id it runs.
SINGLE_THREADED_CHILD = "RXJOBS_SINGLE_THREADED_TEST"


def in_single_threaded_child() -> bool:
    """This process is the child pytest that runs one ``single_threaded`` test."""
    return bool(os.environ.get(SINGLE_THREADED_CHILD))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a ``single_threaded`` test in a child pytest of its own, with one thread.

    A test process has threads (pytest's, other tests' leftovers), and Python
    warns (3.12+) that a fork there may deadlock.  A test that forks is
    marked ``single_threaded``: here its body runs again in a fresh pytest,
    which must pass (a fork warning there is an error); the parent only reports it.
    """
    if pyfuncitem.get_closest_marker("single_threaded") is None or in_single_threaded_child():
        return None
    import subprocess
    import sys

    env = {**os.environ, SINGLE_THREADED_CHILD: pyfuncitem.nodeid}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-W", "error:This process:DeprecationWarning", pyfuncitem.nodeid],
        cwd=str(pyfuncitem.config.rootpath), env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"{pyfuncitem.nodeid} failed in its single-threaded child:\n"
                    f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}", pytrace=False)
    return True


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A real single-node Slurm cluster for the whole module (tests/slurm_cluster.py); stopped
    at its end, passed or failed.  Skipped where it cannot run, a failure with ``CI`` set."""
    from slurm_cluster import SlurmCluster, slurm_unavailable

    why = slurm_unavailable()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Slurm tests: {why}")
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        from rxjobs.slurm_client import forget_unreachable

        forget_unreachable()
