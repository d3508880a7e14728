"""The revoscalepy-compatible ``rx_*`` functions: argument mapping and delegation.

Code written for revoscalepy's job functions runs after changing the import.
Every function here maps its arguments onto the job services
(:mod:`rxjobs.jobs`, :mod:`rxjobs.listing`, :mod:`rxjobs.cleanup`); no job
logic lives here.
"""

from __future__ import annotations

import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from . import jobs, listing
from .arguments import build_runs
from .cleanup import CleanupReport, cleanup_jobs
from .contexts import RxComputeContext, RxLocalSeq
from .engines import get_engine
from .errors import JobFailedError
from .ids import validate_job_id
from .progress import in_kernel, job_progress
from .runner import seeded_run
from .seeds import validate_rng_seed
from .sharedir import default_share_dir, normalize_share_dir
from .status import RxRemoteJobStatus
from .store import Store, open_store
from .times import as_time
from .waiting import poll


class RxRunWarning(UserWarning):
    """Some runs of a job raised; their result slots hold the exceptions."""


_current_context: RxComputeContext = RxLocalSeq()


def rx_set_compute_context(compute_context: RxComputeContext) -> RxComputeContext:
    """Make ``compute_context`` the default of every ``rx_*`` function; return the previous one."""
    global _current_context
    if not isinstance(compute_context, RxComputeContext):
        raise TypeError(
            f"expected a compute context such as RxLocalParallel(), not {type(compute_context).__name__}"
        )
    previous, _current_context = _current_context, compute_context
    return previous


def rx_get_compute_context() -> RxComputeContext:
    """The current default compute context (``RxLocalSeq()`` unless set)."""
    return _current_context


def _context(compute_context: RxComputeContext | None) -> RxComputeContext:
    if compute_context is None:
        return _current_context
    if not isinstance(compute_context, RxComputeContext):
        raise TypeError(
            f"compute_context must be a compute context such as RxLocalParallel(), "
            f"not {type(compute_context).__name__}"
        )
    return compute_context


class RxRemoteJob:
    """A job in a share dir: a value naming the job, not a live connection.

    Parameters
    ----------
    compute_context
        The context the job was submitted with (it says where the share dir is).
    job_id
        The job's id.
    share_dir
        Where the job was found (default: the context's share dir).
    share_dir_options
        fsspec storage options to reach it (default: the context's).

    Notes
    -----
    Like a ``concurrent.futures.Future``, it has ``done()``, ``wait()``,
    ``result()`` and ``cancel()``; ``close()`` removes the job whatever its
    state (a forced cleanup).
    """

    def __init__(self, compute_context: RxComputeContext, job_id: str,
                 share_dir: str | None = None,
                 share_dir_options: dict[str, Any] | None = None) -> None:
        self.compute_context = _context(compute_context)
        self.job_id = validate_job_id(job_id)
        # Where the job was found, which may be spelled differently from the
        # share dir it was submitted with (a moved or re-mounted share dir).
        self.share_dir = normalize_share_dir(share_dir or self.compute_context.job_share_dir())
        # Credentials are never read back from job.json: they come from whoever
        # named the job (the context it was looked up with).
        self.share_dir_options = (share_dir_options if share_dir_options is not None
                                  else self.compute_context.job_share_dir_options())

    @classmethod
    def _listed(cls, compute_context: RxComputeContext, job_id: str, share_dir: str,
                share_dir_options: dict[str, Any] | None) -> RxRemoteJob:
        """A job found by a listing: the same value ``__init__`` makes, without checking
        again what the listing has checked (a context object, a valid id, a normalized
        share dir) — a big listing makes thousands.  Keep the fields in step with ``__init__``."""
        job = cls.__new__(cls)
        job.compute_context, job.job_id = compute_context, job_id
        job.share_dir, job.share_dir_options = share_dir, share_dir_options
        return job

    @property
    def store(self) -> Store:
        return open_store(self.share_dir, self.share_dir_options)

    def __repr__(self) -> str:
        return f"RxRemoteJob(job_id={self.job_id!r}, share_dir={self.share_dir!r})"

    def _repr_html_(self) -> str:
        """The job as a notebook shows it: state badge, progress, function, size (read now)."""
        from .notebook import job_html_of
        return job_html_of(self.store, self.job_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RxRemoteJob):
            return NotImplemented
        return (self.job_id, self.share_dir) == (other.job_id, other.share_dir)

    def __hash__(self) -> int:
        return hash((self.job_id, self.share_dir))

    @staticmethod
    def deserialize_job(job_id: str, compute_context: RxComputeContext | None = None) -> RxRemoteJob:
        """The job ``job_id`` in the share dir of ``compute_context`` (default: the current one).

        The returned job carries the compute context it was submitted with.
        """
        cc = _context(compute_context)
        share = cc.job_share_dir() if cc.engine is not None else default_share_dir()
        return get_job(job_id, share, cc.job_share_dir_options())

    def status(self) -> RxRemoteJobStatus:
        return rx_get_job_status(self)

    def done(self) -> bool:
        return self.status().is_terminal()

    def wait(self, timeout: float | None = None) -> RxRemoteJobStatus:
        return rx_wait_for_job(self, timeout=timeout)

    def result(self, auto_cleanup: bool | None = None) -> list[Any]:
        return rx_get_job_results(self, auto_cleanup=auto_cleanup)

    def output(self) -> str:
        return rx_get_job_output(self)

    def cancel(self) -> bool:
        return rx_cancel_job(self)

    def close(self) -> CleanupReport:
        """Remove the job's artifacts whatever its state (cancels it if it runs)."""
        return rx_cleanup_jobs(self, force=True, verbose=False)


def _job(job_info: Any) -> RxRemoteJob:
    if isinstance(job_info, RxRemoteJob):
        return job_info
    info = rx_get_job_info(job_info)
    if info is None:
        raise TypeError(
            f"expected an RxRemoteJob (from rx_exec or rx_get_jobs), not {type(job_info).__name__}"
        )
    return info


class JobResults(list):
    """The list ``rx_exec`` returns in a waiting context, remembering its job."""

    job_info: RxRemoteJob | None = None


class JobList(list):  # a plain list of RxRemoteJob, as revoscalepy returns
    """The list ``rx_get_jobs`` returns: a plain list of jobs that a notebook shows as a table."""

    def _repr_html_(self) -> str:
        from .notebook import jobs_html_of
        groups: dict[tuple[str, str], tuple[Store, list[str]]] = {}
        for job in self:
            key = (job.share_dir, repr(job.share_dir_options))
            if key not in groups:
                groups[key] = (job.store, [])
            groups[key][1].append(job.job_id)
        return jobs_html_of(list(groups.values()))


@contextmanager
def _progress_watch(store: Store, job_id: str,
                    wanted: bool = True) -> Iterator[Callable[[RxRemoteJobStatus], None] | None]:
    """In a notebook, a watch that redraws one progress display of the job; elsewhere None."""
    if not wanted or not in_kernel():
        yield None
        return
    from .notebook import task_progress
    with job_progress(f"job {job_id}") as bar:

        def watch(status: RxRemoteJobStatus) -> None:
            _, done, total = task_progress(store, job_id)
            bar.update(done, total, status.value)

        yield watch


def rx_get_job_info(obj: Any) -> RxRemoteJob | None:
    """The job behind ``obj`` (a job, or results returned by ``rx_exec``), else None."""
    if isinstance(obj, RxRemoteJob):
        return obj
    info = getattr(obj, "job_info", None)
    return info if isinstance(info, RxRemoteJob) else None


# -- rx_exec -----------------------------------------------------------------------------


def rx_exec(
    function: Callable[..., Any],
    args: dict[str, Any] | list[dict[str, Any]] | None = None,
    times_to_run: int = -1,
    task_chunk_size: int | None = None,
    compute_context: RxComputeContext | None = None,
    continue_on_failure: bool = True,
    callback: Callable[[Any], Any] | None = None,
    console_output: bool | None = None,
    auto_cleanup: bool | None = None,
    expires_after: Any = None,
    rng_seed: int | None = None,
    **kwargs: Any,
) -> list[Any] | RxRemoteJob:
    """Run ``function`` once per set of arguments, on the engine of the compute context.

    Parameters
    ----------
    function
        The function to run; it is pickled with cloudpickle and sent to workers.
    args
        A dict of keyword arguments for every run, or a list of dicts, one per run.
    times_to_run
        Number of runs; -1 means ``len(args)`` (or the per-run keyword lists), else 1.
    task_chunk_size
        Runs grouped into one task, to cut per-task overhead; None lets rxjobs choose.
    compute_context
        Where to run; default the current one (``rx_get_compute_context()``).
    continue_on_failure
        True: a run that raises leaves its exception in its slot and the job
        finishes.  False: the first failure fails the job (and is raised when waiting).
    callback
        Called with each run's value as results are collected.
    console_output
        Print the runs' console output when the results are collected;
        default the context's setting.
    auto_cleanup
        Remove the job's artifacts once the results are returned; default the
        context's setting.
    expires_after
        Retention (``"7d"``, a ``timedelta``): once the job has ended and this
        long has passed, cleanup removes it without force, un-retrieved
        results included; default the context's setting (never).
    rng_seed
        Reproducible parallel random numbers (RevoScaleR's ``RNGseed``): an
        integer from 0 to 2**128 - 1.  Before each run, Python's ``random``
        and numpy's global generator are seeded with the run's own stream,
        derived from this seed and the run's index, and
        :func:`rxjobs.run_rng` gives the run its own ``numpy.random.Generator``;
        the results are the same whatever the engine, chunk size or number of
        workers (docs/rng.md).  None (the default): runs are not seeded.
    **kwargs
        Keyword form of the arguments: a list value gives one element per run
        (``x=[1, 2, 3], y=6`` is three runs); wrap a list meant as one value
        (``the_list=[[0, 1, 2]]``).

    Returns
    -------
    list or RxRemoteJob
        The results in run order in a waiting context; the job, at once, otherwise.
    """
    cc = _context(compute_context)
    if not callable(function):
        raise TypeError(f"function must be callable, not {type(function).__name__}")
    runs = build_runs(args, times_to_run, kwargs)
    seed = validate_rng_seed(rng_seed)
    if cc.engine is None:
        return _run_in_process(function, runs, continue_on_failure, callback, seed)

    payload, options = jobs.prepare_job(cc, function, runs, task_chunk_size, continue_on_failure,
                                        console_output, auto_cleanup, expires_after,
                                        rng_seed=seed)
    console, cleanup = options["console_output"], options["auto_cleanup"]
    store = open_store(cc.job_share_dir(), cc.job_share_dir_options())
    job = RxRemoteJob(cc, jobs.submit_job(store, cc, payload, options))
    if not cc.waits:
        return job
    try:
        with _progress_watch(store, job.job_id) as watch:
            jobs.wait_with_callback(store, job.job_id, callback, watch)
    except BaseException:  # KeyboardInterrupt included: do not leave the job running
        jobs.cancel_job(store, job.job_id)
        raise
    derived = jobs.job_status(store, job.job_id)
    if derived.status is RxRemoteJobStatus.FAILED:
        error = jobs.first_run_error(store, job.job_id)
        if console:
            _print_output(store, job.job_id)
        if cleanup:
            rx_cleanup_jobs(job, verbose=False)
        if error is not None and not continue_on_failure:
            raise error
        raise JobFailedError(f"job {job.job_id} failed: {derived.reason}")
    results = JobResults(rx_get_job_results(job, console_output=console, auto_cleanup=cleanup))
    results.job_info = job
    return results


def _run_in_process(function: Callable[..., Any], runs: list[dict[str, Any]],
                    continue_on_failure: bool, callback: Callable[[Any], Any] | None,
                    rng_seed: int | None = None) -> list[Any]:
    results: list[Any] = []
    failed = []
    for i, run in enumerate(runs):
        try:
            with seeded_run(rng_seed, i):
                value = function(**run)
        except Exception as exc:
            if not continue_on_failure:
                raise
            exc.remote_traceback = traceback.format_exc()  # type: ignore[attr-defined]  # as a remote failure
            value = exc
            failed.append(i)
        results.append(value)
        if callback is not None:
            callback(value)
    _warn_failed_runs("", failed, len(runs))
    return results


def _warn_failed_runs(job_id: str, failed: list[int], n_runs: int) -> None:
    if not failed:
        return
    which = ", ".join(map(str, failed[:10])) + (", ..." if len(failed) > 10 else "")
    job = f"job {job_id}: " if job_id else ""
    warnings.warn(
        f"{job}{len(failed)} of {n_runs} runs raised an exception (runs {which}); their slots "
        "in the results hold the exception, with the remote traceback in .remote_traceback",
        RxRunWarning, stacklevel=3,
    )


def _write_output(text: str) -> None:
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _print_output(store: Store, job_id: str) -> None:
    _write_output(jobs.read_output(store, job_id))


# -- the job functions -------------------------------------------------------------------


def rx_get_jobs(
    compute_context: RxComputeContext | None = None,
    exact_match: bool = False,
    start_time: datetime | str | None = None,
    end_time: datetime | str | None = None,
    states: Iterable[RxRemoteJobStatus | str] | None = None,
    verbose: bool = True,
) -> list[RxRemoteJob]:
    """The jobs of a compute context's share dir, oldest first.

    Parameters
    ----------
    compute_context
        Whose jobs: those found in its share dir (for ``RxLocalSeq``, the
        default share dir) that were submitted to the same engine address,
        whatever path spelled the share dir then; default the current context.
    exact_match
        Only jobs submitted with exactly this context: the same kind and
        every setting equal, except where the share dir is
        (``share_dir``, ``share_dir_options``).
    start_time, end_time
        Only jobs submitted in this window: a ``datetime`` (naive: local
        time), or text such as ``"2026-11-28T14:30"`` or ``"2h"`` (two hours
        ago), read as ``rxjobs list --since/--until`` read it.
    states
        Only jobs in these states (members or strings such as ``"finished"``).
    verbose
        Print one line per job: state, submit time, id.
    """
    cc = _context(compute_context)
    start = as_time(start_time, "start_time") if start_time is not None else None
    end = as_time(end_time, "end_time") if end_time is not None else None
    store = _store_of(cc)
    found = JobList()
    for row in listing.list_jobs(store, cc, exact_match, start, end, states, need_status=verbose):
        if verbose:
            when = row.submitted.astimezone().strftime("%Y-%m-%d %H:%M:%S") if row.submitted else "?"
            state = row.status.value if row.status is not None else "?"
            print(f"{state:<12} {when}  {row.job_id}")
        found.append(RxRemoteJob._listed(row.context, row.job_id, store.url, row.share_dir_options))
    return found


def _store_of(cc: RxComputeContext) -> Store:
    """The share dir of a context (for ``RxLocalSeq``, the default one)."""
    share = cc.job_share_dir() if cc.engine is not None else default_share_dir()
    return open_store(share, cc.job_share_dir_options())


def list_jobs(
    share_dir: str | None = None,
    start_time: datetime | str | None = None,
    end_time: datetime | str | None = None,
    states: Iterable[RxRemoteJobStatus | str] | None = None,
    share_dir_options: dict[str, Any] | None = None,
) -> list[tuple[RxRemoteJob, datetime | None, RxRemoteJobStatus]]:
    """Every job of a share dir (whatever its context), with submit time and state.

    This is what the ``rxjobs`` command lists; ``rx_get_jobs`` is the same
    listing restricted to one compute context (see :mod:`rxjobs.listing`).
    ``share_dir_options`` are the fsspec storage options of an object-store
    share dir.
    """
    store = open_store(share_dir or default_share_dir(), share_dir_options)
    start = as_time(start_time, "start_time") if start_time is not None else None
    end = as_time(end_time, "end_time") if end_time is not None else None
    found = []
    for row in listing.list_jobs(store, None, False, start, end, states, need_status=True):
        status = row.status if row.status is not None else RxRemoteJobStatus.UNDETERMINED
        found.append((RxRemoteJob._listed(row.context, row.job_id, store.url, row.share_dir_options),
                      row.submitted, status))
    return found


def get_job(job_id: str, share_dir: str | None = None,
            share_dir_options: dict[str, Any] | None = None) -> RxRemoteJob:
    """The job ``job_id`` of a share dir (default share dir if None).

    Raises
    ------
    ValueError
        ``job_id`` is not a valid job id (checked before the disk is touched).
    JobNotFoundError
        No such job in the share dir.
    NewerFormatError
        The job is of a newer format: the message names the rxjobs it needs.
    """
    validate_job_id(job_id)
    store = open_store(share_dir or default_share_dir(), share_dir_options)
    row = listing.find_job(store, job_id)
    if row.record is None:
        jobs.refuse_newer_format(store, job_id)
    return RxRemoteJob._listed(row.context, job_id, store.url, row.share_dir_options)


def rx_get_job_status(job_info: RxRemoteJob) -> RxRemoteJobStatus:
    """The job's state, derived from its artifacts and one engine probe."""
    job = _job(job_info)
    return jobs.job_status(job.store, job.job_id).status


def rx_get_job_output(job_info: RxRemoteJob) -> str:
    """The console output of the job's finished tasks so far; never deletes anything."""
    job = _job(job_info)
    return jobs.read_output(job.store, job.job_id)


def rx_get_job_results(
    job_info: RxRemoteJob,
    console_output: bool | None = None,
    auto_cleanup: bool | None = None,
) -> list[Any]:
    """The results of a finished job, in run order.

    Parameters
    ----------
    job_info
        The job.
    console_output
        Also print the job's console output; default the job's setting.
    auto_cleanup
        True (default): remove the job's artifacts after the complete read.
        False: keep them and mark the job retrieved, so that cleanup removes
        it later without force.

    Raises
    ------
    JobNotFinishedError
        The job is still queued or running (or its state cannot be determined).
    JobFailedError, JobCanceledError, JobNotFoundError, IncompleteResultsError
        As their names say; nothing is deleted.
    """
    job = _job(job_info)
    results = jobs.collect_results(job.store, job.job_id, console_output, auto_cleanup,
                                   show=_write_output)
    _warn_failed_runs(job.job_id, results.failed, len(results.values))
    return results.values


def rx_cancel_job(job_info: RxRemoteJob, console_output: bool | None = None) -> bool:
    """Stop a queued or running job; False if it had already ended.

    The payload and results are deleted; ``job.json``, ``status.json`` and
    the console output stay, so status and output still answer, and cleanup
    removes the job later without force.
    """
    job = _job(job_info)
    canceled = jobs.cancel_job(job.store, job.job_id)
    if console_output:
        _print_output(job.store, job.job_id)
    return canceled


def rx_wait_for_job(job_info: RxRemoteJob, timeout: float | None = None,
                    progress: bool = True) -> RxRemoteJobStatus:
    """Block until the job ends (or ``timeout`` seconds pass); return its state.

    In a notebook, and with ``progress``, one display shows the job's state and
    tasks done, updated in place while it waits (docs/notebooks.md).

    A job of a newer format never ends as far as this rxjobs can tell:
    NewerFormatError at once, naming the rxjobs it needs.
    """
    job = _job(job_info)
    store = job.store
    jobs.refuse_newer_format(store, job.job_id)

    with _progress_watch(store, job.job_id, progress) as watch:

        def check() -> RxRemoteJobStatus | None:
            status = jobs.job_status(store, job.job_id).status
            if watch is not None:
                watch(status)
            return status if status.is_terminal() or status is RxRemoteJobStatus.MISSING else None

        with jobs.job_sleep(store, job.job_id) as sleep:
            result = poll(check, timeout=timeout, sleep=sleep)
    return result if result is not None else jobs.job_status(job.store, job.job_id).status


def rx_cleanup_jobs(
    job_info_list: RxRemoteJob | Iterable[RxRemoteJob] | dict[Any, RxRemoteJob],
    force: bool = False,
    verbose: bool = True,
) -> CleanupReport:
    """Remove the artifacts of jobs, following the cleanup rules (docs/design.md#cleanup-rules).

    Finished jobs whose results were never retrieved, and running jobs, are
    kept (with a warning) unless ``force=True``.  Each job is handled on its
    own: one job's problem never stops the others.

    Parameters
    ----------
    job_info_list
        One job, a list of jobs, or what ``rx_get_jobs`` returns.
    force
        Remove whatever the state (running jobs are canceled first).
    verbose
        Print one line per job directory removed or kept.

    Raises
    ------
    TypeError
        An element is not a job; raised before anything is removed.
    """
    if isinstance(job_info_list, RxRemoteJob):
        items: list[Any] = [job_info_list]
    elif isinstance(job_info_list, dict):
        items = list(job_info_list.values())
    elif isinstance(job_info_list, (str, bytes)) or not isinstance(job_info_list, Iterable):
        raise TypeError(
            f"rx_cleanup_jobs takes a job, a list of jobs or the result of rx_get_jobs, "
            f"not {type(job_info_list).__name__}"
        )
    else:
        items = list(job_info_list)
    for i, item in enumerate(items):
        if rx_get_job_info(item) is None:
            raise TypeError(
                f"element {i} of the job list is {item!r} ({type(item).__name__}), not an "
                "RxRemoteJob; nothing was removed"
            )
    return cleanup_jobs(_targets(map(_job, items)), force=force, verbose=verbose)


def _targets(found: Iterable[RxRemoteJob]) -> list[tuple[Store, str]]:
    """``(store, job_id)`` of each job, with one store for the jobs of one share dir.

    A store keeps its share dir open once checked (a descriptor, the marker
    read): opened anew for each job, a cleanup of 2,000 jobs opened and
    checked the share dir 2,000 times, six system calls a job
    (docs/benchmarks.md).
    """
    opened: list[tuple[str, Any, Store]] = []
    targets = []
    for job in found:
        store = next((s for share, options, s in opened
                      if share == job.share_dir and options == job.share_dir_options), None)
        if store is None:
            store = job.store
            opened.append((job.share_dir, job.share_dir_options, store))
        targets.append((store, job.job_id))
    return targets


# -- persistent Spark --------------------------------------------------------------------


def rx_spark_connect(
    master: str = "yarn",
    wait: bool = True,
    share_dir: str | None = None,
    console_output: bool = False,
    auto_cleanup: bool = True,
    num_executors: int | None = None,
    executor_cores: int | None = None,
    executor_mem: str | None = None,
    driver_mem: str | None = None,
    extra_spark_config: dict[str, Any] | None = None,
    app_name: str | None = None,
    share_dir_options: dict[str, Any] | None = None,
    expires_after: Any = None,
    idle_timeout: int = 3600,
    reset: bool = False,
) -> RxComputeContext:
    """Start a persistent Spark application on this machine (or reuse it); return its context.

    The arguments are those of :class:`~rxjobs.RxSpark`.  Every job run with
    the returned context (``persistent_run=True``), or with any context of the
    same share dir, master and Spark settings and ``persistent_run=True``,
    runs in this one application, without a JVM start of its own.

    Parameters
    ----------
    idle_timeout
        Seconds with no job running after which the application stops
        (0 or less: never); a later job starts a new one.
    reset
        Stop the running application of these settings first (its running
        jobs end failed) and start a fresh one.

    Returns
    -------
    RxSpark
        The context, with ``persistent_run=True``; Spark is up when it returns.
    """
    from .contexts import RxSpark

    cc = RxSpark(master=master, wait=wait, share_dir=share_dir, console_output=console_output,
                 auto_cleanup=auto_cleanup, num_executors=num_executors,
                 executor_cores=executor_cores, executor_mem=executor_mem, driver_mem=driver_mem,
                 extra_spark_config=extra_spark_config, app_name=app_name,
                 share_dir_options=share_dir_options, expires_after=expires_after,
                 persistent_run=True, idle_timeout=idle_timeout)
    spark: Any = get_engine("spark")  # the Spark engine offers connect/disconnect beyond the protocol
    return spark.connect(cc, reset=reset)


def rx_spark_disconnect(compute_context: RxComputeContext | None = None) -> bool:
    """Stop the persistent Spark application of an ``RxSpark`` context.

    Jobs still running in it end failed, with the reason.  If the context was
    the current one, the current context becomes ``RxLocalSeq()``, as in
    RevoScaleR.

    Parameters
    ----------
    compute_context
        The context whose application to stop (its share dir, master and
        Spark settings name it); default the current context.

    Returns
    -------
    bool
        True once the application and its processes are gone; False when
        none was running.
    """
    from .contexts import RxSpark

    cc = _context(compute_context)
    if not isinstance(cc, RxSpark):
        raise TypeError(f"rx_spark_disconnect takes an RxSpark compute context, not {cc.kind}")
    spark: Any = get_engine("spark")
    stopped = spark.disconnect(cc)
    if _current_context == cc:
        rx_set_compute_context(RxLocalSeq())
    return stopped
