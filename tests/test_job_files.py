"""Issue 28, item 2: a finished one-run job that printed nothing holds at most 5 entries,
and jobs written in format 1 (before it) are still listed, collected and cleaned.

Format 2 keeps the engine's handle in ``job.json`` (no ``engine.json``), writes no
empty ``tasks/<k>.out``, and the local driver removes its ``driver.log`` when it is
empty at the end.  Real ``RxLocalParallel`` jobs; old jobs are written by
``tests/factory.py`` with ``job_format=1``, as rxjobs before format 2 wrote them.
"""

from __future__ import annotations

import os

import pytest

from rxjobs import (
    RxLocalParallel,
    RxRemoteJobStatus,
    rx_cleanup_jobs,
    rx_exec,
    rx_get_job_output,
    rx_get_job_results,
    rx_get_job_status,
    rx_get_jobs,
    rx_wait_for_job,
)
from rxjobs.records import FORMAT_VERSION, JobRecord, read_engine_record, read_job_record
from rxjobs.store import open_store

from conftest import kill_processes_mentioning
from factory import KINDS, make_job

pytestmark = pytest.mark.timeout(180)
S = RxRemoteJobStatus


def quiet(x):
    return x + 1


def chatty(x):
    print("hello from", x)
    return x + 1


@pytest.fixture
def share(tmp_path):
    path = str(tmp_path / "share")
    yield path
    kill_processes_mentioning(path)


def _entries(job_dir: str) -> list[str]:
    """Every entry under a job directory (directories included), relative to it."""
    found = []
    for top, dirs, files in os.walk(job_dir):
        rel = os.path.relpath(top, job_dir)
        found += [os.path.normpath(os.path.join(rel, name)) for name in dirs + files]
    return sorted(found)


def test_a_finished_one_run_job_that_printed_nothing_has_five_entries(share):
    job = rx_exec(quiet, x=[1], compute_context=RxLocalParallel(wait=False, share_dir=share))
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    store = open_store(share)
    entries = _entries(store.paths(job.job_id).dir)
    assert entries == ["job.json", "payload.pkl", "status.json", "tasks", "tasks/0.result.pkl"]
    record = read_job_record(store, job.job_id)
    assert record.format == FORMAT_VERSION == 2
    assert read_engine_record(store, job.job_id).engine == "local"  # the handle is in job.json
    assert rx_get_job_output(job) == ""
    assert rx_get_job_results(job) == [2]
    assert store.list_job_ids() == []  # collected and cleaned


def test_a_job_that_printed_keeps_its_output_file(share):
    job = rx_exec(chatty, x=[1, 2], task_chunk_size=1,
                  compute_context=RxLocalParallel(wait=False, share_dir=share))
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    store = open_store(share)
    assert _entries(store.paths(job.job_id).tasks) == ["0.out", "0.result.pkl", "1.out", "1.result.pkl"]
    assert rx_get_job_output(job) == "hello from 1\nhello from 2\n"


@pytest.mark.parametrize("kind", KINDS)
def test_jobs_of_format_1_are_listed_collected_and_cleaned(share, kind):
    store = open_store(share)
    made = make_job(store, kind, job_format=1)
    paths = store.paths(made.job_id)
    assert store.exists(paths.engine_json) and store.exists(paths.driver_log)
    assert read_job_record(store, made.job_id).format == 1
    assert read_engine_record(store, made.job_id).handle["host"] == "nowhere"  # from engine.json
    (job,) = rx_get_jobs(RxLocalParallel(wait=False, share_dir=share), verbose=False)
    expected = {"unretrieved": S.FINISHED, "retrieved": S.FINISHED, "failed": S.FAILED,
                "canceled": S.CANCELED}[kind]
    assert rx_get_job_status(job) is expected
    assert "task 0\n" in rx_get_job_output(job)
    if expected is S.FINISHED:
        assert rx_get_job_results(job, auto_cleanup=False) == made.values
    files = store.usage(made.job_id).files  # the retrieved marker included
    report = rx_cleanup_jobs(job, verbose=False)
    assert [e.outcome for e in report] == ["removed"]
    assert report.files_freed == files >= made.files
    assert store.list_job_ids() == []


@pytest.mark.parametrize("fields, valid", [
    ({}, True),  # not yet accepted by an engine
    ({"engine": "local", "handle": {"pid": 1}}, True),
    ({"engine": "local"}, False),  # an engine without a handle
    ({"handle": {"pid": 1}}, False),  # a handle without an engine
    ({"engine": "local", "handle": None}, False),
    ({"engine": "local", "handle": [1]}, False),
    ({"engine": 7, "handle": {}}, False),
])
def test_the_handle_in_job_json_is_checked(fields, valid):
    data = {"job_id": "rxJob_20260101000000000000_abcd", "created": "2026-01-01T00:00:00+00:00",
            "context": {}, "n_runs": 1, "n_tasks": 1, "format": 2, **fields}
    if valid:
        record = JobRecord.from_json(data)
        assert (record.engine, record.handle) == (fields.get("engine", ""), fields.get("handle"))
        assert JobRecord.from_json(record.to_json()) == record
    else:
        with pytest.raises(ValueError, match="not a valid job record"):
            JobRecord.from_json(data)
