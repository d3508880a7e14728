"""Many jobs at once on object storage: bulk snapshots and batched, crash-safe cleanup.

Against the real moto server of ``s3_server`` (conftest.py), and ``memory://``
where the generic (non-asynchronous) form is meant.  The bulk forms must
answer exactly as the one-job forms do (:meth:`Store.snapshot`,
``remove_job``), whatever the share dir holds; the batched cleanup must keep
the crash-safety protocol of docs/storage.md: a process killed anywhere
leaves each job whole or marked ``deleting``, and the next cleanup finishes
it; two cleaners remove each job once; a finished job whose results were
never retrieved is never removed without force; a key written late into a
job being removed is removed with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from rxjobs.cleanup import CleanupOutcome, cleanup_jobs
from rxjobs.jobs import read_results
from rxjobs.listing import list_jobs
from rxjobs.records import read_job_record
from rxjobs.store import MARKER, MAX_RECORD_BYTES, Store, listing_cache, open_store
from rxjobs.store import remote as remote_store

from conftest import wait_until
from factory import make_job, make_jobs_in_bulk

pytestmark = pytest.mark.timeout(300)
SRC = str(Path(__file__).resolve().parent.parent / "src")


@pytest.fixture(params=["s3", "memory"])
def bulk_store(request) -> Store:
    """A fresh share dir on the moto server (s3fs: asynchronous) or in memory (threads)."""
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        url = server.new_prefix("bulk")
        yield open_store(url, server.options)
        server.remove_prefix(url)
    else:
        store = open_store(f"memory://rxjobs-bulk-{uuid.uuid4().hex}")
        yield store
        if store.fs.exists(store.root):
            store.fs.rm(store.root, recursive=True)


@pytest.fixture
def s3_store(s3_server) -> Store:
    url = s3_server.new_prefix("bulk")
    yield open_store(url, s3_server.options)
    s3_server.remove_prefix(url)


def _odd_share_dir(store: Store) -> list[str]:
    """Jobs of every kind and everything else a share dir may hold; the ids to look at."""
    kinds = ["unretrieved", "retrieved", "failed", "canceled", "failed", "unretrieved"]
    # Format 1 (engine.json and an empty driver.log): more records and names to compare.
    if store.is_object_store:
        made = make_jobs_in_bulk(store, kinds, n_tasks=2, job_format=1)
    else:  # RxLocalParallel refuses memory://: the records name some local directory
        made = [make_job(store, kind, n_tasks=2, share_url="/tmp/rxjobs-unused", job_format=1)
                for kind in kinds]
    root = store.root
    fs = store.fs
    other_id = "rxJob_20260101000000000000_0dd0"
    debris_id = "rxJob_20260101000000000001_de61"
    file_id = "rxJob_20260101000000000002_f11e"
    fs.rm_file(f"{root}/{made[4].job_id}/engine.json")  # to become a prefix below
    fs.pipe({
        # job.json naming another job (a copied directory)
        f"{root}/{other_id}/job.json": fs.cat_file(f"{root}/{made[0].job_id}/job.json"),
        # a debris prefix: no job.json
        f"{root}/{debris_id}/notes.txt": b"not a job",
        # a key at the top named like a job, and one that is nothing of rxjobs'
        f"{root}/{file_id}": b"a file, not a job directory",
        f"{root}/README": b"hello",
        # temporary names of writes that did not finish
        f"{root}/{made[1].job_id}/status.json.tmp-1234-abcd": b"{",
        f"{root}/{made[2].job_id}/tasks/0.result.pkl.tmp-1-ff": b"partial",
        # an oversize record
        f"{root}/{made[3].job_id}/status.json": b" " * (MAX_RECORD_BYTES + 1),
        # a record that is a prefix, not a key
        f"{root}/{made[4].job_id}/engine.json/inner": b"{}",
    })
    store.write_exclusive(store.paths(made[5].job_id).deleting)  # a job being removed
    return [job.job_id for job in made] + [other_id, debris_id, file_id,
                                           "rxJob_20260101000000000003_9999"]  # never there


def _comparable(snapshot):
    if snapshot is None:
        return None
    records = {name: (type(value).__name__, str(value)) if isinstance(value, Exception) else value
               for name, value in snapshot.records.items()}
    return snapshot.entries, snapshot.owner, snapshot.usage, records


@pytest.mark.parametrize("listing", ["whole share dir", "per job"])
def test_bulk_snapshots_equal_per_job_snapshots_over_an_odd_share_dir(bulk_store, listing, monkeypatch):
    ids = _odd_share_dir(bulk_store)
    monkeypatch.setattr(remote_store, "WHOLE_LISTING_FROM_JOBS", 1 if listing == "whole share dir" else 10**9)
    records = ("job.json", "status.json", "engine.json")
    one_by_one = [(job_id, _comparable(Store.snapshot(bulk_store, job_id, records)))
                  for job_id in ids]
    together = [(job_id, _comparable(snapshot))
                for job_id, snapshot in bulk_store.snapshots(ids, records)]
    assert together == one_by_one
    # What the comparison covers really happened:
    by_id = dict(together)
    assert by_id[ids[-1]] is None and by_id[ids[-2]] is None  # never there; a top-level key
    assert "deleting" in by_id[ids[5]][0] and by_id[ids[5]][3] == {}  # being removed: not read
    assert by_id[ids[3]][3]["status.json"][0] == "ValueError"  # oversize, refused
    assert not any(".tmp-" in name for snap in by_id.values() if snap for name in snap[0])
    # In pieces smaller than the share dir: the same, in the order asked.
    monkeypatch.setattr(remote_store, "SNAPSHOT_CHUNK", 3)
    reordered = ids[::-1]
    assert [(j, _comparable(s)) for j, s in bulk_store.snapshots(reordered, records)] == \
        [(j, dict(one_by_one)[j]) for j in reordered]


def test_a_listing_in_bulk_lists_what_one_by_one_lists(bulk_store, monkeypatch):
    ids = _odd_share_dir(bulk_store)
    being_removed = ids[5]
    monkeypatch.setattr(remote_store, "WHOLE_LISTING_FROM_JOBS", 1)
    assert bulk_store.reads_in_bulk
    in_bulk = [(row.job_id, row.record) for row in list_jobs(bulk_store, need_status=False)]
    with_states = [row.job_id for row in list_jobs(bulk_store, need_status=True)]
    monkeypatch.setattr(bulk_store, "reads_in_bulk", False)
    one_by_one = [(row.job_id, row.record) for row in list_jobs(bulk_store, need_status=False)]
    # Read one by one without a look at the job's names (the path of local share dirs,
    # which have no markers), job.json alone cannot tell a job being removed; in bulk
    # the listing does, and the job reads as missing, as its state says.
    assert in_bulk == [row for row in one_by_one if row[0] != being_removed]
    assert [job_id for job_id, _ in in_bulk] == with_states == ids[:5]


# -- batched cleanup ----------------------------------------------------------------------


def _keys_by_job(store: Store) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for key in store.fs.find(store.root):
        job_id, _, rel = key[len(store.root) + 1:].partition("/")
        if rel:
            found.setdefault(job_id, set()).add(rel)
    return found


@pytest.mark.filterwarnings("ignore::UserWarning")  # kept jobs warn; the test says what is kept
@pytest.mark.parametrize("force", [False, True])
def test_batched_cleanup_keeps_unretrieved_results_without_force(s3_store, force, monkeypatch):
    monkeypatch.setattr(remote_store, "WHOLE_LISTING_FROM_JOBS", 1)
    made = make_jobs_in_bulk(s3_store, ["unretrieved", "retrieved", "failed", "canceled"] * 20, n_tasks=1)
    report = cleanup_jobs([(s3_store, job.job_id) for job in made], force=force, verbose=False)
    outcomes = {e.job_id: e.outcome for e in report}
    left = _keys_by_job(s3_store)
    for job in made:
        if job.kind == "unretrieved" and not force:
            assert outcomes[job.job_id] is CleanupOutcome.KEPT
            assert read_results(s3_store, job.job_id).values == job.values
        else:
            assert outcomes[job.job_id] is CleanupOutcome.REMOVED
            assert job.job_id not in left
    removed = [e for e in report if e.outcome is CleanupOutcome.REMOVED]
    assert sum(e.files for e in removed) == sum(j.files for j in made if j.job_id in
                                                {e.job_id for e in removed})
    assert not [k for k in s3_store.fs.find(s3_store.root) if k.endswith("/deleting")]


def test_a_job_named_twice_is_removed_once(s3_store):
    made = make_jobs_in_bulk(s3_store, ["failed"] * 3, n_tasks=1)
    targets = [(s3_store, job.job_id) for job in made] + [(s3_store, made[0].job_id)]
    report = cleanup_jobs(targets, verbose=False)
    assert [e.outcome for e in report] == ["removed"] * 3 + ["missing"]
    assert report.files_freed == sum(j.files for j in made)


def test_a_key_written_late_into_a_job_being_removed_is_removed_with_it(s3_store, monkeypatch):
    made = make_jobs_in_bulk(s3_store, ["failed"] * 70, n_tasks=1)
    late = f"{s3_store.paths(made[7].job_id).tasks}/late.out"
    original_rm = s3_store.fs.rm
    written = []

    def rm_then_a_late_writer_puts(path, *args, **kwargs):
        result = original_rm(path, *args, **kwargs)
        if not written and isinstance(path, list) and not any(p.endswith("/deleting") for p in path):
            s3_store.fs.pipe_file(late, b"written by a worker that was not stopped in time")
            written.append(late)
        return result

    monkeypatch.setattr(s3_store.fs, "rm", rm_then_a_late_writer_puts)
    report = cleanup_jobs([(s3_store, job.job_id) for job in made], force=True, verbose=False)
    assert written and all(e.outcome is CleanupOutcome.REMOVED for e in report)
    assert [k for k in s3_store.fs.find(s3_store.root) if not k.endswith(MARKER)] == []


# -- real processes: killed cleaners, concurrent cleaners ---------------------------------

CHILD = textwrap.dedent("""
    import json, sys, time, warnings
    from rxjobs.cleanup import cleanup_jobs
    from rxjobs.store import open_store
    from rxjobs.store import remote

    url, options, ids, force, pause_in = sys.argv[1], json.loads(sys.argv[2]), \\
        json.loads(sys.argv[3]), sys.argv[4] == "force", sys.argv[5]
    store = open_store(url, options)

    def paused(method):
        original = getattr(remote.FsspecStore, method)

        def wrapper(self, *args, **kwargs):
            print("paused", flush=True)  # the parent kills this process now
            time.sleep(600)
            return original(self, *args, **kwargs)
        setattr(remote.FsspecStore, method, wrapper)

    if pause_in != "none":
        paused(pause_in)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = cleanup_jobs([(store, i) for i in ids], force=force, verbose=False)
    print(json.dumps([[e.job_id, e.outcome.value] for e in report]), flush=True)
""")


def _child(store: Store, ids: list[str], force: bool, pause_in: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, store.url, json.dumps(store.options), json.dumps(ids),
         "force" if force else "no", pause_in],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


@pytest.fixture
def children():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.parametrize("pause_in", ["delete_detached_jobs", "_finish_removals"])
def test_a_cleaner_killed_mid_batch_leaves_jobs_whole_or_marked_and_the_next_finishes(
        s3_store, children, pause_in):
    made = make_jobs_in_bulk(s3_store, ["unretrieved", "failed", "retrieved", "canceled"] * 20,
                             n_tasks=1)
    before = _keys_by_job(s3_store)
    proc = _child(s3_store, [job.job_id for job in made], False, pause_in)
    children.append(proc)
    line = wait_until(lambda: proc.stdout.readline() or proc.poll() is not None, timeout=120,
                      what="the cleaner to reach its pause")
    assert line == "paused\n", proc.stderr.read()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    now = _keys_by_job(s3_store)
    removable = {job.job_id for job in made if job.kind != "unretrieved"}
    for job in made:
        keys = now.get(job.job_id, set())
        assert keys == before[job.job_id] or "deleting" in keys, (job.kind, keys)
        if job.job_id in removable:
            assert "deleting" in keys  # killed after every marker was written
    purged = s3_store.purge_trash()
    assert set(purged) == removable
    after = _keys_by_job(s3_store)
    assert set(after) == {job.job_id for job in made if job.kind == "unretrieved"}
    for job in made:
        if job.kind == "unretrieved":
            assert after[job.job_id] == before[job.job_id]
            assert read_results(s3_store, job.job_id).values == job.values


def test_two_cleaners_at_once_remove_every_job_exactly_once(s3_store, children):
    made = make_jobs_in_bulk(s3_store, ["failed", "retrieved"] * 50, n_tasks=1)
    ids = [job.job_id for job in made]
    procs = [_child(s3_store, ids, True, "none"), _child(s3_store, ids[::-1], True, "none")]
    children.extend(procs)
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        reports.append(dict(json.loads(out.strip().splitlines()[-1])))
    for job_id in ids:
        outcomes = sorted(report[job_id] for report in reports)
        assert outcomes == ["missing", "removed"], (job_id, outcomes)
    assert _keys_by_job(s3_store) == {}


def test_every_record_listed_is_read_once_per_version(s3_store, monkeypatch):
    """A cleanup right after a listing reads no job.json again; a record rewritten since is."""
    monkeypatch.setattr(remote_store, "WHOLE_LISTING_FROM_JOBS", 1)
    made = make_jobs_in_bulk(s3_store, ["failed"] * 5, n_tasks=1)
    ids = [job.job_id for job in made]
    reads: list[str] = []
    original = s3_store.fs._cat_file

    async def counting(path, *args, **kwargs):
        reads.append(path.rsplit("/", 1)[-1])
        return await original(path, *args, **kwargs)

    monkeypatch.setattr(s3_store.fs, "_cat_file", counting)
    list(s3_store.snapshots(ids, records=("job.json",), sizes=False))
    assert reads == ["job.json"] * 5
    reads.clear()
    record = s3_store.paths(ids[0]).job_json
    s3_store.fs.pipe_file(record, s3_store.fs.cat_file(record) + b"\n")  # rewritten: a new version
    snaps = dict(s3_store.snapshots(ids, records=("job.json", "status.json"), sizes=False))
    assert sorted(reads) == ["job.json"] + ["status.json"] * 5
    assert read_job_record(s3_store, ids[0], snapshot=snaps[ids[0]]).job_id == ids[0]


# -- a cleanup right after a listing: the listing is not made again -----------------------------


@pytest.fixture
def listings_made(monkeypatch) -> list[str]:
    """The root of every whole-share-dir listing a store makes from now on; no listing
    offered before the test is left to take."""
    listing_cache.LISTINGS.clear()
    made: list[str] = []
    original = remote_store.FsspecStore._listing_by_job

    def counting(self, wanted=None):
        made.append(self.root)
        return original(self, wanted)

    monkeypatch.setattr(remote_store.FsspecStore, "_listing_by_job", counting)
    yield made
    listing_cache.LISTINGS.clear()


@pytest.mark.parametrize("before", ["a listing just made", "no listing"])
def test_a_cleanup_right_after_a_listing_does_not_list_the_share_dir_again(
        s3_server, s3_store, listings_made, before):
    """rx_cleanup_jobs(rx_get_jobs(cc)): the cleanup's first look (purge and decisions) is the
    listing's own; after its markers it lists as always (what is left, then what a late
    writer put)."""
    made = make_jobs_in_bulk(s3_store, ["failed", "retrieved"] * 40, n_tasks=1)
    ids = [job.job_id for job in made]
    if before != "no listing":
        assert sorted(row.job_id for row in list_jobs(s3_store, need_status=False)) == sorted(ids)
    listings_made.clear()
    cleaner = open_store(s3_store.url, s3_server.options)  # a store of its own, as rx_cleanup_jobs has
    report = cleanup_jobs([(cleaner, job_id) for job_id in ids], force=True, verbose=False)
    assert [e.outcome for e in report] == [CleanupOutcome.REMOVED] * len(ids)
    assert _keys_by_job(s3_store) == {}
    # purge + decisions (unless the listing serves them), after the markers, after the deletes
    assert len(listings_made) == (2 if before == "a listing just made" else 3)


@pytest.mark.filterwarnings("ignore::UserWarning")  # the unretrieved job is kept, and says so
def test_a_job_the_offered_listing_does_not_show_is_looked_at_afresh(s3_server, s3_store,
                                                                     listings_made):
    made = make_jobs_in_bulk(s3_store, ["failed"] * 70, n_tasks=1)
    list(list_jobs(s3_store, need_status=False))
    later = make_jobs_in_bulk(s3_store, ["failed", "unretrieved"], n_tasks=1)  # after the listing
    cleaner = open_store(s3_store.url, s3_server.options)
    report = cleanup_jobs([(cleaner, job.job_id) for job in made + later], verbose=False,
                          force=False)
    outcomes = {e.job_id: e.outcome for e in report}
    assert outcomes[later[0].job_id] is CleanupOutcome.REMOVED  # not "missing": it is there
    assert outcomes[later[1].job_id] is CleanupOutcome.KEPT  # results never retrieved
    assert set(_keys_by_job(s3_store)) == {later[1].job_id}
    assert read_results(s3_store, later[1].job_id).values == later[1].values


def test_a_marker_the_offered_listing_shows_is_finished_by_the_cleanup(s3_server, s3_store,
                                                                       listings_made):
    made = make_jobs_in_bulk(s3_store, ["failed"] * 70, n_tasks=1)
    dead = made[3].job_id
    s3_store.write_exclusive(s3_store.paths(dead).deleting)  # a cleaner killed after its marker
    list(list_jobs(s3_store, need_status=False))
    cleaner = open_store(s3_store.url, s3_server.options)
    listings_made.clear()
    assert cleaner.purge_trash() == [dead]
    # finishing it lists twice (what is left, then nothing but its marker); finding it did not
    assert listings_made == [s3_store.root] * 2
    assert dead not in _keys_by_job(s3_store)


def test_a_removal_in_this_process_withdraws_the_offered_listing(s3_server, s3_store,
                                                                 listings_made):
    made = make_jobs_in_bulk(s3_store, ["failed"] * 70, n_tasks=1)
    list(list_jobs(s3_store, need_status=False))
    s3_store.delete_detached(s3_store.detach_job(made[0].job_id))
    cleaner = open_store(s3_store.url, s3_server.options)
    listings_made.clear()
    report = cleanup_jobs([(cleaner, job.job_id) for job in made[1:]], force=True, verbose=False)
    assert all(e.outcome is CleanupOutcome.REMOVED for e in report)
    assert len(listings_made) == 3  # its own look: nothing listed before the removal is used


def _listing(age: float = 0.0, keys: int = 10, complete: bool = True):
    return listing_cache.Listing(time.monotonic() - age, {}, keys, 3, complete)


@pytest.mark.parametrize(("offered", "taken_from", "served"), [
    ({}, ("scope", "bucket/share"), True),
    ({"complete": False}, ("scope", "bucket/share"), False),  # some jobs' keys left out
    ({"keys": listing_cache.OFFER_MAX_KEYS + 1}, ("scope", "bucket/share"), False),
    ({"age": listing_cache.REUSE_LISTING_S + 1}, ("scope", "bucket/share"), False),
    ({}, ("scope", "bucket/other"), False),
    ({}, ("other options", "bucket/share"), False),
])
def test_which_listing_a_cleanup_may_take(offered, taken_from, served):
    listings = listing_cache.RecentListings()
    listings.offer("scope", "bucket/share", held := _listing(**offered))
    assert (listings.take(*taken_from) is held) is served
    if taken_from == ("scope", "bucket/share"):
        assert listings.take(*taken_from) is None  # taken once, or dropped as too old
    else:
        assert listings.take("scope", "bucket/share") is held  # another share dir's stays held


def test_an_offered_listing_is_withdrawn_by_its_own_share_dir_only():
    listings = listing_cache.RecentListings()
    listings.offer("scope", "bucket/share", held := _listing())
    listings.withdraw("scope", "bucket/other")
    assert listings.take("scope", "bucket/share") is held
    listings.offer("scope", "bucket/share", _listing())
    listings.withdraw("scope", "bucket/share")
    assert listings.take("scope", "bucket/share") is None
