"""The share-dir store: ids, paths, atomic writes, listing, crash-safe removal."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timezone

import pytest

from rxjobs import jobs
from rxjobs.status import RxRemoteJobStatus
from rxjobs.store import (
    JobNotFoundError,
    Store,
    job_id_time,
    new_job_id,
    normalize_share_dir,
    validate_job_id,
)

BAD_IDS = ["", ".", "..", "../x", "/abs", "a/b", "a\\b", "a\x00b", "-lead", ".hidden",
           "x" * 129, "caf\u00e9", "rxJob\u2215x", None, 5, b"rxJob"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_job_ids_are_refused_before_the_disk_is_touched(tmp_path, bad):
    share = tmp_path / "never-created"
    store = Store(str(share))
    with pytest.raises(ValueError, match="invalid job id"):
        store.paths(bad)
    assert not share.exists()


@pytest.mark.parametrize("good", ["a", "rxJob_20261128221530123456_7f3a", "A.b-c_d", "9" * 128])
def test_valid_job_ids(good):
    assert validate_job_id(good) == good


def test_job_ids_are_time_ordered_and_carry_their_time():
    t1 = datetime(2026, 11, 28, 22, 15, 30, 123456, tzinfo=timezone.utc)
    t2 = datetime(2026, 11, 28, 22, 15, 30, 123457, tzinfo=timezone.utc)
    a, b = new_job_id(t1), new_job_id(t2)
    assert a < b
    assert job_id_time(a) == t1
    assert job_id_time("not-an-rxjobs-id") is None
    validate_job_id(a)


def test_share_dir_spellings_are_normalized(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert normalize_share_dir("~/s") == str(tmp_path / "s")
    assert normalize_share_dir(f"file://{tmp_path}/s") == str(tmp_path / "s")
    assert normalize_share_dir("memory://x/y/").startswith("memory://")
    with pytest.raises(ValueError, match="share_dir is empty"):
        normalize_share_dir("")


def test_atomic_writes_and_reads(store_url):
    store = Store(store_url)
    store.ensure_root()
    paths = store.paths("job1")
    store.makedir(paths.dir)
    store.write_json(paths.job_json, {"a": 1})
    assert store.read_json(paths.job_json) == {"a": 1}
    store.write_atomic(paths.job_json, b"{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        store.read_json(paths.job_json)
    with pytest.raises(FileNotFoundError):
        store.read_bytes(paths.status_json)
    assert store.listdir(paths.dir) == ["job.json"]  # no temporary file left behind


def test_local_share_dir_and_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        store = Store(str(tmp_path / "s"))
        store.ensure_root()
        paths = store.paths("job1")
        store.makedir(paths.dir)
        store.write_json(paths.job_json, {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(paths.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(paths.job_json).st_mode) == 0o600


def _make_job(store: Store, job_id: str, files: int = 3) -> None:
    paths = store.paths(job_id)
    store.makedir(paths.dir)
    store.makedir(paths.tasks)
    for k in range(files):
        store.write_atomic(paths.output(k), b"x" * 10)


def test_listing_is_sorted_and_skips_trash_and_strangers(store_url):
    store = Store(store_url)
    store.ensure_root()
    ids = [new_job_id() for _ in range(5)]
    for job_id in reversed(ids):
        _make_job(store, job_id)
    store.makedir(store.trash, exist_ok=True)
    store.write_atomic(f"{store.root}/notes.txt.tmp-1-ab", b"")
    assert store.list_job_ids() == ids


def test_remove_job_frees_files_and_bytes_and_is_exactly_once(store_url):
    store = Store(store_url)
    store.ensure_root()
    _make_job(store, "job1", files=4)
    assert store.usage("job1").files == 4
    usage = store.remove_job("job1")
    assert (usage.files, usage.bytes) == (4, 40)
    assert store.list_job_ids() == []
    with pytest.raises(JobNotFoundError, match="job1"):
        store.remove_job("job1")


def test_interrupted_local_removal_is_finished_by_the_next_cleanup(tmp_path):
    store = Store(str(tmp_path / "s"))
    store.ensure_root()
    _make_job(store, "job1")
    os.makedirs(store.trash)
    os.rename(store.paths("job1").dir, f"{store.trash}/job1.dead")  # killed after the rename
    assert jobs.job_status(store, "job1").status is RxRemoteJobStatus.MISSING
    assert store.purge_trash() == ["job1.dead"]
    assert os.listdir(store.trash) == []


def test_interrupted_removal_without_atomic_rename_is_finished_by_the_next_cleanup():
    store = Store("memory://rxjobs-test-deleting-marker")
    store.ensure_root()
    _make_job(store, "job1")
    store.write_atomic(store.paths("job1").deleting, b"")  # killed after the marker
    assert jobs.job_status(store, "job1").status is RxRemoteJobStatus.MISSING
    assert store.purge_trash() == ["job1"]
    assert store.list_job_ids() == []
    store.fs.rm(store.root, recursive=True)


def test_removal_never_follows_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "canary.txt"
    canary.write_text("keep me")
    store = Store(str(tmp_path / "s"))
    store.ensure_root()
    _make_job(store, "job1")
    os.symlink(outside, f"{store.paths('job1').dir}/link-to-dir")
    os.symlink(canary, f"{store.paths('job1').tasks}/link-to-file")
    os.symlink(outside, store.paths("job2").dir)  # a job dir that is a symlink
    store.remove_job("job1")
    store.remove_job("job2")
    assert canary.read_text() == "keep me"
    assert sorted(os.listdir(outside)) == ["canary.txt"]
    assert store.list_job_ids() == []
