"""rxjobs.Executor against the standard library's documented ``concurrent.futures`` semantics.

Every contract test runs on the local engine and on a real Dask cluster
(module scope, from tests/test_dask_engine.py).  Functions are defined here
and pickled by reference: Dask workers import this module (the tests
directory is on their ``PYTHONPATH``).  Runs that must stay running wait on
a gate file the test opens (and the fixture opens at the latest).
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest

import rxjobs
from rxjobs import RxDask, RxLocalParallel, RxLocalSeq, RxRemoteJobStatus, list_jobs, rx_cleanup_jobs
from rxjobs.errors import JobCanceledError
from rxjobs.executor import Executor, RxFuture

from conftest import wait_until

pytestmark = pytest.mark.timeout(300)
S = RxRemoteJobStatus


# -- functions the jobs run -------------------------------------------------------------


def square(x):
    return x * x


def add(x, y=0, *, z=0):
    return x + y + z


def say_and_return(text):
    print(text)
    return text


class NotFound(LookupError):
    """A user-defined exception type: it must come back as itself."""


def raise_not_found(what):
    raise NotFound(f"no {what}")


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"item {x} is bad")
    return x


def gated(gate, value, limit=240.0):
    """Block until ``gate`` exists (the test opens it), then return ``value``."""
    Path(f"{gate}.started-{value}").touch()
    deadline = time.monotonic() + limit
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} was never opened")
        time.sleep(0.02)
    return value


def started(gate, value) -> bool:
    return os.path.exists(f"{gate}.started-{value}")


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    from test_dask_engine import Cluster

    running = Cluster(tmp_path_factory.mktemp("dask-cluster")).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(params=["local", "dask"])
def context(request, tmp_path):
    share = str(tmp_path / "share dir")
    if request.param == "local":
        return RxLocalParallel(share_dir=share, num_workers=2)
    cluster = request.getfixturevalue("dask_cluster")
    return RxDask(cluster.address, share_dir=share)


@pytest.fixture
def gate(tmp_path):
    path = tmp_path / "gate"
    try:
        yield str(path)
    finally:
        path.touch()  # never leave a run blocked


@pytest.fixture
def executor(context):
    ex = Executor(context)
    try:
        yield ex
    finally:
        ex.shutdown(wait=False, cancel_futures=True)


def job_dirs(context) -> list[str]:
    return [job.job_id for job, _, _ in list_jobs(context.job_share_dir())]


# -- submit and result ------------------------------------------------------------------


def test_submit_returns_a_future_that_is_a_job_handle(executor, context):
    future = executor.submit(add, 1, 2, z=4)
    assert isinstance(future, cf.Future) and isinstance(future, RxFuture)
    assert future.job_id in job_dirs(context)  # an ordinary rxjobs job, listed
    assert future.job.job_id == future.job_id
    assert future.result(timeout=120) == 7
    assert future.done() and not future.running() and not future.cancelled()
    assert future.exception() is None


def test_reading_the_result_removes_the_job(executor, context):
    future = executor.submit(square, 5)
    wait_until(future.done, timeout=120, what="the job to end")
    assert future.job_id in job_dirs(context)  # done but unread: still there
    assert future.result() == 25
    assert future.job_id not in job_dirs(context)


def test_console_output_of_the_job(executor):
    future = executor.submit(say_and_return, "hello from the job")
    cf.wait([future], timeout=120)
    assert "hello from the job" in future.output()
    future.result()


def test_exception_comes_back_as_its_own_type_with_the_remote_traceback(executor):
    future = executor.submit(raise_not_found, "cheese")
    with pytest.raises(NotFound, match="no cheese") as caught:
        future.result(timeout=120)
    assert "raise_not_found" in caught.value.remote_traceback
    error = future.exception()
    assert isinstance(error, NotFound)


def test_result_timeout_raises_timeout_error(executor, gate):
    future = executor.submit(gated, gate, 1)
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=0.2)
    with pytest.raises(TimeoutError):  # the builtin, as concurrent.futures documents since 3.11
        future.exception(timeout=0.1)
    Path(gate).touch()
    assert future.result(timeout=120) == 1


# -- wait and as_completed --------------------------------------------------------------


def test_wait_first_completed(executor, gate):
    slow = executor.submit(gated, gate, "slow")
    fast = executor.submit(square, 3)
    done, not_done = cf.wait([slow, fast], timeout=120, return_when=cf.FIRST_COMPLETED)
    assert done == {fast} and not_done == {slow}
    Path(gate).touch()
    done, not_done = cf.wait([slow, fast], timeout=120, return_when=cf.ALL_COMPLETED)
    assert done == {slow, fast} and not not_done
    assert slow.result() == "slow" and fast.result() == 9


def test_wait_first_exception(executor, gate):
    slow = executor.submit(gated, gate, "slow")
    bad = executor.submit(raise_not_found, "x")
    done, not_done = cf.wait([slow, bad], timeout=120, return_when=cf.FIRST_EXCEPTION)
    assert done == {bad} and not_done == {slow}
    assert isinstance(bad.exception(), NotFound)


def test_wait_timeout_returns_what_is_not_done(executor, gate):
    slow = executor.submit(gated, gate, "slow")
    done, not_done = cf.wait([slow], timeout=0.3)
    assert not done and not_done == {slow}


def test_as_completed_yields_in_completion_order(executor, gate):
    slow = executor.submit(gated, gate, "slow")
    fast = [executor.submit(square, i) for i in range(3)]
    seen = []
    for future in cf.as_completed([slow, *fast], timeout=180):
        seen.append(future)
        if len(seen) == 3:
            Path(gate).touch()
    assert set(seen[:3]) == set(fast) and seen[3] is slow


def test_as_completed_timeout(executor, gate):
    slow = executor.submit(gated, gate, "slow")
    with pytest.raises(cf.TimeoutError):
        for _ in cf.as_completed([slow], timeout=0.3):
            pass


def test_add_done_callback_before_and_after_done(executor):
    called = []
    event = threading.Event()
    future = executor.submit(square, 4)

    def callback(f):
        called.append(f.result())
        event.set()

    future.add_done_callback(callback)
    assert event.wait(120)
    future.add_done_callback(lambda f: called.append("again"))  # done: called at once
    assert called == [16, "again"]


# -- running and cancel -----------------------------------------------------------------


def test_cancel_a_held_back_future_and_not_a_running_one(context, gate):
    with Executor(context, max_workers=1) as ex:
        running = ex.submit(gated, gate, 1)
        held = ex.submit(square, 2)
        assert held.job_id is None and not held.running()
        assert held.cancel() and held.cancelled() and held.done()
        with pytest.raises(cf.CancelledError):
            held.result()
        wait_until(running.running, timeout=120, what="the future to be running")
        assert not running.cancel()
        Path(gate).touch()
        assert running.result(timeout=120) == 1


def test_max_workers_bounds_jobs_in_flight(context, gate):
    with Executor(context, max_workers=2) as ex:
        futures = [ex.submit(gated, gate, i) for i in range(4)]
        wait_until(lambda: started(gate, 0) and started(gate, 1), timeout=120, what="two runs")
        assert [f.job_id is not None for f in futures] == [True, True, False, False]
        Path(gate).touch()
        assert [f.result(timeout=120) for f in futures] == [0, 1, 2, 3]


def test_a_job_canceled_from_outside_raises_job_canceled_error(executor, gate):
    future = executor.submit(gated, gate, 1)
    wait_until(lambda: started(gate, 1), timeout=120, what="the run to start")
    assert future.job.cancel()
    with pytest.raises(JobCanceledError):
        future.result(timeout=120)


# -- map --------------------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_is_one_job_with_results_in_order(executor, context, chunksize):
    before = set(job_dirs(context))
    results = executor.map(add, range(7), range(10, 20), chunksize=chunksize)
    new = set(job_dirs(context)) - before
    assert len(new) == 1  # one job, one run per item
    assert list(results) == [x + y for x, y in zip(range(7), range(10, 17), strict=True)]
    assert set(job_dirs(context)) == before  # read whole: removed


def test_map_reraises_a_run_error_when_its_value_is_reached(executor):
    results = executor.map(fail_on, range(5), [3] * 5, chunksize=2)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="item 3 is bad"):
        next(results)


def test_map_timeout(executor, gate):
    results = executor.map(gated, [gate], ["v"], timeout=0.3)
    with pytest.raises(cf.TimeoutError):
        next(results)


def test_map_of_nothing(executor):
    assert list(executor.map(square, [])) == []


# -- shutdown ---------------------------------------------------------------------------


def test_submit_or_map_after_shutdown_raises_runtime_error(context):
    ex = Executor(context)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(square, [1])


def test_context_manager_waits_for_its_futures(context):
    with Executor(context) as ex:
        futures = [ex.submit(square, i) for i in range(3)]
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [0, 1, 4]


def test_shutdown_cancel_futures_cancels_the_held_back_ones(context, gate):
    ex = Executor(context, max_workers=1)
    running = ex.submit(gated, gate, 1)
    held = [ex.submit(square, i) for i in range(3)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in held)
    Path(gate).touch()
    assert running.result(timeout=120) == 1


# -- the watcher ------------------------------------------------------------------------


def _watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rxjobs-executor-watcher"]


def test_one_watcher_thread_per_executor_and_it_ends(context):
    before = set(_watchers())  # other tests' watchers may still be ending
    ex = Executor(context)
    futures = [ex.submit(square, i) for i in range(4)]
    [watcher] = set(_watchers()) - before
    ex.shutdown(wait=True)
    assert [f.result() for f in futures] == [0, 1, 4, 9]
    wait_until(lambda: not watcher.is_alive(), timeout=30, what="the watcher to end")


def test_a_dropped_executor_ends_its_watcher(context):
    before = set(_watchers())
    ex = Executor(context)
    assert ex.submit(square, 2).result(timeout=120) == 4
    [watcher] = set(_watchers()) - before
    del ex
    gc.collect()
    wait_until(lambda: not watcher.is_alive(), timeout=30, what="the watcher to end")


# -- bounded results, nothing lost ------------------------------------------------------


def test_a_submit_result_loop_leaves_no_job_behind(executor, context):
    for i in range(15):
        assert executor.submit(square, i).result(timeout=120) == i * i
        assert len(job_dirs(context)) == 0


def test_an_unread_result_is_never_lost(executor, context):
    future = executor.submit(square, 6)
    job_id = future.job_id
    wait_until(future.done, timeout=120, what="the job to end")
    del future
    gc.collect()
    [(job, _, state)] = list_jobs(context.job_share_dir())
    assert job.job_id == job_id and state is S.FINISHED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rx_cleanup_jobs(job, verbose=False)  # a plain cleanup keeps un-retrieved results
    assert job.result() == [36]


def test_auto_cleanup_false_marks_the_job_retrieved(context):
    with Executor(context, auto_cleanup=False) as ex:
        future = ex.submit(square, 7)
        assert future.result(timeout=120) == 49
    [(job, _, state)] = list_jobs(context.job_share_dir())
    assert job.job_id == future.job_id
    report = rx_cleanup_jobs(job, verbose=False)  # retrieved: removed without force
    assert not job_dirs(context), report


def test_a_process_that_drops_its_futures_exits(tmp_path):
    share = tmp_path / "share"
    script = textwrap.dedent(f"""
        import time
        from rxjobs import Executor, RxLocalParallel
        ex = Executor(RxLocalParallel(share_dir={str(share)!r}))
        futures = [ex.submit(time.sleep, 2) for _ in range(2)]
        print("submitted", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "submitted" in proc.stdout
    # The calls (gathered into one job, or two on a loaded machine) were submitted by the
    # time the script ended, ran on, and their results wait in the share dir.
    results = []
    for job, _, _ in list_jobs(str(share)):
        assert job.wait(timeout=120) is S.FINISHED
        results += job.result()
    assert results == [None, None]


# -- calls submitted together -----------------------------------------------------------


def test_calls_submitted_together_are_one_job_per_function(executor, context):
    squares = [executor.submit(square, i) for i in range(12)]
    sums = [executor.submit(add, i, 1) for i in range(3)]
    jobs_of_squares = {f.job_id for f in squares}
    assert len(jobs_of_squares) <= 2 and None not in jobs_of_squares  # gathered, not 12 jobs
    assert not jobs_of_squares & {f.job_id for f in sums}  # one function per job
    for future in squares:  # each call is a run of its job
        assert future.job.job_id == future.job_id
    assert len({(f.job_id, f.run) for f in squares}) == 12
    assert set(job_dirs(context)) == jobs_of_squares | {f.job_id for f in sums}
    assert [f.result(timeout=120) for f in squares] == [i * i for i in range(12)]
    assert [f.result(timeout=120) for f in sums] == [1, 2, 3]
    wait_until(lambda: not job_dirs(context), timeout=60, what="every job read whole to be removed")


def _largest_job(futures: list[RxFuture]) -> list[RxFuture]:
    by_job: dict[str | None, list[RxFuture]] = {}
    for future in futures:
        by_job.setdefault(future.job_id, []).append(future)
    return max(by_job.values(), key=len)


def test_a_job_of_many_calls_stays_until_every_outcome_was_read(context):
    ex = Executor(context)
    futures = [ex.submit(square, i) for i in range(20)]
    many = _largest_job(futures)
    assert len(many) >= 2  # 20 calls in a loop are never 20 jobs
    job_id, last = many[0].job_id, many[-1]
    cf.wait(futures, timeout=120)
    for i, future in enumerate(futures):
        if future is not last:
            assert future.result() == i * i
    ex.shutdown(wait=True)  # the watcher has seen every job end
    assert job_id in job_dirs(context)  # one outcome unread: nothing removed
    assert last.result() == futures.index(last) ** 2
    assert job_id not in job_dirs(context)  # the last read removed it at once


def test_a_dropped_unread_future_of_many_leaves_its_job_for_cleanup(executor, context):
    futures = [executor.submit(square, i) for i in range(3)]
    unread_job = futures[2].job_id
    cf.wait(futures, timeout=120)
    assert [f.result() for f in futures[:2]] == [0, 1]
    del futures
    gc.collect()
    executor.shutdown(wait=True)
    [job] = [job for job, _, state in list_jobs(context.job_share_dir()) if job.job_id == unread_job]
    assert 4 in job.result()  # the unread value is there, for whoever collects it


def test_output_of_a_call_in_a_job_of_many(executor):
    futures = [executor.submit(say_and_return, f"call {i} speaking") for i in range(3)]
    cf.wait(futures, timeout=120)
    for i, future in enumerate(futures):
        assert f"call {i} speaking" in future.output()
    assert [f.result() for f in futures] == [f"call {i} speaking" for i in range(3)]


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1])
def test_max_workers_must_be_positive(bad):
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        Executor(max_workers=bad)


def test_an_in_process_context_is_refused():
    with pytest.raises(ValueError, match="RxLocalParallel"):
        Executor(RxLocalSeq())


def test_an_unpicklable_function_is_refused_and_nothing_is_written(tmp_path):
    share = tmp_path / "share"
    lock = threading.Lock()
    with Executor(RxLocalParallel(share_dir=str(share))) as ex:
        with pytest.raises(TypeError, match="cannot be pickled"):
            ex.submit(lambda: lock)
        with pytest.raises(TypeError, match="must be callable"):
            ex.submit(42)
    assert list_jobs(str(share)) == []


def test_executor_is_exported_lazily():
    assert rxjobs.Executor is Executor
    assert "Executor" in dir(rxjobs)


def test_on_an_object_store_share_dir(s3_share, s3_server):
    cc = RxLocalParallel(share_dir=s3_share, share_dir_options=s3_server.options, num_workers=1)
    with Executor(cc) as ex:
        futures = [ex.submit(add, i, 1) for i in range(3)]
        assert [f.result(timeout=120) for f in futures] == [1, 2, 3]
        assert list(ex.map(square, range(4), chunksize=2)) == [0, 1, 4, 9]
        bad = ex.submit(raise_not_found, "key")
        assert isinstance(bad.exception(timeout=120), NotFound)
    assert list_jobs(s3_share, share_dir_options=s3_server.options) == []
