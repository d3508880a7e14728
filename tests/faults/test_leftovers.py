"""Nothing rxjobs makes outside a share dir outlives its process.

Drivers of jobs on an object store (here S3, on the moto server) log to a file
of the rxjobs runtime dir; the persistent Spark server keeps its record,
socket, lock and log there.  Each test gives the processes it starts a
private temp dir (``TMPDIR``, with the runtime dir inside it, as by default),
runs one of the fault tests' kinds of ending — a driver or a worker killed
with SIGKILL, a cancel, a server killed — then what the user would run
(cleanup of the job, ``rx_spark_disconnect`` or ``rxjobs doctor --fix``), and
asserts that no rxjobs file of a dead process is left in the temp dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from rxjobs import (
    RxLocalParallel,
    RxRemoteJobStatus,
    rx_cancel_job,
    rx_cleanup_jobs,
    rx_exec,
    rx_get_job_status,
    rx_wait_for_job,
)
from rxjobs.records import read_engine_record
from rxjobs.runtime import RUNTIME_DIR_ENV, RuntimeKind, scan_runtime_dir
from rxjobs.store import open_store

from conftest import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]
S = RxRemoteJobStatus


def nap_and_say(seconds):
    print(f"napping {seconds}", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return seconds


@pytest.fixture
def private_tmp(monkeypatch) -> Path:
    """A temp dir of this test's own, for this process and every process it starts; removed
    when the test ends.  Its path is short (``/tmp/rxtmp-...``, not under ``tmp_path``, which a
    parallel run makes longer): the Unix sockets of the runtime dir in it must fit in ~100 bytes."""
    tmp = Path(tempfile.mkdtemp(prefix="rxtmp-", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.delenv(RUNTIME_DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def rxjobs_files_of_dead_processes(tmp: Path) -> list[str]:
    """rxjobs files in ``tmp`` (and its runtime dir) that no live process owns."""
    left = [str(p) for p in tmp.glob("rxjobs-*") if p.is_file()]
    runtime = tmp / f"rxjobs-{os.geteuid()}"
    if runtime.is_dir():
        left += [e.path for e in scan_runtime_dir(str(runtime)) if not e.alive]
    return sorted(left)


@pytest.fixture
def s3(s3_share, s3_server, private_tmp, monkeypatch):
    """A share dir on S3, whose jobs' drivers start as fresh interpreters that log to the
    runtime dir in ``private_tmp`` (not forked by the fork server: ``RXJOBS_FORK_SERVER=0``;
    these tests are about the drivers ``start_detached`` starts)."""
    from rxjobs.engines.forkserver import ENABLE_ENV

    monkeypatch.setenv(ENABLE_ENV, "0")
    return s3_share, dict(s3_server.options)


def _running_job(share: str, options: dict):
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=share, share_dir_options=options)
    job = rx_exec(nap_and_say, seconds=[300] * 2, compute_context=cc)
    wait_until(lambda: rx_get_job_status(job) is S.RUNNING, what="job to run")
    store = open_store(share, options)
    handle = read_engine_record(store, job.job_id).handle
    driver = psutil.Process(handle["pid"])
    wait_until(lambda: len(driver.children()) >= 2, what="worker processes")
    return job, driver


def _driver_logs(tmp: Path) -> list:
    return [e for e in scan_runtime_dir(str(tmp / f"rxjobs-{os.geteuid()}"))
            if e.kind is RuntimeKind.DRIVER_LOG]


def test_a_finished_job_on_s3_leaves_nothing_outside(s3, private_tmp):
    share, options = s3
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=share, share_dir_options=options)
    job = rx_exec(nap_and_say, seconds=[0, 0], compute_context=cc)
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    wait_until(lambda: not rxjobs_files_of_dead_processes(private_tmp), timeout=10,
               what="the driver to remove its log")


def test_a_killed_driver_log_is_held_while_its_workers_live_and_goes_with_cleanup(s3, private_tmp):
    share, options = s3
    job, driver = _running_job(share, options)
    (log,) = _driver_logs(private_tmp)
    assert log.alive and log.owner == job.job_id  # named after its job, held by the driver
    workers = driver.children()
    os.kill(driver.pid, signal.SIGKILL)
    wait_until(lambda: rx_get_job_status(job) is S.FAILED, what="driver lost")
    psutil.wait_procs(workers, timeout=10)
    assert rxjobs_files_of_dead_processes(private_tmp) == [log.path]  # the kill left it
    assert [e.outcome for e in rx_cleanup_jobs(job, verbose=False)] == ["removed"]
    assert rxjobs_files_of_dead_processes(private_tmp) == []


def test_a_killed_worker_fails_the_job_and_its_driver_cleans_up_after_itself(s3, private_tmp):
    share, options = s3
    job, driver = _running_job(share, options)
    os.kill(driver.children()[0].pid, signal.SIGKILL)
    wait_until(lambda: rx_get_job_status(job) is S.FAILED, what="the job to fail")
    wait_until(lambda: not psutil.pid_exists(driver.pid) or driver.status() == psutil.STATUS_ZOMBIE,
               what="the driver to exit")
    assert rxjobs_files_of_dead_processes(private_tmp) == []


def test_cancel_leaves_nothing_outside(s3, private_tmp):
    share, options = s3
    job, driver = _running_job(share, options)
    assert rx_cancel_job(job) is True
    assert not psutil.pid_exists(driver.pid) or driver.status() == psutil.STATUS_ZOMBIE
    assert rxjobs_files_of_dead_processes(private_tmp) == []
    assert rx_get_job_status(job) is S.CANCELED


def test_a_submission_that_fails_leaves_no_log(s3, private_tmp, monkeypatch):
    share, options = s3
    from rxjobs.engines import drivers

    def no_start(*args, **kwargs):
        drivers.open_driver_log(kwargs.get("log_path") or args[2], True)  # made, then failing
        raise RuntimeError("the driver did not start")

    monkeypatch.setattr(drivers, "start_detached", no_start)
    cc = RxLocalParallel(num_workers=1, wait=False, share_dir=share, share_dir_options=options)
    with pytest.raises(RuntimeError, match="did not start"):
        rx_exec(nap_and_say, seconds=[0], compute_context=cc)
    assert rxjobs_files_of_dead_processes(private_tmp) == []


@pytest.mark.timeout(400)
def test_a_killed_spark_server_leaves_files_that_doctor_removes(private_tmp, tmp_path, monkeypatch):
    """The persistent Spark server killed with SIGKILL (as in its fault test): its record,
    socket and log are those of a dead process; ``rxjobs doctor --fix`` removes them."""
    if not os.environ.get("CI"):  # in CI a missing install is a failure, never a skip
        pytest.importorskip("pyspark")
    from rxjobs import RxSpark, rx_spark_connect, rx_spark_disconnect
    from rxjobs.doctor import doctor
    from rxjobs.engines import spark_protocol

    from conftest import kill_processes_mentioning, live, process_tree

    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    share = str(tmp_path / "spark share")
    cc = rx_spark_connect(master="local[1]", share_dir=share, extra_spark_config={
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        "spark.driver.memory": "512m"})
    try:
        assert isinstance(cc, RxSpark)
        paths = spark_protocol.ServerPaths.of(cc)
        record = spark_protocol.read_record(paths)
        assert record is not None and rxjobs_files_of_dead_processes(private_tmp) == []
        server = psutil.Process(record["pid"])
        tree = live(process_tree([server]))
        os.kill(server.pid, signal.SIGKILL)
        wait_until(lambda: not live(tree), timeout=90, what="the server, its JVM and workers to exit")
        # A process the snapshot above did not see may hold the log a moment longer: the
        # files are the server's (alive) until it exits too.
        wait_until(lambda: {paths.record, paths.socket, paths.log} <= set(
            rxjobs_files_of_dead_processes(private_tmp)), timeout=60, what="its files to be a dead process's")
        report = doctor(open_store(share), fix=True)
        assert report.clean, report.to_json()
        assert rxjobs_files_of_dead_processes(private_tmp) == []
    finally:
        rx_spark_disconnect(cc)
        kill_processes_mentioning(share)
