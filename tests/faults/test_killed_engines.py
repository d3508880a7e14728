"""Guarantee 3: a driver or worker killed with SIGKILL makes the job FAILED, fast.

The state is probe-driven: no timer guesses.  Each test measures the time
from the kill to FAILED and requires it within 10 s.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from rxjobs import RxLocalParallel, RxRemoteJobStatus, rx_exec, rx_get_job_status
from rxjobs.jobs import job_status
from rxjobs.records import read_engine_record
from rxjobs.store import open_store

from conftest import kill_processes_mentioning, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]
S = RxRemoteJobStatus


def nap(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return seconds


@pytest.fixture
def share(tmp_path):
    path = str(tmp_path / "share")
    yield path
    kill_processes_mentioning(path)


def _running_job(share: str):
    job = rx_exec(nap, seconds=[300] * 2, compute_context=RxLocalParallel(
        num_workers=2, wait=False, share_dir=share))
    wait_until(lambda: rx_get_job_status(job) is S.RUNNING, what="job to run")
    store = open_store(share)
    handle = read_engine_record(store, job.job_id).handle
    driver = psutil.Process(handle["pid"])
    wait_until(lambda: len(driver.children()) >= 2, what="worker processes")
    return job, driver


def _seconds_to_failed(job) -> float:
    killed = time.monotonic()
    wait_until(lambda: rx_get_job_status(job) is S.FAILED, timeout=10,
               what="FAILED within 10 s of the kill")
    return time.monotonic() - killed


def test_killed_driver_makes_the_job_failed_within_10s(share, capsys):
    job, driver = _running_job(share)
    workers = driver.children()
    os.kill(driver.pid, signal.SIGKILL)
    took = _seconds_to_failed(job)
    assert "driver lost" in job_status(open_store(share), job.job_id).reason
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "workers outlived their driver"
    with capsys.disabled():
        print(f"\nkilled driver -> FAILED in {took:.2f} s")


def test_killed_worker_makes_the_job_failed_within_10s(share, capsys):
    job, driver = _running_job(share)
    os.kill(driver.children()[0].pid, signal.SIGKILL)
    took = _seconds_to_failed(job)
    assert "worker process died" in job_status(open_store(share), job.job_id).reason
    wait_until(lambda: not psutil.pid_exists(driver.pid) or
               driver.status() == psutil.STATUS_ZOMBIE, what="the driver to exit")
    with capsys.disabled():
        print(f"\nkilled worker -> FAILED in {took:.2f} s")
