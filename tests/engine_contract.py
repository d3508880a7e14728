"""The engine contract: what every engine (local, Dask, Spark) must pass.

An engine's test module subclasses :class:`EngineContract` and provides the
fixture ``make_context(wait=..., **settings)`` returning a compute context of
that engine on a fresh share dir, and ``share_path`` (that share dir); a share
dir that needs storage options overrides ``share_store`` too.
"""

from __future__ import annotations

import time
import warnings

import pytest

from rxjobs import (
    JobNotFinishedError,
    RxCleanupWarning,
    RxRemoteJobStatus,
    RxRunWarning,
    rx_cancel_job,
    rx_cleanup_jobs,
    rx_exec,
    rx_get_job_output,
    rx_get_job_results,
    rx_get_job_status,
    rx_get_jobs,
    rx_wait_for_job,
)
from rxjobs.store import Store, open_store

from conftest import wait_until

S = RxRemoteJobStatus


def square(x):
    print("squaring", x)
    return x * x


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"no threes please ({x})")
    return x


def sleep_then_return(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return seconds


def print_every_second(lines):
    """Print a line a second (what a user's long task does), then return."""
    for i in range(lines):
        print(f"live line {i}", flush=True)
        time.sleep(1.0)
    return lines


class EngineContract:
    """Tests every engine passes, through the public API only."""

    @pytest.fixture
    def share_store(self, share_path) -> Store:
        """The share dir of ``make_context``, as a store."""
        return open_store(share_path)

    def test_waiting_job_returns_results_in_run_order(self, make_context):
        seen = []
        results = rx_exec(square, x=list(range(12)), compute_context=make_context(wait=True),
                          task_chunk_size=5, callback=seen.append)
        assert results == [x * x for x in range(12)]
        assert sorted(seen) == sorted(results)

    def test_waiting_job_cleans_up_after_itself(self, make_context, share_store):
        rx_exec(square, x=[1, 2], compute_context=make_context(wait=True))
        assert share_store.list_job_ids() == []

    def test_waiting_job_without_auto_cleanup_leaves_a_retrieved_job(self, make_context, share_path):
        cc = make_context(wait=True)
        assert rx_exec(square, x=[1, 2], compute_context=cc, auto_cleanup=False) == [1, 4]
        (job,) = rx_get_jobs(cc, verbose=False)
        report = rx_cleanup_jobs(job, verbose=False)  # retrieved: no force needed
        assert [e.outcome for e in report] == ["removed"]

    def test_non_waiting_job_runs_to_finished_and_is_collected(self, make_context, share_store):
        cc = make_context(wait=False)
        job = rx_exec(square, x=list(range(10)), compute_context=cc)
        assert rx_get_job_status(job) in (S.QUEUED, S.RUNNING, S.FINISHED)
        assert rx_wait_for_job(job, timeout=120) is S.FINISHED
        output = rx_get_job_output(job)
        assert [line for line in output.splitlines() if line.startswith("squaring")] == [
            f"squaring {x}" for x in range(10)]
        assert job in rx_get_jobs(cc, verbose=False)
        assert rx_get_job_results(job) == [x * x for x in range(10)]
        assert rx_get_job_status(job) is S.MISSING  # auto_cleanup removed it
        assert share_store.list_job_ids() == []

    def test_failed_run_is_kept_in_its_slot_when_continuing(self, make_context):
        cc = make_context(wait=False)
        job = rx_exec(fail_on_three, x=list(range(5)), compute_context=cc, task_chunk_size=2)
        assert rx_wait_for_job(job, timeout=120) is S.FINISHED
        with pytest.warns(RxRunWarning, match="1 of 5 runs raised"):
            results = rx_get_job_results(job)
        assert results[:3] == [0, 1, 2] and results[4] == 4
        assert isinstance(results[3], ValueError)
        assert "no threes please" in results[3].remote_traceback
        assert "fail_on_three" in results[3].remote_traceback

    def test_first_failure_fails_the_job_when_not_continuing(self, make_context):
        job = rx_exec(fail_on_three, x=list(range(5)), compute_context=make_context(wait=False),
                      continue_on_failure=False)
        assert rx_wait_for_job(job, timeout=120) is S.FAILED
        with pytest.raises(Exception, match="run 3 raised ValueError"):
            rx_get_job_results(job)
        report = rx_cleanup_jobs(job, verbose=False)  # failed jobs go without force
        assert [e.outcome for e in report] == ["removed"]

    def test_waiting_job_raises_the_runs_exception_when_not_continuing(self, make_context):
        with pytest.raises(ValueError, match="no threes please"):
            rx_exec(fail_on_three, x=list(range(5)), compute_context=make_context(wait=True),
                    continue_on_failure=False)

    def test_unretrieved_results_survive_cleanup_without_force(self, make_context):
        job = rx_exec(square, x=[1, 2, 3], compute_context=make_context(wait=False))
        assert rx_wait_for_job(job, timeout=120) is S.FINISHED
        with pytest.warns(RxCleanupWarning, match="rx_get_job_results"):
            report = rx_cleanup_jobs([job], verbose=False)
        assert [e.outcome for e in report] == ["kept"]
        assert rx_get_job_results(job, auto_cleanup=False) == [1, 4, 9]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            report = rx_cleanup_jobs([job], verbose=False)
        assert [e.outcome for e in report] == ["removed"]
        assert report.files_freed > 0 and report.bytes_freed > 0

    def test_cancel_stops_a_running_job_and_keeps_status_and_output(self, make_context):
        job = rx_exec(sleep_then_return, seconds=[300] * 4, compute_context=make_context(wait=False))
        wait_until(lambda: rx_get_job_status(job) is S.RUNNING, what="job to run")
        with pytest.raises(JobNotFinishedError, match="still running"):
            rx_get_job_results(job)
        started = time.monotonic()
        assert rx_cancel_job(job) is True
        assert time.monotonic() - started < 30
        assert rx_get_job_status(job) is S.CANCELED
        assert isinstance(rx_get_job_output(job), str)
        assert rx_cancel_job(job) is False  # already ended
        report = rx_cleanup_jobs(job, verbose=False)
        assert [e.outcome for e in report] == ["removed"]

    def test_output_is_live_while_the_task_runs_and_kept_by_cancel(self, make_context):
        """Issue 27: what a task prints reaches the share dir while it runs (its first line
        is seen at least 4 s before its eighth), and a cancel keeps what was printed."""
        job = rx_exec(print_every_second, lines=[30], compute_context=make_context(wait=False))
        seen: dict[str, float] = {}

        def eighth_line_seen() -> bool:
            now = time.monotonic()
            for line in rx_get_job_output(job).splitlines():
                seen.setdefault(line, now)
            assert not rx_get_job_status(job).is_terminal(), "the job ended before its output was seen"
            return "live line 7" in seen

        wait_until(eighth_line_seen, timeout=180, what="the task's eighth line")
        assert seen["live line 7"] - seen["live line 0"] >= 4.0, seen
        assert rx_cancel_job(job) is True
        kept = rx_get_job_output(job)
        assert all(f"live line {i}\n" in kept for i in range(8)), kept
        rx_cleanup_jobs(job, verbose=False)

    def test_running_job_is_kept_without_force_and_canceled_with_it(self, make_context):
        job = rx_exec(sleep_then_return, seconds=[300] * 2, compute_context=make_context(wait=False))
        wait_until(lambda: rx_get_job_status(job) in (S.RUNNING, S.QUEUED), what="job to start")
        with pytest.warns(RxCleanupWarning, match="cancel it first"):
            report = rx_cleanup_jobs(job, verbose=False)
        assert [e.outcome for e in report] == ["kept"]
        report = rx_cleanup_jobs(job, force=True, verbose=False)
        assert [e.outcome for e in report] == ["removed"]
        assert rx_get_job_status(job) is S.MISSING

    def test_close_is_a_forced_cleanup(self, make_context):
        job = rx_exec(square, x=[1], compute_context=make_context(wait=False))
        assert rx_wait_for_job(job, timeout=120) is S.FINISHED
        assert [e.outcome for e in job.close()] == ["removed"]

    def test_jobs_are_listed_by_context(self, make_context):
        cc = make_context(wait=False)
        job = rx_exec(square, x=[1], compute_context=cc)
        assert rx_get_jobs(cc, verbose=False) == [job]
        assert rx_get_jobs(cc, exact_match=True, verbose=False) == [job]
        assert rx_get_jobs(make_context(wait=True), exact_match=True, verbose=False) == []
        assert rx_get_jobs(make_context(wait=True), verbose=False) == [job]
        rx_wait_for_job(job, timeout=120)
        assert rx_get_jobs(cc, states=["finished"], verbose=False) == [job]
        assert rx_get_jobs(cc, states=[S.RUNNING], verbose=False) == []
        job.close()


# The contract tests that also run on a share dir with an odd path (``odd_local_share``): those
# that pass the path to a driver or a worker process, read its output and results back, and
# find and stop its processes by it.  The rest do not depend on how the path is spelled.
ODD_PATH_TESTS = frozenset({
    "test_waiting_job_returns_results_in_run_order",
    "test_non_waiting_job_runs_to_finished_and_is_collected",
    "test_unretrieved_results_survive_cleanup_without_force",
    "test_cancel_stops_a_running_job_and_keeps_status_and_output",
})


def contract_subset(names: frozenset[str]):
    """Class decorator for a subclass of :class:`EngineContract` that runs only the contract
    tests ``names`` (the others are not collected)."""
    unknown = names - {name for name in dir(EngineContract) if name.startswith("test_")}
    assert not unknown, f"no such contract tests: {sorted(unknown)}"

    def decorate(cls: type) -> type:
        for name in dir(EngineContract):
            if name.startswith("test_") and name not in names:
                setattr(cls, name, None)
        return cls

    return decorate


# For a subclass that points ``share_path`` at ``odd_local_share``.
odd_path_subset = contract_subset(ODD_PATH_TESTS)
