"""``rxjobs.Executor``: the standard library's ``concurrent.futures`` interface over rxjobs jobs.

Calls submitted together become one rxjobs job: the executor's watcher thread
gathers the ``submit`` calls that arrive while it is busy or within a
moment of each other, and submits each function's calls as one job with one
run per call (chunked as ``rx_exec`` chunks runs).  A lone ``submit`` is a
job of its own.  Each ``map`` is one job with one run per item.  The jobs
are ordinary rxjobs jobs: ``rxjobs list``, the web page, retention and
cleanup see them.  One watcher thread per executor submits the calls and
settles their futures (docs/executor.md).

The rule that keeps results bounded: a job stays in the share dir until the
outcome of every call in it is read through its future (``result()`` or
``exception()``, a done-callback's included); then it is removed
(``auto_cleanup=True``, the default) or marked retrieved
(``auto_cleanup=False``: a plain cleanup removes it later).  A future dropped
unread leaves its job un-retrieved, so nothing is lost: cleanup keeps it
until forced or expired.

This is a facade: it calls the job services (:mod:`rxjobs.jobs`) and never an
engine.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from . import jobs
from .api import RxRemoteJob, rx_get_job_output
from .calls import Call, as_run
from .cleanup import RxCleanupWarning
from .contexts import RxComputeContext, RxLocalParallel
from .errors import JobCanceledError, JobFailedError, JobNotFoundError
from .progress import Progress, job_progress
from .status import RxRemoteJobStatus
from .store import Store, open_store

S = RxRemoteJobStatus

# The watcher's backoff between looks at its jobs: short jobs are seen at once,
# long ones cost little.  A new submission resets it.
_FIRST_DELAY = 0.01
_MAX_DELAY = 0.5
# Calls submitted less than this apart go into one job, for at most _MAX_GATHER: a loop of
# submits becomes a job or two, and a lone submit waits a millisecond for company.
_GATHER_GAP = 0.002
_MAX_GATHER = 0.1


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


class _Group:
    """The futures of one submitted job, one per run, and when the job may be settled.

    The job is settled (removed or marked retrieved) once every future's
    outcome was read *and* the job has ended: a job whose last results landed
    may still have its driver writing the end.  Whichever of the reader and
    the watcher sees the second of the two conditions settles it.
    """

    def __init__(self, job_id: str, futures: list[RxFuture], n_tasks: int, chunk: int,
                 remove_when_read: bool) -> None:
        self.job_id = job_id
        self.refs = [weakref.ref(f) for f in futures]
        self.n_tasks = n_tasks
        self.chunk = chunk
        self.remove_when_read = remove_when_read
        self.taken: set[int] = set()  # tasks whose outcomes were handed to futures
        self.unread = len(futures)
        self.ended = False
        self.lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.refs)

    def runs_of(self, task: int) -> range:
        return range(task * self.chunk, min((task + 1) * self.chunk, self.size))

    def read_one(self) -> bool:
        """A future's outcome was read (or nobody will read it); True: settle the job now."""
        with self.lock:
            self.unread -= 1
            return self.unread == 0 and self.ended

    def end(self) -> bool:
        """The job has ended; True: settle it now (every outcome was read)."""
        with self.lock:
            if self.ended:
                return False
            self.ended = True
            return self.unread == 0

    def abandoned(self) -> bool:
        """Some future was dropped unread, so the job is left un-retrieved for cleanup."""
        return any(ref() is None for ref in self.refs) and self.unread > 0


class RxFuture(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` that is also the handle of its rxjobs job.

    Notes
    -----
    Reading the outcome (``result()``, ``exception()``) counts towards
    settling the job by the executor's ``auto_cleanup`` rule: once every call
    in the job was read, it is removed or marked retrieved.
    """

    def __init__(self, store: Store, context: RxComputeContext) -> None:
        super().__init__()
        self._store = store
        self._context = context
        self._group: _Group | None = None
        self._run = 0
        self._submitted = threading.Event()  # set once its job is written, or it will never be
        self._held = False  # waiting for a max_workers slot
        self._settled = False
        self._settle_lock = threading.Lock()

    @property
    def job_id(self) -> str | None:
        """The id of the job that runs this call.

        A call on its way to the engine is waited for (the watcher submits it
        within milliseconds); None for a call ``max_workers`` holds back, one
        canceled before it was submitted, or one whose submission failed.
        """
        if not self._held:
            self._submitted.wait()
        return None if self._group is None else self._group.job_id

    @property
    def run(self) -> int:
        """This call's run (and index into ``job.result()``) in its job."""
        return self._run

    @property
    def job(self) -> RxRemoteJob:
        """The :class:`~rxjobs.RxRemoteJob` behind this future."""
        job_id = self.job_id
        if job_id is None:
            raise RuntimeError("this future has no job: max_workers holds it back, or it was "
                               "canceled or failed before it was submitted")
        return RxRemoteJob(self._context, job_id, self._store.url, self._store.options or None)

    def output(self) -> str:
        """The console output of this call's job so far; '' without a job or once it is removed.

        In a job of several calls this is the output of the task that ran this
        call, which it shares with the calls chunked with it.
        """
        group = self._group if self._submitted.is_set() else None
        if group is None:
            return ""
        try:
            if group.size == 1:
                return rx_get_job_output(self.job)
            return jobs.task_output(self._store, group.job_id, self._run // group.chunk) or ""
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
        """Cancel a call that has not started; False once it runs or is done.

        A call still in the executor is dropped.  A call that is a job of its
        own, submitted and still queued on its engine, is canceled there too
        and its job removed (it has no results to lose).  A call in a job with
        other calls is running from the moment its job is submitted.
        """
        if not super().cancel():
            return False
        group = self._group
        if group is None:
            self._submitted.set()  # it will never be submitted
        else:
            _cancel_quietly(self._store, group.job_id)
        return True

    def _settle(self) -> None:
        """After the outcome was read: count it, and settle the job if it was the last, once."""
        group = self._group
        if group is None or not self.done() or self.cancelled():
            return
        with self._settle_lock:
            if self._settled:
                return
            self._settled = True
        if group.read_one():
            _settle_job(self._store, group, stacklevel=4)

    def __repr__(self) -> str:
        job_id = self._group.job_id if self._group is not None else None
        return f"<RxFuture job_id={job_id} {super().__repr__()[1:]}"


def _settle_job(store: Store, group: _Group, stacklevel: int) -> None:
    """Remove a job whose every outcome was read, or mark it retrieved."""
    try:
        jobs.settle_read_job(store, group.job_id, group.remove_when_read)
    except Exception as exc:  # the values were read: a failed cleanup must not hide them
        warnings.warn(f"job {group.job_id}: its results were read but the job could not be "
                      f"{'removed' if group.remove_when_read else 'marked retrieved'}: "
                      f"{type(exc).__name__}: {exc}; rxjobs cleanup removes it later",
                      RxCleanupWarning, stacklevel=stacklevel)


@dataclass
class _Call:
    """A submitted call not yet in a job: its future, its function and its run."""

    future: RxFuture
    fn: Callable[..., Any]
    run: dict[str, Any] = field(repr=False)


class _Watcher:
    """The one thread of an executor: gathers calls into jobs, submits them, settles futures.

    It holds its futures weakly: a future the caller dropped is no longer
    followed (its job stays, un-retrieved, in the share dir).  It stops when
    its executor is shut down or garbage-collected and nothing is left to
    follow.  Between looks it sleeps on the oldest job's engine (the local
    engine wakes it when the job's driver exits) or on its wake event.
    """

    def __init__(self, store: Store, context: RxComputeContext, max_workers: int | None,
                 auto_cleanup: bool, expires_after: Any) -> None:
        self.store = store
        self.context = context
        self.max_workers = max_workers
        self.auto_cleanup = auto_cleanup
        self.expires_after = expires_after
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.arrived = threading.Event()
        self.queue: deque[_Call] = deque()
        self.taking = 0  # calls taken from the queue whose job is being submitted
        self.groups: dict[str, _Group] = {}
        self.open: dict[str, int] = {}  # per job: its calls not yet settled, as last looked at
        self.stopping = False
        self.exiting = False  # the interpreter exits: max_workers holds nothing back any more
        self.thread: threading.Thread | None = None

    # -- called from the caller's threads ------------------------------------------------

    def add(self, call: _Call) -> None:
        """Queue a call for the next job; mark it held if ``max_workers`` has no slot for it."""
        with self.lock:
            if self.max_workers is not None:
                call.future._held = len(self.queue) + self._in_flight() >= self.max_workers
            self.queue.append(call)
            self._start()
        self.arrived.set()
        self.wake.set()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
        self.wake.set()

    def cancel_held(self) -> None:
        """Cancel the calls ``max_workers`` holds back (``shutdown(cancel_futures=True)``).

        Calls with a slot are on their way to the engine, as a process pool's
        calls in its call queue are, and go on.
        """
        with self.lock:
            held = [call for call in self.queue if call.future._held]
            self.queue = deque(call for call in self.queue if not call.future._held)
        for call in held:
            call.future.cancel()

    def flush(self) -> None:
        """At interpreter exit: submit every queued call (held ones too), then return."""
        with self.lock:
            self.exiting = True
        self.wake.set()
        thread = self.thread
        while thread is not None and thread.is_alive():
            with self.lock:
                if not self.queue and not self.taking:
                    return
            self.arrived.wait(0.01)

    def join(self) -> None:
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _start(self) -> None:
        if self.thread is None:
            _WATCHERS.add(self)
            self.thread = threading.Thread(target=self._run, name="rxjobs-executor-watcher", daemon=True)
            self.thread.start()

    def _in_flight(self) -> int:
        """Calls in jobs or on their way, not yet settled (``lock`` held)."""
        return self.taking + sum(self.open.values())

    def _room(self) -> int:
        """How many queued calls may go into jobs now (``lock`` held)."""
        if self.max_workers is None or self.exiting:
            return len(self.queue)
        return max(0, self.max_workers - self._in_flight())

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        delay = _FIRST_DELAY
        while True:
            self.wake.clear()
            self._submit_queued()
            with self.lock:
                groups = list(self.groups.values())
                if not groups and not self.queue and self.stopping:
                    return
            if not groups:
                self.wake.wait()
                delay = _FIRST_DELAY
                continue
            changed = False
            for group in groups:
                changed |= self._look(group)
            if changed:
                delay = _FIRST_DELAY
                continue
            self._sleep(groups[0].job_id, delay)
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

    def _gather(self) -> None:
        """Wait while calls keep arriving less than ``_GATHER_GAP`` apart (``_MAX_GATHER`` at most)."""
        deadline = time.monotonic() + _MAX_GATHER
        while time.monotonic() < deadline:
            self.arrived.clear()
            if not self.arrived.wait(_GATHER_GAP):
                return

    def _submit_queued(self) -> None:
        with self.lock:
            if not self._room():
                return
        self._gather()
        with self.lock:
            room = self._room()
            taken: list[_Call] = []
            while self.queue and len(taken) < room:
                call = self.queue.popleft()
                if call.future.cancelled():
                    call.future._submitted.set()
                else:
                    taken.append(call)
            self.taking = len(taken)
        by_function: dict[int, list[_Call]] = {}
        for call in taken:
            by_function.setdefault(id(call.fn), []).append(call)
        try:
            for calls in by_function.values():
                self._submit(calls)
        finally:
            with self.lock:
                self.taking = 0
            self.arrived.set()  # flush() waits for this

    def _submit(self, calls: list[_Call]) -> None:
        """Submit one function's calls as one job, one run each."""
        if len(calls) > 1:  # running from now on: one call of many cannot be taken back
            for call in calls:
                if not call.future.set_running_or_notify_cancel():
                    call.future._submitted.set()
            calls = [call for call in calls if not call.future.cancelled()]
            if not calls:
                return
        futures = [call.future for call in calls]
        try:
            payload, options = jobs.prepare_job(self.context, Call(calls[0].fn), [c.run for c in calls],
                                                None, True, False, self.auto_cleanup, self.expires_after)
            job_id = jobs.submit_job(self.store, self.context, payload, options)
        except Exception as exc:  # the engine refused: the futures say why
            for future in futures:
                _set_outcome(future, error=exc)
                future._submitted.set()
            return
        group = _Group(job_id, futures, payload.n_tasks, payload.task_chunk_size, self.auto_cleanup)
        with self.lock:
            self.groups[job_id] = group
            self.open[job_id] = len(futures)
        for run, future in enumerate(futures):
            future._run = run
            future._group = group
            future._submitted.set()
        if futures[0].cancelled():  # a lone call canceled while it was being submitted
            _cancel_quietly(self.store, job_id)

    def _look(self, group: _Group) -> bool:
        """Look at one job; hand out the outcomes that landed.  True if a future changed."""
        futures = [ref() for ref in group.refs]
        pending = [f for f in futures if f is not None and not f.done()]
        with self.lock:
            self.open[group.job_id] = len(pending)
        if not pending and (group.ended or group.abandoned()
                            or any(f is not None and f.cancelled() for f in futures)):
            self._forget(group)
            return False
        try:
            return self._look_at(group, pending)
        except Exception as exc:  # an unreadable share dir: the futures say so
            return self._end(group, pending, exc)

    def _look_at(self, group: _Group, pending: list[RxFuture]) -> bool:
        if pending and group.size > 1 and self._take_landed(group):
            return True
        look = jobs.look_at_job(self.store, group.job_id)
        status = look.status
        if status is S.RUNNING:
            started = [f for f in pending if not f.running()]
            for future in started:
                future.set_running_or_notify_cancel()
            return bool(started)
        if status is S.FINISHED:
            return self._end(group, pending, None)
        if status is S.FAILED:
            failed = JobFailedError(f"job {group.job_id} failed: {look.derived.reason}")
            return self._end(group, pending, failed)
        if status is S.CANCELED:
            return self._end(group, pending, JobCanceledError(f"job {group.job_id} was canceled"))
        if status is S.MISSING:
            return self._end(group, pending, JobNotFoundError(
                f"job {group.job_id} was removed from {self.store.url} before its results were read"))
        return False

    def _take_landed(self, group: _Group) -> bool:
        """Hand their outcomes to the futures of the tasks that landed since the last look."""
        try:
            landed = [t for t in jobs.landed_tasks(self.store, group.job_id, group.n_tasks)
                      if t not in group.taken]
        except JobNotFoundError:
            return False  # the status look says what happened
        for task in landed:
            group.taken.add(task)
            try:
                outcomes = [(o.run, o.value, o.failed)
                            for o in jobs.task_outcomes(self.store, group.job_id, task)]
            except Exception as exc:  # an unreadable result file: its calls say so
                outcomes = [(run, exc, True) for run in group.runs_of(task)]
            for run, value, failed in outcomes:
                future = group.refs[run]() if 0 <= run < group.size else None
                if future is not None and not future.done():
                    if failed:
                        _set_outcome(future, error=value)
                    else:
                        _set_outcome(future, value)
        return bool(landed)

    def _end(self, group: _Group, pending: list[RxFuture], error: BaseException | None) -> bool:
        """The job ended: settle it if every outcome was read, and give the pending futures theirs.

        The end is recorded before any outcome is handed out, so a reader who
        gets the last one settles the job at once.
        """
        settle = group.end()
        if error is None:
            try:
                self._take_landed(group)
            except Exception as exc:  # an unreadable share dir: the futures say so
                error = exc
        for future in pending:
            if not future.done():
                _set_outcome(future, error=error or JobFailedError(
                    f"job {group.job_id} finished without the result of run {future.run}"))
        self._forget(group)
        if settle:
            _settle_job(self.store, group, stacklevel=2)
        return True

    def _forget(self, group: _Group) -> None:
        with self.lock:
            self.groups.pop(group.job_id, None)
            self.open.pop(group.job_id, None)


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


_WATCHERS: weakref.WeakSet[_Watcher] = weakref.WeakSet()


@atexit.register
def _submit_at_exit() -> None:
    """Calls still in an executor when the interpreter exits become jobs, as promised."""
    for watcher in list(_WATCHERS):
        watcher.flush()


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose calls are rxjobs jobs, on any compute context.

    Parameters
    ----------
    compute_context
        Where the jobs run: ``RxLocalParallel()`` (the default), ``RxDask``,
        ``RxSpark``, ``RxSlurm``, with a share dir on disk or object storage.
    max_workers
        At most this many calls submitted and unfinished at once; later calls
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
        jobs.load_engine(self.compute_context)  # calls left at exit are submitted then: no imports
        self._shutdown = False
        self._shutdown_lock = threading.Lock()
        self._watcher = _Watcher(self._store, self.compute_context, self.max_workers,
                                 self.auto_cleanup, self.expires_after)
        # The watcher outlives no executor: dropped, it stops once its futures are settled.
        weakref.finalize(self, self._watcher.stop)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> RxFuture:
        """Run ``fn(*args, **kwargs)`` in an rxjobs job; return its future at once.

        The call joins the calls submitted with it (see the module notes) and
        goes to the engine within milliseconds, from the executor's thread.

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
            if not callable(fn):
                raise TypeError(f"fn must be callable, not {type(fn).__name__}")
            _check_picklable((fn, args, kwargs))  # fail now, not in the executor's thread
            future = RxFuture(self._store, self.compute_context)
            self._watcher.add(_Call(future, fn, as_run(args, kwargs)))
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
            if not callable(fn):
                raise TypeError(f"fn must be callable, not {type(fn).__name__}")
            runs = [as_run(items, {}) for items in zip(*iterables, strict=False)]
            if not runs:
                return iter(())
            payload, options = jobs.prepare_job(self.compute_context, Call(fn), runs, chunksize, True,
                                                False, self.auto_cleanup, self.expires_after)
            job_id = jobs.submit_job(self._store, self.compute_context, payload, options)
        return _map_results(self._store, job_id, payload.n_tasks, deadline, self.auto_cleanup)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; with ``wait``, return once every followed future is settled.

        ``cancel_futures`` cancels the calls ``max_workers`` holds back.
        Jobs already submitted run on: their results stay in the share dir.
        """
        with self._shutdown_lock:
            self._shutdown = True
        if cancel_futures:
            self._watcher.cancel_held()
        self._watcher.stop()
        if wait:
            self._watcher.join()


def _check_picklable(call: tuple[Any, ...]) -> None:
    try:
        cloudpickle.dumps(call)
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

