"""submitit's ``Job``: one submitted call, a view of one run of an rxjobs job.

``submit`` makes an rxjobs job of one run; ``map_array`` and ``batch()`` make
one rxjobs job whose runs are the array's elements (``<rxjobs id>_<i>`` is
then the element's id, as ``<array id>_<i>`` is on Slurm).  Reading an
outcome (``result()``, ``results()``, ``exception()``) never removes
anything: once every run of the rxjobs job has been read, the job is marked
retrieved, and a plain ``rxjobs cleanup``, retention or the web page removes
it.  So ``stdout()`` still answers after ``result()``.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import jobs
from ...api import RxRemoteJob
from ...contexts import RxComputeContext
from ...errors import JobNotFoundError
from ...jobs import RunOutcome
from ...status import RxRemoteJobStatus
from ...store import Store
from ...waiting import poll

S = RxRemoteJobStatus

# submitit reports Slurm's state names.
_STATE = {S.QUEUED: "PENDING", S.RUNNING: "RUNNING", S.FINISHED: "COMPLETED", S.FAILED: "FAILED",
          S.CANCELED: "CANCELLED", S.MISSING: "UNKNOWN", S.UNDETERMINED: "UNKNOWN"}


class FailedJobError(RuntimeError):
    """The job's function raised, or the job failed; the message holds the remote traceback.

    The function's own exception is ``__cause__``.
    """


class UncompletedJobError(RuntimeError):
    """The job ended without a result (canceled, or removed from the share dir)."""


@dataclass
class DelayedSubmission:
    """A call to submit later: ``function(*args, **kwargs)`` (submitit's ``helpers.DelayedSubmission``)."""

    function: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __init__(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.function, self.args, self.kwargs = function, args, kwargs

    def result(self) -> Any:
        """Run the call here and return its value."""
        return self.function(*self.args, **self.kwargs)


@dataclass(frozen=True)
class JobPaths:
    """Where a job's files are (submitit's ``job.paths``): all inside its rxjobs job directory.

    ``stdout`` and ``stderr`` are the same file: rxjobs captures both streams
    of a task together, in the order they were written.
    """

    folder: Path
    submitted_pickle: Path
    result_pickle: Path
    stdout: Path
    stderr: Path


class RxArray:
    """The rxjobs job behind one or many submitit jobs, and which of its runs were read."""

    def __init__(self, store: Store, context: RxComputeContext, job_id: str, n_runs: int,
                 chunk: int, num_tasks: int = 1) -> None:
        self.store, self.context, self.job_id = store, context, job_id
        self.n_runs, self.chunk = n_runs, chunk
        self.num_tasks = num_tasks  # ranks per run: a run's value is then the list of theirs
        self._read: set[int] = set()
        self._lock = threading.Lock()

    def task_of(self, run: int) -> int:
        return run // self.chunk

    def landed(self, run: int) -> bool:
        return self.task_of(run) in jobs.landed_tasks(self.store, self.job_id, -(-self.n_runs // self.chunk))

    def outcome(self, run: int) -> RunOutcome | None:
        """The run's outcome if its task's result is there, else None."""
        try:
            outcomes = jobs.task_outcomes(self.store, self.job_id, self.task_of(run))
        except FileNotFoundError:
            return None
        return next((o for o in outcomes if o.run == run), None)

    def status(self) -> jobs.JobLook:
        return jobs.look_at_job(self.store, self.job_id)

    def read(self, run: int) -> None:
        """Note that run ``run`` was read; once all were, mark the job retrieved."""
        with self._lock:
            self._read.add(run)
            complete = len(self._read) == self.n_runs
        if complete:
            try:
                jobs.settle_read_job(self.store, self.job_id, remove=False)
            except JobNotFoundError:
                pass


class Job:
    """One submitted call: submitit's ``Job`` over one run of an rxjobs job."""

    def __init__(self, submission: DelayedSubmission) -> None:
        self._submission = submission
        self._array: RxArray | None = None
        self._run = 0
        self._rank = 0  # which task's value result() returns (task(i) makes a view of task i)

    def _attach(self, array: RxArray, run: int) -> None:
        self._array, self._run = array, run

    @property
    def _rx(self) -> RxArray:
        if self._array is None:
            raise AttributeError("this job is not submitted yet: inside `with executor.batch():` jobs are "
                                 "empty shells until the block exits")
        return self._array

    # -- what it is ----------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        array = self._rx
        return array.job_id if array.n_runs == 1 else f"{array.job_id}_{self._run}"

    @property
    def rx_job(self) -> RxRemoteJob:
        """The :class:`~rxjobs.RxRemoteJob` behind this job (shared by an array's elements)."""
        array = self._rx
        return RxRemoteJob(array.context, array.job_id, array.store.url, array.store.options or None)

    @property
    def num_tasks(self) -> int:
        """Tasks (ranks) of the job: ``nodes`` × tasks per node when it was submitted."""
        return self._rx.num_tasks

    @property
    def paths(self) -> JobPaths:
        array = self._rx
        paths = array.store.paths(array.job_id)
        task = array.task_of(self._run)
        return JobPaths(Path(paths.dir), Path(paths.payload), Path(paths.result(task)),
                        Path(paths.output(task)), Path(paths.output(task)))

    def submission(self) -> DelayedSubmission:
        """The call this job runs."""
        return self._submission

    def task(self, task_id: int) -> Job:
        """Task (rank) ``task_id`` of the job, as a job whose ``result()`` is that task's value.

        A job of one task is its own task 0.
        """
        tasks = self.num_tasks
        if not 0 <= task_id < tasks:
            raise ValueError(f"task {task_id} does not exist: this job has {tasks} task"
                             f"{'' if tasks == 1 else 's'} (0 to {tasks - 1})")
        if tasks == 1:
            return self
        view = Job(self._submission)
        view._attach(self._rx, self._run)
        view._rank = task_id
        return view

    # -- state ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """Slurm's name of the state: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED or UNKNOWN.

        An array element is COMPLETED (or FAILED, if it raised) as soon as its
        own result is there, whatever the other elements do.
        """
        array = self._rx
        outcome = array.outcome(self._run)
        if outcome is not None:
            return "FAILED" if outcome.failed else "COMPLETED"
        status = array.status().status
        if status is S.FINISHED:  # removed meanwhile, or its result unreadable
            return "UNKNOWN"
        return _STATE[status]

    def done(self, force_check: bool = False) -> bool:
        """True once the job has ended (its result is there, or it never will be)."""
        array = self._rx
        if array.landed(self._run):
            return True
        status = array.status().status
        return status.is_terminal() or status is S.MISSING

    def wait(self, timeout: float | None = None) -> None:
        """Block until the job has ended."""
        array = self._rx
        with jobs.job_sleep(array.store, array.job_id) as sleep:
            ended = poll(lambda: True if self.done() else None, timeout=timeout, first_delay=0.02,
                         max_delay=1.0, sleep=sleep)
        if ended is None:
            raise TimeoutError(f"job {self.job_id} did not end within {timeout} s")

    def cancel(self, check: bool = True) -> None:
        """Cancel the job; for an element of an array, the whole array (one rxjobs job)."""
        array = self._rx
        try:
            jobs.cancel_job(array.store, array.job_id)
        except JobNotFoundError:
            if check:
                raise

    # -- outcome -------------------------------------------------------------------------

    def _outcome(self) -> RunOutcome:
        self.wait()
        array = self._rx
        outcome = array.outcome(self._run)
        if outcome is not None:
            return outcome
        look = array.status()
        if look.status is S.FAILED:
            raise FailedJobError(f"job {self.job_id} failed: {look.derived.reason}")
        raise UncompletedJobError(f"job {self.job_id} has no result: it is {look.status.value}"
                                  + (f" ({look.derived.reason})" if look.derived.reason else ""))

    def result(self) -> Any:
        """Wait for the job and return its value (a multi-task job's: task 0's, as in submitit;
        ``task(i).result()`` is task i's); a raising function raises ``FailedJobError``."""
        value = self._value()
        return value[self._rank] if self._rx.num_tasks > 1 else value

    def _value(self) -> Any:
        """The run's value (of a multi-task job: the list of its tasks'), once read."""
        outcome = self._outcome()
        self._rx.read(self._run)
        if outcome.failed:
            error = outcome.value
            remote = getattr(error, "remote_traceback", "") or "".join(
                traceback.format_exception_only(type(error), error))
            raise FailedJobError(f"job {self.job_id} raised {type(error).__name__}: {error}\n"
                                 f"Remote traceback:\n{remote}") from error
        return outcome.value

    def results(self) -> list[Any]:
        """The value of every task, in task order."""
        value = self._value()
        return list(value) if self._rx.num_tasks > 1 else [value]

    def exception(self) -> BaseException | None:
        """Wait for the job; the ``FailedJobError`` its result would raise, or None."""
        try:
            self.result()
        except (FailedJobError, UncompletedJobError) as exc:
            return exc
        return None

    async def async_result(self, poll_frequency: float = 1.0) -> Any:
        """Wait without blocking the event loop, then return the result."""
        while not await asyncio.to_thread(self.done):
            await asyncio.sleep(poll_frequency)
        return self.result()

    def awaitable(self) -> _AwaitableJob:
        """The same job with coroutine methods: ``await job.awaitable().result()``."""
        return _AwaitableJob(self)

    # -- output --------------------------------------------------------------------------

    def stdout(self) -> str | None:
        """The console output of the job's task (both streams), or None before it has any."""
        array = self._rx
        return jobs.task_output(array.store, array.job_id, array.task_of(self._run))

    def stderr(self) -> str | None:
        """The remote traceback if the job raised; else the console output, as ``stdout()``.

        rxjobs captures stdout and stderr together in one stream (docs/executor.md).
        """
        array = self._rx
        outcome = array.outcome(self._run)
        if outcome is not None and outcome.failed:
            return getattr(outcome.value, "remote_traceback", None) or repr(outcome.value)
        return self.stdout()

    def __repr__(self) -> str:
        if self._array is None:
            return "Job<not submitted yet>"
        return f"Job<job_id={self.job_id}, rxjobs job {self._array.job_id}>"


class _AwaitableJob:
    def __init__(self, job: Job) -> None:
        self._job = job

    async def result(self, poll_frequency: float = 1.0) -> Any:
        return await self._job.async_result(poll_frequency)

    async def results(self, poll_frequency: float = 1.0) -> list[Any]:
        await self.wait(poll_frequency)
        return self._job.results()

    async def wait(self, poll_frequency: float = 1.0) -> None:
        while not await asyncio.to_thread(self._job.done):
            await asyncio.sleep(poll_frequency)


class DebugJob(Job):
    """A job of the :class:`DebugExecutor`: runs in this process when its result is asked for."""

    def __init__(self, submission: DelayedSubmission) -> None:
        super().__init__(submission)
        self._ran = False
        self._value: Any = None
        self._error: BaseException | None = None

    def _run_here(self) -> None:
        if not self._ran:
            self._ran = True
            try:
                self._value = self._submission.result()
            except Exception as exc:
                self._error = exc

    @property
    def job_id(self) -> str:
        return f"DEBUG_{id(self)}"

    @property
    def num_tasks(self) -> int:
        return 1  # a debug job runs its call once, here

    @property
    def state(self) -> str:
        if not self._ran:
            return "PENDING"
        return "FAILED" if self._error is not None else "COMPLETED"

    def done(self, force_check: bool = False) -> bool:
        return self._ran

    def wait(self, timeout: float | None = None) -> None:
        self._run_here()

    def cancel(self, check: bool = True) -> None:
        self._ran = True
        self._error = UncompletedJobError(f"job {self.job_id} was canceled")

    def result(self) -> Any:
        self._run_here()
        if self._error is not None:
            raise FailedJobError(f"job {self.job_id} raised {type(self._error).__name__}: "
                                 f"{self._error}") from self._error
        return self._value

    def stdout(self) -> str | None:
        return None  # its output went to this process's own streams

    def stderr(self) -> str | None:
        return None

    @property
    def paths(self) -> JobPaths:
        raise AttributeError("a debug job runs in this process and has no files")

    def __repr__(self) -> str:
        return f"DebugJob<{self.state}>"
