"""Share dirs on object storage: the whole job lifecycle against a real S3 server.

A ``moto`` server runs on loopback for the session (``s3_server`` in
conftest.py) and every test gets a fresh ``s3://bucket/prefix`` share dir.
The endpoint reaches every process through ``share_dir_options``; the
environment holds fake credentials (moto accepts any), except where a test
removes them to show that credentials in the options reach the job too.
"""

from __future__ import annotations

import json
import threading

import pytest

from rxjobs import (
    JobNotFoundError,
    RxCleanupWarning,
    RxLocalParallel,
    RxRemoteJob,
    RxRemoteJobStatus,
    rx_cancel_job,
    rx_cleanup_jobs,
    rx_exec,
    rx_get_job_results,
    rx_get_job_status,
    rx_get_jobs,
    rx_wait_for_job,
)
from rxjobs import jobs as jobs_module
from rxjobs.options import REDACTED
from rxjobs.store import Store, open_store

from conftest import processes_mentioning, wait_until
from engine_contract import EngineContract, sleep_then_return, square
from factory import make_jobs_in_bulk

pytestmark = pytest.mark.timeout(300)
S = RxRemoteJobStatus


@pytest.fixture
def share_path(s3_share) -> str:
    return s3_share


@pytest.fixture
def options(s3_server) -> dict:
    return dict(s3_server.options)


@pytest.fixture
def store(share_path, options) -> Store:
    return open_store(share_path, options)


def parallel(share: str, options: dict, wait: bool = False, **settings) -> RxLocalParallel:
    return RxLocalParallel(num_workers=2, wait=wait, share_dir=share, share_dir_options=options,
                           **settings)


# -- the engine contract, with RxLocalParallel on S3 -------------------------------------


class TestLocalParallelOnS3(EngineContract):
    @pytest.fixture
    def make_context(self, share_path, options):
        def make(wait: bool, **settings) -> RxLocalParallel:
            return parallel(share_path, options, wait=wait, **settings)

        return make

    @pytest.fixture
    def share_store(self, store) -> Store:
        return store


# -- credentials ---------------------------------------------------------------------------


def test_credentials_in_options_reach_the_job_but_never_job_json_or_a_command_line(
        share_path, options, s3_server, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)  # the driver and its workers get only what the options say
    secret = "rxjobs-secret-value-not-to-be-seen"
    cc = parallel(share_path, {**options, "key": "rxjobs-testing", "secret": secret})
    assert secret not in repr(cc) and secret not in json.dumps(cc.to_dict())
    job = rx_exec(sleep_then_return, seconds=[0, 300], task_chunk_size=1, compute_context=cc)
    wait_until(lambda: rx_get_job_status(job) is S.RUNNING, what="the job to run")
    procs = processes_mentioning(job.job_id)
    assert procs, "no process names the job"
    assert all(secret not in " ".join(p.cmdline()) for p in procs)
    raw = s3_server.filesystem().cat_file(f"{share_path[5:]}/{job.job_id}/job.json").decode()
    assert secret not in raw
    settings = json.loads(raw)["context"]["settings"]["share_dir_options"]
    assert settings == {"endpoint_url": options["endpoint_url"], "key": REDACTED, "secret": REDACTED}
    assert rx_cancel_job(job) is True
    assert [e.outcome for e in rx_cleanup_jobs(job, verbose=False)] == ["removed"]

    job = rx_exec(square, x=[1, 2, 3], compute_context=cc)
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    # Looked up again with the same context: the credentials come from it, not from job.json.
    (found,) = rx_get_jobs(cc, verbose=False)
    assert found.share_dir_options["secret"] == secret
    assert rx_get_job_results(found) == [1, 4, 9]


def test_contexts_with_options_are_frozen_comparable_values(share_path, options):
    a = parallel(share_path, {**options, "client_kwargs": {"region_name": "us-east-1"}})
    b = parallel(share_path, {"client_kwargs": {"region_name": "us-east-1"}, **options})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != parallel(share_path, None)
    rebuilt = RxLocalParallel.from_dict(
        json.loads(json.dumps(parallel(share_path, {**options, "secret": "s"}).to_dict())))
    assert rebuilt.job_share_dir_options() == options  # the redacted secret is dropped
    with pytest.raises(ValueError, match="only this process can see"):
        RxLocalParallel(share_dir="memory://nope")
    assert RxLocalParallel(share_dir="file:///tmp/x").share_dir == "/tmp/x"


# -- the cleanup table on S3 --------------------------------------------------------------


def test_cleanup_table(share_path, options, store):
    cc = parallel(share_path, options)
    made = {job.kind: job for job in make_jobs_in_bulk(store, ["unretrieved", "retrieved", "failed",
                                                                "canceled"])}
    undetermined = make_jobs_in_bulk(store, ["failed"])[0]
    store.write_atomic(store.paths(undetermined.job_id).status_json, b"{corrupt")
    running = rx_exec(sleep_then_return, seconds=[300], compute_context=cc)
    wait_until(lambda: rx_get_job_status(running) is S.RUNNING, what="the job to run")
    missing = RxRemoteJob(cc, "rxJob_20000101000000000000_abcd")

    def job(job_id: str) -> RxRemoteJob:
        return RxRemoteJob(cc, job_id)

    order = [job(made[k].job_id) for k in ("unretrieved", "retrieved", "failed", "canceled")]
    order += [job(undetermined.job_id), running, missing]
    with pytest.warns(RxCleanupWarning):
        report = rx_cleanup_jobs(order, verbose=False)
    assert [(e.status, e.outcome) for e in report] == [
        ("finished", "kept"), ("finished", "removed"), ("failed", "removed"), ("canceled", "removed"),
        ("undetermined", "kept"), ("running", "kept"), ("missing", "missing")]
    assert all(e.files > 0 and e.bytes > 0 for e in report.removed)
    assert rx_get_job_results(job(made["unretrieved"].job_id), auto_cleanup=False) == \
        made["unretrieved"].values

    report = rx_cleanup_jobs(order, force=True, verbose=False)
    assert [e.outcome for e in report] == ["removed", "missing", "missing", "missing", "removed",
                                           "removed", "missing"]
    assert not processes_mentioning(running.job_id)  # canceled on its engine first
    assert rx_get_job_status(running) is S.MISSING
    assert store.list_job_ids() == []


# -- removal without atomic rename --------------------------------------------------------


def test_a_job_being_deleted_reads_as_missing_and_any_cleanup_finishes_it(share_path, options,
                                                                          store):
    half, other = make_jobs_in_bulk(store, ["unretrieved", "failed"])
    paths = store.paths(half.job_id)
    store.write_exclusive(paths.deleting)  # a cleanup killed mid-way: marker, some files gone
    store.remove_file(paths.job_json)
    store.remove_file(paths.result(0))
    cc = parallel(share_path, options)
    assert rx_get_job_status(RxRemoteJob(cc, half.job_id)) is S.MISSING
    with pytest.raises(JobNotFoundError):
        rx_get_job_results(RxRemoteJob(cc, half.job_id))
    assert [j.job_id for j in rx_get_jobs(cc, verbose=False)] == [other.job_id]
    report = rx_cleanup_jobs(RxRemoteJob(cc, other.job_id), verbose=False)  # of another job
    assert [e.outcome for e in report] == ["removed"]
    assert store.list_job_ids() == []


def test_results_are_never_returned_from_a_job_whose_removal_began(store, monkeypatch):
    (made,) = make_jobs_in_bulk(store, ["unretrieved"])
    original = jobs_module.load_task_result

    def read_then_a_cleaner_starts(st, job_id, task):
        result = original(st, job_id, task)
        if task == 1:
            store.write_exclusive(store.paths(job_id).deleting)
        return result

    monkeypatch.setattr(jobs_module, "load_task_result", read_then_a_cleaner_starts)
    with pytest.raises(JobNotFoundError, match="removed .* while its results were read"):
        jobs_module.read_results(store, made.job_id)
    monkeypatch.undo()
    assert store.purge_trash() == [made.job_id]
    assert store.list_job_ids() == []


def test_concurrent_removers_remove_each_job_exactly_once(store):
    made = make_jobs_in_bulk(store, ["failed"] * 20)
    outcomes: dict[str, list[int]] = {job.job_id: [] for job in made}
    barrier = threading.Barrier(3)

    def remover() -> None:
        barrier.wait()
        for job in made:
            try:
                outcomes[job.job_id].append(store.remove_job(job.job_id).files)
            except JobNotFoundError:
                pass

    threads = [threading.Thread(target=remover) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert {job_id: len(files) for job_id, files in outcomes.items()} == {j.job_id: 1 for j in made}
    assert sorted(files[0] for files in outcomes.values()) == sorted(j.files for j in made)
    assert store.list_job_ids() == []


def test_removal_deletes_every_object_in_one_batched_call(store, monkeypatch):
    (made,) = make_jobs_in_bulk(store, ["retrieved"], n_tasks=40, runs_per_task=1)
    calls = []
    original = store.fs.rm

    def counting_rm(path, *args, **kwargs):
        calls.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(store.fs, "rm", counting_rm)
    usage = store.remove_job(made.job_id)
    assert usage.files == made.files > 80
    assert len(calls) == 1 and isinstance(calls[0], list) and len(calls[0]) == made.files
    assert store.list_job_ids() == []


def test_other_processes_changes_are_seen_at_once(store, s3_server):
    """No listing cache: what another client adds or removes is seen by the next look."""
    (first,) = make_jobs_in_bulk(store, ["failed"])
    assert store.list_job_ids() == [first.job_id]
    other = s3_server.filesystem()  # another client, as another process would have
    job_dir = f"{store.root}/{first.job_id}"
    other.pipe_file(f"{job_dir}/canceled", b"{}")
    assert jobs_module.job_status(store, first.job_id).status is S.CANCELED
    other.rm(other.find(job_dir))
    assert store.list_job_ids() == []
    assert jobs_module.job_status(store, first.job_id).status is S.MISSING


# -- a Dask cluster whose workers write to the S3 share dir -------------------------------


def test_dask_job_on_s3(tmp_path, share_path, options, store):
    pytest.importorskip("distributed")
    from rxjobs import RxDask

    from test_dask_engine import Cluster

    # The workers inherit the fake credentials from the environment; the endpoint
    # reaches them only through the options sent with the tasks.
    cluster = Cluster(tmp_path / "cluster").start()
    try:
        cc = RxDask(cluster.address, share_dir=share_path, share_dir_options=options)
        assert rx_exec(square, x=list(range(6)), task_chunk_size=2, compute_context=cc) == [
            x * x for x in range(6)]
        assert store.list_job_ids() == []  # auto_cleanup
        job = rx_exec(square, x=[3, 4], compute_context=RxDask(
            cluster.address, wait=False, share_dir=share_path, share_dir_options=options))
        assert rx_wait_for_job(job, timeout=120) is S.FINISHED
        names = store.listdir(store.paths(job.job_id).tasks)
        assert sorted(names) == ["0.out", "0.result.pkl", "1.out", "1.result.pkl"]
        with pytest.warns(RxCleanupWarning, match="rx_get_job_results"):
            assert [e.outcome for e in rx_cleanup_jobs(job, verbose=False)] == ["kept"]
        assert rx_get_job_results(job) == [9, 16]
        assert store.list_job_ids() == []
    finally:
        cluster.stop()


# -- the command line on an S3 share dir ----------------------------------------------------


def test_cli_on_s3(share_path, options, store, monkeypatch):
    from click.testing import CliRunner

    from rxjobs.cli import cli

    failed, unretrieved = make_jobs_in_bulk(store, ["failed", "unretrieved"])
    endpoint = f"endpoint_url={options['endpoint_url']}"

    def rxjobs(*args: str, **env: str):
        return CliRunner(env=env).invoke(cli, ["--share-dir", share_path, *args])

    listed = rxjobs("-o", endpoint, "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert {(r["job_id"], r["state"]) for r in json.loads(listed.stdout)} == {
        (failed.job_id, "failed"), (unretrieved.job_id, "finished")}
    du = rxjobs("du", "--json", RXJOBS_SHARE_DIR_OPTIONS=json.dumps(options))
    assert du.exit_code == 0, du.output
    assert json.loads(du.stdout)["totals"]["jobs"] == 2
    dry = rxjobs("-o", endpoint, "cleanup", "--max-total-size", "0", "--dry-run")
    assert dry.exit_code == 0 and f"would remove {failed.job_id}" in dry.stdout
    cleaned = rxjobs("-o", endpoint, "cleanup", "--max-total-size", "0", "--json")
    assert cleaned.exit_code == 1  # the un-retrieved job keeps it over the size
    assert json.loads(cleaned.stdout)["removed"] == 1
    results = rxjobs("-o", endpoint, "results", "--json", unretrieved.job_id)
    assert results.exit_code == 0, results.output
    assert json.loads(results.stdout) == unretrieved.values
    assert store.list_job_ids() == []
    bad = rxjobs("-o", "no-equals-sign", "list")
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output
