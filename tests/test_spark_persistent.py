"""Persistent Spark (``RxSpark(persistent_run=True)``, ``rx_spark_connect``) on real ``local[2]``.

One Spark application, held by a server process, runs many jobs.  Most tests
share one server (module fixture); those that kill, time out, disconnect or
reset a server start their own.  Every server a test starts is stopped when
it ends, passed or failed, with every process below it (JVM, Python workers).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest

from rxjobs import (
    RxLocalSeq,
    RxRemoteJobStatus,
    RxRunWarning,
    RxSpark,
    rx_cancel_job,
    rx_exec,
    rx_get_compute_context,
    rx_get_job_output,
    rx_get_job_results,
    rx_get_job_status,
    rx_get_jobs,
    rx_set_compute_context,
    rx_spark_connect,
    rx_spark_disconnect,
    rx_wait_for_job,
)
from rxjobs.engines import spark_client, spark_protocol
from rxjobs.jobs import job_status
from rxjobs.records import read_engine_record
from rxjobs.store import open_store

from conftest import (
    kill_processes_mentioning,
    live,
    process_tree,
    processes_mentioning,
    wait_until,
)
from engine_contract import fail_on_three, sleep_then_return, square

pytest.importorskip("pyspark")

S = RxRemoteJobStatus
CHEAP_JVM = {
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    "spark.driver.memory": "512m",
}


# -- fixtures ---------------------------------------------------------------------------------


class Servers:
    """A private runtime dir and share dir; every server started in them is stopped at the end."""

    def __init__(self, base: str) -> None:
        self.runtime = os.path.join(base, "run")  # short: a Unix socket path has ~100 bytes
        self.share = os.path.join(base, "spark share ü")
        self._saved = os.environ.get(spark_protocol.RUNTIME_DIR_ENV)
        os.environ[spark_protocol.RUNTIME_DIR_ENV] = self.runtime  # subprocesses inherit it
        self.contexts: list[RxSpark] = []

    def context(self, wait: bool = False, **settings) -> RxSpark:
        settings.setdefault("extra_spark_config", CHEAP_JVM)
        settings.setdefault("idle_timeout", 900)
        cc = RxSpark(master="local[2]", wait=wait, share_dir=self.share, persistent_run=True,
                     **settings)
        self.contexts.append(cc)
        return cc

    def record(self, cc: RxSpark) -> dict | None:
        return spark_protocol.read_record(spark_protocol.ServerPaths.of(cc))

    def server(self, cc: RxSpark) -> psutil.Process:
        record = wait_until(lambda: self.record(cc), timeout=60, what="the server record")
        return psutil.Process(record["pid"])

    def close(self) -> None:
        try:
            for cc in self.contexts:
                try:
                    rx_spark_disconnect(cc)
                except Exception:
                    pass
        finally:
            kill_processes_mentioning(self.runtime)
            kill_processes_mentioning(self.share)
            if self._saved is None:
                os.environ.pop(spark_protocol.RUNTIME_DIR_ENV, None)
            else:
                os.environ[spark_protocol.RUNTIME_DIR_ENV] = self._saved


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture
def servers():
    """Servers of this test alone (stopped, and their processes killed, at the end)."""
    with tempfile.TemporaryDirectory(prefix="rxsp-") as base:
        own = Servers(base)
        try:
            yield own
        finally:
            own.close()


@pytest.fixture(scope="module")
def shared():
    """One server shared by the module's tests: started by the first job that needs it."""
    saved = os.environ.get("SPARK_LOCAL_IP")
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    with tempfile.TemporaryDirectory(prefix="rxsp-") as base:
        own = Servers(base)
        try:
            yield own
        finally:
            own.close()
            if saved is None:
                os.environ.pop("SPARK_LOCAL_IP", None)
            else:
                os.environ["SPARK_LOCAL_IP"] = saved


def _handle(share: str, job_id: str) -> dict:
    store = open_store(share)
    return read_engine_record(store, job_id).handle


def _details(share: str, job_id: str) -> dict:
    store = open_store(share)
    return store.read_json(store.paths(job_id).status_json).get("details", {})


def _jvms_below(server: psutil.Process) -> set[int]:
    return {p.pid for p in live(process_tree([server])) if p.name() == "java"}


def _tree_with_workers(server: psutil.Process, workers: int) -> list[psutil.Process]:
    """The server and everything below it, once ``workers`` PySpark workers run tasks."""

    def tree():
        procs = live(process_tree([server]))
        names = []
        for proc in procs:
            try:
                names.append(" ".join(proc.cmdline()))
            except psutil.NoSuchProcess:
                pass
        # The daemon and its forked workers share one command line.
        return procs if sum("pyspark.daemon" in n for n in names) >= workers + 1 else None

    return wait_until(tree, timeout=120, what=f"{workers} PySpark workers to run tasks")


# -- one server, many jobs --------------------------------------------------------------------


@pytest.mark.timeout(400)
@pytest.mark.slow
def test_jobs_share_one_server_and_one_jvm(shared):
    cc = shared.context()
    first = rx_exec(square, x=list(range(10)), compute_context=cc)
    assert rx_wait_for_job(first, timeout=300) is S.FINISHED
    server = shared.server(cc)
    jvms = _jvms_below(server)
    assert len(jvms) == 1
    second = rx_exec(square, x=list(range(10, 20)), compute_context=cc)
    assert rx_wait_for_job(second, timeout=120) is S.FINISHED
    # Both jobs name the same server and ran in the same Spark application and JVM.
    assert _handle(shared.share, first.job_id)["pid"] == server.pid
    assert _handle(shared.share, second.job_id)["pid"] == server.pid
    apps = {_details(shared.share, j.job_id)["spark_application_id"] for j in (first, second)}
    assert len(apps) == 1
    assert _jvms_below(server) == jvms
    assert not processes_mentioning(second.job_id)  # no per-job driver, no per-job JVM
    # Listed with the other jobs of the share dir and master, persistent or not.
    listed = rx_get_jobs(RxSpark(master="local[2]", share_dir=shared.share), verbose=False)
    assert {first, second} <= set(listed)
    assert all(j.compute_context.persistent_run for j in listed if j in (first, second))
    assert rx_get_job_results(first) == [x * x for x in range(10)]
    assert rx_get_job_results(second) == [x * x for x in range(10, 20)]
    # `ps` shows what the server is and which share dir it serves; its JVM names the server.
    command = " ".join(server.cmdline())
    assert "rxjobs.engines.spark_server" in command and shared.share in command
    key = spark_protocol.ServerPaths.of(cc).key
    assert key in command
    assert all(key in " ".join(psutil.Process(pid).cmdline()) for pid in jvms)


@pytest.mark.timeout(300)
def test_waiting_job_returns_results_and_captures_output(shared):
    seen = []
    results = rx_exec(square, x=list(range(12)), compute_context=shared.context(wait=True),
                      task_chunk_size=5, callback=seen.append)
    assert results == [x * x for x in range(12)]
    assert sorted(seen) == sorted(results)
    job = rx_exec(square, x=list(range(6)), compute_context=shared.context(), task_chunk_size=1)
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    output = rx_get_job_output(job)
    assert [ln for ln in output.splitlines() if ln.startswith("squaring")] == [
        f"squaring {x}" for x in range(6)]
    assert rx_get_job_results(job) == [x * x for x in range(6)]
    assert open_store(shared.share).list_job_ids() == []


@pytest.mark.timeout(300)
def test_failing_run_when_continuing_keeps_the_exception_in_its_slot(shared):
    job = rx_exec(fail_on_three, x=list(range(6)), compute_context=shared.context(),
                  task_chunk_size=2)
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    with pytest.warns(RxRunWarning, match="1 of 6 runs raised"):
        results = rx_get_job_results(job)
    assert results[:3] == [0, 1, 2] and results[4:] == [4, 5]
    assert isinstance(results[3], ValueError)
    assert "no threes please" in results[3].remote_traceback


@pytest.mark.timeout(300)
def test_failing_run_when_not_continuing_fails_the_job_and_not_the_server(shared):
    cc = shared.context()
    job = rx_exec(fail_on_three, x=list(range(6)), compute_context=cc, continue_on_failure=False)
    assert rx_wait_for_job(job, timeout=120) is S.FAILED
    assert "run 3 raised ValueError" in job_status(open_store(shared.share), job.job_id).reason
    with pytest.raises(ValueError, match="no threes please"):
        rx_exec(fail_on_three, x=list(range(6)), compute_context=shared.context(wait=True),
                continue_on_failure=False)
    assert rx_exec(square, x=[1, 2], compute_context=shared.context(wait=True)) == [1, 4]
    assert _handle(shared.share, job.job_id)["pid"] == shared.server(cc).pid


@pytest.mark.timeout(400)
def test_cancel_stops_the_job_on_the_server_which_runs_the_next_one(shared):
    cc = shared.context()
    job = rx_exec(sleep_then_return, seconds=[300] * 4, compute_context=cc, task_chunk_size=1)
    wait_until(lambda: rx_get_job_status(job) is S.RUNNING, timeout=120, what="job to run")
    server = shared.server(cc)
    _tree_with_workers(server, workers=2)
    started = time.monotonic()
    assert rx_cancel_job(job) is True
    assert time.monotonic() - started < 60  # a second or two unloaded
    assert rx_get_job_status(job) is S.CANCELED
    assert isinstance(rx_get_job_output(job), str)
    assert server.is_running()
    # The slots are free again: a job needing both of them finishes.
    nxt = rx_exec(square, x=[1, 2, 3, 4], compute_context=cc, task_chunk_size=1)
    assert rx_wait_for_job(nxt, timeout=120) is S.FINISHED
    assert _handle(shared.share, nxt.job_id)["pid"] == server.pid
    assert rx_get_job_results(nxt) == [1, 4, 9, 16]


@pytest.mark.timeout(400)
def test_job_submitted_by_one_process_is_waited_for_by_another(shared):
    cc = shared.context()
    rx_exec(square, x=[0], compute_context=cc)  # the server is up before the subprocesses
    here = os.path.dirname(__file__)
    settings = dict(master="local[2]", share_dir=shared.share, persistent_run=True,
                    extra_spark_config=CHEAP_JVM, idle_timeout=900)
    submit = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {here!r})
        from engine_contract import square
        from rxjobs import RxSpark, rx_exec
        cc = RxSpark(wait=False, **{settings!r})
        print(rx_exec(square, x=list(range(10)), compute_context=cc).job_id)
    """)
    done = subprocess.run([sys.executable, "-c", submit], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert _handle(shared.share, job_id)["pid"] == shared.server(cc).pid
    collect = textwrap.dedent(f"""
        import json
        from rxjobs import RxRemoteJob, RxSpark, rx_get_job_results, rx_wait_for_job
        job = RxRemoteJob.deserialize_job({job_id!r}, RxSpark(**{settings!r}))
        print(rx_wait_for_job(job, timeout=300).value)
        print(json.dumps(rx_get_job_results(job)))
    """)
    done = subprocess.run([sys.executable, "-c", collect], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    status, results = done.stdout.split("\n", 1)
    assert status == "finished"
    assert json.loads(results) == [x * x for x in range(10)]


@pytest.mark.timeout(300)
def test_waiting_wakes_when_the_server_says_the_job_ended(shared):
    cc = shared.context()
    rx_exec(square, x=[0], compute_context=cc)
    job = rx_exec(sleep_then_return, seconds=[1], compute_context=cc)
    sleep = spark_client.PersistentServerBackend().sleeper(_handle(shared.share, job.job_id))
    assert sleep is not None
    try:
        started = time.monotonic()
        sleep(200.0)  # returns when the server answers that the job ended
        assert time.monotonic() - started < 100
    finally:
        sleep.close()
    assert rx_get_job_status(job) is S.FINISHED
    assert rx_get_job_results(job) == [1]


# -- servers of their own ---------------------------------------------------------------------


@pytest.mark.timeout(400)
@pytest.mark.slow
def test_sigkill_of_the_server_fails_its_job_and_leaves_no_process(servers):
    cc = servers.context()
    job = rx_exec(sleep_then_return, seconds=[300] * 4, compute_context=cc, task_chunk_size=1)
    wait_until(lambda: rx_get_job_status(job) is S.RUNNING, timeout=180, what="job to run")
    server = servers.server(cc)
    tree = _tree_with_workers(server, workers=2)
    key = spark_protocol.ServerPaths.of(cc).key
    os.kill(server.pid, signal.SIGKILL)
    wait_until(lambda: rx_get_job_status(job) is S.FAILED, timeout=60, what="FAILED")
    assert "driver lost" in job_status(open_store(servers.share), job.job_id).reason
    # The JVM exits when its stdin pipe from the dead server closes; its Python daemon
    # and workers follow it.
    wait_until(lambda: not live(tree), timeout=90, what="the JVM and Python workers to exit")
    assert not processes_mentioning(key)
    # A dead server's record is not mistaken for a live one: the next job starts another.
    assert rx_exec(square, x=[3], compute_context=servers.context(wait=True)) == [9]
    assert servers.server(cc).pid != server.pid


@pytest.mark.timeout(400)
@pytest.mark.slow
def test_idle_server_exits_and_the_next_job_starts_a_new_one(servers):
    cc = rx_spark_connect(master="local[2]", share_dir=servers.share, idle_timeout=5,
                          extra_spark_config=CHEAP_JVM)
    servers.contexts.append(cc)
    assert cc.persistent_run and cc.idle_timeout == 5
    server = servers.server(cc)
    tree = live(process_tree([server]))
    assert rx_exec(square, x=[1, 2], compute_context=cc) == [1, 4]
    # (On a loaded machine the server may have timed out before that job came; the job
    # then started another, which times out in turn.)
    wait_until(lambda: servers.record(cc) is None and not live(tree)
               and not processes_mentioning(servers.runtime),
               timeout=180, what="the idle server and its processes to exit")
    assert rx_exec(square, x=[5], compute_context=cc) == [25]  # starts a new server
    again = servers.server(cc)
    assert again.pid != server.pid
    assert rx_spark_disconnect(cc) is True
    wait_until(lambda: not live([again]), timeout=60, what="the new server to exit")


@pytest.mark.timeout(400)
@pytest.mark.slow
def test_disconnect_fails_running_jobs_and_stops_everything(servers):
    cc = rx_spark_connect(master="local[2]", share_dir=servers.share, extra_spark_config=CHEAP_JVM,
                          wait=False)
    servers.contexts.append(cc)
    server = servers.server(cc)
    job = rx_exec(sleep_then_return, seconds=[300] * 2, compute_context=cc, task_chunk_size=1)
    wait_until(lambda: rx_get_job_status(job) is S.RUNNING, timeout=120, what="job to run")
    tree = _tree_with_workers(server, workers=2)
    rx_set_compute_context(cc)
    assert rx_spark_disconnect() is True
    assert not live(tree)  # returns once the server, its JVM and workers are gone
    assert isinstance(rx_get_compute_context(), RxLocalSeq)  # as RevoScaleR's rxSparkDisconnect
    assert rx_get_job_status(job) is S.FAILED
    assert "rx_spark_disconnect" in job_status(open_store(servers.share), job.job_id).reason
    assert servers.record(cc) is None
    assert rx_spark_disconnect(cc) is False  # nothing left to stop


@pytest.mark.timeout(400)
@pytest.mark.slow
def test_connect_with_reset_replaces_the_server(servers):
    settings = dict(master="local[2]", share_dir=servers.share, extra_spark_config=CHEAP_JVM)
    cc = rx_spark_connect(**settings)
    servers.contexts.append(cc)
    first = servers.server(cc)
    assert rx_spark_connect(**settings) == cc  # reused
    assert servers.server(cc).pid == first.pid
    old_tree = live(process_tree([first]))
    rx_spark_connect(reset=True, **settings)
    assert not live(old_tree)
    second = servers.server(cc)
    assert second.pid != first.pid
    assert rx_exec(square, x=[2, 3], compute_context=cc) == [4, 9]


# -- settings, without a JVM ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_persistent_settings_are_stored_and_read_back(tmp_path):
    cc = RxSpark(master="local[2]", share_dir=str(tmp_path), persistent_run=True, idle_timeout=60)
    again = RxSpark.from_dict(json.loads(json.dumps(cc.to_dict())))
    assert again == cc and again.persistent_run and again.idle_timeout == 60
    # A record written before these settings existed reads back with the defaults.
    old = cc.to_dict()
    del old["settings"]["persistent_run"], old["settings"]["idle_timeout"]
    assert RxSpark.from_dict(old) == RxSpark(master="local[2]", share_dir=str(tmp_path))
    # Matching by share dir and master ignores them; exact matching does not.
    plain = RxSpark(master="local[2]", share_dir=str(tmp_path))
    assert cc.matches(plain) and not cc.matches(plain, exact_match=True)
    with pytest.raises(TypeError, match="idle_timeout"):
        RxSpark(master="local[2]", share_dir=str(tmp_path), idle_timeout="1h")
    with pytest.raises(TypeError, match="persistent_run"):
        RxSpark(master="local[2]", share_dir=str(tmp_path), persistent_run="yes")


@pytest.mark.timeout(60)
def test_one_server_key_per_share_dir_master_and_spark_settings(tmp_path):
    base = dict(master="local[2]", share_dir=str(tmp_path / "a"), extra_spark_config=CHEAP_JVM)
    key = spark_protocol.server_key(RxSpark(**base))
    assert spark_protocol.server_key(RxSpark(**base, wait=False, persistent_run=True,
                                           idle_timeout=5, console_output=True)) == key
    assert spark_protocol.server_key(RxSpark(**{**base, "share_dir": str(tmp_path / "b")})) != key
    assert spark_protocol.server_key(RxSpark(**{**base, "master": "local[1]"})) != key
    assert spark_protocol.server_key(RxSpark(**base, driver_mem="1g")) != key
    conf = spark_protocol.server_spark_conf(RxSpark(**base), key)
    assert conf["spark.rxjobs.server"] == key and "spark.rxjobs.jobId" not in conf


@pytest.mark.timeout(60)
def test_runtime_dir_must_be_private(tmp_path, monkeypatch):
    shared_dir = tmp_path / "run"
    shared_dir.mkdir(mode=0o755)
    shared_dir.chmod(0o755)
    monkeypatch.setenv(spark_protocol.RUNTIME_DIR_ENV, str(shared_dir))
    with pytest.raises(PermissionError, match="only you can access"):
        spark_protocol.runtime_dir()
    shared_dir.chmod(0o700)
    assert spark_protocol.runtime_dir() == str(shared_dir)
