"""The local engine: the engine contract plus what only a local driver can show."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from rxjobs import (
    RxLocalParallel,
    RxRemoteJob,
    RxRemoteJobStatus,
    rx_exec,
    rx_get_job_results,
    rx_get_job_status,
    rx_wait_for_job,
)
from rxjobs.engines.local import ENGINE
from rxjobs.records import EngineRecord, read_engine_record, read_job_record, write_engine_record
from rxjobs.status import Probe
from rxjobs.store import open_store

from conftest import processes_mentioning, wait_until
from engine_contract import EngineContract, odd_path_subset, sleep_then_return, square

pytestmark = pytest.mark.timeout(180)
S = RxRemoteJobStatus


@pytest.fixture
def share_path(request) -> str:
    """The test's share dir: ``local_share``, or ``odd_local_share`` for a test parametrized
    indirectly with "odd chars" (``ODD_PATH``, ``BOTH_PATHS``)."""
    odd = getattr(request, "param", "plain") == "odd chars"
    return request.getfixturevalue("odd_local_share" if odd else "local_share")


ODD_PATH = pytest.mark.parametrize("share_path", ["odd chars"], indirect=True)
BOTH_PATHS = pytest.mark.parametrize("share_path", ["plain", "odd chars"], indirect=True)


@pytest.fixture
def make_context(share_path):
    def make(wait: bool, **settings) -> RxLocalParallel:
        return RxLocalParallel(num_workers=2, wait=wait, share_dir=share_path, **settings)

    return make


class TestLocalEngineContract(EngineContract):
    pass


@ODD_PATH
@odd_path_subset
class TestLocalEngineContractOnOddPath(EngineContract):
    pass


def _engine_record(share_path: str, job_id: str) -> dict:
    return read_engine_record(open_store(share_path), job_id).to_json()


def _handle_or_none(store, job_id: str) -> dict | None:
    """The job's engine handle, None until the engine accepted the job (or job.json is written)."""
    try:
        return read_engine_record(store, job_id).handle
    except (FileNotFoundError, ValueError):
        return None


@BOTH_PATHS
def test_detached_job_survives_its_caller_and_is_collected_elsewhere(share_path):
    """Submit in one process that exits at once; collect from another process."""
    here = os.path.dirname(__file__)
    submit = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {here!r})
        from engine_contract import square
        from rxjobs import RxLocalParallel, rx_exec
        cc = RxLocalParallel(num_workers=2, wait=False, share_dir={share_path!r})
        print(rx_exec(square, x=list(range(10)), compute_context=cc).job_id)
    """)
    done = subprocess.run([sys.executable, "-c", submit], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    collect = textwrap.dedent(f"""
        import json
        from rxjobs import RxLocalParallel, RxRemoteJob, rx_get_jobs, rx_get_job_results, rx_wait_for_job
        cc = RxLocalParallel(share_dir={share_path!r})
        (job,) = rx_get_jobs(cc, verbose=False)
        assert job.job_id == {job_id!r}
        print(rx_wait_for_job(job, timeout=120).value)
        print(json.dumps(rx_get_job_results(job)))
    """)
    done = subprocess.run([sys.executable, "-c", collect], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    status, results = done.stdout.split("\n", 1)
    assert status == "finished"
    assert json.loads(results) == [x * x for x in range(10)]
    assert open_store(share_path).list_job_ids() == []


@BOTH_PATHS
def test_job_processes_name_the_job_and_none_remain_after_it_ends(share_path):
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=share_path)
    job = rx_exec(sleep_then_return, seconds=[1.0] * 4, compute_context=cc, task_chunk_size=1)
    wait_until(lambda: len(processes_mentioning(job.job_id)) >= 2, what="driver and workers")
    handle = _engine_record(share_path, job.job_id)["handle"]
    driver = psutil.Process(handle["pid"])
    assert job.job_id in " ".join(driver.cmdline())
    assert driver.ppid() != os.getpid()  # detached: not our child
    assert os.getsid(driver.pid) == driver.pid  # a session of its own
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    wait_until(lambda: not processes_mentioning(job.job_id), what="job processes to exit")
    assert rx_get_job_results(job) == [1.0] * 4


def test_driver_killed_with_sigkill_makes_the_job_failed(share_path):
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=share_path)
    job = rx_exec(sleep_then_return, seconds=[300] * 2, compute_context=cc)
    wait_until(lambda: rx_get_job_status(job) is S.RUNNING, what="job to run")
    wait_until(lambda: len(processes_mentioning(job.job_id)) >= 3, what="workers to start")
    pid = _engine_record(share_path, job.job_id)["handle"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: rx_get_job_status(job) is S.FAILED, timeout=30, what="FAILED")
    from rxjobs.jobs import job_status

    assert "driver lost" in job_status(open_store(share_path), job.job_id).reason
    wait_until(lambda: not processes_mentioning(job.job_id), what="workers to die with the driver")


def test_reused_pid_is_not_mistaken_for_the_driver():
    me = psutil.Process()
    assert ENGINE.probe({"host": os.uname().nodename, "pid": me.pid,
                         "create_time": me.create_time()}) is Probe.ALIVE
    impostor = {"host": os.uname().nodename, "pid": me.pid, "create_time": me.create_time() - 3600}
    assert ENGINE.probe(impostor) is Probe.GONE
    assert ENGINE.cancel(impostor) is False  # and we are not killed
    assert ENGINE.probe({"host": "some-other-host", "pid": me.pid,
                         "create_time": me.create_time()}) is Probe.UNREACHABLE


def test_job_with_reused_pid_in_its_handle_is_failed_not_running(share_path):
    cc = RxLocalParallel(num_workers=1, wait=False, share_dir=share_path)
    job = rx_exec(square, x=[2], compute_context=cc)
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    store = open_store(share_path)
    paths = store.paths(job.job_id)
    store.remove_file(paths.status_json)  # as if the machine rebooted mid-job
    record = read_job_record(store, job.job_id)
    me = psutil.Process()
    handle = {**record.handle, "pid": me.pid, "create_time": me.create_time() - 100}
    write_engine_record(store, record, EngineRecord(record.engine, handle))
    assert rx_get_job_status(job) is S.FAILED


def test_parallel_context_rejects_a_memory_share_dir():
    with pytest.raises(ValueError, match="local disk"):
        RxLocalParallel(share_dir="memory://somewhere")


def test_bad_worker_count_is_refused():
    with pytest.raises(ValueError, match="num_workers"):
        RxLocalParallel(num_workers=0)


def test_job_can_be_found_again_by_id(share_path):
    cc = RxLocalParallel(num_workers=1, wait=False, share_dir=share_path, console_output=True)
    job = rx_exec(square, x=[3], compute_context=cc)
    again = RxRemoteJob.deserialize_job(job.job_id, RxLocalParallel(share_dir=share_path))
    assert again == job
    assert again.compute_context == cc
    assert again.wait(timeout=120) is S.FINISHED
    assert again.result() == [9]


_WAITING_CALLER = """
import json, socket, sys, threading
import xml.dom.minidom  # imported by the caller only: a forked driver's workers have it too
from rxjobs import RxLocalParallel, rx_exec

if sys.argv[2] == "thread":  # another thread alive: forking would not be safe
    threading.Thread(target=threading.Event().wait, daemon=True).start()
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
print(listener.getsockname()[1], flush=True)

def runs_where(seconds):
    import sys, time
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    print("hello from a run")
    return "xml.dom.minidom" in sys.modules

cc = RxLocalParallel(num_workers=2, share_dir=sys.argv[1], console_output=True)
print(json.dumps(rx_exec(runs_where, seconds=[2.0, 2.0], compute_context=cc, task_chunk_size=1)))
"""


def _tcp_ports(proc: psutil.Process) -> set[int]:
    connections = getattr(proc, "net_connections", None) or proc.connections
    return {c.laddr.port for c in connections(kind="tcp") if c.laddr}


@pytest.mark.parametrize("caller", ["single-threaded", "thread"])
def test_waiting_job_driver_is_forked_only_from_a_single_threaded_caller(share_path, caller):
    """A waiting caller with no other thread forks its driver (no interpreter start);
    either way the driver is detached, names the job and holds none of the caller's sockets."""
    proc = subprocess.Popen([sys.executable, "-c", _WAITING_CALLER, share_path, caller],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        store = open_store(share_path)

        def handle():
            for job_id in store.list_job_ids():
                found = _handle_or_none(store, job_id)
                return (job_id, found) if found is not None else None
            return None

        job_id, found = wait_until(handle, what="the job's engine handle")
        driver = psutil.Process(found["pid"])
        assert job_id in " ".join(driver.cmdline())
        assert "rxjobs.engines.local" in " ".join(driver.cmdline())
        assert driver.ppid() != proc.pid  # detached
        assert os.getsid(driver.pid) == driver.pid
        assert port not in _tcp_ports(driver)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "hello from a run" in out
    forked = caller == "single-threaded"
    assert json.loads(out.strip().splitlines()[-1]) == [forked, forked]
    wait_until(lambda: not processes_mentioning(job_id), what="job processes to exit")
    assert store.list_job_ids() == []


@BOTH_PATHS
def test_fork_server_forks_a_threaded_callers_driver_and_can_be_found_and_stopped(share_path):
    """A caller with other threads gets its driver from the fork server: detached (not
    the server's child either), naming the job, inheriting nothing of the caller; the
    server is listed, named in `ps`, and stopped with its socket and record removed."""
    from rxjobs.engines import forkserver
    from rxjobs.runtime import runtime_dir

    forkserver.stop_servers()
    proc = subprocess.Popen([sys.executable, "-c", _WAITING_CALLER, share_path, "thread"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        store = open_store(share_path)
        job_id = wait_until(lambda: (store.list_job_ids() or [None])[0], what="the job")
        found = wait_until(lambda: _handle_or_none(store, job_id),
                           what="the handle")
        servers = forkserver.list_servers()
        assert len(servers) == 1
        server = psutil.Process(servers[0]["pid"])
        assert "rxjobs fork-server" in " ".join(server.cmdline())
        driver = psutil.Process(found["pid"])
        assert driver.ppid() != proc.pid  # not the caller's child
        assert driver.ppid() == server.pid  # the server's, reaped by the kernel when it ends
        assert os.getsid(driver.pid) == driver.pid  # in a session of its own
        assert job_id in " ".join(driver.cmdline())
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    # An ended driver is gone, not a zombie that a probe would take for a live driver.
    wait_until(lambda: not psutil.pid_exists(driver.pid), what="the ended driver to be reaped")
    assert json.loads(out.strip().splitlines()[-1]) == [False, False]  # nothing of the caller's
    # The next request's driver waits, forked ahead (detached too), and goes with the server.
    title = f"rxjobs fork-server spare driver (server {server.pid})"
    spares = wait_until(lambda: processes_mentioning(title), what="the spare driver")
    assert len(spares) == 1 and spares[0].ppid() == server.pid
    assert os.getsid(spares[0].pid) == spares[0].pid
    assert forkserver.stop_servers() == 1
    assert forkserver.list_servers() == []
    assert not [n for n in os.listdir(runtime_dir()) if n.startswith("forkserver-")]
    wait_until(lambda: not processes_mentioning(title), what="the spare driver to exit with the server")


def test_fork_server_refuses_a_module_that_is_no_rxjobs_driver(share_path):
    from rxjobs.engines import forkserver

    store = open_store(share_path)
    with pytest.raises(forkserver.ForkServerError, match="not an rxjobs driver module"):
        forkserver.fork_driver_via_server("os", store, "rxJob_not_a_job", [])


def test_a_forked_driver_killed_makes_the_waiting_caller_see_failed(share_path):
    caller = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from engine_contract import sleep_then_return
        from rxjobs import RxLocalParallel, rx_exec
        cc = RxLocalParallel(num_workers=2, share_dir={share_path!r})
        try:
            rx_exec(sleep_then_return, seconds=[60.0, 60.0], compute_context=cc, task_chunk_size=1)
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    proc = subprocess.Popen([sys.executable, "-c", caller], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        store = open_store(share_path)
        job_id = wait_until(lambda: (store.list_job_ids() or [None])[0], what="the job")
        wait_until(lambda: len(processes_mentioning(job_id)) >= 3, what="driver and two workers")
        pid = wait_until(lambda: (_handle_or_none(store, job_id) or {}).get("pid"),
                         what="the handle")
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.startswith("JobFailedError"), out
    wait_until(lambda: not processes_mentioning(job_id), what="the workers to die with the driver")


def test_exit_sleeper_wakes_when_the_driver_exits_and_refuses_other_processes():
    import socket
    import time

    from rxjobs.engines.drivers import exit_sleeper

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    try:
        me = psutil.Process(proc.pid)
        handle = {"host": socket.gethostname(), "pid": proc.pid, "create_time": me.create_time()}
        assert exit_sleeper({**handle, "host": "elsewhere"}) is None
        assert exit_sleeper({**handle, "create_time": me.create_time() - 100}) is None  # a reused pid
        sleeper = exit_sleeper(handle)
        assert sleeper is not None
        started = time.monotonic()
        sleeper(300.0)  # returns when the process exits, long before 300 s
        assert time.monotonic() - started < 150
        assert proc.wait(timeout=60) == 0
        sleeper.close()
        sleeper.close()  # closing twice is harmless
    finally:
        proc.kill()
        proc.wait()


def where_it_runs(tag: str) -> dict:
    """What a pool worker took on from the request: environment, working directory,
    ``sys.path``, umask, title."""
    me = psutil.Process()
    umask = os.umask(0o077)
    os.umask(umask)
    return {"pid": me.pid, "ppid": os.getppid(), "mark": os.environ.get("RXJOBS_TEST_MARK"),
            "cwd": os.getcwd(), "title": " ".join(me.cmdline()), "on_path": tag in sys.path,
            "umask": umask}


def _prepared_pool_of_spare(server_pid: int) -> tuple[psutil.Process, list[psutil.Process]] | None:
    spares = processes_mentioning(f"rxjobs fork-server spare driver (server {server_pid})")
    if len(spares) != 1:
        return None
    pool = [p for p in spares[0].children() if "rxjobs prepared pool worker" in " ".join(p.cmdline())]
    return (spares[0], pool) if len(pool) == 2 else None


def test_fork_server_forks_the_next_drivers_pool_ahead_and_its_workers_take_on_the_request(
        share_path, tmp_path, monkeypatch):
    """After a job of two workers, the fork server's next spare driver has two pool workers
    forked ahead; the next such job runs its tasks in them, each with what the request
    brought (environment, working directory, ``sys.path``, umask) and the job's title, and
    they end with the job."""
    from rxjobs.engines import forkserver

    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=share_path)
    first = rx_exec(where_it_runs, tag=["x", "y"], compute_context=cc, task_chunk_size=1)
    assert rx_wait_for_job(first, progress=False) is S.FINISHED
    rx_get_job_results(first)
    server = [s for s in forkserver.list_servers() if s["key"] == forkserver.server_key()]
    assert len(server) == 1
    spare, pool = wait_until(lambda: _prepared_pool_of_spare(server[0]["pid"]),
                             what="the spare driver's two pool workers")
    extra = tmp_path / "on the path"
    monkeypatch.setenv("RXJOBS_TEST_MARK", "second job")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(extra))
    old_umask = os.umask(0o027)
    try:
        second = rx_exec(where_it_runs, tag=[str(extra)] * 2, compute_context=cc, task_chunk_size=1)
    finally:
        os.umask(old_umask)
    assert rx_wait_for_job(second, progress=False) is S.FINISHED
    results = rx_get_job_results(second)
    assert {r["pid"] for r in results} <= {p.pid for p in pool}
    for r in results:
        assert r["ppid"] == spare.pid  # the spare became the job's driver
        assert r["mark"] == "second job"
        assert r["cwd"] == str(tmp_path)
        assert r["on_path"] and r["umask"] == 0o027
        assert second.job_id in r["title"] and "rxjobs.engines.local" in r["title"]
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in pool),
               what="the prepared workers to end with the job")


@pytest.mark.parametrize(("prepared", "workers", "tasks", "fits"), [
    (2, 2, 2, True),
    (2, 2, 27, True),
    (2, 2, 1, True),  # one idle worker: still never more at once than asked
    (2, 4, 2, True),  # two tasks run two at a time either way
    (2, 4, 8, False),  # the job would run four at once
    (4, 2, 8, False),  # never more at once than the job asks
    (1, 1, 5, True),
])
def test_a_prepared_pool_is_used_only_when_it_runs_tasks_as_the_job_asks(prepared, workers, tasks, fits):
    from rxjobs.engines.local import pool_fits

    assert pool_fits(prepared, workers, tasks) is fits
