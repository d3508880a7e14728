"""Helper processes deleting trash entries for big local cleanups (rxjobs.store.delete_workers)."""

from __future__ import annotations

import os

import pytest

from rxjobs import cleanup
from rxjobs.cleanup import cleanup_jobs
from rxjobs.store import Store, open_store
from rxjobs.store.delete_workers import DeleteWorkers

from factory import make_job

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def store(tmp_path) -> Store:
    store = open_store(str(tmp_path / "share with space"))
    store.ensure_root()
    return store


def test_a_big_cleanup_deletes_in_helpers_and_reports_what_they_freed(store, monkeypatch):
    made = [make_job(store, kind) for kind in ("failed", "canceled", "retrieved") * 2]
    before = {m.job_id: store.usage(m.job_id) for m in made}
    calls = []
    submit = DeleteWorkers.submit

    def spy(self, st, path):
        calls.append(path)
        return submit(self, st, path)

    monkeypatch.setattr(DeleteWorkers, "submit", spy)
    monkeypatch.setattr(cleanup, "HELPER_PROCESSES_FROM_JOBS", 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    report = cleanup_jobs([(store, m.job_id) for m in made], force=True, verbose=False, threads=4)
    assert [e.outcome for e in report] == ["removed"] * len(made)
    assert len(calls) == len(made)
    assert {e.job_id: (e.files, e.bytes) for e in report} == {
        job_id: (u.files, u.bytes) for job_id, u in before.items()}
    assert store.list_job_ids() == [] and store.listdir(store.trash) == []


def test_an_entry_is_deleted_here_when_the_helper_has_died(store):
    made = make_job(store, "failed")
    usage = store.usage(made.job_id)
    entry = store.detach_job(made.job_id)
    with DeleteWorkers(processes=1, threads=2) as workers:
        (helper,) = workers._helpers
        helper._proc.kill()
        helper._proc.wait()
        assert workers.delete(store, entry) == usage
    assert store.listdir(store.trash) == []


def test_a_helper_deletes_nothing_outside_the_trash(store):
    made = make_job(store, "failed")
    with DeleteWorkers(processes=1, threads=2) as workers:
        with pytest.raises(OSError, match="not an entry of"):
            workers.delete(store, store.paths(made.job_id).dir)
    assert store.list_job_ids() == [made.job_id]
