"""rxjobs.compat.submitit on the local engine: submitit's documentation examples, import changed.

The examples are those of submitit's README and docs/examples.md, with only
``import submitit`` changed (and, where an example sleeps for many seconds,
shorter sleeps).  ``SLURM_CONF`` points nowhere, so ``AutoExecutor`` finds
no Slurm answering and picks the local engine, as submitit does.  The
parameter mapping is pure and tested by tables.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import warnings
from operator import add, truediv

import pytest

import rxjobs.compat.submitit as submitit
from rxjobs import RxRemoteJobStatus, list_jobs, rx_cleanup_jobs
from rxjobs.compat.submitit import parameters
from rxjobs.compat.submitit.executors import share_dir_of

from conftest import wait_until

pytestmark = pytest.mark.timeout(300)
S = RxRemoteJobStatus


@pytest.fixture(autouse=True)
def _in_tmp_without_slurm(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "no-slurm.conf"))


def jobs_in(folder: str) -> list:
    return list_jobs(share_dir_of(folder))


# -- the documentation's examples -------------------------------------------------------


def test_readme_addition():
    def add(a, b):
        return a + b

    # executor is the submission interface (logs are dumped in the folder)
    executor = submitit.AutoExecutor(folder="log_test")
    # set timeout in min, and partition for running the job
    executor.update_parameters(timeout_min=1, slurm_partition="dev")
    job = executor.submit(add, 5, 7)  # will compute add(5, 7)
    print(job.job_id)  # ID of your job

    output = job.result()  # waits for completion and returns output
    assert output == 12  # 5 + 7 = 12...  your addition was computed in the cluster
    assert executor.cluster == "local"


def test_explained_example_with_percent_j_folder():
    log_folder = "log_test/%j"
    executor = submitit.AutoExecutor(folder=log_folder)
    executor.update_parameters(timeout_min=4, slurm_partition="dev")
    job = executor.submit(add, 5, 7)
    assert job.result() == 12
    [(found, _, _)] = jobs_in("log_test")  # %j: every job has its own directory in log_test
    assert found.job_id == job.job_id
    assert str(job.paths.folder).startswith(os.path.abspath("log_test"))


def test_job_arrays_map_array():
    executor = submitit.AutoExecutor(folder="logs/%j")
    executor.update_parameters(timeout_min=10, slurm_array_parallelism=2)  # at most 2 jobs at a time
    jobs = executor.map_array(add, [1, 2, 3, 4], [10, 20, 30, 40])
    assert [job.result() for job in jobs] == [11, 22, 33, 44]
    assert len(jobs_in("logs")) == 1  # one rxjobs job
    assert len({job.job_id for job in jobs}) == 4 and jobs[3].job_id.endswith("_3")


def power(x: int, exponent: int = 2) -> int:
    return x**exponent


def test_job_arrays_through_batch():
    executor = submitit.AutoExecutor(folder="logs/%j")
    jobs = []
    with executor.batch():
        for exponent in range(4):
            jobs.append(executor.submit(power, 2, exponent=exponent))
    assert [job.result() for job in jobs] == [1, 2, 4, 8]
    assert len(jobs_in("logs")) == 1


def test_batch_rules():
    executor = submitit.AutoExecutor(folder="logs")
    with executor.batch():
        job = executor.submit(power, 2)
        with pytest.raises(AttributeError, match="batch"):
            _ = job.job_id
        with pytest.raises(RuntimeError, match="update_parameters"):
            executor.update_parameters(timeout_min=2)
    assert job.result() == 4
    with pytest.raises(ValueError, match="boom"):
        with executor.batch():
            dropped = executor.submit(power, 3)
            raise ValueError("boom")
    with pytest.raises(AttributeError):
        _ = dropped.job_id  # never submitted
    assert len(jobs_in("logs")) == 1


def test_concurrent_jobs():
    executor = submitit.AutoExecutor(folder="log_test")
    executor.update_parameters(timeout_min=1, slurm_partition="dev")
    jobs = [executor.submit(time.sleep, k / 10) for k in range(1, 11)]
    num_finished = sum(job.done() for job in jobs)
    assert 0 <= num_finished <= 10
    outputs = [job.result() for job in jobs]
    assert outputs == [None] * 10
    assert all(job.done() for job in jobs)


def slow_multiplication(x, y):
    time.sleep(x * y / 10)
    return x * y


def test_asyncio():
    executor = submitit.AutoExecutor(folder="log_test")
    executor.update_parameters(timeout_min=1, slurm_partition="dev")

    async def main():
        job = executor.submit(slow_multiplication, 10, 2)
        assert await job.async_result(poll_frequency=0.1) == 20
        assert await job.awaitable().result(poll_frequency=0.1) == 20
        jobs = [executor.submit(slow_multiplication, k, random.randint(1, 4)) for k in range(1, 5)]
        results = []
        for aws in asyncio.as_completed([j.async_result(poll_frequency=0.1) for j in jobs]):
            results.append(await aws)
        return sorted(results), sorted(j.result() for j in jobs)

    got, expected = asyncio.run(main())
    assert got == expected


def test_errors():
    executor = submitit.AutoExecutor(folder="log_test")
    executor.update_parameters(timeout_min=1, slurm_partition="dev")
    job = executor.submit(truediv, 1, 0)
    with pytest.raises(submitit.FailedJobError, match="ZeroDivisionError") as caught:
        job.result()  # will raise a FailedJobError stating the ZeroDivisionError with its stacktrace
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    full_stderr = job.stderr()  # recover the full stack trace if need be
    assert "ZeroDivisionError" in full_stderr and "Traceback" in full_stderr
    assert isinstance(job.exception(), submitit.FailedJobError)
    assert job.state == "FAILED"


def test_command_function():
    function = submitit.helpers.CommandFunction(["which", "python3"])  # commands must be provided as a list!
    assert function().strip().endswith("python3")
    assert submitit.helpers.CommandFunction(["echo"], verbose=False)("a", b=1).strip() == "a --b=1"
    executor = submitit.AutoExecutor(folder="log_test")
    executor.update_parameters(timeout_min=1, slurm_partition="dev")
    job = executor.submit(submitit.helpers.CommandFunction(["echo", "from the job"], verbose=False))
    assert job.result().strip() == "from the job"
    failing = executor.submit(submitit.helpers.CommandFunction(["false"]))
    with pytest.raises(submitit.FailedJobError, match="exit code 1"):
        failing.result()


def where_am_i():
    job_env = submitit.JobEnvironment()
    print(f"There are {job_env.num_tasks} in this job")
    print(f"I'm the task #{job_env.local_rank} on the node {job_env.node}")
    return (job_env.num_tasks, job_env.global_rank, job_env.local_rank, job_env.node)


def test_job_environment_and_task_and_stdout():
    executor = submitit.AutoExecutor(folder="log_test")
    job = executor.submit(where_am_i)
    assert job.task(0).result() == (1, 0, 0, 0)
    assert job.results() == [(1, 0, 0, 0)]
    assert "There are 1 in this job" in job.task(0).stdout()
    assert job.num_tasks == 1
    with pytest.raises(ValueError, match="task 2 does not exist"):
        job.task(2)


def rank_report(x):
    """What a task of a multi-task job sees: its rank among how many, in which process."""
    env = submitit.JobEnvironment()
    print(f"rank {env.global_rank} of {env.num_tasks}", flush=True)
    if x == "raise" and env.global_rank == 1:
        raise ValueError("rank 1 says no")
    return x, env.global_rank, env.local_rank, env.num_tasks, os.getpid()


def test_a_multi_task_job_runs_its_ranks_as_processes():
    executor = submitit.AutoExecutor(folder="log_test", cluster="local")
    executor.update_parameters(tasks_per_node=2, timeout_min=1)
    job = executor.submit(rank_report, 7)
    assert job.num_tasks == 2
    results = job.results()
    assert [r[:4] for r in results] == [(7, 0, 0, 2), (7, 1, 1, 2)]
    assert results[0][4] != results[1][4] and os.getpid() not in (results[0][4], results[1][4])
    assert job.result() == results[0]  # submitit: task 0's
    assert [job.task(i).result() for i in (0, 1)] == results
    with pytest.raises(ValueError, match="task 2 does not exist"):
        job.task(2)
    output = job.stdout()
    assert "rank 0 of 2" in output and "rank 1 of 2" in output
    assert not [n for n in os.listdir(job.paths.folder / "tasks") if ".rank-" in n]  # gathered, removed


def test_a_multi_task_job_raises_its_ranks_error_and_maps_over_arrays():
    executor = submitit.AutoExecutor(folder="log_test", cluster="local")
    executor.update_parameters(nodes=2, tasks_per_node=2)
    failing = executor.submit(rank_report, "raise")
    with pytest.raises(submitit.FailedJobError, match="rank 1 says no"):
        failing.result()
    jobs = executor.map_array(rank_report, ["a", "b"])
    assert [[r[:4] for r in job.results()] for job in jobs] == [
        [(x, rank, rank, 4) for rank in range(4)] for x in "ab"]


def test_a_checkpointable_multi_task_job_is_refused_with_a_clear_error():
    executor = submitit.AutoExecutor(folder="log_test", cluster="local")
    executor.update_parameters(tasks_per_node=2)
    with pytest.raises(ValueError, match="checkpointable call runs as one task"):
        executor.submit(submitit.helpers.Checkpointable())


def test_helpers_as_completed():
    executor = submitit.AutoExecutor(folder="log_test")
    jobs = [executor.submit(time.sleep, d) for d in (1.5, 0)]
    done = list(submitit.helpers.as_completed(jobs, poll_frequency=0.1, timeout=120))
    assert done == [jobs[1], jobs[0]]


def test_submission_and_paths():
    executor = submitit.AutoExecutor(folder="log_test")
    job = executor.submit(power, 3, exponent=3)
    submission = job.submission()
    assert (submission.function, submission.args, submission.kwargs) == (power, (3,), {"exponent": 3})
    assert submission.result() == 27
    assert job.result() == 27
    assert job.paths.result_pickle.exists() and job.paths.submitted_pickle.exists()


# -- rxjobs' side: ordinary jobs, retrieved on read, nothing lost ------------------------


def test_reading_marks_retrieved_and_cleanup_removes_then():
    executor = submitit.AutoExecutor(folder="log_test")
    jobs = executor.map_array(say, ["a", "b"])
    assert jobs[0].result() == "a"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The other run ("b", not read) may still be finishing on a loaded machine.
        wait_until(lambda: jobs_in("log_test")[0][2] is S.FINISHED, what="the job to finish")
        [(rx, _, state)] = jobs_in("log_test")
        assert state is S.FINISHED
        rx_cleanup_jobs(rx, verbose=False)  # one run unread: kept
    assert len(jobs_in("log_test")) == 1
    assert jobs[1].result() == "b"
    assert "said b" in jobs[1].stdout()  # still there after the result was read
    rx_cleanup_jobs(rx, verbose=False)  # every run read: retrieved, removed without force
    assert jobs_in("log_test") == []


def say(text):
    print(f"said {text}")
    return text


def test_cancel():
    executor = submitit.AutoExecutor(folder="log_test")
    job = executor.submit(time.sleep, 60)
    job.cancel()
    with pytest.raises(submitit.UncompletedJobError, match="canceled"):
        job.result()
    assert job.state == "CANCELLED"


def test_debug_executor_runs_in_process():
    executor = submitit.AutoExecutor(folder="log_test", cluster="debug")
    job = executor.submit(os.getpid)
    assert job.result() == os.getpid()
    assert executor.map_array(add, [1], [2])[0].result() == 3
    assert not os.path.exists("log_test")


# -- bad input --------------------------------------------------------------------------


def test_unknown_parameter_is_named():
    executor = submitit.AutoExecutor(folder="log_test")
    with pytest.raises(ValueError, match="timeout_mni"):
        executor.update_parameters(timeout_mni=3)
    with pytest.raises(ValueError, match="slurm_partitoin"):
        executor.update_parameters(slurm_partitoin="dev")
    with pytest.raises(ValueError, match="time_min"):
        submitit.LocalExecutor("log_test").update_parameters(time_min=3)


def test_map_array_needs_equal_lengths():
    executor = submitit.AutoExecutor(folder="log_test")
    with pytest.raises(ValueError, match="equal length"):
        executor.map_array(add, [1, 2], [1])
    assert jobs_in("log_test") == []


def test_unpicklable_function_is_refused():
    import threading

    lock = threading.Lock()
    executor = submitit.AutoExecutor(folder="log_test")
    with pytest.raises(TypeError, match="cannot be pickled"):
        executor.submit(lambda: lock)
    assert jobs_in("log_test") == []


def test_only_percent_j_in_folder():
    with pytest.raises(ValueError, match="only %j"):
        submitit.AutoExecutor(folder="logs/%t")
    assert share_dir_of("a/b/%j") == os.path.abspath("a/b")
    assert share_dir_of("a/%j_x/c") == os.path.abspath("a")


# -- the parameter mapping (pure) --------------------------------------------------------


@pytest.mark.parametrize(("params", "expected"), [
    ({}, {}),
    ({"timeout_min": 10}, {"time_limit": "10"}),
    ({"timeout_min": 10, "slurm_timeout_min": 5}, {"time_limit": "5"}),
    ({"mem_gb": 4}, {"mem": "4096M"}),
    ({"slurm_mem": "8GB"}, {"mem": "8GB"}),
    ({"cpus_per_task": 4}, {"cpus_per_task": 4}),
    ({"slurm_partition": "dev", "slurm_account": "me", "slurm_qos": "low"},
     {"partition": "dev", "account": "me", "qos": "low"}),
    ({"slurm_array_parallelism": 2}, {"max_parallel": 2}),
    ({"gpus_per_node": 2}, {"extra_sbatch_options": ["--gpus-per-node=2"]}),
    ({"slurm_constraint": "skylake", "slurm_exclusive": True},
     {"extra_sbatch_options": ["--constraint=skylake", "--exclusive"]}),
    ({"slurm_additional_parameters": {"mail_type": "END"}}, {"extra_sbatch_options": ["--mail-type=END"]}),
    ({"name": "x", "stderr_to_stdout": True, "local_timeout_min": 3}, {}),
])
def test_slurm_settings_table(params, expected):
    parameters.check_auto("slurm", params)
    assert parameters.slurm_settings(parameters.native_of_auto("slurm", params)) == expected


@pytest.mark.parametrize(("cluster", "params", "bad"), [
    ("slurm", {"timeout": 3}, "timeout"),
    ("slurm", {"slurm_bogus": 1}, "slurm_bogus"),
    ("local", {"lcoal_timeout_min": 1}, "lcoal_timeout_min"),
    ("local", {"partition": "x"}, "partition"),
])
def test_unknown_names_table(cluster, params, bad):
    with pytest.raises(parameters.ParameterError, match=bad):
        parameters.check_auto(cluster, params)


@pytest.mark.parametrize("params", [{"nodes": 0}, {"tasks_per_node": -1}, {"tasks_per_node": 1.5},
                                    {"nodes": True}, {"cpus_per_task": 0}])
def test_bad_values_table(params):
    with pytest.raises(parameters.ParameterError):
        parameters.slurm_settings(parameters.native_of_auto("slurm", params))


@pytest.mark.parametrize("params, tasks, extra", [
    ({}, 1, None),
    ({"nodes": 1, "tasks_per_node": 1}, 1, None),
    ({"tasks_per_node": 2}, 2, ["--nodes=1", "--ntasks-per-node=2"]),
    ({"nodes": 2, "tasks_per_node": 3}, 6, ["--nodes=2", "--ntasks-per-node=3"]),
])
def test_multi_task_layout_table(params, tasks, extra):
    native = parameters.native_of_auto("slurm", params)
    assert parameters.num_tasks("slurm", native) == tasks
    assert parameters.slurm_settings(native).get("extra_sbatch_options") == extra
    assert parameters.num_tasks("local", parameters.native_of_auto("local", params)) == tasks


def test_local_prefixed_params_win_on_local():
    native = parameters.native_of_auto("local", {"timeout_min": 1, "local_timeout_min": 2,
                                                 "slurm_partition": "x"})
    assert native == {"timeout_min": 2}


def test_module_is_importable_as_submitit():
    for name in ("AutoExecutor", "LocalExecutor", "SlurmExecutor", "DebugExecutor", "JobEnvironment",
                 "helpers"):
        assert hasattr(submitit, name)
    assert sys.modules["rxjobs.compat.submitit"] is submitit


@pytest.mark.parametrize("restart_count, words", [
    (None, "requeued by Slurm after checkpoint (run 0, attempt 2)"),   # a first attempt: unset
    ("0", "requeued by Slurm after checkpoint (run 0, attempt 2)"),
    ("1", "requeued by Slurm after checkpoint (run 0, attempt 3)"),
    ("x", "requeued by Slurm after checkpoint (run 0, attempt 2)"),    # not a count: as unset
])
def test_requeued_reason(restart_count, words):
    from rxjobs.compat.submitit.requeue import requeued_reason

    assert requeued_reason(0, restart_count) == words
