"""The local engine: a detached driver process running a process pool.

``submit`` starts ``python -m rxjobs.engines.local <job_id> ...``, which
detaches (double fork, new session, stdio to ``driver.log`` in the job dir)
so that it outlives the caller and is never left as a zombie.  The driver
runs the job's tasks in a pool of forked worker processes (their command line
is the driver's, so ``ps`` shows the job id), writes ``status.json`` and
exits; workers die with the driver.  The handle is the driver's pid and
process start time, so a reused pid is never mistaken for the job.

A driver forked by the fork server may find its pool already forked
(:func:`prepare_pool`, called by the spare driver before its request came):
each worker then takes on the driver's environment, working directory,
``sys.path``, umask, log and title (:class:`WorkerSetup`) before its first task,
what a worker forked from the driver inherits.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import psutil

from ..status import Probe, Record
from .base import Handle, SubmittedJob
from .drivers import (
    ExitSleeper,
    become_driver,
    can_fork_driver,
    descendants,
    die_with_parent,
    driver_arguments,
    driver_log_path,
    exit_sleeper,
    fork_driver,
    kill_now,
    open_driven_job,
    probe_driver,
    publish_driver_log,
    send_signal,
    share_dir_options_from_env,
    start_driver,
    stop_driver,
)
from .task_failures import TaskOutcome, job_failure

_CANCEL_GRACE_S = 5.0
# The most pool workers a spare driver forks ahead of its request (more are forked on demand).
MAX_PREPARED_WORKERS = 64


class LocalEngine:
    """Start, probe and stop detached local drivers."""

    def parallelism(self, context) -> int:
        return getattr(context, "workers", 1)

    def submit(self, job: SubmittedJob) -> Handle:
        from ..store import open_store

        store = open_store(job.share_dir, job.share_dir_options)
        workers = self.parallelism(job.context)
        args = ["--workers", str(workers)]
        if job.context.waits and can_fork_driver():
            # The caller waits for this job and runs one thread: fork the driver from
            # it, imports done (the function's module too), no interpreter start.
            def run(local_log: str | None) -> int:
                return drive(store.url, job.job_id, workers, job.share_dir_options, local_log)

            return fork_driver(run, "rxjobs.engines.local", store, job.job_id, args)
        from . import forkserver

        if forkserver.enabled():
            # A caller with other threads (a notebook kernel), or one that does not wait:
            # a clean server with the driver's imports done forks the driver, with
            # nothing of the caller's (threads, locks, memory, descriptors).
            try:
                return forkserver.fork_driver_via_server("rxjobs.engines.local", store, job.job_id,
                                                         args, job.share_dir_options, job.modules,
                                                         pool=workers)
            except forkserver.ForkServerError:
                pass  # started as a fresh interpreter below
        return start_driver("rxjobs.engines.local", store, job.job_id, args, engine="local",
                            options=job.share_dir_options)

    def probe(self, handle: Handle) -> Probe:
        return probe_driver(handle)

    def sleeper(self, handle: Handle) -> ExitSleeper | None:
        return exit_sleeper(handle)

    def cancel(self, handle: Handle) -> bool:
        return stop_driver(handle, _terminate_session, grace=_CANCEL_GRACE_S)


def _terminate_session(driver: psutil.Process, tree: list[psutil.Process]) -> None:
    try:
        if os.getpgid(driver.pid) == driver.pid:  # the driver leads its own process group
            os.killpg(driver.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    for proc in tree:
        send_signal(proc, signal.SIGTERM)  # also what left the process group


ENGINE = LocalEngine()


# -- the driver process ------------------------------------------------------------------


def _die_with_parent() -> None:
    """Pool workers are killed when the driver dies, however it dies."""
    die_with_parent(signal.SIGKILL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _kill_workers() -> None:
    me = psutil.Process()
    kill_now(descendants(me.children()), timeout=_CANCEL_GRACE_S)


def _outcome(task: int, future: Future) -> TaskOutcome:
    """How a finished future's task ended (see :func:`.task_failures.job_failure`)."""
    try:
        summary = future.result()
    except BrokenProcessPool:
        return TaskOutcome(task, worker_died=True)
    except Exception as exc:
        return TaskOutcome(task, not_run=f"task {task} could not be run: {type(exc).__name__}: {exc}")
    return TaskOutcome(task, run_error=summary.first_error, failed_runs=summary.failed)


class PreparedPool:
    """Pool workers forked ahead of a job, by a fork-server spare driver before its request.

    Forking a process that holds scikit-learn costs milliseconds per worker, on
    the job's path if the driver forks its pool; a spare forks it while it
    waits.  The workers are the spare's children, in its session, and die with
    it (``PR_SET_PDEATHSIG``), whether it becomes a driver or exits unused.
    They were forked before the request's environment was applied: each takes
    on the driver's (:class:`WorkerSetup`) before its first task.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = _new_pool(workers, _prepared_worker)
        # The first submit forks every worker of a fork-context pool (Python 3.10 onwards).
        self.pool.submit(int)

    def fits(self, workers: int, tasks: int) -> bool:
        """Whether this pool runs the job's tasks as its own pool would (:func:`pool_fits`)."""
        return pool_fits(self.workers, workers, tasks)

    def close(self) -> None:
        """Let the workers go (a job that needs none, or another number of them)."""
        self.pool.shutdown(wait=False, cancel_futures=True)


def pool_fits(prepared: int, workers: int, tasks: int) -> bool:
    """Whether a pool of ``prepared`` workers runs ``tasks`` tasks as a job of ``workers``
    workers asks: as many at once, never more."""
    return min(workers, tasks) <= prepared <= workers


def prepare_pool(workers: int) -> PreparedPool | None:
    """The pool a spare driver forks ahead of a request for ``workers`` workers (None for none);
    :func:`main` takes it as ``prepared``."""
    if not 1 <= workers <= MAX_PREPARED_WORKERS:
        return None
    return PreparedPool(workers)


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker forked from the driver would have inherited from it, for a worker
    forked before (:class:`PreparedPool`)."""

    env: dict[str, str]
    cwd: str
    sys_path: list[str]
    umask: int
    log: str
    title: str

    @classmethod
    def of_this_process(cls, log: str) -> WorkerSetup:
        from setproctitle import getproctitle

        umask = os.umask(0o077)
        os.umask(umask)
        return cls(dict(os.environ), os.getcwd(), list(sys.path), umask, log, getproctitle())

    def apply(self) -> None:
        from setproctitle import setproctitle

        from .drivers import redirect_stdio

        os.umask(self.umask)
        os.chdir(self.cwd)
        os.environ.clear()
        os.environ.update(self.env)
        sys.path[:] = self.sys_path
        redirect_stdio(os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC))
        setproctitle(self.title)


_applied: list[WorkerSetup] = []  # in a prepared worker: the setup it took on


def run_prepared_task(setup: WorkerSetup, share_dir: str, job_id: str, task: int,
                      options: dict[str, Any] | None) -> Any:
    """In a prepared pool's worker: take on the driver's setup (once), then run the task."""
    from ..runner import run_task

    if not _applied:
        setup.apply()
        _applied.append(setup)
    return run_task(share_dir, job_id, task, options=options)


def _new_pool(workers: int, initializer: Callable[[], None] = _die_with_parent) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=initializer)


def _prepared_worker() -> None:
    """A prepared pool's worker: dies with its spare, and says what it is until a job's
    task gives it the job's title."""
    from setproctitle import setproctitle

    _die_with_parent()
    setproctitle(f"rxjobs prepared pool worker (driver {os.getppid()})")


def _start_tasks(store: Any, job_id: str, pending: list[int], workers: int,
                 options: dict[str, Any] | None,
                 prepared: PreparedPool | None) -> tuple[ProcessPoolExecutor, dict[Future, int]]:
    """The pool the job's pending tasks run in (the prepared one if it fits), and their futures."""
    from ..runner import run_task

    if prepared is not None and prepared.fits(workers, len(pending)):
        setup = WorkerSetup.of_this_process(driver_log_path(store, job_id)[0])
        pool = prepared.pool
        return pool, {pool.submit(run_prepared_task, setup, store.url, job_id, k, options): k
                      for k in pending}
    if prepared is not None:
        prepared.close()
    pool = _new_pool(min(workers, len(pending)))
    return pool, {pool.submit(run_task, store.url, job_id, k, options=options): k for k in pending}


def drive(share_dir: str, job_id: str, workers: int, options: dict | None = None,
          local_log: str | None = None, prepared: PreparedPool | None = None) -> int:
    """Run every task of a job in a process pool and record how it ended.

    ``prepared`` is a pool forked ahead of the job (:func:`prepare_pool`): used if
    it has the right number of workers, let go otherwise.
    """
    from .. import records

    store = open_driven_job(share_dir, job_id, options, local_log)
    if store is None:
        return 0
    paths = store.paths(job_id)
    # The driver never unpickles the user's function: workers do.
    record = records.read_job_record(store, job_id)
    continue_on_failure = bool(record.options.get("continue_on_failure", True))
    pending = [k for k in range(record.n_tasks) if not store.exists(paths.result(k))]
    failure = None
    failed_runs = 0
    if pending:
        pool, futures = _start_tasks(store, job_id, pending, workers, options, prepared)
        not_done = set(futures)
    elif prepared is not None:
        prepared.close()
    # Written once the workers are forked (the first submit forks them all), while they
    # start their tasks: the durable write is off the tasks' path (10-30 ms on a loaded machine).
    records.write_status(store, job_id, Record.RUNNING)
    if pending:
        while not_done and failure is None:
            done, not_done = wait(not_done, timeout=1.0, return_when=FIRST_COMPLETED)
            outcomes = [_outcome(futures[fut], fut) for fut in done]
            if any(outcome.worker_died for outcome in outcomes):
                # A broken pool ends every task still in it at once: take them all in, so
                # that a run error that reached the driver is seen whatever the order.
                rest, not_done = wait(not_done, timeout=_CANCEL_GRACE_S)
                outcomes += [_outcome(futures[fut], fut) for fut in rest]
            failed_runs += sum(outcome.failed_runs for outcome in outcomes)
            failure = job_failure(outcomes, continue_on_failure)
            if store.exists(paths.canceled):
                _kill_workers()
                pool.shutdown(wait=False, cancel_futures=True)
                publish_driver_log(store, job_id, local_log)
                return 0
        if failure is not None:
            _kill_workers()
            pool.shutdown(wait=False, cancel_futures=True)
        else:
            # Every result is written: the idle workers are told to exit, and the end is
            # recorded without waiting for them (joining them took 20–90 ms on a loaded machine);
            # whichever is still exiting when the driver does dies with it (SIGKILL).
            pool.shutdown(wait=False)
    publish_driver_log(store, job_id, local_log)
    if failure is not None:
        records.write_status(store, job_id, Record.FAILED, failure)
        return 1
    records.write_status(store, job_id, Record.FINISHED, failed_runs=failed_runs)
    return 0


def main(argv: list[str] | None = None, detached: bool = False,
         prepared: PreparedPool | None = None) -> int:
    args = driver_arguments("python -m rxjobs.engines.local", "rxjobs local job driver (started by rx_exec)",
                            argv, lambda parser: parser.add_argument("--workers", type=int, default=1))
    become_driver(detached)
    return drive(args.share_dir, args.job_id, max(1, args.workers), share_dir_options_from_env(),
                 args.local_log, prepared)


if __name__ == "__main__":
    sys.exit(main())
