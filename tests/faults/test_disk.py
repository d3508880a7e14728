"""Guarantee 6: a full or read-only share dir fails cleanly and leaves nothing behind.

Uses a small tmpfs (and a read-only bind mount) where this machine allows
mounting (root in a sandbox that permits it); otherwise these tests skip.
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from rxjobs import RxLocalParallel, RxRemoteJobStatus, rx_exec, rx_wait_for_job
from rxjobs.jobs import job_status
from rxjobs.store import MARKER, open_store

from conftest import kill_processes_mentioning, processes_mentioning

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]
S = RxRemoteJobStatus


def big_result(n):
    return b"x" * n


def _mount(*args: str) -> bool:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    return done.returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    """A 512 KiB tmpfs, unmounted afterwards whatever happens."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs",
                                       str(where)):
        pytest.skip("cannot mount a tmpfs here (needs root and a sandbox that allows it)")
    yield where
    kill_processes_mentioning(str(where))
    subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(path) -> None:
    # Unbuffered: a buffered file would try to flush its rest again when closed.
    with open(path / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_submit_to_a_full_share_dir_fails_before_running_and_leaves_nothing(tmpfs):
    share = tmpfs / "share"
    open_store(str(share)).ensure_root()
    _fill(tmpfs)
    cc = RxLocalParallel(num_workers=1, wait=False, share_dir=str(share))
    with pytest.raises(OSError) as info:
        rx_exec(big_result, n=[10], compute_context=cc)
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(share) == [MARKER]
    assert processes_mentioning(str(share)) == []


def test_a_worker_that_cannot_write_its_result_fails_the_job_with_the_reason(tmpfs):
    share = str(tmpfs / "share")
    cc = RxLocalParallel(num_workers=1, wait=False, share_dir=share)
    job = rx_exec(big_result, n=[2_000_000], compute_context=cc)
    assert rx_wait_for_job(job, timeout=120) is S.FAILED
    assert "No space left on device" in job_status(open_store(share), job.job_id).reason


def test_submit_to_a_read_only_share_dir_fails_and_leaves_nothing(tmp_path):
    share = tmp_path / "ro-share"
    open_store(str(share)).ensure_root()
    if os.geteuid() != 0 or not _mount("--bind", str(share), str(share)):
        pytest.skip("cannot bind-mount here (needs root and a sandbox that allows it)")
    try:
        if not _mount("-o", "remount,bind,ro", str(share)):
            pytest.skip("cannot remount read-only here")
        cc = RxLocalParallel(num_workers=1, wait=False, share_dir=str(share))
        with pytest.raises(OSError, match="not writable"):
            rx_exec(big_result, n=[1], compute_context=cc)
        assert os.listdir(share) == [MARKER]
    finally:
        subprocess.run(["umount", "-l", str(share)], check=False)
