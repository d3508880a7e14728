"""rxjobs.Executor and rxjobs.compat.submitit on the real single-node Slurm (tests/slurm_cluster.py).

One cluster for the module.  The Executor is checked against the standard
library's semantics; submitit's documentation examples run with only the
import changed, ``AutoExecutor`` finding the cluster as submitit would.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import time
from operator import add, truediv
from pathlib import Path

import pytest

import rxjobs.compat.submitit as submitit
from rxjobs import RxSlurm, list_jobs
from rxjobs.executor import Executor
from rxjobs.jobs import job_status
from rxjobs.records import read_engine_record

from conftest import wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.slurm]


@pytest.fixture
def share(tmp_path, slurm):
    path = tmp_path / "share"
    yield str(path)
    _cancel_jobs_of(str(path))


def _cancel_jobs_of(share: str) -> None:
    """Cancel what Slurm still runs for the jobs of ``share`` (a failed test's leftovers)."""
    from rxjobs.store import open_store

    if not os.path.isdir(share):
        return
    store = open_store(share)
    ids = []
    for job_id in store.list_job_ids():
        try:
            handle = read_engine_record(store, job_id).handle
            ids += [str(handle["array"]), str(handle["final"])]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


@pytest.fixture
def gate(tmp_path):
    path = tmp_path / "gate"
    try:
        yield str(path)
    finally:
        path.touch()


def square(x):
    return x * x


class NotFound(LookupError):
    pass


def raise_not_found():
    raise NotFound("nothing here")


def gated(gate, value, limit=240.0):
    deadline = time.monotonic() + limit
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} was never opened")
        time.sleep(0.05)
    return value


# -- the Executor on Slurm --------------------------------------------------------------


def test_executor_submit_result_and_errors(share):
    with Executor(RxSlurm(share_dir=share)) as ex:
        futures = [ex.submit(square, i) for i in range(3)]
        bad = ex.submit(raise_not_found)
        assert {f for f in cf.as_completed(futures, timeout=180)} == set(futures)
        assert [f.result() for f in futures] == [0, 1, 4]
        with pytest.raises(NotFound) as caught:
            bad.result(timeout=180)
        assert "raise_not_found" in caught.value.remote_traceback
    assert list_jobs(share) == []  # every outcome was read: nothing left


def test_executor_wait_first_completed_and_cancel_held(share, gate):
    with Executor(RxSlurm(share_dir=share), max_workers=2) as ex:
        slow = ex.submit(gated, gate, "slow")
        fast = ex.submit(square, 3)
        held = ex.submit(square, 4)
        assert held.cancel() and held.cancelled()
        done, not_done = cf.wait([slow, fast], timeout=180, return_when=cf.FIRST_COMPLETED)
        assert done == {fast} and not_done == {slow}
        Path(gate).touch()
        assert slow.result(timeout=180) == "slow"


def test_executor_map_is_one_slurm_array(share):
    with Executor(RxSlurm(share_dir=share)) as ex:
        assert list(ex.map(add, range(20), range(20), chunksize=5)) == [2 * i for i in range(20)]
    assert list_jobs(share) == []


# -- submitit's examples on Slurm -------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, slurm):
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    _cancel_jobs_of(str(tmp_path / "log_test"))


def test_readme_addition_on_slurm(in_tmp):
    def add(a, b):
        return a + b

    executor = submitit.AutoExecutor(folder="log_test")
    executor.update_parameters(timeout_min=1, slurm_partition="debug")
    job = executor.submit(add, 5, 7)
    print(job.job_id)
    output = job.result()
    assert output == 12
    assert executor.cluster == "slurm"


def test_map_array_and_batch_on_slurm(in_tmp):
    executor = submitit.AutoExecutor(folder="log_test/%j")
    executor.update_parameters(timeout_min=10, slurm_array_parallelism=2)
    jobs = executor.map_array(add, [1, 2, 3, 4], [10, 20, 30, 40])
    assert [job.result() for job in jobs] == [11, 22, 33, 44]
    batched = []
    with executor.batch():
        for exponent in range(4):
            batched.append(executor.submit(pow, 2, exponent))
    assert [job.result() for job in batched] == [1, 2, 4, 8]


def where_am_i():
    env = submitit.JobEnvironment()
    return env.cluster, env.job_id, env.num_tasks, env.global_rank


def test_errors_and_job_environment_on_slurm(in_tmp):
    executor = submitit.AutoExecutor(folder="log_test")
    executor.update_parameters(timeout_min=1)
    job = executor.submit(truediv, 1, 0)
    with pytest.raises(submitit.FailedJobError, match="ZeroDivisionError"):
        job.result()
    assert "ZeroDivisionError" in job.stderr()
    cluster, slurm_id, num_tasks, rank = executor.submit(where_am_i).result()
    assert (cluster, num_tasks, rank) == ("slurm", 1, 0)
    assert "_" in slurm_id  # an array task: <array id>_<index>


def slurm_rank_report(x):
    """What a task of a multi-task job sees on Slurm: its ranks and ids, from Slurm's variables."""
    env = submitit.JobEnvironment()
    print(f"rank {env.global_rank} of {env.num_tasks}", flush=True)
    return x, env.global_rank, env.local_rank, env.num_tasks, env.raw_job_id, os.getpid()


def test_a_multi_task_job_is_one_slurm_job_of_srun_tasks(in_tmp):
    executor = submitit.AutoExecutor(folder="log_test")
    executor.update_parameters(nodes=1, tasks_per_node=2, timeout_min=2)
    job = executor.submit(slurm_rank_report, 5)
    assert job.num_tasks == 2
    results = job.results()
    assert [r[:4] for r in results] == [(5, 0, 0, 2), (5, 1, 1, 2)]  # ranks Slurm gave (SLURM_PROCID...)
    assert results[0][4] == results[1][4]  # one Slurm job (one array element)...
    assert results[0][5] != results[1][5]  # ...whose two tasks are two processes
    assert job.result() == results[0] and job.task(1).result() == results[1]
    output = job.stdout()
    assert "rank 0 of 2" in output and "rank 1 of 2" in output
    handle = read_engine_record(job.rx_job.store, job.rx_job.job_id).handle
    assert handle["n_tasks"] == 1  # one array task, its ranks a srun step


# -- checkpoint and requeue -------------------------------------------------------------


def _requeue_said(store, job_id: str) -> tuple[str, str] | None:
    """The job's state and reason once the reason says it was requeued, else None."""
    derived = job_status(store, job_id)
    return (derived.status.value, derived.reason) if derived.reason.startswith("requeued") else None


class Attempts(submitit.helpers.Checkpointable):
    """Counts its attempts; the first waits until it is signalled (and requeued)."""

    def __init__(self) -> None:
        self.attempts = 0

    def __call__(self, marker: str) -> int:
        self.attempts += 1
        Path(f"{marker}.{self.attempts}").touch()
        if self.attempts == 1:
            time.sleep(240)  # interrupted by the USR2 the test sends
        return self.attempts


# Slurm holds a requeued job back until its launch credential expires: 10 s on the test
# cluster (tests/slurm_cluster.py, CRED_EXPIRE_S), so the whole test takes well under a minute.
@pytest.mark.timeout(180)
def test_checkpointable_is_requeued_with_its_state_on_usr2(in_tmp):
    marker = str(in_tmp / "attempt")
    executor = submitit.AutoExecutor(folder="log_test")
    executor.update_parameters(timeout_min=10)
    job = executor.submit(Attempts(), marker)
    wait_until(lambda: os.path.exists(f"{marker}.1"), timeout=180, what="the first attempt to start")
    store = job.rx_job.store
    array = read_engine_record(store, job.rx_job.job_id).handle["array"]
    subprocess.run(["scancel", "--signal=USR2", "--batch", f"{array}_0"], check=True, timeout=30)
    # While it waits to run again (and then runs), the job says why: requeued, and which attempt.
    requeued = wait_until(lambda: _requeue_said(store, job.rx_job.job_id), timeout=60,
                          what="the job to say it was requeued")
    assert requeued == ("running", "requeued by Slurm after checkpoint (run 0, attempt 2)")
    assert job.result() == 2  # the checkpointed state (1 attempt) went on in the requeued task
    assert os.path.exists(f"{marker}.2") and not os.path.exists(f"{marker}.3")
    assert len(list_jobs(str(in_tmp / "log_test"))) == 1  # still one rxjobs job
    assert job.paths.folder.joinpath("tasks", "run-0.checkpoint.pkl").exists()
    first, second = (os.stat(f"{marker}.{i}").st_mtime for i in (1, 2))
    print(f"requeued attempt started {second - first:.1f} s after the first")
