"""A batch of trash entries deleted by GNU find processes (rxjobs.store.bulk_delete)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rxjobs.store import bulk_delete, open_store
from rxjobs.store.bulk_delete import delete_trees
from rxjobs.store.fdtree import usage_at

from factory import make_job

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def real_find() -> str:
    found = bulk_delete.gnu_find()
    assert found is not None, "GNU find is missing: apt-get install findutils"
    return found


@pytest.fixture
def through_find(monkeypatch, real_find) -> None:
    """Every batch, however small, goes to find processes."""
    monkeypatch.setattr(bulk_delete, "FIND_FROM_ENTRIES", 1)


def _entries(root: Path, outside: Path) -> dict[str, tuple[int, int]]:
    """Entries of every kind a trash holds, and the files and bytes each holds."""
    job = root / "job.a"
    (job / "tasks" / "deep").mkdir(parents=True)
    (job / "job.json").write_bytes(b"x" * 10)
    (job / "tasks" / "0.out").write_bytes(b"")
    (job / "tasks" / "deep" / "1.result.pkl").write_bytes(b"y" * 1000)
    os.symlink(outside, job / "tasks" / "dir-link")  # counted as a link, never followed
    os.symlink(outside / "canary", job / "file-link")
    os.link(outside / "canary", job / "hard-link")
    os.mkfifo(job / "tasks" / "a-fifo")
    (root / "-rf").mkdir()  # no option, whatever an entry is named
    (root / "-rf" / "x").write_bytes(b"zz")
    (root / "a file").write_bytes(b"abc")
    os.symlink(outside, root / "link-to-outside")
    (root / "empty").mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return {name: usage_at(fd, name) if (root / name).is_dir() and not (root / name).is_symlink()
                else (1, os.lstat(root / name).st_size)
                for name in ("job.a", "-rf", "a file", "link-to-outside", "empty")}
    finally:
        os.close(fd)


@pytest.fixture
def outside(tmp_path) -> Path:
    where = tmp_path / "outside"
    where.mkdir()
    (where / "canary").write_text("do not touch")
    return where


def _check_outside(outside: Path) -> None:
    assert sorted(os.listdir(outside)) == ["canary"]
    assert (outside / "canary").read_text() == "do not touch"
    assert os.stat(outside / "canary").st_nlink == 1


@pytest.mark.parametrize("processes", [0, 1, 3])
def test_every_kind_of_entry_is_deleted_and_counted_as_a_walk_counts_it(tmp_path, outside, processes,
                                                                       through_find):
    trash = tmp_path / "trash"
    trash.mkdir()
    expected = _entries(trash, outside)
    names = [*expected, "never-there"]
    fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY)
    try:
        freed = delete_trees(fd, names, processes)
    finally:
        os.close(fd)
    assert freed == [*expected.values(), (0, 0)]
    assert expected["job.a"][0] == 7  # the fifo and the links are files; directories are not
    assert os.listdir(trash) == []
    _check_outside(outside)


def test_find_works_in_the_directory_it_was_given_even_if_its_path_is_swapped(tmp_path, outside,
                                                                             through_find):
    trash = tmp_path / "trash"
    trash.mkdir()
    (trash / "job.a").mkdir()
    (trash / "job.a" / "f").write_bytes(b"12345")
    fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rename(trash, tmp_path / "moved")
        os.symlink(outside, trash)  # the old path now leads outside
        (outside / "job.a").mkdir()
        (outside / "job.a" / "keep").write_text("mine")
        assert delete_trees(fd, ["job.a"], 2) == [(1, 5)]
    finally:
        os.close(fd)
    assert os.listdir(tmp_path / "moved") == []
    assert (outside / "job.a" / "keep").read_text() == "mine"


def _fake_find(tmp_path: Path, body: str) -> str:
    fake = tmp_path / "bin" / "find"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    return str(fake)


def test_what_find_leaves_is_deleted_here_and_counted_once(tmp_path, outside, monkeypatch, through_find):
    trash = tmp_path / "trash"
    trash.mkdir()
    expected = _entries(trash, outside)
    # A find that deletes nothing and fails, as one killed at its start would.
    monkeypatch.setattr(bulk_delete, "gnu_find", lambda: _fake_find(tmp_path, "exit 1"))
    fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert delete_trees(fd, list(expected), 4) == list(expected.values())
    finally:
        os.close(fd)
    assert os.listdir(trash) == []
    _check_outside(outside)


def _counting_find(tmp_path: Path, real_find: str) -> tuple[str, Path]:
    """A find that notes in a log when it starts and ends, around the real one."""
    log = tmp_path / "find.log"
    return _fake_find(tmp_path, f'echo + >> "{log}"\n"{real_find}" "$@"\ncode=$?\n'
                                f'echo - >> "{log}"\nexit $code'), log


def _most_at_once(log: Path) -> tuple[int, int]:
    """How many processes the log shows, and the most of them running at once."""
    running = most = started = 0
    for mark in log.read_text().split():
        running += 1 if mark == "+" else -1
        started += mark == "+"
        most = max(most, running)
    assert running == 0  # every one ended
    return started, most


def test_entries_are_dealt_out_in_small_processes_never_more_than_asked_at_once(tmp_path, outside,
                                                                                 monkeypatch,
                                                                                 real_find):
    trash = tmp_path / "trash"
    trash.mkdir()
    expected = {}
    for i in range(20):
        (trash / f"job.{i}" / "tasks").mkdir(parents=True)
        (trash / f"job.{i}" / "tasks" / "0.out").write_bytes(b"o" * i)
        expected[f"job.{i}"] = (1, i)
    fake, log = _counting_find(tmp_path, real_find)
    monkeypatch.setattr(bulk_delete, "gnu_find", lambda: fake)
    monkeypatch.setattr(bulk_delete, "FIND_FROM_ENTRIES", 1)
    monkeypatch.setattr(bulk_delete, "ENTRIES_PER_PROCESS", 2)
    fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert delete_trees(fd, list(expected), 3) == list(expected.values())
    finally:
        os.close(fd)
    started, most = _most_at_once(log)
    assert started == 10 and 1 <= most <= 3
    assert os.listdir(trash) == []


def test_calls_at_once_share_the_cap_on_find_processes(tmp_path, monkeypatch, real_find):
    fake, log = _counting_find(tmp_path, real_find)
    monkeypatch.setattr(bulk_delete, "gnu_find", lambda: fake)
    monkeypatch.setattr(bulk_delete, "FIND_FROM_ENTRIES", 1)
    monkeypatch.setattr(bulk_delete, "ENTRIES_PER_PROCESS", 1)
    monkeypatch.setattr(bulk_delete, "_RUNNING", threading.BoundedSemaphore(2))
    trashes = []
    for t in range(3):
        trash = tmp_path / f"trash{t}"
        for i in range(6):
            (trash / f"job.{i}").mkdir(parents=True)
            (trash / f"job.{i}" / "f").write_bytes(b"x")
        trashes.append(trash)

    def delete(trash: Path) -> list:
        fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return delete_trees(fd, sorted(os.listdir(trash)), 4)
        finally:
            os.close(fd)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(delete, trashes))
    assert results == [[(1, 1)] * 6] * 3
    started, most = _most_at_once(log)
    assert started == 18 and 1 <= most <= 2
    assert all(os.listdir(trash) == [] for trash in trashes)


def test_a_forked_child_is_not_held_back_by_the_parents_running_processes(tmp_path, through_find):
    trash = tmp_path / "trash"
    (trash / "job.a").mkdir(parents=True)
    (trash / "job.a" / "f").write_bytes(b"abc")
    # Every slot held, as by the threads of a deletion going on while the process forks.
    held = [bulk_delete._RUNNING.acquire(timeout=10) for _ in range(bulk_delete.PROCESSES)]
    try:
        assert all(held)
        pid = os.fork()
        if pid == 0:  # the child: delete, say how it went, and leave without pytest's cleanups
            code = 1
            try:
                fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY)
                code = 0 if delete_trees(fd, ["job.a"], 1) == [(1, 3)] else 2
            finally:
                os._exit(code)
        deadline = time.monotonic() + 60
        while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        if waited == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the child waited for a slot its parent's threads held")
        assert os.waitstatus_to_exitcode(waited[1]) == 0
    finally:
        for _ in held:
            bulk_delete._RUNNING.release()
    assert os.listdir(trash) == []


def test_when_no_process_can_start_everything_is_deleted_here(tmp_path, outside, monkeypatch, through_find):
    trash = tmp_path / "trash"
    trash.mkdir()
    expected = _entries(trash, outside)

    def cannot_start(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", cannot_start)
    fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY)
    open_before = len(os.listdir("/proc/self/fd"))
    try:
        assert delete_trees(fd, list(expected), 4) == list(expected.values())
        assert len(os.listdir("/proc/self/fd")) == open_before  # the attempt's output file is closed
    finally:
        os.close(fd)
    assert os.listdir(trash) == []


def test_an_entry_that_cannot_be_deleted_gets_its_error_and_the_others_go(tmp_path, monkeypatch,
                                                                           through_find):
    trash = tmp_path / "trash"
    trash.mkdir()
    for name in ("a", "b"):
        (trash / name).mkdir()
        (trash / name / "f").write_bytes(b"1")
    # "b" is replaced, between find and the walk here, by something that cannot be walked.
    real = bulk_delete.remove_tree_at

    def failing(dir_fd, name):
        if name == "b":
            raise PermissionError(13, "Permission denied", name)
        return real(dir_fd, name)

    monkeypatch.setattr(bulk_delete, "gnu_find", lambda: _fake_find(tmp_path, "exit 1"))
    monkeypatch.setattr(bulk_delete, "remove_tree_at", failing)
    fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY)
    try:
        freed = delete_trees(fd, ["a", "b"], 2)
    finally:
        os.close(fd)
    assert freed[0] == (1, 1) and isinstance(freed[1], PermissionError)
    assert os.listdir(trash) == ["b"]


def test_only_gnu_find_is_used(tmp_path, monkeypatch):
    bulk_delete.gnu_find.cache_clear()
    try:
        _fake_find(tmp_path, 'echo "find (BSD) 1.0"')
        monkeypatch.setenv("PATH", str(tmp_path / "bin"))
        assert bulk_delete.gnu_find() is None
        bulk_delete.gnu_find.cache_clear()
        monkeypatch.setenv("PATH", "/nonexistent")
        assert bulk_delete.gnu_find() is None
    finally:
        bulk_delete.gnu_find.cache_clear()
    monkeypatch.undo()
    assert bulk_delete.gnu_find() is not None


@pytest.mark.parametrize(("printed", "counted"), [
    (b"", {"a": [0, 0]}),
    (b"5 ./a\n7 ./a\n", {"a": [2, 12]}),
    (b"5 ./a\n3 ./b c\n", {"a": [1, 5], "b c": [1, 3]}),  # a name with a space
    (b"5 ./elsewhere\n", {"a": [0, 0]}),  # not an entry it was given
    (b"x ./a\n5\n\n5 a\n", {"a": [0, 0]}),  # not a line of its own format
])
def test_find_lines_are_counted_by_entry(printed, counted):
    found = {name: [0, 0] for name in counted}
    bulk_delete._count_lines(printed, found)
    assert found == counted


def test_a_cleanup_of_a_local_share_dir_deletes_a_batch_in_find_processes(tmp_path, monkeypatch,
                                                                          through_find):
    from rxjobs.cleanup import cleanup_jobs

    store = open_store(str(tmp_path / "share"))
    made = [make_job(store, kind) for kind in ("failed", "canceled", "retrieved") * 3]
    before = {m.job_id: store.usage(m.job_id) for m in made}
    started = []
    popen = subprocess.Popen

    def counted(args, *rest, **kwargs):
        started.append(args[0])
        return popen(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", counted)
    report = cleanup_jobs([(store, m.job_id) for m in made], force=True, verbose=False)
    assert [e.outcome for e in report] == ["removed"] * len(made)
    assert {e.job_id: (e.files, e.bytes) for e in report} == {
        job_id: (u.files, u.bytes) for job_id, u in before.items()}
    assert started and set(started) == {bulk_delete.gnu_find()}
    assert store.list_job_ids() == [] and store.listdir(store.trash) == []
    started.clear()  # a caller that may start no program (a sweep's child) deletes itself
    made = [make_job(store, "failed") for _ in range(3)]
    report = cleanup_jobs([(store, m.job_id) for m in made], verbose=False, helper_processes=False)
    assert [e.outcome for e in report] == ["removed"] * 3 and started == []


def test_a_cleanup_begins_with_a_small_batch_and_deletes_the_next_while_one_ends(tmp_path,
                                                                                 monkeypatch):
    from rxjobs.cleanup import cleanup_jobs

    store = open_store(str(tmp_path / "share"))
    made = [make_job(store, "failed") for _ in range(8)]
    before = [store.usage(m.job_id) for m in made]
    monkeypatch.setattr(store, "first_removal_batch", 2)
    monkeypatch.setattr(store, "removal_batch", 3)
    detached: list[int] = []
    real_detach, real_delete = store.detach_jobs, store.delete_detached_jobs
    monkeypatch.setattr(store, "detach_jobs", lambda ids: detached.append(len(ids)) or real_detach(ids))
    next_began = threading.Event()
    calls = itertools.count()
    overlapped: list[bool] = []

    def delete(tokens, helpers=True):
        if next(calls) == 0:
            # The first batch's deletion is still going when the second's begins.
            overlapped.append(next_began.wait(timeout=60))
        else:
            next_began.set()
        return real_delete(tokens, helpers)

    monkeypatch.setattr(store, "delete_detached_jobs", delete)
    report = cleanup_jobs([(store, m.job_id) for m in made], force=True, verbose=False)
    assert detached == [2, 3, 3] and overlapped == [True]
    assert [(e.job_id, e.outcome, e.files, e.bytes) for e in report] == [
        (m.job_id, "removed", u.files, u.bytes) for m, u in zip(made, before, strict=True)]
    assert store.list_job_ids() == [] and store.listdir(store.trash) == []
