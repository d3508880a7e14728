"""Helper processes deleting trash entries for big local cleanups (rxjobs.store.delete_workers)."""

from __future__ import annotations

import os

import pytest

from rxjobs import cleanup
from rxjobs.cleanup import cleanup_jobs
from rxjobs.store import Store, delete_workers, open_store
from rxjobs.store.delete_workers import DeleteWorkers

from factory import make_job

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def store(tmp_path) -> Store:
    store = open_store(str(tmp_path / "share with space"))
    store.ensure_root()
    return store


@pytest.fixture(params=["forked", "started"])
def how_started(request, monkeypatch) -> str:
    """Helpers forked from this process (where that is safe), or new interpreters (elsewhere)."""
    # Forked even when earlier tests left an idle thread running (fsspec's event loop,
    # after the S3 tests): the helper never touches what such a thread holds.
    monkeypatch.setattr(delete_workers, "may_fork", lambda: request.param == "forked")
    return request.param


def test_a_big_cleanup_deletes_in_helpers_and_reports_what_they_freed(store, monkeypatch, how_started):
    made = [make_job(store, kind) for kind in ("failed", "canceled", "retrieved") * 2]
    before = {m.job_id: store.usage(m.job_id) for m in made}
    calls = []
    submit = DeleteWorkers.submit

    def spy(self, st, path):
        calls.append(path)
        return submit(self, st, path)

    monkeypatch.setattr(DeleteWorkers, "submit", spy)
    started = DeleteWorkers.__init__

    def started_helpers(self, processes, threads):  # entries go to helpers only once they are up
        started(self, processes, threads)
        assert self.wait_started(timeout=60)
        assert [helper.forked for helper in self._helpers] == [how_started == "forked"] * processes

    monkeypatch.setattr(DeleteWorkers, "__init__", started_helpers)
    monkeypatch.setattr(cleanup, "HELPER_PROCESSES_FROM_JOBS", 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    report = cleanup_jobs([(store, m.job_id) for m in made], force=True, verbose=False, threads=4)
    assert [e.outcome for e in report] == ["removed"] * len(made)
    assert len(calls) == len(made)
    assert {e.job_id: (e.files, e.bytes) for e in report} == {
        job_id: (u.files, u.bytes) for job_id, u in before.items()}
    assert store.list_job_ids() == [] and store.listdir(store.trash) == []


def test_an_entry_is_deleted_here_when_the_helper_has_died(store, how_started):
    made = make_job(store, "failed")
    usage = store.usage(made.job_id)
    entry = store.detach_job(made.job_id)
    with DeleteWorkers(processes=1, threads=2) as workers:
        (helper,) = workers._helpers
        helper.kill()
        assert workers.delete(store, entry) == usage
    assert store.listdir(store.trash) == []


def test_a_helper_deletes_nothing_outside_the_trash(store, how_started):
    made = make_job(store, "failed")
    with DeleteWorkers(processes=1, threads=2) as workers:
        assert workers.wait_started(timeout=60)
        with pytest.raises(OSError, match="not an entry of"):
            workers.delete(store, store.paths(made.job_id).dir)
    assert store.list_job_ids() == [made.job_id]


@pytest.mark.timeout(30)
def test_forked_helpers_each_end_when_their_own_input_closes(store, monkeypatch):
    """A forked helper holds no copy of a sibling's input pipe, which would keep that
    sibling waiting for more entries after the caller closed its end (close() would hang)."""
    made = [make_job(store, "failed") for _ in range(4)]
    entries = [store.detach_job(m.job_id) for m in made]
    monkeypatch.setattr(delete_workers, "may_fork", lambda: True)  # see how_started
    workers = DeleteWorkers(processes=3, threads=1)
    pids = [helper._pid for helper in workers._helpers]
    assert all(pids) and workers.wait_started(timeout=20)
    assert all(workers.delete(store, entry).files > 0 for entry in entries)
    workers.close()
    for pid in pids:  # each was reaped by close()
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    assert store.listdir(store.trash) == []


def test_entries_are_deleted_here_until_a_helper_has_started(store, monkeypatch):
    """Deletion bounds a cleanup: it starts with the first job, not when the helpers are up."""
    made = [make_job(store, "failed") for _ in range(3)]
    before = [store.usage(m.job_id) for m in made]
    entries = [store.detach_job(m.job_id) for m in made]
    with DeleteWorkers(processes=1, threads=2) as workers:
        (helper,) = workers._helpers
        monkeypatch.setattr(helper.ready, "is_set", lambda: False)  # as if still starting
        here = [workers.submit(store, entry) for entry in entries]
        assert all(future.done() for future in here)  # deleted by the submitting thread
        assert [workers.result(future) for future in here] == before
    assert store.listdir(store.trash) == []


def test_a_started_helper_takes_the_entries(store, monkeypatch):
    made = make_job(store, "failed")
    usage = store.usage(made.job_id)
    entry = store.detach_job(made.job_id)
    sent = []
    with DeleteWorkers(processes=1, threads=2) as workers:
        assert workers.wait_started(timeout=60)
        (helper,) = workers._helpers
        send = helper.submit
        monkeypatch.setattr(helper, "submit", lambda share_dir, path: (sent.append(path),
                                                                       send(share_dir, path))[1])
        assert workers.result(workers.submit(store, entry)) == usage
    assert sent == [entry]
    assert store.listdir(store.trash) == []


@pytest.mark.parametrize(("threads", "in_flight"), [(8, 16), (4, 16), (32, 32)])
def test_a_big_cleanup_keeps_more_deletions_in_flight_than_it_has_threads(store, monkeypatch,
                                                                           threads, in_flight):
    """Each unlink waits for the disk, which serves more than 8 at once (DELETIONS_AT_ONCE)."""
    made = [make_job(store, "failed") for _ in range(2)]
    started = []
    start = DeleteWorkers.__init__

    def spy(self, processes, threads):
        started.append((processes, threads))
        start(self, processes, threads)

    monkeypatch.setattr(DeleteWorkers, "__init__", spy)
    monkeypatch.setattr(cleanup, "HELPER_PROCESSES_FROM_JOBS", 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    report = cleanup_jobs([(store, m.job_id) for m in made], force=True, verbose=False,
                          threads=threads)
    assert [e.outcome for e in report] == ["removed"] * len(made)
    assert started == [(2, in_flight // 2)]


@pytest.mark.parametrize("how", [["--all", "--force"], "named"])
def test_the_command_cleans_every_job_in_one_cleanup_with_helpers(store, monkeypatch, how):
    """``rxjobs cleanup`` hands all its jobs to one cleanup (not one per 64), so a big one
    starts the helper processes once, and prints a line per job in the order given."""
    from click.testing import CliRunner

    from rxjobs.cli import cli

    made = [make_job(store, kind, n_tasks=1, runs_per_task=1) for kind in ("failed", "retrieved") * 40]
    started: list[int] = []
    init = DeleteWorkers.__init__

    def counted(self, processes, threads):
        started.append(processes)
        init(self, processes, threads)

    monkeypatch.setattr(DeleteWorkers, "__init__", counted)
    monkeypatch.setattr(cleanup, "HELPER_PROCESSES_FROM_JOBS", 70)  # more than a batch of 64
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    ids = [m.job_id for m in made]
    args = how if isinstance(how, list) else ids
    result = CliRunner().invoke(cli, ["--share-dir", store.url, "cleanup", *args])
    assert result.exit_code == 0, result.output
    assert len(started) == 1
    removed = [line.split()[1].rsplit("/", 1)[-1] for line in result.output.splitlines()
               if line.startswith("removed ")]
    assert sorted(removed) == sorted(ids) and len(removed) == len(ids)
    if how == "named":
        assert removed == ids
    assert store.list_job_ids() == [] and store.listdir(store.trash) == []
