"""Issue 27: a job where some runs raised (``continue_on_failure``) reads "finished, 3 of 9
runs failed" in ``rxjobs status``, ``rxjobs list`` and on the page.

The count is the driver's: ``status.json``'s ``failed_runs``, never found by
unpickling results.  The wording is a pure function, tested by a table; a real
9-run job where 3 runs raise runs on the local engine (and on Dask, Spark and a
real single-node Slurm, whose array tasks count their failed runs in
``tasks/<k>.failed.json`` for the task that ends the job).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rxjobs import RxLocalParallel, rx_exec, rx_wait_for_job
from rxjobs.cli import cli
from rxjobs.jobs import job_status
from rxjobs.records import Record, StatusRecord, read_status_record
from rxjobs.runner import count_failed_runs
from rxjobs.status import JobFacts, RxRemoteJobStatus, derive_status, finished_reason
from rxjobs.store import open_store

pytestmark = pytest.mark.timeout(300)


def raise_on_multiples_of_three(x):
    if x % 3 == 0:
        raise ValueError(f"{x} is a multiple of three")
    return x


# -- the wording: tables ---------------------------------------------------------------------


@pytest.mark.parametrize("failed, runs, words", [
    (None, 9, "finished"),                         # a record of an older rxjobs: nothing said
    (0, 9, "finished"),
    (3, 9, "finished, 3 of 9 runs failed"),
    (9, 9, "finished, 9 of 9 runs failed"),
    (1, 9, "finished, 1 of 9 runs failed"),
    (1, 1, "finished, 1 of 1 run failed"),
    (2, None, "finished, 2 runs failed"),          # job.json unreadable: the count alone
    (1, None, "finished, 1 run failed"),
    (5, 3, "finished, 5 runs failed"),             # a record claiming more than the job has
])
def test_finished_reason(failed, runs, words):
    assert finished_reason(failed, runs) == words


@pytest.mark.parametrize("facts, state, words", [
    (JobFacts(present=True, record=Record.FINISHED, failed_runs=3, n_runs=9),
     RxRemoteJobStatus.FINISHED, "finished, 3 of 9 runs failed"),
    (JobFacts(present=True, record=Record.FINISHED, n_runs=9), RxRemoteJobStatus.FINISHED, "finished"),
    (JobFacts(present=True, canceled=True, record=Record.FINISHED, failed_runs=3, n_runs=9),
     RxRemoteJobStatus.CANCELED, "canceled"),
    (JobFacts(present=True, record=Record.FAILED, record_reason="run 2 raised ValueError: x",
              failed_runs=None, n_runs=9), RxRemoteJobStatus.FAILED, "run 2 raised ValueError: x"),
])
def test_derive_status_of_partly_failed_jobs(facts, state, words):
    derived = derive_status(facts)
    assert (derived.status, derived.reason) == (state, words)


@pytest.mark.parametrize("data, failed", [
    ({"state": "finished", "reason": "", "failed_runs": 3}, 3),
    ({"state": "finished", "reason": ""}, None),          # written by an older rxjobs
    ({"state": "finished", "failed_runs": 0}, 0),
])
def test_status_record_reads_failed_runs_and_old_records(data, failed):
    record = StatusRecord.from_json(data)
    assert record.state is Record.FINISHED and record.failed_runs == failed
    assert StatusRecord.from_json(record.to_json()) == record
    assert ("failed_runs" in record.to_json()) is (failed is not None)


@pytest.mark.parametrize("hostile", [-1, "3", 3.0, True, 1 << 41])
def test_status_record_with_a_hostile_count_is_corrupt(hostile):
    record = StatusRecord.from_json({"state": "finished", "failed_runs": hostile})
    assert record.state is Record.CORRUPT


@pytest.mark.parametrize("files, count", [
    ({}, 0),                                                   # no run raised
    ({0: b'{"failed": 2}', 3: b'{"failed": 1}'}, 3),
    ({0: b'{"failed": 2}', 9: b'{"failed": 5}'}, 2),         # a task the job does not have
    ({0: b'{"failed": 2}', 1: b'{"failed": -1}'}, None),     # hostile: the record says nothing
    ({0: b'{"failed": "2"}'}, None),
    ({0: b'{"failed": true}'}, None),
    ({0: b'[2]'}, None),
    ({0: b'not json'}, None),
])
def test_count_failed_runs(tmp_path, files, count):
    store = open_store(str(tmp_path / "share"))
    store.ensure_root()
    job_id = "rxJob_20261205000000000000_abcd"
    paths = store.paths(job_id)
    store.makedir(paths.dir)
    store.makedir(paths.tasks)
    for task, data in files.items():
        store.write_atomic(paths.failures(task), data)
    assert count_failed_runs(store, job_id, 5, store.listdir(paths.tasks)) == count
    assert count_failed_runs(store, job_id, 5) == count  # listed by the call itself


# -- a real job ------------------------------------------------------------------------------


def _rxjobs(share: str, *args: str):
    result = CliRunner().invoke(cli, ["--share-dir", share, *args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def jobs(tmp_path):
    """A share dir with a 9-run job where runs 3, 6 and 9 raise, and one where none does."""
    share = str(tmp_path / "share")
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=share)
    partly = rx_exec(raise_on_multiples_of_three, x=list(range(1, 10)), compute_context=cc,
                     task_chunk_size=2)
    clean = rx_exec(raise_on_multiples_of_three, x=[1, 2], compute_context=cc)
    for job in (partly, clean):
        assert rx_wait_for_job(job, timeout=180) is RxRemoteJobStatus.FINISHED
    return share, partly.job_id, clean.job_id


def test_a_partly_failed_local_job_says_so_everywhere(jobs):
    share, partly, clean = jobs
    store = open_store(share)
    assert read_status_record(store, partly).failed_runs == 3  # written by the driver
    assert read_status_record(store, clean).failed_runs == 0
    assert job_status(store, partly).reason == "finished, 3 of 9 runs failed"
    assert job_status(store, clean).reason == "finished"

    status = json.loads(_rxjobs(share, "status", "--json", partly, clean))
    assert [(r["state"], r["reason"]) for r in status] == [
        ("finished", "finished, 3 of 9 runs failed"), ("finished", "finished")]
    assert "finished, 3 of 9 runs failed" in _rxjobs(share, "status", partly)

    listed = {r["job_id"]: r for r in json.loads(_rxjobs(share, "list", "--json"))}
    assert {k: (r["state"], r["failed_runs"], r["n_runs"]) for k, r in listed.items()} == {
        partly: ("finished", 3, 9), clean: ("finished", 0, 2)}
    table = _rxjobs(share, "list").splitlines()
    (row,) = [line for line in table if partly in line]
    assert "finished, 3 of 9 runs failed" in row
    (row,) = [line for line in table if clean in line]
    assert "finished" in row and "runs failed" not in row


def test_the_page_says_it_too(jobs):
    pytest.importorskip("starlette")
    pytest.importorskip("jinja2")
    from starlette.testclient import TestClient

    from rxjobs.ui.app import create_app

    share, partly, clean = jobs
    token = "test-token-0123456789"
    with TestClient(create_app(share, None, token, 0, allowed_hosts={"testserver"})) as client:
        client.get(f"/jobs?token={token}")
        page = client.get(f"/jobs/{partly}").text
        assert "finished, 3 of 9 runs failed" in page
        rows = client.get("/jobs").text
        assert "finished, 3 of 9 runs failed" in rows
        assert client.get(f"/api/status?job_id={partly}").json()[0]["reason"] == (
            "finished, 3 of 9 runs failed")


def test_a_partly_failed_dask_job_says_so(tmp_path):
    from rxjobs import RxDask

    from engine_contract import fail_on_three
    from test_dask_engine import Cluster

    cluster = Cluster(tmp_path / "cluster").start()
    try:
        share = str(tmp_path / "share")
        job = rx_exec(fail_on_three, x=[3, 1, 3, 2, 4, 3, 5, 6, 7],
                      compute_context=RxDask(cluster.address, wait=False, share_dir=share))
        assert rx_wait_for_job(job, timeout=180) is RxRemoteJobStatus.FINISHED
        store = open_store(share)
        assert read_status_record(store, job.job_id).failed_runs == 3
        assert job_status(store, job.job_id).reason == "finished, 3 of 9 runs failed"
    finally:
        cluster.stop()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("persistent", [False, True], ids=["per-job driver", "persistent server"])
def test_a_partly_failed_spark_job_says_so(tmp_path, monkeypatch, persistent):
    import os
    import tempfile

    if not os.environ.get("CI"):  # in CI a missing install is a failure, never a skip
        pytest.importorskip("pyspark")
    from rxjobs import RxSpark, rx_spark_disconnect
    from rxjobs.runtime import RUNTIME_DIR_ENV

    from conftest import kill_processes_mentioning
    from engine_contract import fail_on_three

    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    share = str(tmp_path / "share")
    with tempfile.TemporaryDirectory(prefix="rxpf-") as runtime:  # short: a socket's path
        monkeypatch.setenv(RUNTIME_DIR_ENV, runtime)
        cc = RxSpark(master="local[1]", wait=False, share_dir=share, persistent_run=persistent,
                     extra_spark_config={"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 "
                                         "-XX:+UseSerialGC", "spark.driver.memory": "512m"})
        try:
            job = rx_exec(fail_on_three, x=[3, 1, 3, 2, 4, 3, 5, 6, 7], compute_context=cc,
                          task_chunk_size=2)
            assert rx_wait_for_job(job, timeout=300) is RxRemoteJobStatus.FINISHED
            store = open_store(share)
            assert read_status_record(store, job.job_id).failed_runs == 3
            assert job_status(store, job.job_id).reason == "finished, 3 of 9 runs failed"
        finally:
            if persistent:
                rx_spark_disconnect(cc)
            kill_processes_mentioning(share)
            kill_processes_mentioning(runtime)


@pytest.mark.slurm
@pytest.mark.timeout(240)
@pytest.mark.parametrize("chunk", [2, 9], ids=["5 tasks", "1 task"])
def test_a_partly_failed_slurm_job_says_so(slurm, tmp_path, chunk):
    from rxjobs import RxSlurm

    from engine_contract import fail_on_three

    share = str(tmp_path / "share")
    job = rx_exec(fail_on_three, x=[3, 1, 3, 2, 4, 3, 5, 6, 7], task_chunk_size=chunk,
                  compute_context=RxSlurm(wait=False, share_dir=share))
    assert rx_wait_for_job(job, timeout=180) is RxRemoteJobStatus.FINISHED
    store = open_store(share)
    assert read_status_record(store, job.job_id).failed_runs == 3  # counted by the array tasks
    assert job_status(store, job.job_id).reason == "finished, 3 of 9 runs failed"
    (listed,) = json.loads(_rxjobs(share, "list", "--json"))
    assert (listed["state"], listed["failed_runs"], listed["n_runs"]) == ("finished", 3, 9)
    clean = rx_exec(fail_on_three, x=[1, 2], compute_context=RxSlurm(wait=False, share_dir=share))
    assert rx_wait_for_job(clean, timeout=180) is RxRemoteJobStatus.FINISHED
    assert read_status_record(store, clean.job_id).failed_runs == 0
    assert job_status(store, clean.job_id).reason == "finished"
