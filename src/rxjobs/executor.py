"""``rxjobs.Executor``: the standard library's ``concurrent.futures`` interface over rxjobs jobs.

Each ``submit`` is one rxjobs job (one run); each ``map`` is one job with one
run per item, in chunks.  The jobs are ordinary rxjobs jobs: ``rxjobs list``,
the web page, retention and cleanup see them.  One watcher thread per
executor follows the jobs and settles their futures (docs/executor.md).

The rule that keeps results bounded: a job stays in the share dir until its
outcome is read through its future (``result()`` or ``exception()``, a
done-callback's included); then it is removed (``auto_cleanup=True``, the
default) or marked retrieved (``auto_cleanup=False``: a plain cleanup removes
it later).  A future dropped unread leaves its job un-retrieved, so nothing is
lost: cleanup keeps it until forced or expired.

This is a facade: it calls the job services (:mod:`rxjobs.jobs`) and never an
engine.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import cloudpickle

from . import jobs
from .api import RxRemoteJob, rx_get_job_output
from .calls import Call, as_run
from .cleanup import RxCleanupWarning
from .contexts import RxComputeContext, RxLocalParallel
from .errors import JobCanceledError, JobFailedError, JobNotFoundError
from .progress import Progress, job_progress
from .runner import Payload
from .status import RxRemoteJobStatus
from .store import Store, open_store

S = RxRemoteJobStatus

# The watcher's backoff between looks at its jobs: short jobs are seen at once,
# long ones cost little.  A new submission resets it.
_FIRST_DELAY = 0.01
_MAX_DELAY = 0.5


def _check_context(compute_context: RxComputeContext | None) -> RxComputeContext:
    if compute_context is None:
        return RxLocalParallel()
    if not isinstance(compute_context, RxComputeContext):
        raise TypeError(
            f"compute_context must be a compute context such as RxLocalParallel() or RxDask(...), "
            f"not {type(compute_context).__name__}"
        )
    if compute_context.engine is None:
        raise ValueError(
            f"{compute_context.kind} runs in the calling process and keeps no jobs, so it cannot "
            "back an Executor; use RxLocalParallel() (the default) for local processes"
        )
    if getattr(compute_context, "wait", False) and dataclasses.is_dataclass(compute_context):
        # An executor's caller does not block in rx_exec: its jobs are started detached
        # (they outlive the caller, whose results stay in the share dir).
        detached: Any = dataclasses.replace(compute_context, **{"wait": False})
        compute_context = detached
    return compute_context


def _check_max_workers(max_workers: int | None) -> int | None:
    if max_workers is None:
        return None
    if not isinstance(max_workers, int) or isinstance(max_workers, bool):
        raise TypeError(f"max_workers must be an int or None, not {type(max_workers).__name__}")
    if max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")
    return max_workers


class RxFuture(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` that is also the handle of its rxjobs job.

    Attributes
    ----------
    job_id
        The job's id (None until the job is submitted: an executor with
        ``max_workers`` holds submissions back until a slot is free).

    Notes
    -----
    Reading the outcome (``result()``, ``exception()``) settles the job by
    the executor's ``auto_cleanup`` rule: removed, or marked retrieved.
    """

    def __init__(self, store: Store, context: RxComputeContext, remove_when_read: bool) -> None:
        super().__init__()
        self.job_id: str | None = None
        self._store = store
        self._context = context
        self._remove_when_read = remove_when_read
        self._settled = False
        self._settle_lock = threading.Lock()

    @property
    def job(self) -> RxRemoteJob:
        """The :class:`~rxjobs.RxRemoteJob` behind this future."""
        if self.job_id is None:
            raise RuntimeError("this future's job has not been submitted yet (max_workers holds it back)")
        return RxRemoteJob(self._context, self.job_id, self._store.url, self._store.options or None)

    def output(self) -> str:
        """The console output of the job so far ('' before it was submitted or once removed)."""
        if self.job_id is None:
            return ""
        try:
            return rx_get_job_output(self.job)
        except JobNotFoundError:
            return ""

    def result(self, timeout: float | None = None) -> Any:
        try:
            return super().result(timeout)
        finally:
            self._settle()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            return super().exception(timeout)
        finally:
            self._settle()

    def cancel(self) -> bool:
        """Cancel a future whose job has not started; False once it runs or is done.

        A job already submitted and still queued on its engine is canceled
        there too, and then removed (it has no results to lose).
        """
        if not super().cancel():
            return False
        if self.job_id is not None:
            _cancel_quietly(self._store, self.job_id)
        return True

    def _settle(self) -> None:
        """After the outcome was read: remove the job or mark it retrieved, once."""
        if self.job_id is None or not self.done() or self.cancelled():
            return
        with self._settle_lock:
            if self._settled:
                return
            self._settled = True
        try:
            jobs.settle_read_job(self._store, self.job_id, self._remove_when_read)
        except Exception as exc:  # the value was read: a failed cleanup must not hide it
            warnings.warn(f"job {self.job_id}: its result was read but the job could not be "
                          f"{'removed' if self._remove_when_read else 'marked retrieved'}: "
                          f"{type(exc).__name__}: {exc}; rxjobs cleanup removes it later",
                          RxCleanupWarning, stacklevel=3)

    def __repr__(self) -> str:
        return f"<RxFuture job_id={self.job_id} {super().__repr__()[1:]}"


@dataclass
class _Held:
    """A submission held back by ``max_workers``: its future and what to submit."""

    future: RxFuture
    payload: Payload
    options: dict[str, Any]


class _Watcher:
    """The one thread of an executor: submits held-back work and settles futures.

    It holds its futures weakly: a future the caller dropped is no longer
    followed (its job stays, un-retrieved, in the share dir).  It stops when
    its executor is shut down or garbage-collected and nothing is left to
    follow.  Between looks it sleeps on the oldest job's engine (the local
    engine wakes it when the job's driver exits) or on its wake event.
    """

    def __init__(self, store: Store, context: RxComputeContext, max_workers: int | None) -> None:
        self.store = store
        self.context = context
        self.max_workers = max_workers
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.watched: dict[str, weakref.ref[RxFuture]] = {}
        self.held: deque[_Held] = deque()
        self.reserved = 0  # slots taken by submissions under way in callers' threads
        self.stopping = False
        self.thread: threading.Thread | None = None

    # -- called from the caller's threads ------------------------------------------------

    def reserve(self) -> bool:
        """Take a slot for a submission going to the engine now; False: hold it back instead.

        The caller submits without holding ``lock`` (a submission takes tens of
        milliseconds, and the watcher needs the lock meanwhile), then calls
        :meth:`follow` or :meth:`release`.
        """
        with self.lock:
            if self.max_workers is not None and (
                self.held or len(self.watched) + self.reserved >= self.max_workers
            ):
                return False
            self.reserved += 1
            return True

    def release(self) -> None:
        """Give back a slot that :meth:`reserve` took and that no job uses (its submission failed)."""
        with self.lock:
            self.reserved -= 1

    def follow(self, future: RxFuture) -> None:
        """Follow a submitted future's job, in the slot :meth:`reserve` took."""
        assert future.job_id is not None
        with self.lock:
            self.reserved -= 1
            self.watched[future.job_id] = weakref.ref(future)
            self._start()
        self.wake.set()

    def hold(self, held: _Held) -> None:
        """Queue a submission until a slot is free."""
        with self.lock:
            self.held.append(held)
            self._start()
        self.wake.set()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
        self.wake.set()

    def cancel_held(self) -> None:
        with self.lock:
            held, self.held = list(self.held), deque()
        for item in held:
            item.future.cancel()

    def join(self) -> None:
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="rxjobs-executor-watcher", daemon=True)
            self.thread.start()

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        delay = _FIRST_DELAY
        while True:
            self.wake.clear()
            self._submit_held()
            with self.lock:
                live = {job_id: ref() for job_id, ref in self.watched.items()}
                for job_id, future in live.items():
                    if future is None or future.cancelled():
                        del self.watched[job_id]
                live_futures = {job_id: f for job_id, f in live.items()
                                if f is not None and not f.cancelled()}
                if not live_futures and not self.held:
                    if self.stopping:
                        return
            if not live_futures:
                if not self.held:
                    self.wake.wait()
                delay = _FIRST_DELAY
                continue
            changed = False
            for job_id, future in live_futures.items():
                changed |= self._look(job_id, future)
            if changed:
                delay = _FIRST_DELAY
                continue
            self._sleep(next(iter(live_futures)), delay)
            delay = min(_MAX_DELAY, delay * 1.5)

    def _sleep(self, job_id: str, delay: float) -> None:
        """Sleep ``delay`` at most: until the job's engine says it may have ended, or a wake."""
        if self.wake.is_set():
            return
        with jobs.job_sleep(self.store, job_id) as sleep:
            if sleep is None:
                self.wake.wait(delay)
            else:
                sleep(delay)

    def _submit_held(self) -> None:
        while True:
            with self.lock:
                full = self.max_workers is not None and len(self.watched) + self.reserved >= self.max_workers
                if not self.held or full:
                    return
                item = self.held.popleft()
                if item.future.cancelled():
                    continue
                try:
                    job_id = jobs.submit_job(self.store, self.context, item.payload, item.options)
                except Exception as exc:  # the engine refused: the future says why
                    _set_outcome(item.future, error=exc)
                    continue
                item.future.job_id = job_id
                self.watched[job_id] = weakref.ref(item.future)
            if item.future.cancelled():  # canceled while it was being submitted
                _cancel_quietly(self.store, job_id)

    def _look(self, job_id: str, future: RxFuture) -> bool:
        """Look at one job; settle its future if it ended.  True if the future changed."""
        try:
            look = jobs.look_at_job(self.store, job_id)
        except Exception as exc:  # an unreadable share dir: the future says so
            return self._finish(job_id, future, error=exc)
        status = look.status
        if status is S.RUNNING and not future.running():
            return future.set_running_or_notify_cancel() or True
        if status is S.FINISHED:
            try:
                outcome = jobs.task_outcomes(self.store, job_id, 0)[0]
            except Exception as exc:
                return self._finish(job_id, future, error=exc)
            if outcome.failed:
                return self._finish(job_id, future, error=outcome.value)
            return self._finish(job_id, future, value=outcome.value)
        if status is S.FAILED:
            failed = JobFailedError(f"job {job_id} failed: {look.derived.reason}")
            return self._finish(job_id, future, error=failed)
        if status is S.CANCELED:
            return self._finish(job_id, future, error=JobCanceledError(f"job {job_id} was canceled"))
        if status is S.MISSING:
            return self._finish(job_id, future, error=JobNotFoundError(
                f"job {job_id} was removed from {self.store.url} before its result was read"))
        return False

    def _finish(self, job_id: str, future: RxFuture, value: Any = None,
                error: BaseException | None = None) -> bool:
        with self.lock:
            self.watched.pop(job_id, None)
        _set_outcome(future, value, error)
        return True


def _set_outcome(future: RxFuture, value: Any = None, error: BaseException | None = None) -> None:
    """Settle a future (pending or running) with a value or an error; a canceled one stays so."""
    if not future.running() and not future.set_running_or_notify_cancel():
        return  # canceled
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass  # settled meanwhile


def _cancel_quietly(store: Store, job_id: str) -> None:
    """Cancel and remove a job whose future was canceled (it has no result anyone wants)."""
    try:
        jobs.cancel_job(store, job_id)
        jobs.settle_read_job(store, job_id, remove=True)
    except JobNotFoundError:
        pass


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose calls are rxjobs jobs, on any compute context.

    Parameters
    ----------
    compute_context
        Where the jobs run: ``RxLocalParallel()`` (the default), ``RxDask``,
        ``RxSpark``, ``RxSlurm``, with a share dir on disk or object storage.
    max_workers
        At most this many submitted jobs unfinished at once; later submissions
        wait in the executor (their futures are pending and can be canceled).
        None (default): no limit here; the engine queues them.
    auto_cleanup
        What reading a future's outcome does to its job: True removes it,
        False marks it retrieved (a plain ``rxjobs cleanup`` removes it
        later).  Default: the context's ``auto_cleanup`` (True).
    expires_after
        Retention of the jobs (``"7d"``): once ended and this long has
        passed, cleanup removes them even unread.  Default: the context's.

    Raises
    ------
    ValueError
        ``max_workers`` is 0 or less, or the context runs in-process (``RxLocalSeq``).
    """

    def __init__(self, compute_context: RxComputeContext | None = None, *,
                 max_workers: int | None = None, auto_cleanup: bool | None = None,
                 expires_after: Any = None) -> None:
        self.compute_context = _check_context(compute_context)
        self.max_workers = _check_max_workers(max_workers)
        if auto_cleanup is None:
            auto_cleanup = getattr(self.compute_context, "auto_cleanup", True)
        self.auto_cleanup = bool(auto_cleanup)
        self.expires_after = expires_after
        self._store = open_store(self.compute_context.job_share_dir(),
                                 self.compute_context.job_share_dir_options())
        self._shutdown = False
        self._shutdown_lock = threading.Lock()
        self._watcher = _Watcher(self._store, self.compute_context, self.max_workers)
        # The watcher outlives no executor: dropped, it stops once its futures are settled.
        weakref.finalize(self, self._watcher.stop)

    def _prepare(self, fn: Callable[..., Any], runs: list[dict[str, Any]],
                 chunksize: int | None) -> tuple[Payload, dict[str, Any]]:
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        return jobs.prepare_job(self.compute_context, Call(fn), runs, chunksize, True, False,
                                self.auto_cleanup, self.expires_after)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> RxFuture:
        """Run ``fn(*args, **kwargs)`` as one rxjobs job; return its future.

        Raises
        ------
        RuntimeError
            The executor was shut down.
        TypeError
            ``fn`` is not callable, or it or its arguments cannot be pickled
            (nothing is written then).
        """
        with self._shutdown_lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            payload, options = self._prepare(fn, [as_run(args, kwargs)], 1)
            future = RxFuture(self._store, self.compute_context, self.auto_cleanup)
            watcher = self._watcher
            if watcher.reserve():
                try:
                    future.job_id = jobs.submit_job(self._store, self.compute_context, payload, options)
                except BaseException:
                    watcher.release()
                    raise
                watcher.follow(future)
                return future
            _check_picklable(payload)  # fail now, not when a slot frees
            watcher.hold(_Held(future, payload, options))
            return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """``fn`` over the items of ``iterables`` as one job, one run per item, in chunks.

        The results come in item order as their chunks finish; the iterator
        keeps no reference to a value once yielded.  A run that raised
        re-raises its exception when its value is reached.  Once every value
        was yielded the job is settled by ``auto_cleanup``; an iterator
        dropped early leaves the job (its results un-retrieved) to cleanup.

        Parameters
        ----------
        chunksize
            Runs per task (``task_chunk_size``): larger chunks cut the
            per-task cost of many tiny calls.
        timeout
            Seconds from this call after which a value not yet there raises
            ``TimeoutError``.

        Raises
        ------
        RuntimeError
            The executor was shut down.
        ValueError
            ``chunksize`` is less than 1.
        """
        if not isinstance(chunksize, int) or isinstance(chunksize, bool) or chunksize < 1:
            raise ValueError(f"chunksize must be a positive integer, not {chunksize!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._shutdown_lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            runs = [as_run(items, {}) for items in zip(*iterables, strict=False)]
            if not runs:
                return iter(())
            payload, options = self._prepare(fn, runs, chunksize)
            job_id = jobs.submit_job(self._store, self.compute_context, payload, options)
        return _map_results(self._store, job_id, payload.n_tasks, deadline, self.auto_cleanup)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; with ``wait``, return once every followed future is settled.

        ``cancel_futures`` cancels the submissions ``max_workers`` holds back.
        Jobs already submitted run on: their results stay in the share dir.
        """
        with self._shutdown_lock:
            self._shutdown = True
        if cancel_futures:
            self._watcher.cancel_held()
        self._watcher.stop()
        if wait:
            self._watcher.join()


def _check_picklable(payload: Payload) -> None:
    try:
        cloudpickle.dumps(payload)
    except Exception as exc:
        raise TypeError(
            f"the function or its arguments cannot be pickled, so they cannot be sent to "
            f"workers: {type(exc).__name__}: {exc}"
        ) from exc


def _map_results(store: Store, job_id: str, n_tasks: int, deadline: float | None,
                 remove_when_read: bool) -> Iterator[Any]:
    """Yield a map job's values in run order as their tasks land (see :meth:`Executor.map`).

    In a notebook, one progress display (``progress.job_progress``) counts the tasks that
    landed, updated in place; elsewhere it is inert.
    """
    with job_progress(f"map {job_id}", n_tasks, "running") as bar:
        yield from _map_values(store, job_id, n_tasks, deadline, bar)
    jobs.settle_read_job(store, job_id, remove_when_read)


def _map_values(store: Store, job_id: str, n_tasks: int, deadline: float | None,
                bar: Progress) -> Iterator[Any]:
    """The values of :func:`_map_results`, task by task, ``bar`` updated as tasks land."""
    taken: set[int] = set()
    ready: dict[int, deque[Any]] = {}
    delay = _FIRST_DELAY
    for task in range(n_tasks):
        while task not in ready:
            landed = [t for t in jobs.landed_tasks(store, job_id, n_tasks) if t not in taken]
            for t in landed:
                ready[t] = deque(jobs.task_outcomes(store, job_id, t))
                taken.add(t)
            if landed:
                delay = _FIRST_DELAY
                bar.update(len(taken), n_tasks)
                continue
            look = jobs.look_at_job(store, job_id)
            if look.status is S.FAILED:
                raise JobFailedError(f"job {job_id} failed: {look.derived.reason}")
            if look.status is S.CANCELED:
                raise JobCanceledError(f"job {job_id} was canceled")
            if look.status is S.MISSING:
                raise JobNotFoundError(
                    f"job {job_id} was removed from {store.url} before its results were read")
            if look.status is S.FINISHED and task not in jobs.landed_tasks(store, job_id, n_tasks):
                raise JobFailedError(f"job {job_id} finished without the result of task {task}")
            if deadline is not None and time.monotonic() >= deadline:
                raise concurrent.futures.TimeoutError()
            left = None if deadline is None else deadline - time.monotonic()
            with jobs.job_sleep(store, job_id) as sleep:
                wait = delay if left is None else max(0.0, min(delay, left))
                (sleep or time.sleep)(wait)
            delay = min(_MAX_DELAY, delay * 1.5)
        outcomes = ready.pop(task)
        while outcomes:
            outcome = outcomes.popleft()
            value, failed = outcome.value, outcome.failed
            del outcome
            if failed:
                raise value
            yield value
            del value
    bar.update(n_tasks, n_tasks, "finished")

