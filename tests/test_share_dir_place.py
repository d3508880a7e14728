"""A share dir is a place, not a string: jobs are found wherever the directory is reached from.

Each test submits (or writes) jobs through one spelling of a share dir and
looks for them through another: the directory moved, a symlink, a relative
path, ``~``, and two mount points of one directory (symlinks standing in for
bind mounts).  Context matching compares engine addresses and settings, never
share-dir paths.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from rxjobs import (
    RxComputeContext,
    RxDask,
    RxLocalParallel,
    RxLocalSeq,
    RxRemoteJob,
    RxRemoteJobStatus,
    RxSpark,
    rx_exec,
    rx_get_job_results,
    rx_get_job_status,
    rx_get_jobs,
    rx_wait_for_job,
)
from rxjobs.cli import cli
from rxjobs.errors import EngineNotInstalledError
from rxjobs.store import open_store

from conftest import kill_processes_mentioning
from engine_contract import square
from factory import make_job

pytestmark = pytest.mark.timeout(180)


def _context(make: Callable[[], RxComputeContext]) -> RxComputeContext:
    try:
        return make()
    except EngineNotInstalledError as exc:
        pytest.skip(str(exc))


# -- the pure rule ------------------------------------------------------------------------

LP = RxLocalParallel
A, B = "/data/share", "/mnt/elsewhere/share"


@pytest.mark.parametrize(("submitted", "asked", "matches", "exact"), [
    # The same engine: a match, wherever the share dir was spelled.
    (lambda: LP(share_dir=A), lambda: LP(share_dir=A), True, True),
    (lambda: LP(share_dir=A), lambda: LP(share_dir=B), True, True),
    (lambda: LP(share_dir=A), lambda: LP(share_dir="s3://bucket/jobs"), True, True),
    (lambda: LP(share_dir=A, share_dir_options={"endpoint_url": "http://in:9000"}),
     lambda: LP(share_dir=B, share_dir_options={"endpoint_url": "http://out:9000"}), True, True),
    # Other settings count for an exact match only.
    (lambda: LP(share_dir=A, num_workers=2), lambda: LP(share_dir=B, num_workers=3), True, False),
    (lambda: LP(share_dir=A, wait=False), lambda: LP(share_dir=A), True, False),
    (lambda: LP(share_dir=A, expires_after="7d"), lambda: LP(share_dir=B, expires_after="7d"), True, True),
    # RxLocalSeq runs on this host too; an exact match needs the same kind.
    (lambda: LP(share_dir=A), lambda: RxLocalSeq(), True, False),
    # Another engine address is another engine.
    (lambda: RxDask("tcp://h:8786", share_dir=A), lambda: RxDask("tcp://h:8786", share_dir=B), True, True),
    (lambda: RxDask("tcp://h:8786", share_dir=A), lambda: RxDask("tcp://g:8786", share_dir=A), False, False),
    (lambda: RxDask("tcp://h:8786", share_dir=A), lambda: LP(share_dir=A), False, False),
    (lambda: RxSpark("yarn", share_dir=A), lambda: RxSpark("yarn", share_dir=B), True, True),
    (lambda: RxSpark("yarn", share_dir=A, executor_mem="4g"), lambda: RxSpark("yarn", share_dir=B),
     True, False),
    (lambda: RxSpark("yarn", share_dir=A), lambda: RxSpark("local[2]", share_dir=A), False, False),
], ids=["same", "other path", "object store", "other endpoint", "num_workers", "wait", "expires_after",
        "RxLocalSeq", "dask other path", "dask other scheduler", "dask vs local", "spark other path",
        "spark executor_mem", "spark other master"])
def test_matching_compares_engines_and_settings_never_share_dir_paths(submitted, asked, matches, exact):
    job_cc, cc = _context(submitted), _context(asked)
    # As a listing sees it: the context rebuilt from job.json.
    stored = RxComputeContext.from_dict(json.loads(json.dumps(job_cc.to_dict())))
    assert stored.matches(cc) is matches
    assert stored.matches(cc, exact_match=True) is exact


# -- real share dirs, reached through other paths ------------------------------------------


def _listed(share: str, exact_cc: RxComputeContext | None = None) -> list[str]:
    """The ids rx_get_jobs finds through ``share``, and check the CLI finds the same."""
    cc = exact_cc or RxLocalParallel(share_dir=share)
    jobs = rx_get_jobs(cc, exact_match=exact_cc is not None, verbose=False)
    for job in jobs:
        assert job.share_dir == os.path.abspath(os.path.expanduser(share))  # where it was found
    result = CliRunner().invoke(cli, ["--share-dir", share, "list", "--json"])
    assert result.exit_code == 0, result.output
    assert [row["job_id"] for row in json.loads(result.stdout)] == [job.job_id for job in jobs]
    return [job.job_id for job in jobs]


def test_a_moved_share_dir_keeps_its_jobs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("runs")
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir="runs/a")
    try:
        submitted = rx_exec(square, x=[1, 2, 3], compute_context=cc)
        assert rx_wait_for_job(submitted, timeout=120) is RxRemoteJobStatus.FINISHED
    finally:
        kill_processes_mentioning(str(tmp_path / "runs"))
    os.rename("runs/a", "runs/b")  # mv runs/a runs/b

    assert _listed("runs/b") == [submitted.job_id]
    moved = RxLocalParallel(num_workers=2, wait=False, share_dir="runs/b")
    assert _listed("runs/b", exact_cc=moved) == [submitted.job_id]
    assert rx_get_jobs(RxLocalParallel(num_workers=3, wait=False, share_dir="runs/b"),
                       exact_match=True, verbose=False) == []
    # The job found there is whole: state, results, and the one way to name it.
    [job] = rx_get_jobs(moved, verbose=False)
    assert job == RxRemoteJob(moved, submitted.job_id)
    assert job == RxRemoteJob.deserialize_job(submitted.job_id, moved)
    assert rx_get_job_status(job) is RxRemoteJobStatus.FINISHED
    assert rx_get_job_results(job) == [1, 4, 9]
    assert _listed("runs/b") == []


def _one_job(share: str) -> str:
    """An ended job submitted to ``share``, spelled so: its job.json names that spelling."""
    return make_job(open_store(share), "failed", share_url=share).job_id


def test_a_share_dir_reached_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    via_real = _one_job(str(real))
    via_link = _one_job(str(tmp_path / "link"))
    assert _listed(str(tmp_path / "link")) == sorted([via_real, via_link])
    assert _listed(str(real)) == sorted([via_real, via_link])


def test_a_relative_share_dir(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    job_id = _one_job("runs")
    assert _listed(str(tmp_path / "work" / "runs")) == [job_id]
    monkeypatch.chdir(tmp_path)
    assert _listed("work/runs") == [job_id]
    assert _listed("./work/../work/runs") == [job_id]


def test_a_share_dir_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    tilde = _one_job("~/share")
    absolute = _one_job(str(tmp_path / "home" / "share"))
    assert _listed("~/share") == sorted([tilde, absolute])
    # HOME elsewhere now: the absolute spelling still finds both.
    monkeypatch.setenv("HOME", str(tmp_path / "other-home"))
    assert _listed(str(tmp_path / "home" / "share")) == sorted([tilde, absolute])


def test_one_directory_mounted_at_two_paths(tmp_path):
    # Two mount points of one shared filesystem, as two hosts of a cluster see it.
    (tmp_path / "export").mkdir()
    for mount in ("mnt-node1", "mnt-node2"):
        (tmp_path / mount).symlink_to(tmp_path / "export", target_is_directory=True)
    on_node1 = _one_job(str(tmp_path / "mnt-node1" / "share"))
    on_node2 = _one_job(str(tmp_path / "mnt-node2" / "share"))
    for mount in ("mnt-node1", "mnt-node2"):
        assert _listed(str(tmp_path / mount / "share")) == sorted([on_node1, on_node2])
