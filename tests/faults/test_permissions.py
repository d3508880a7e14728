"""Guarantee 5: private share dirs, no unpickling from writable dirs, others' jobs untouched."""

from __future__ import annotations

import os
import stat
import warnings

import pytest

from rxjobs import (
    RxLocalParallel,
    RxRemoteJob,
    RxRemoteJobStatus,
    UntrustedShareDirError,
    rx_cleanup_jobs,
    rx_exec,
    rx_get_job_results,
    rx_wait_for_job,
)
from rxjobs.store import open_store

from conftest import kill_processes_mentioning
from factory import make_job

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]
S = RxRemoteJobStatus
NOBODY = 65534


def double(x):
    return 2 * x


@pytest.fixture
def share(tmp_path):
    path = str(tmp_path / "share")
    yield path
    kill_processes_mentioning(path)


def test_job_dirs_are_0700_and_files_0600_whatever_the_umask(share):
    old = os.umask(0)
    try:
        results = rx_exec(double, x=[1, 2], auto_cleanup=False,
                          compute_context=RxLocalParallel(num_workers=1, share_dir=share))
    finally:
        os.umask(old)
    assert results == [2, 4]
    modes = {}
    for dirpath, dirnames, filenames in os.walk(share):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            modes[os.path.relpath(path, share)] = stat.S_IMODE(os.lstat(path).st_mode)
    assert stat.S_IMODE(os.stat(share).st_mode) == 0o700
    for rel, mode in modes.items():
        assert mode & 0o077 == 0, f"{rel} is {mode:o}"


def test_results_are_not_unpickled_from_a_share_dir_others_can_write(share, monkeypatch):
    job = make_job(open_store(share), "unretrieved")
    remote = RxRemoteJob(RxLocalParallel(share_dir=share), job.job_id)
    os.chmod(share, 0o777)
    with pytest.raises(UntrustedShareDirError, match="lets others rename its entries"):
        rx_get_job_results(remote, auto_cleanup=False)
    monkeypatch.setenv("RXJOBS_TRUST_SHARE_DIR", "1")  # the explicit opt-in
    assert rx_get_job_results(remote, auto_cleanup=False) == job.values


def test_workers_refuse_a_payload_from_a_writable_share_dir(share):
    open_store(share).ensure_root()
    os.chmod(share, 0o777)
    job = rx_exec(double, x=[1], compute_context=RxLocalParallel(num_workers=1, wait=False,
                                                                  share_dir=share))
    assert rx_wait_for_job(job, timeout=120) is S.FAILED
    from rxjobs.jobs import job_status

    assert "lets others rename its entries" in job_status(open_store(share), job.job_id).reason


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a job dir to another user")
def test_a_job_of_another_user_is_never_removed_nor_read(share):
    store = open_store(share)
    job = make_job(store, "failed")
    theirs = make_job(store, "unretrieved")
    os.chown(store.paths(theirs.job_id).dir, NOBODY, NOBODY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jobs_ = [RxRemoteJob(RxLocalParallel(share_dir=share), j.job_id) for j in (job, theirs)]
        report = rx_cleanup_jobs(jobs_, force=True, verbose=False)
    assert [e.outcome for e in report] == ["removed", "kept"]
    assert "another user" in report.entries[1].reason
    with pytest.raises(UntrustedShareDirError, match="owned by uid"):
        rx_get_job_results(jobs_[1])
    assert store.list_job_ids() == [theirs.job_id]
