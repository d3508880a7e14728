"""The survey of a local share dir: one walk per job, sizes counted by a forked helper.

``rxjobs list``, ``du`` and a cleanup dry run see every job through
``Store.snapshots``.  On a local share dir a forked helper counts the sizes
while the caller reads names and records; whatever it does, the survey must
say exactly what one job at a time says, on a share dir full of what a
hostile or broken neighbour leaves: debris, symlinks where files and
directories should be, a fifo, an oversize record, an unreadable directory,
and a job removed while the survey runs.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from datetime import datetime, timezone

import psutil
import pytest
from click.testing import CliRunner

from rxjobs import jobs
from rxjobs.cli import cli
from rxjobs.retention import survey_jobs
from rxjobs.status import RxRemoteJobStatus
from rxjobs.store import MAX_RECORD_BYTES, JobSnapshot, open_store, size_helper
from rxjobs.store import local as local_store

from conftest import in_single_threaded_child
from factory import make_job

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def odd_share(odd_local_share, tmp_path):
    """A share dir of real jobs, on an odd path, and every odd thing a survey must get through."""
    store = open_store(odd_local_share)
    made = [make_job(store, kind, extra_bytes=i) for i, kind in
            enumerate(["unretrieved", "retrieved", "failed", "canceled"] * 3)]
    root = store.root
    ids = [job.job_id for job in made]
    outside = tmp_path / "outside"
    outside.mkdir()
    for i in range(50):
        (outside / f"f{i}").write_bytes(b"x" * 1000)
    # A job whose tasks/ is a symlink to a big directory elsewhere: counted as one entry.
    shutil.rmtree(f"{root}/{ids[0]}/tasks")
    os.symlink(outside, f"{root}/{ids[0]}/tasks")
    # A job whose job.json is a symlink (to a real record elsewhere): never followed.
    os.replace(f"{root}/{ids[1]}/job.json", outside / "job.json")
    os.symlink(outside / "job.json", f"{root}/{ids[1]}/job.json")
    # A fifo for status.json: never opened for a blocking read.
    os.unlink(f"{root}/{ids[2]}/status.json")
    os.mkfifo(f"{root}/{ids[2]}/status.json")
    # An oversize job.json.
    with open(f"{root}/{ids[3]}/job.json", "wb") as f:
        f.write(b" " * (MAX_RECORD_BYTES + 1))
    # A directory where a record should be, and a symlinked sub-directory.
    os.unlink(f"{root}/{ids[4]}/status.json")
    os.mkdir(f"{root}/{ids[4]}/status.json")
    os.symlink(outside, f"{root}/{ids[5]}/elsewhere")
    # An unreadable directory inside a job (root reads it anyway), and one job made unreadable.
    os.chmod(f"{root}/{ids[6]}/tasks", 0)
    os.chmod(f"{root}/{ids[7]}", 0)
    # Debris: a directory named like a job without job.json, another not named like one,
    # a symlink named like a job to a real job, a file named like a job.
    os.mkdir(f"{root}/rxJob_20260101000000000000_dead")
    (tmp_path / "x").write_text("x")
    os.mkdir(f"{root}/not a job")
    os.symlink(f"{root}/{ids[8]}", f"{root}/rxJob_20260101000000000001_beef")
    with open(f"{root}/rxJob_20260101000000000002_f00d", "w") as f:
        f.write("{}")
    store.made_ids = ids  # the jobs above, in the order they were made odd
    yield store
    for path in (f"{root}/{ids[6]}/tasks", f"{root}/{ids[7]}"):
        os.chmod(path, 0o700)


def _plain(snapshot: JobSnapshot | None) -> object:
    """A snapshot as comparable values (a read's error by its type and words)."""
    if snapshot is None:
        return None
    records = {name: found if isinstance(found, bytes) else (type(found).__name__, str(found))
               for name, found in snapshot.records.items()}
    return snapshot.entries, snapshot.owner, snapshot.usage, records


@pytest.fixture
def helper_always(monkeypatch):
    """Fork the size helper for any number of jobs, in small messages (edges exercised).

    The tests that use it are ``single_threaded``: their bodies run in a child
    pytest with one thread, where the helper is forked because ``may_fork``
    says so (not forced: a fork in a multi-threaded process may deadlock).
    """
    monkeypatch.setattr(size_helper, "MIN_JOBS", 1)
    monkeypatch.setattr(size_helper, "CHUNK", 3)
    if in_single_threaded_child():
        assert size_helper.may_fork(), f"the child has {threading.active_count()} threads"


def _both_ways(store, ids, sizes=True):
    """The snapshots with the helper, then without it."""
    with_helper = [(job_id, _plain(s)) for job_id, s in store.snapshots(ids, sizes=sizes)]
    store.fork_size_helper = False
    try:
        alone = [(job_id, _plain(s)) for job_id, s in store.snapshots(ids, sizes=sizes)]
    finally:
        store.fork_size_helper = True
    return with_helper, alone


@pytest.mark.timeout(60)
@pytest.mark.single_threaded
def test_snapshots_with_the_helper_equal_one_job_at_a_time(odd_share, helper_always):
    store = odd_share
    ids = store.list_job_ids() + ["rxJob_20260101000000000003_0000"]  # one never there
    one_by_one = [(job_id, _plain(store.snapshot(job_id))) for job_id in ids]
    with_helper, alone = _both_ways(store, ids)
    assert with_helper == alone == one_by_one
    by_id = dict(one_by_one)
    assert by_id["rxJob_20260101000000000003_0000"] is None
    assert "rxJob_20260101000000000001_beef" not in by_id  # the symlink is no job dir


@pytest.mark.timeout(60)
@pytest.mark.single_threaded
def test_the_odd_jobs_are_seen_for_what_they_are(odd_share, helper_always):
    store = odd_share
    ids = store.made_ids
    snaps = dict(store.snapshots(store.list_job_ids()))
    symlinked_tasks = snaps[ids[0]]
    assert symlinked_tasks is not None and symlinked_tasks.usage is not None
    # The 50 files behind the symlink are not counted: job.json (which holds the
    # handle), payload, status.json, and the symlink itself.
    assert symlinked_tasks.usage.files == 4
    with pytest.raises(ValueError, match="symlink"):
        snaps[ids[1]].record("job.json")
    with pytest.raises(ValueError, match="not a regular file"):
        snaps[ids[2]].record("status.json")
    with pytest.raises(ValueError, match="more than"):
        snaps[ids[3]].record("job.json")


@pytest.mark.timeout(60)
@pytest.mark.single_threaded
def test_a_survey_with_the_helper_equals_one_without(odd_share, helper_always):
    store = odd_share
    with_helper = survey_jobs(store, NOW)
    store.fork_size_helper = False
    alone = survey_jobs(store, NOW)
    assert with_helper == alone
    assert len(alone) == 13  # 12 jobs and the directory without job.json
    states = {job.status for job in alone}
    assert RxRemoteJobStatus.UNDETERMINED in states and RxRemoteJobStatus.FINISHED in states


@pytest.mark.timeout(60)
@pytest.mark.single_threaded
def test_a_job_removed_while_surveyed_reads_as_gone(odd_share, helper_always, monkeypatch):
    store = odd_share
    ids = store.list_job_ids()
    victim = ids[len(ids) // 2]
    real = local_store.snapshot_at
    removed: list[str] = []

    def remove_then_look(*args, **kwargs):
        if not removed:  # after the helper was forked, before the victim is looked at
            removed.append(victim)
            shutil.rmtree(f"{store.root}/{victim}")
        return real(*args, **kwargs)

    monkeypatch.setattr(local_store, "snapshot_at", remove_then_look)
    found = dict(store.snapshots(ids))
    assert removed == [victim] and found[victim] is None
    monkeypatch.setattr(local_store, "snapshot_at", real)
    with_helper, alone = _both_ways(store, ids)
    assert with_helper == alone
    assert all(dict(alone)[job_id] == _plain(found[job_id]) for job_id in ids)


class _DiesInChild(list):
    """Job ids that raise when the forked helper (counting from the last one down) has
    counted three: the helper dies midway."""

    def __init__(self, ids, parent: int) -> None:
        super().__init__(ids)
        self.parent = parent

    def __getitem__(self, index):
        if os.getpid() != self.parent and isinstance(index, int) and index < len(self) - 3:
            raise RuntimeError("the helper dies here")
        return super().__getitem__(index)


@pytest.mark.timeout(60)
@pytest.mark.single_threaded
def test_what_a_dead_helper_did_not_count_is_counted_by_the_parent(odd_share, helper_always):
    store = odd_share
    ids = store.list_job_ids()
    dying = _DiesInChild(ids, os.getpid())
    with_helper = [(job_id, _plain(s)) for job_id, s in store.snapshots(dying)]
    store.fork_size_helper = False
    assert with_helper == [(job_id, _plain(s)) for job_id, s in store.snapshots(ids)]


@pytest.mark.timeout(60)
@pytest.mark.single_threaded
def test_a_caller_that_stops_early_leaves_no_helper_behind(odd_share, helper_always):
    store = odd_share
    before = {child.pid for child in psutil.Process().children()}
    looks = store.snapshots(store.list_job_ids())
    next(looks)
    looks.close()  # the helper is killed and reaped: no child left, not even a zombie
    assert {child.pid for child in psutil.Process().children()} - before == set()


@pytest.mark.timeout(30)
def test_no_helper_is_forked_from_a_process_with_threads():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        assert size_helper.may_fork() is False
    finally:
        stop.set()
        thread.join(timeout=10)


@pytest.mark.timeout(60)
def test_an_ended_job_is_derived_without_asking_its_engine(local_share, monkeypatch):
    store = open_store(local_share)
    ended = make_job(store, "failed")
    running = make_job(store, "canceled")  # its status record says running
    os.unlink(f"{store.root}/{running.job_id}/canceled")

    def no_engine(name):
        raise AssertionError(f"engine {name} asked for an ended job")

    monkeypatch.setattr(jobs, "get_engine", no_engine)
    look = jobs.settled_look(store, ended.job_id, store.snapshot(ended.job_id))
    assert look is not None and look.status is RxRemoteJobStatus.FAILED
    assert jobs.settled_look(store, running.job_id, store.snapshot(running.job_id)) is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", [["list", "--json"], ["du", "--json"],
                                     ["cleanup", "--all", "--older-than", "1s", "--dry-run", "--json"]])
def test_json_output_one_job_per_line(local_share, command):
    store = open_store(local_share)
    made = {make_job(store, "retrieved", at=datetime(2026, 1, 1, tzinfo=timezone.utc)).job_id
            for _ in range(3)}
    done = CliRunner().invoke(cli, ["--share-dir", local_share, *command])
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    rows = data if isinstance(data, list) else data["jobs" if "jobs" in data else "entries"]
    assert {row["job_id"] for row in rows} == made
    lines = [line for line in done.output.splitlines() if '"job_id"' in line]
    assert len(lines) >= 3 and all(json.loads(line.strip().rstrip(","))["job_id"] in made
                                   for line in lines)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("given", [None, "generator"])
def test_a_listing_hands_the_store_a_sized_list_of_ids(odd_share, given):
    """The store forks its size helper only for a list whose length it knows: a listing of
    named jobs (how `rxjobs list` lists after looking at the names) must hand it one too,
    or a 20,000-job listing loses the helper and takes a third longer."""
    from collections.abc import Sequence

    from rxjobs import listing

    store = odd_share
    ids = store.list_job_ids()
    seen: list[object] = []
    real = store.snapshots

    def spy(job_ids, *args, **kwargs):
        seen.append(job_ids)
        return real(job_ids, *args, **kwargs)

    store.snapshots = spy
    named = None if given is None else (job_id for job_id in ids)
    rows = list(listing.list_jobs(store, sizes=True, job_ids=named))
    assert [row.job_id for row in rows] == [j for j in ids if j in {r.job_id for r in rows}]
    assert rows and len(seen) == 1
    assert isinstance(seen[0], Sequence) and list(seen[0]) == ids
