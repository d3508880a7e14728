"""The joblib backend ``rxjobs``: scikit-learn's ``n_jobs`` on rxjobs' engines, each wave a job.

::

    from rxjobs.joblib import register_rxjobs
    register_rxjobs()
    with joblib.parallel_config(backend="rxjobs", compute_context=RxDask("tcp://...")):
        GridSearchCV(model, grid, n_jobs=4).fit(X, y)

joblib hands a backend one batch of calls at a time: first as many as its
``pre_dispatch`` allows (``2*n_jobs``), then one more each time a batch
completes.  Submitting each batch as a job would make thousands of jobs for a
search, so the backend groups them: the batches that arrive together (a
*dispatch wave*) become the runs of one rxjobs job, with at most ``n_jobs``
tasks, dealt to them round-robin (:func:`dealt_order`) so that each task's
share of the grid costs alike.  When the job ends its results are read and each batch's callback
fires; the batches joblib dispatches in answer form the next wave.  Then the
job is removed (or marked retrieved, by its context's ``auto_cleanup``): the
durable removal overlaps joblib taking the results in, and the ``Parallel``
call returns only once it is done.  A search is thus a
few jobs, each listed by ``rxjobs list`` and the web page while it lives, and
cleaned up by the usual rules.

``n_jobs`` maps onto the engine: the number of tasks a job has, the local
pool's ``num_workers``, and Slurm's array throttle (``max_parallel``).
Calls nested inside a batch run sequentially in their worker, so nesting
never multiplies the processes.  An exception in the caller (a batch that
raised, KeyboardInterrupt) makes joblib call ``abort_everything``, which
cancels every job of the search still running.

This module is named like the library it serves; it imports joblib
absolutely, and the library is loaded only by :func:`register_rxjobs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from rxjobs import api, jobs
from rxjobs.calls import run_batch
from rxjobs.contexts import RxComputeContext, RxLocalParallel, RxSlurm
from rxjobs.engines import get_engine
from rxjobs.errors import EngineNotInstalledError

BACKEND_NAME = "rxjobs"
MIN_JOBLIB = (1, 2)  # the ``submit``/``retrieve_result_callback`` backend API
CONFIG_JOBLIB = (1, 3)  # ``joblib.parallel_config``
# A wave is submitted when joblib starts waiting for results (``retrieval_context``: the first
# ``pre_dispatch`` batches are in) or when the callbacks of a finished job have dispatched
# their successors.  Batches that neither moment covers (joblib before 1.3 has no
# ``retrieval_context``) go after this long without another batch.
WAVE_QUIET_S = 0.5
# Each wave's batches are this many times as big as the last wave's.  A wave costs a job (its
# workers start and import the caller's modules: seconds for scikit-learn), so a search of N
# calls takes about log_64(N / pre_dispatch) + 1 jobs (2 up to ~500 calls at n_jobs=2, 3 up to
# ~30,000), while its first wave still starts at joblib's pace.
WAVE_GROWTH = 64
# What the backend tells joblib its number of workers is (``effective_n_jobs``), per worker of
# n_jobs: joblib keeps ``pre_dispatch`` (``2*n_jobs``) batches in flight and splits a search's
# last calls into batches of one, so a wide wave is what keeps a small search to one or two
# jobs.  The job of a wave still runs at most n_jobs tasks at once.
WAVE_WIDTH = 8


# The slow half of a read job's removal (its rename's fsyncs, deleting its files) runs here,
# after the Parallel call returned: one thread, which the interpreter waits for at its exit.
_removals: ThreadPoolExecutor | None = None
_removals_lock = threading.Lock()


def _defer_removal(work: Callable[[], object]) -> None:
    """Run ``work`` (:func:`rxjobs.jobs.settle_read_job`'s second half) in the removal thread;
    a failure is a warning (the job is in the trash, which the next cleanup empties)."""
    global _removals

    def run() -> None:
        try:
            work()
        except Exception as exc:
            warnings.warn(f"an rxjobs job of a joblib call was set aside but its files could not be "
                          f"deleted ({type(exc).__name__}: {exc}); the next rxjobs cleanup deletes "
                          "them", stacklevel=1)

    with _removals_lock:
        if _removals is None:
            _removals = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rxjobs-joblib-removal")
        _removals.submit(run)


def version_tuple(version: str) -> tuple[int, ...]:
    """``"1.4.2"`` → ``(1, 4, 2)``; a suffix such as ``rc1`` or ``.dev0`` ends the numbers."""
    numbers = []
    for part in version.split("."):
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        numbers.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(numbers)


def joblib_problem(version: str, need_config: bool) -> str | None:
    """Why this joblib cannot serve (None if it can): too old for the backend API, or (with
    ``need_config``) for ``parallel_config``."""
    have = version_tuple(version)
    if have < MIN_JOBLIB:
        need = ".".join(map(str, MIN_JOBLIB))
        return f"joblib {version} is too old for the rxjobs backend (it needs {need} or newer): " \
               "pip install 'rxjobs[joblib]'"
    if need_config and have < CONFIG_JOBLIB:
        return (f"joblib {version} has no parallel_config (added in joblib 1.3): "
                "pip install 'rxjobs[joblib]', or select the backend with "
                "joblib.parallel_backend('rxjobs', compute_context=...)")
    return None


def _joblib() -> Any:
    try:
        import joblib
    except ImportError as exc:
        raise EngineNotInstalledError(
            "the rxjobs joblib backend needs joblib: pip install 'rxjobs[joblib]'") from exc
    return joblib


def check_context(compute_context: Any) -> RxComputeContext:
    """The compute context the backend runs on, or a clear error.

    None means the current one (``rx_get_compute_context()``); a context that
    runs in the calling process (``RxLocalSeq``) keeps no jobs and is refused.
    """
    cc = api.rx_get_compute_context() if compute_context is None else compute_context
    if not isinstance(cc, RxComputeContext):
        raise TypeError(
            f"compute_context for the rxjobs joblib backend must be a compute context such as "
            f"RxLocalParallel(), RxDask(address), RxSpark(master) or RxSlurm(), "
            f"not {type(compute_context).__name__}: {compute_context!r}")
    if cc.engine is None:
        raise ValueError(
            f"the rxjobs joblib backend runs jobs on an engine, and {cc.kind} has none (it runs in the "
            "calling process): pass compute_context=RxLocalParallel(), RxDask(...), RxSpark(...) "
            "or RxSlurm()")
    get_engine(cc.engine)  # an engine not installed says how to install it now, not at the first batch
    return cc


def wave_context(cc: RxComputeContext, n_jobs: int) -> RxComputeContext:
    """The context a wave's job is submitted with: not waiting, and ``n_jobs`` workers where the
    context has a worker setting (the local pool, Slurm's array throttle)."""
    changes: dict[str, Any] = {"wait": False}
    if isinstance(cc, RxLocalParallel):
        changes["num_workers"] = n_jobs
    elif isinstance(cc, RxSlurm):
        changes["max_parallel"] = n_jobs
    return dataclasses.replace(cc, **changes)


def dealt_order(n_batches: int, chunk: int) -> list[int]:
    """Which batch each run of a wave's job is (``order[run]``): the batches dealt round-robin
    to the job's tasks (each ``chunk`` consecutive runs), as cards to players.

    A search dispatches its batches in grid order, and neighbouring batches cost
    alike (the same parameters, other folds); in consecutive chunks the task with
    the dearest part of the grid would end the job late, where joblib's own
    workers take batches as they free up.  Dealt, each task gets every
    ``n_tasks``-th batch, so their shares cost alike.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, not {chunk}")
    # Runs in the order they are dealt: first place of every task, then second places...
    dealing = sorted(range(n_batches), key=lambda run: (run % chunk, run // chunk))
    order = [0] * n_batches
    for batch, run in enumerate(dealing):
        order[run] = batch
    return order


def _base() -> type:
    from joblib.parallel import ParallelBackendBase
    return ParallelBackendBase


class _Wave:
    """One job of the search and the futures of its batches, in run order."""

    def __init__(self, job: api.RxRemoteJob, futures: list[Future[Any]]) -> None:
        self.job, self.futures = job, futures


def make_backend_class() -> type:
    """The backend class, a subclass of joblib's ``ParallelBackendBase`` (built when joblib is loaded)."""
    base = _base()
    from joblib.parallel import SequentialBackend

    class RxJobsBackend(base):  # type: ignore[valid-type, misc]
        """Runs joblib's batches as rxjobs jobs, one job per dispatch wave."""

        supports_timeout = True
        supports_return_generator = True
        uses_threads = False
        supports_sharedmem = False

        def __init__(self, compute_context: Any = None, nesting_level: int | None = None,
                     inner_max_num_threads: int | None = None, **backend_kwargs: Any) -> None:
            if backend_kwargs:
                raise TypeError(f"unknown argument(s) of the rxjobs joblib backend: "
                                f"{', '.join(sorted(backend_kwargs))} (it takes compute_context)")
            super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
            self.compute_context = check_context(compute_context)
            self.n_jobs = 1
            self._lock = threading.Condition()
            self._pending: list[tuple[Any, Future[Any]]] = []
            self._waves: list[_Wave] = []
            self._flushing = False  # a thread forms waves (it ends when the Parallel call does)
            self._settling = 0  # jobs whose results were handed over, not yet removed
            self._closing = False
            self.jobs_submitted: list[str] = []  # ids of the jobs of this backend (tests read them)
            self._batch_size = 1

        @property
        def supports_retrieve_callback(self) -> bool:
            """False for a call returning in order (a list, or ``return_as="generator"``):
            joblib's thread then waits on each wave's future and wakes as it is settled,
            instead of polling every 10 ms for what callbacks registered; True for
            ``return_as="generator_unordered"``, which joblib serves through callbacks only."""
            parallel = getattr(self, "parallel", None)
            return not getattr(parallel, "return_ordered", True)

        # -- sizing --------------------------------------------------------------------------

        def effective_n_jobs(self, n_jobs: int | None) -> int:
            """How many batches joblib may keep in flight: a wave's width (see WAVE_WIDTH)."""
            return self.workers(n_jobs) * WAVE_WIDTH

        def workers(self, n_jobs: int | None) -> int:
            """The tasks a wave's job runs at once: ``n_jobs``, or the engine's slots for -1."""
            if n_jobs == 0:
                raise ValueError("n_jobs == 0 has no meaning for joblib: use n_jobs=-1 for every worker")
            engine = get_engine(str(self.compute_context.engine))
            slots = max(1, int(engine.parallelism(self.compute_context)))
            if n_jobs is None or n_jobs < 0:
                return max(1, slots + 1 + (n_jobs if n_jobs is not None else -1))
            return int(n_jobs)

        def configure(self, n_jobs: int = 1, parallel: Any = None, prefer: Any = None,
                      require: Any = None, **backend_kwargs: Any) -> int:
            if require == "sharedmem":
                raise ValueError("the rxjobs joblib backend runs calls in other processes, so it cannot "
                                 "share memory (require='sharedmem'): use the threading backend for "
                                 "this call")
            self.parallel = parallel
            self.n_jobs = self.workers(n_jobs)
            return self.effective_n_jobs(n_jobs)

        def compute_batch_size(self) -> int:
            return self._batch_size

        def start_call(self) -> None:
            self._batch_size = 1

        def get_nested_backend(self) -> tuple[Any, int | None]:
            # A batch's own Parallel calls run one after another in its worker: a search's
            # n_jobs workers never each start n_jobs more.
            return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None

        # -- waves -------------------------------------------------------------------------

        def submit(self, func: Any, callback: Callable[[Any], Any] | None = None) -> Future[Any]:
            future: Future[Any] = Future()
            if callback is not None:
                future.add_done_callback(callback)
            with self._lock:
                self._pending.append((func, future))
                self._closing = False
                if not self._flushing:
                    self._flushing = True
                    threading.Thread(target=self._flush_loop, name="rxjobs-joblib-waves", daemon=True).start()
                self._lock.notify_all()
            return future

        def apply_async(self, func: Any, callback: Callable[[Any], Any] | None = None) -> Future[Any]:
            return self.submit(func, callback)  # joblib before 1.3 calls this name

        def retrieve_result_callback(self, out: Future[Any]) -> Any:
            return out.result()

        def retrieve_result(self, out: Future[Any], timeout: float | None = None) -> Any:
            return out.result(timeout=timeout)

        @contextlib.contextmanager
        def retrieval_context(self) -> Iterator[None]:
            self._flush_now()  # joblib has dispatched its first wave and now waits for it
            yield

        def _flush_now(self) -> None:
            with self._lock:
                batch, self._pending = self._pending, []
            if batch:
                self._submit_wave(batch)

        def _flush_loop(self) -> None:
            while True:
                with self._lock:
                    while not self._pending and not self._closing:
                        self._lock.wait()
                    if self._closing and not self._pending:
                        self._flushing = False
                        return
                    count = -1
                    while count != len(self._pending):  # until the wave stops growing
                        count = len(self._pending)
                        self._lock.wait(WAVE_QUIET_S)
                    batch, self._pending = self._pending, []
                self._submit_wave(batch)

        def _submit_wave(self, batch: list[tuple[Any, Future[Any]]]) -> None:
            futures = [future for _, future in batch if future.set_running_or_notify_cancel()]
            funcs = [func for func, future in batch if future.running()]
            if not funcs:
                return
            chunk = math.ceil(len(funcs) / max(1, self.n_jobs))
            order = dealt_order(len(funcs), chunk)
            funcs, futures = [funcs[b] for b in order], [futures[b] for b in order]
            try:
                cc = wave_context(self.compute_context, self.n_jobs)
                job = api.rx_exec(run_batch, args=[{"batch": f} for f in funcs], task_chunk_size=chunk,
                                  compute_context=cc)
            except BaseException as exc:
                for future in futures:
                    future.set_exception(exc)
                return
            assert isinstance(job, api.RxRemoteJob)  # a non-waiting context returns the job
            wave = _Wave(job, futures)
            try:
                with self._lock:
                    self._waves.append(wave)
                    self.jobs_submitted.append(job.job_id)
            except BaseException:  # interrupted before abort_everything could see the job
                api.rx_cancel_job(job)
                raise
            threading.Thread(target=self._collect, args=(wave,), name=f"rxjobs-joblib-{job.job_id}",
                             daemon=True).start()

        def _collect(self, wave: _Wave) -> None:
            """Wait for a wave's job, read its results whole and complete its futures (which
            fires joblib's callbacks), then remove the job (or mark it retrieved, per its
            ``auto_cleanup``).

            The removal comes after the hand-over, while joblib takes the results in, in two
            halves: the job is renamed into the trash (from then on it reads as missing), which
            :meth:`stop_call` waits for, so a ``Parallel`` call still returns with its jobs
            gone from every listing; the rename's two directory fsyncs and the deletion of its
            files (3–7 ms) follow in the removal thread (:func:`_defer_removal`), which the
            interpreter waits for at its exit.  A crash before the rename leaves a finished job
            not marked retrieved, which cleanup keeps; after it, a trash entry, which the next
            cleanup deletes: nothing is lost either way.
            """
            store, job_id = wave.job.store, wave.job.job_id
            remove = False
            try:
                status = api.rx_wait_for_job(wave.job, progress=False)
                if status.value != "finished":
                    raise RuntimeError(f"rxjobs job {job_id} of a joblib call ended {status.value}: "
                                       f"{jobs.job_status(store, job_id).reason}")
                results = jobs.read_results(store, job_id)
                remove = jobs.removes_when_collected(store, job_id)
            except BaseException as exc:
                outcome: list[tuple[bool, Any]] = [(False, exc)] * len(wave.futures)
                settle = False
            else:
                failed = set(results.failed)
                outcome = [(i not in failed, value) for i, value in enumerate(results.values)]
                settle = True
            finally:
                with self._lock:
                    if wave in self._waves:
                        self._waves.remove(wave)
                    # joblib asks for the next batch size from the callbacks fired below
                    self._batch_size = min(self._batch_size * WAVE_GROWTH, 1 << 20)
                    self._settling += settle
            try:
                for future, (ok, value) in zip(wave.futures, outcome, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value if isinstance(value, BaseException)
                                             else RuntimeError(f"batch failed: {value!r}"))
                if settle:
                    self._settle(store, job_id, remove)
            finally:
                with self._lock:
                    self._settling -= settle
                    self._lock.notify_all()
            self._flush_now()  # the batches joblib dispatched from those callbacks: the next wave

        @staticmethod
        def _settle(store: Any, job_id: str, remove: bool) -> None:
            try:
                jobs.settle_read_job(store, job_id, remove, defer=_defer_removal)
            except Exception as exc:  # the results were handed over: a failed cleanup must not hide them
                warnings.warn(f"rxjobs job {job_id} of a joblib call: its results were read but the "
                              f"job could not be {'removed' if remove else 'marked retrieved'}: "
                              f"{type(exc).__name__}: {exc}", stacklevel=2)

        # -- ends --------------------------------------------------------------------------

        def abort_everything(self, ensure_ready: bool = True) -> None:
            """Cancel every job of this backend still running and drop batches not yet submitted."""
            with self._lock:
                pending, self._pending = self._pending, []
                waves = list(self._waves)
            for _, future in pending:
                future.cancel()
            for wave in waves:
                try:
                    api.rx_cancel_job(wave.job)
                except (LookupError, PermissionError, OSError, ValueError):
                    pass  # it ended or was removed meanwhile: nothing left running
                for future in wave.futures:
                    future.cancel()

        def terminate(self) -> None:
            with self._lock:
                self._closing = True
                self._lock.notify_all()

        def stop_call(self) -> None:
            """The ``Parallel`` call is over: its jobs whose results were handed over are
            gone from view (set aside in the trash, their files deleted just after) or marked
            retrieved before it returns."""
            self.terminate()
            with self._lock:
                self._lock.wait_for(lambda: self._settling == 0)

    RxJobsBackend.__qualname__ = RxJobsBackend.__name__ = "RxJobsBackend"
    return RxJobsBackend


_registered: type | None = None


def register_rxjobs() -> None:
    """Register the joblib backend ``rxjobs`` (as Ray's ``register_ray`` does).

    Then ``joblib.parallel_config(backend="rxjobs", compute_context=...)``
    (or ``joblib.parallel_backend("rxjobs", compute_context=...)`` on joblib
    before 1.3) runs joblib's work, scikit-learn's included, as rxjobs jobs.

    Raises
    ------
    EngineNotInstalledError
        joblib is not installed, or is too old for the backend.
    """
    global _registered
    joblib = _joblib()
    problem = joblib_problem(joblib.__version__, need_config=False)
    if problem is not None:
        raise EngineNotInstalledError(problem)
    if _registered is None:
        _registered = make_backend_class()
    joblib.register_parallel_backend(BACKEND_NAME, _registered)


def parallel_config(compute_context: Any = None, n_jobs: int | None = None, **kwargs: Any) -> Any:
    """``joblib.parallel_config(backend="rxjobs", compute_context=..., n_jobs=...)``, registering
    the backend first; a clear error when joblib is too old for ``parallel_config``."""
    register_rxjobs()
    joblib = _joblib()
    problem = joblib_problem(joblib.__version__, need_config=True)
    if problem is not None:
        raise EngineNotInstalledError(problem)
    if n_jobs is not None:
        kwargs["n_jobs"] = n_jobs
    return joblib.parallel_config(backend=BACKEND_NAME, compute_context=compute_context, **kwargs)
