"""Engine handles are untrusted input: never connected to, never signalled from another user's job.

A user writes, in her own job's ``engine.json``, a Dask scheduler address she
controls or the pid and start time of someone else's process; whoever lists,
inspects, waits on, cancels or cleans up that job (root, or a member of her
group) must never connect there nor signal that process.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from datetime import datetime, timezone

import psutil
import pytest

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


class Listener:
    """A plain TCP listener on loopback that records whether anyone connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _forge(u, share, job, engine: dict) -> None:
    """alice makes her job look running on ``engine`` and readable by everyone (she wants
    her victims to read it)."""
    when = _now()
    u.put(share / job / "status.json", {"state": "running", "reason": "", "started": when,
                                       "updated": when}, u.alice, 0o644)
    u.put(share / job / "engine.json", engine, u.alice, 0o644)
    u.python(u.alice, """
        import os, sys
        for dirpath, dirnames, filenames in os.walk(sys.argv[1]):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o644)
    """, share / job).ok()


@pytest.mark.parametrize("victim", ["root", "bob"])
def test_a_forged_dask_handle_is_never_connected_to(unix_users, listener, victim):
    u = unix_users
    team = u.team_dir()
    job = u.make_job(u.alice, team, "unretrieved")
    _forge(u, team, job, {"engine": "dask", "handle": {
        "scheduler": f"tcp://127.0.0.1:{listener.port}", "job_id": job, "n_tasks": 3}})
    who = u.ROOT if victim == "root" else u.bob
    for args in (["list"], ["list", "--json"], ["status", job], ["status", job, "--json"], ["output", job],
                 ["wait", job, "--timeout", "1"], ["cleanup", "--all", "--dry-run"], ["du"]):
        u.rxjobs(who, "--share-dir", team, *args).no_traceback()
        assert listener.connections == 0, f"{who.name}'s `rxjobs {' '.join(args)}` connected"
    # Root also when the job is in alice's own share dir.
    if victim == "root":
        share = u.homes / u.alice.name / "share"
        mine = u.make_job(u.alice, share, "unretrieved")
        _forge(u, share, mine, {"engine": "dask", "handle": {
            "scheduler": f"tcp://127.0.0.1:{listener.port}", "job_id": mine, "n_tasks": 3}})
        for args in (["list"], ["status", mine], ["wait", mine, "--timeout", "1"]):
            u.rxjobs(u.ROOT, "--share-dir", share, *args).no_traceback()
        assert listener.connections == 0
    status = u.rxjobs(who, "--share-dir", team, "status", job, "--json").json()[0]
    assert status["state"] == "undetermined"


@pytest.fixture
def sleepers(unix_users):
    """Processes of bob and of root that a forged handle may name (killed at teardown)."""
    u = unix_users
    procs = {"bob": u.spawn(u.bob, "import time; time.sleep(600)"),
             "root": subprocess.Popen(["sleep", "600"], start_new_session=True)}
    yield procs
    for proc in procs.values():
        proc.kill()
        proc.wait(10)


def _alive(proc: subprocess.Popen, create_time: float) -> bool:
    try:
        ps = psutil.Process(proc.pid)
        return ps.status() != psutil.STATUS_ZOMBIE and abs(ps.create_time() - create_time) < 0.05
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("canceler, target", [("root", "bob"), ("root", "root"), ("bob", "bob")])
def test_a_forged_local_handle_never_gets_a_process_signalled(unix_users, sleepers, canceler, target):
    u = unix_users
    victim = sleepers[target]
    created = psutil.Process(victim.pid).create_time()
    team = u.team_dir()
    share = u.homes / u.alice.name / "share"
    who = u.ROOT if canceler == "root" else u.bob
    places = [team, share] if canceler == "root" else [team]
    for place in places:
        for args in (["cancel", "{job}"], ["cleanup", "{job}", "--force"], ["cleanup", "--all", "--force"],
                     ["status", "{job}"], ["wait", "{job}", "--timeout", "1"]):
            job = u.make_job(u.alice, place, "unretrieved")
            _forge(u, place, job, {"engine": "local", "handle": {
                "host": socket.gethostname(), "pid": victim.pid, "create_time": created}})
            argv = [a.format(job=job) for a in args]
            u.rxjobs(who, "--share-dir", place, *argv).no_traceback()
            assert _alive(victim, created), \
                f"{who.name}'s `rxjobs {' '.join(argv)}` killed {target}'s process"


@pytest.mark.parametrize("actor", ["root", "bob"])
def test_another_users_running_job_is_neither_canceled_nor_removed(unix_users, actor):
    u = unix_users
    team = u.team_dir()
    job = u.make_job(u.alice, team, "unretrieved")
    _forge(u, team, job, {"engine": "local", "handle": {"host": "elsewhere", "pid": 1, "create_time": 0.0}})
    hers = u.snapshot(team / job)
    who = u.ROOT if actor == "root" else u.bob
    u.rxjobs(who, "--share-dir", team, "cancel", job).refused("owned by", "another user", "permission")
    u.rxjobs(who, "--share-dir", team, "cleanup", job, "--force").refused("owned by", "another user",
                                                                        "permission")
    status = u.rxjobs(who, "--share-dir", team, "status", job, "--json").json()[0]
    assert status["state"] == "undetermined" and "owned by uid" in status["reason"]
    hers.check()
