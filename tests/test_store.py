"""The share-dir store: ids, paths, atomic writes, listing, crash-safe removal."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import zlib
from datetime import datetime, timezone

import psutil
import pytest

from rxjobs import jobs
from rxjobs.cleanup import CleanupOutcome, cleanup_jobs
from rxjobs.errors import JobNotFoundError
from rxjobs.ids import job_id_time, new_job_id, validate_job_id
from rxjobs.sharedir import normalize_share_dir
from rxjobs.status import RxRemoteJobStatus
from rxjobs.store import Store, open_store

from factory import make_job

BAD_IDS = ["", ".", "..", "../x", "/abs", "a/b", "a\\b", "a\x00b", "-lead", ".hidden",
           "x" * 129, "caf\u00e9", "rxJob\u2215x", None, 5, b"rxJob"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_job_ids_are_refused_before_the_disk_is_touched(tmp_path, bad):
    share = tmp_path / "never-created"
    store = open_store(str(share))
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
    store = open_store(store_url)
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
        store = open_store(str(tmp_path / "s"))
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
    store = open_store(store_url)
    store.ensure_root()
    ids = [new_job_id() for _ in range(5)]
    for job_id in reversed(ids):
        _make_job(store, job_id)
    store.makedir(store.trash, exist_ok=True)
    store.write_atomic(f"{store.root}/notes.txt.tmp-1-ab", b"")
    assert store.list_job_ids() == ids


def test_remove_job_frees_files_and_bytes_and_is_exactly_once(store_url):
    store = open_store(store_url)
    store.ensure_root()
    _make_job(store, "job1", files=4)
    assert store.usage("job1").files == 4
    usage = store.remove_job("job1")
    assert (usage.files, usage.bytes) == (4, 40)
    assert store.list_job_ids() == []
    with pytest.raises(JobNotFoundError, match="job1"):
        store.remove_job("job1")


def test_a_read_job_settled_with_defer_is_gone_at_once_and_deleted_by_the_deferred_half(store_url):
    store = open_store(store_url)
    store.ensure_root()
    _make_job(store, "job1", files=3)
    later: list = []
    jobs.settle_read_job(store, "job1", remove=True, defer=later.append)
    assert jobs.job_status(store, "job1").status is RxRemoteJobStatus.MISSING
    assert len(later) == 1
    if "://" not in store_url:  # renamed into the trash, not yet deleted
        assert store.list_job_ids() == [] and len(store.trash_entries()) == 1
    assert later[0]().files == 3
    assert store.list_job_ids() == [] and store.trash_entries() == []
    jobs.settle_read_job(store, "job1", remove=True, defer=later.append)  # gone: nothing to do
    assert len(later) == 1


def test_each_store_answers_what_callers_may_ask_without_saying_its_kind(store_url):
    store = open_store(store_url)
    store.ensure_root()
    _make_job(store, "job1")
    paths = store.paths("job1")
    on_disk = "://" not in store_url
    # A store on this machine's filesystems hands out paths a process may append to.
    assert store.os_path(paths.driver_log) == (paths.driver_log if on_disk else None)
    assert store.caller_uid() == (os.geteuid() if on_disk else None)
    assert store.removal_where("job1") == (f"{store.trash}/job1" if on_disk else f"{store.url}/job1")
    assert not store.being_removed("job1") and not store.removal_may_tear("job1")
    store.write_exclusive(paths.canceled)
    assert store.being_removed("job1", or_canceled=True) and not store.being_removed("job1")
    assert store.removal_may_tear("job1", or_canceled=True) is not on_disk
    if not on_disk:  # a removal without atomic rename begins with a marker, seen by both
        store.write_exclusive(paths.deleting)
        assert store.being_removed("job1") and store.removal_may_tear("job1")
        store.remove_file(paths.deleting)
    store.remove_job("job1")
    assert store.being_removed("job1")
    assert store.removal_may_tear("job1") is not on_disk


@pytest.mark.timeout(60)
def test_one_pass_removal_counts_what_it_deletes_and_follows_no_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary.txt").write_text("keep me")
    store = open_store(str(tmp_path / "s"))
    store.ensure_root()
    _make_job(store, "job1", files=4)  # 4 files of 10 bytes
    paths = store.paths("job1")
    os.makedirs(f"{paths.tasks}/deep/er")
    with open(f"{paths.tasks}/deep/er/big", "wb") as f:
        f.write(b"y" * 5000)
    open(f"{paths.dir}/empty", "wb").close()
    os.symlink(outside, f"{paths.dir}/link-to-dir")
    os.symlink(outside / "canary.txt", f"{paths.tasks}/deep/link-to-file")
    os.mkfifo(f"{paths.tasks}/a-fifo")
    before = store.usage("job1")
    usage = store.remove_job("job1")
    assert usage == before
    assert usage.files == 4 + 1 + 1 + 2 + 1  # symlinks and the fifo count as files
    assert usage.bytes == 40 + 5000 + len(str(outside)) + len(str(outside / "canary.txt"))
    assert sorted(os.listdir(outside)) == ["canary.txt"]
    assert store.listdir(store.trash) == [] and store.list_job_ids() == []


@pytest.mark.timeout(60)
def test_a_detached_job_reads_as_missing_until_its_trash_entry_is_deleted(tmp_path):
    store = open_store(str(tmp_path / "s"))
    store.ensure_root()
    _make_job(store, "job1", files=2)
    entry = store.detach_job("job1")
    assert jobs.job_status(store, "job1").status is RxRemoteJobStatus.MISSING
    assert os.path.dirname(entry) == store.trash and f".{os.getpid()}-" in entry
    with pytest.raises(JobNotFoundError):
        store.detach_job("job1")
    with pytest.raises(ValueError, match="not an entry of"):
        store.delete_detached(str(tmp_path / "s"))
    assert store.delete_detached(entry).files == 2
    assert store.listdir(store.trash) == []


@pytest.mark.timeout(60)
def test_cleanup_deletes_files_after_letting_go_of_the_jobs_lock(tmp_path, monkeypatch):
    store = open_store(str(tmp_path / "s"))
    made = make_job(store, "failed")
    stripe = zlib.crc32(made.job_id.encode()) % 64
    seen = []
    delete = type(store).delete_detached_jobs

    def delete_checking_the_lock(self, tokens, helpers=True):
        fd = os.open(f"{store.root}/.locks/{stripe}.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if cleanup still held it
            seen.extend(tokens)
        finally:
            os.close(fd)
        return delete(self, tokens, helpers)

    monkeypatch.setattr(type(store), "delete_detached_jobs", delete_checking_the_lock)
    report = cleanup_jobs([(store, made.job_id)], force=True, verbose=False)
    assert [e.outcome for e in report] == ["removed"] and len(seen) == 1
    assert (report.files_freed, report.bytes_freed) != (0, 0)
    assert report.files_freed == made.files
    assert store.list_job_ids() == [] and store.listdir(store.trash) == []


def test_a_cleanup_in_a_share_dir_that_does_not_exist_finds_nothing_and_makes_nothing(tmp_path):
    store = open_store(str(tmp_path / "never-made"))
    assert store.detach_jobs([]) == []
    report = cleanup_jobs([(store, "rxJob_20000101000000000000_abcd")], force=True, verbose=False)
    assert [e.outcome for e in report] == [CleanupOutcome.MISSING]
    assert not (tmp_path / "never-made").exists()


def test_a_batch_is_detached_with_one_pair_of_fsyncs_and_each_job_gets_its_own_answer(tmp_path,
                                                                                     monkeypatch):
    store = open_store(str(tmp_path / "s"))
    made = [make_job(store, "failed") for _ in range(5)]
    ids = [m.job_id for m in made]
    before = [store.usage(i) for i in ids]
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                 real(fd))[1])
    tokens = store.detach_jobs([*ids, "rxJob_20260101000000000000_dead", ids[0]])
    assert sorted(synced) == sorted([store.trash, store.root])  # the whole batch's renames at once
    assert all(isinstance(t, str) and t.startswith(f"{store.trash}/{i}.")
               for t, i in zip(tokens[:5], ids, strict=True))
    assert isinstance(tokens[5], JobNotFoundError) and isinstance(tokens[6], JobNotFoundError)
    assert store.list_job_ids() == []  # every detached job reads as missing at once
    freed = store.delete_detached_jobs([*tokens[:5], f"{store.root}/elsewhere"])
    assert freed[:5] == before
    assert isinstance(freed[5], ValueError) and store.listdir(store.trash) == []


def test_a_batch_holds_each_lock_stripe_once_and_lets_go_of_all(tmp_path):
    store = open_store(str(tmp_path / "s"))
    store.ensure_root()
    ids = [f"job{i}" for i in range(200)]  # several of them on each of the 64 stripes
    stripes = {zlib.crc32(i.encode()) % 64 for i in ids}

    def free_stripes() -> set[int]:
        free = set()
        for stripe in stripes:
            fd = os.open(f"{store.root}/.locks/{stripe}.lock", os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                free.add(stripe)
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
        return free

    with store.lock_jobs(ids):
        assert free_stripes() == set()
        with store.lock_jobs([], create=False):  # nothing to hold
            pass
    assert free_stripes() == stripes
    with store.lock_jobs(["never-locked"], create=False):
        pass  # a dry run waits on no stripe and makes none


def test_interrupted_local_removal_is_finished_by_the_next_cleanup(tmp_path):
    store = open_store(str(tmp_path / "s"))
    store.ensure_root()
    _make_job(store, "job1")
    os.makedirs(store.trash)
    os.rename(store.paths("job1").dir, f"{store.trash}/job1.dead")  # killed after the rename
    assert jobs.job_status(store, "job1").status is RxRemoteJobStatus.MISSING
    assert store.purge_trash() == ["job1.dead"]
    assert os.listdir(store.trash) == []


def test_interrupted_removal_without_atomic_rename_is_finished_by_the_next_cleanup():
    store = open_store("memory://rxjobs-test-deleting-marker")
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
    store = open_store(str(tmp_path / "s"))
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


@pytest.mark.timeout(60)
def test_purge_spares_a_trash_entry_only_while_its_remover_runs_not_a_pid_reuser(tmp_path):
    """A trash entry names its remover by pid and start time: a live process that
    reused the pid does not keep the entry from being purged."""
    store = open_store(str(tmp_path / "s"))
    store.ensure_root()
    os.makedirs(store.trash)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        start = round(psutil.Process(other.pid).create_time() * 100)
        for name, mark in [("job1", f"{other.pid}-{start}"), ("job2", f"{other.pid}-{start - 1000}"),
                           ("job3", f"{other.pid}")]:
            _make_job(store, name)
            os.rename(store.paths(name).dir, f"{store.trash}/{name}.{mark}-0badcafe")
        # job1: its remover runs; job2: that pid now names a process started 10 s later;
        # job3: an older name without a start time, whose pid runs.
        assert store.purge_trash() == [f"job2.{other.pid}-{start - 1000}-0badcafe"]
        assert sorted(os.listdir(store.trash)) == [f"job1.{other.pid}-{start}-0badcafe",
                                                   f"job3.{other.pid}-0badcafe"]
    finally:
        other.kill()
        other.wait()
    assert sorted(store.purge_trash()) == [f"job1.{other.pid}-{start}-0badcafe",
                                           f"job3.{other.pid}-0badcafe"]
    assert os.listdir(store.trash) == []


def test_snapshot_is_one_look_that_agrees_with_the_primitives(local_share):
    """A job's snapshot (du, list, dry run) says what the separate reads say."""
    store = open_store(local_share)
    job = make_job(store, "unretrieved")
    snap = store.snapshot(job.job_id)
    paths = store.paths(job.job_id)
    assert snap is not None
    assert snap.entries == store.job_entries(job.job_id)
    assert snap.owner == store.owner_uid(job.job_id)
    assert snap.usage == store.usage(job.job_id)
    assert snap.record("job.json") == store.read_bytes(paths.job_json)
    assert snap.record("status.json") == store.read_bytes(paths.status_json)
    assert store.snapshot(job.job_id, sizes=False).usage is None
    assert jobs.look_at_job(store, job.job_id, snap) == jobs.look_at_job(store, job.job_id)
    assert store.snapshot(new_job_id()) is None


def test_snapshot_never_follows_a_symlinked_record(tmp_path):
    store = open_store(str(tmp_path / "share"))
    job = make_job(store, "unretrieved")
    outside = tmp_path / "outside.json"
    outside.write_text('{"state": "finished"}')
    status = tmp_path / "share" / job.job_id / "status.json"
    status.unlink()
    status.symlink_to(outside)
    snap = store.snapshot(job.job_id)
    with pytest.raises(ValueError, match="symlink"):
        snap.record("status.json")
    assert jobs.look_at_job(store, job.job_id, snap).status is RxRemoteJobStatus.UNDETERMINED


_FORKED_STORE = r"""
import os, sys
from rxjobs.store import open_store

store = open_store(sys.argv[1])
somewhere = store.paths("a").payload
store.exists(somewhere)  # opens the share dir's descriptor in this process


def share_dir_fds():
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == os.path.realpath(sys.argv[1]):
                found.append(int(fd))
        except OSError:
            pass  # the listing's own descriptor, gone by now
    return found


(mine,) = share_dir_fds()
child = os.fork()
if child == 0:
    code = 1
    try:
        os.close(mine)  # as a forked driver's take_stdio does with what it inherited
        read_end, write_end = os.pipe()  # takes the freed number, as a pool's pipe would
        assert read_end == mine, (read_end, mine)
        store.close()  # also what a garbage-collected store's __del__ does
        os.fstat(read_end)  # still open: the store closed nothing of this process
        assert store.exists(somewhere) is False  # and it opens its own descriptor
        os.fstat(read_end)
        code = 0
    finally:
        os._exit(code)
_, status = os.waitpid(child, 0)
os.fstat(mine)  # the parent's descriptor is untouched too
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.timeout(60)
def test_a_local_store_inherited_by_a_forked_process_never_closes_that_process_descriptors(tmp_path):
    """A store that a forked job driver inherited from its caller (and collected as garbage)
    once closed the number of its parent's descriptor, by then the driver's process-pool
    pipe: the pool broke and a job failed for "a worker process died"."""
    share = str(tmp_path / "share")
    open_store(share).ensure_root()
    proc = subprocess.run([sys.executable, "-c", _FORKED_STORE, share], capture_output=True, text=True,
                          timeout=50)
    assert proc.returncode == 0, proc.stderr
