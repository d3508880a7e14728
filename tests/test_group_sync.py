"""Group commit of the fsyncs that make renames into ``.trash/`` durable (LocalStore)."""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from rxjobs.store import open_store
from rxjobs.store.durability import FSYNC_ENV, GroupSync

from factory import make_job

pytestmark = pytest.mark.timeout(120)


def test_each_caller_returns_after_a_sync_that_began_after_its_call():
    group = GroupSync()
    clock = itertools.count()
    lock = threading.Lock()
    rounds: list[tuple[int, int]] = []  # (began, ended) on the clock

    def tick() -> int:
        with lock:
            return next(clock)

    def fsync() -> None:
        began = tick()
        threading.Event().wait(0.002)  # a disk flush takes a while
        rounds.append((began, tick()))

    def caller(_: int) -> tuple[int, int]:
        changed = tick()  # the change (a rename) made just before asking
        group.wait_durable(fsync)
        return changed, tick()

    with ThreadPoolExecutor(max_workers=8) as pool:
        calls = list(pool.map(caller, range(400)))
    for changed, returned in calls:
        assert any(changed < began and ended < returned for began, ended in rounds), (changed, returned)
    assert len(rounds) < len(calls) / 2  # shared: far fewer rounds than callers


def test_a_failed_sync_raises_in_its_thread_and_the_waiters_sync_again():
    group = GroupSync()
    attempts = []

    def failing() -> None:
        attempts.append("failed")
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        group.wait_durable(failing)
    group.wait_durable(lambda: attempts.append("synced"))
    assert attempts == ["failed", "synced"]


def test_threads_detaching_jobs_share_the_fsyncs_and_every_rename_is_synced_before_it_returns(
        tmp_path, monkeypatch):
    monkeypatch.delenv(FSYNC_ENV, raising=False)
    store = open_store(str(tmp_path / "share"))
    made = [make_job(store, "failed").job_id for _ in range(48)]
    trash_ino = None
    events: list[tuple[str, object]] = []
    lock = threading.Lock()
    real_rename, real_fsync = os.rename, os.fsync

    def rename(src, dst, **kwargs):
        real_rename(src, dst, **kwargs)
        with lock:
            events.append(("rename", src))

    def fsync(fd):
        ino = os.fstat(fd).st_ino
        with lock:
            events.append(("fsync begins", ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "fsync", fsync)

    def detach(job_id: str) -> str:
        token = store.detach_job(job_id)
        with lock:
            events.append(("returned", job_id))
        return token

    with ThreadPoolExecutor(max_workers=8) as pool:
        tokens = list(pool.map(detach, made))
    trash_ino = os.stat(store.trash).st_ino
    root_ino = os.stat(store.root).st_ino
    for job_id in made:
        renamed = events.index(("rename", job_id))
        returned = events.index(("returned", job_id))
        between = {ino for kind, ino in events[renamed:returned] if kind == "fsync begins"}
        assert {trash_ino, root_ino} <= between, f"{job_id}: not both directories synced after its rename"
    syncs = sum(1 for kind, ino in events if kind == "fsync begins" and ino in (trash_ino, root_ino))
    assert syncs < 2 * len(made)  # not a pair per job
    for token in tokens:
        store.delete_detached(token)
    assert store.list_job_ids() == [] and store.listdir(store.trash) == []


def test_purge_syncs_the_trash_before_deleting_what_a_killed_remover_left(tmp_path, monkeypatch):
    monkeypatch.delenv(FSYNC_ENV, raising=False)
    store = open_store(str(tmp_path / "share"))
    job_id = make_job(store, "failed").job_id
    os.makedirs(store.trash, mode=0o700)
    # What a remover killed between its rename and its fsyncs leaves (its pid is not running).
    os.rename(f"{store.root}/{job_id}", f"{store.trash}/{job_id}.999999999-1-abcd")
    events = []
    real_fsync, real_unlink = os.fsync, os.unlink
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_ino)),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "unlink", lambda *a, **k: (events.append(("unlink", None)),
                                                      real_unlink(*a, **k))[1])
    assert store.purge_trash() == [f"{job_id}.999999999-1-abcd"]
    first_unlink = events.index(("unlink", None))
    synced = {ino for kind, ino in events[:first_unlink] if kind == "fsync"}
    assert {os.stat(store.trash).st_ino, os.stat(store.root).st_ino} <= synced
