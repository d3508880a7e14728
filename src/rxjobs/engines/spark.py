"""The Spark engine: a detached driver process running the job as one Spark application.

``submit`` starts ``python -m rxjobs.engines.spark <job_id> ...`` detached,
exactly as the local engine starts its driver (double fork, own session,
stdio to ``driver.log``; handle = host + pid + process start time).  The
driver creates a SparkContext against the context's ``master`` (the JVM is
its child), sets the Spark job group to the rxjobs job id and runs each rxjobs
task as one Spark task: the executor's Python worker calls
:func:`rxjobs.runner.run_task`, which writes the task's result and console
output straight into the share dir.  The driver then stops Spark, waits until
every process below it (the JVM, PySpark's Python daemon and workers) has
exited, records the final status and exits.  The Spark application id is kept
in ``status.json`` (``details.spark_application_id``).

Waiting and non-waiting jobs both run in such a driver: the caller never
hosts a JVM, and a process that already has a SparkContext of its own (there
can be only one per process) can still run rxjobs jobs with other settings.

Cancel sends SIGTERM to the driver, which cancels the job group (interrupting
running tasks), stops Spark and exits; whatever is left after a grace period
is killed.  A driver killed outright takes Spark with it: the gateway JVM
exits when its stdin pipe from the driver closes, and its shutdown stops the
Python daemon, whose workers die with it.

A context with ``persistent_run=True`` runs its jobs on a persistent Spark
server instead (:mod:`rxjobs.engines.spark_server`, reached through
:mod:`rxjobs.engines.spark_client`).  :data:`ENGINE` holds both ways as
backends (:class:`PerJobDriverBackend`,
:class:`~rxjobs.engines.spark_client.PersistentServerBackend`) and picks one
per job in :meth:`SparkEngine.backend`.  What a per-job driver shares with
the server (the Spark configuration, starting and stopping Spark, running
the tasks, recording the outcome) is in :mod:`rxjobs.engines.spark_session`;
the server never imports this module.
"""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import psutil

from ..contexts import RxComputeContext
from ..status import Probe, Record
from .base import Handle, SubmittedJob
from .drivers import (
    driver_arguments,
    exit_sleeper,
    open_driven_job,
    probe_driver,
    publish_driver_log,
    send_signal,
    share_dir_options_from_env,
    start_driver,
    stop_driver,
)
from .spark_client import PersistentServerBackend, is_server_handle
from .spark_session import (
    DriverState,
    Outcome,
    Terminated,
    parallelism,
    prepare_environment,
    record_outcome,
    run_spark_process,
    run_tasks,
    spark_conf,
    spark_error,
    start_spark,
    stop_spark,
)

_CANCEL_GRACE_S = 15.0  # the driver's own orderly stop takes a few seconds (bounded below)


class SparkBackend(Protocol):
    """Where a Spark job runs: what :class:`SparkEngine` asks of each way of running one."""

    def submit(self, job: SubmittedJob) -> Handle:
        """Start the job; return its handle (stored in ``engine.json``)."""
        ...

    def probe(self, handle: Handle) -> Probe:
        """Whether the job's driver (or server) still holds the job."""
        ...

    def sleeper(self, handle: Handle) -> Callable[[float], None] | None:
        """A sleep that returns early when the job may have ended (None: a plain sleep)."""
        ...

    def cancel(self, handle: Handle) -> bool:
        """Stop the job; True if something was stopped."""
        ...


class PerJobDriverBackend:
    """Each job in a detached driver process of its own, holding its own SparkContext.

    The handle is the driver's (host, pid, process start time): see
    :func:`rxjobs.engines.drivers.start_driver`.
    """

    def submit(self, job: SubmittedJob) -> Handle:
        """Start ``python -m rxjobs.engines.spark <job_id> ...`` detached; its handle."""
        from ..store import open_store

        store = open_store(job.share_dir, job.share_dir_options)
        return start_driver("rxjobs.engines.spark", store, job.job_id, [], engine="Spark",
                            options=job.share_dir_options)

    def probe(self, handle: Handle) -> Probe:
        """ALIVE while the driver runs, GONE once it exited, UNREACHABLE from another host."""
        return probe_driver(handle)

    def sleeper(self, handle: Handle) -> Callable[[float], None] | None:
        """A sleep that returns when the driver exits."""
        return exit_sleeper(handle)

    def cancel(self, handle: Handle) -> bool:
        """SIGTERM the driver (it cancels the job group and stops Spark), then kill what is left."""
        return stop_driver(handle, _terminate_driver, grace=_CANCEL_GRACE_S)


class SparkEngine:
    """Run jobs in per-job Spark drivers, or on a persistent Spark server.

    The backend is chosen in one place, :meth:`backend`: a context with
    ``persistent_run=True`` sends its jobs to the persistent server of its
    settings (:mod:`rxjobs.engines.spark_server`), whose handles name the
    server as well as the job; every other job gets a driver of its own.

    Parameters
    ----------
    per_job : SparkBackend
        Runs the jobs of ``RxSpark(persistent_run=False)``.
    persistent : PersistentServerBackend
        Runs the jobs of ``RxSpark(persistent_run=True)``; also starts and
        stops servers for ``rx_spark_connect`` and ``rx_spark_disconnect``.
    """

    def __init__(self, per_job: SparkBackend, persistent: PersistentServerBackend) -> None:
        self.per_job = per_job
        self.persistent = persistent

    def backend(self, *, context: Any = None, handle: Handle | None = None) -> SparkBackend:
        """The backend of a job about to be submitted (its ``context``) or submitted (its ``handle``)."""
        if handle is not None:
            persistent = is_server_handle(handle)
        else:
            persistent = bool(getattr(context, "persistent_run", False))
        return self.persistent if persistent else self.per_job

    def parallelism(self, context: Any) -> int:
        """How many Spark tasks run at once for ``context`` (see :func:`~.spark_session.parallelism`)."""
        return parallelism(context)

    def submit(self, job: SubmittedJob) -> Handle:
        """Start the job on the backend of its context; its handle (for ``engine.json``)."""
        return self.backend(context=job.context).submit(job)

    def probe(self, handle: Handle) -> Probe:
        """Whether the job's driver, or its server, still holds the job."""
        return self.backend(handle=handle).probe(handle)

    def sleeper(self, handle: Handle) -> Callable[[float], None] | None:
        """A sleep that returns when the job ends: its server says so, or its driver exits."""
        return self.backend(handle=handle).sleeper(handle)

    def cancel(self, handle: Handle) -> bool:
        """Stop the job: its driver (SIGTERM, then kill what is left) or its run on the server."""
        return self.backend(handle=handle).cancel(handle)

    def connect(self, context: Any, reset: bool = False) -> Any:
        """Start (or reuse) the persistent Spark server of ``context``; see ``rx_spark_connect``."""
        return self.persistent.connect(context, reset=reset)

    def disconnect(self, context: Any) -> bool:
        """Stop the persistent Spark server of ``context``; see ``rx_spark_disconnect``."""
        return self.persistent.disconnect(context)


ENGINE = SparkEngine(per_job=PerJobDriverBackend(), persistent=PersistentServerBackend())


# -- the per-job driver process -----------------------------------------------------------


def _terminate_driver(driver: psutil.Process, tree: list[psutil.Process]) -> None:
    send_signal(driver, signal.SIGTERM)  # the driver cancels the job group and stops Spark


def drive(share_dir: str, job_id: str, options: dict[str, Any] | None = None,
          local_log: str | None = None) -> int:
    """Run every task of a job as one Spark job, stop Spark, and record how it ended."""
    from .. import records

    store = open_driven_job(share_dir, job_id, options, local_log)
    if store is None:
        return 0
    state = DriverState()
    signal.signal(signal.SIGTERM, state.on_sigterm)
    sc = None
    try:
        # The driver never unpickles the user's function: executors do.
        record = records.read_job_record(store, job_id)
        stop_on_failure = not bool(record.options.get("continue_on_failure", True))
        context: Any = RxComputeContext.from_dict(record.context)
        conf = spark_conf(context, job_id)
        prepare_environment(context, conf)
        print(f"rxjobs: starting Spark for job {job_id} on {context.master}", file=sys.stderr)
        sc = start_spark(conf)
        state.interruptible = False
        if state.stop.is_set():
            raise Terminated()
        app_id = sc.applicationId
        print(f"rxjobs: job {job_id} runs as Spark application {app_id}", file=sys.stderr)
        records.write_status(store, job_id, Record.RUNNING,
                             details={"spark_application_id": app_id, "spark_master": sc.master})
        outcome = run_tasks(sc, store, job_id, record.n_tasks, stop_on_failure, state.stop)
        if outcome.log:
            print(outcome.log, file=sys.stderr, end="")
    except Terminated:
        outcome = Outcome("terminated")
    except Exception as exc:
        traceback.print_exc()
        outcome = Outcome("failed", f"Spark could not run the job: {type(exc).__name__}: "
                                    f"{spark_error(exc)} (see the driver log)")
    finally:
        state.interruptible = False
        stop_spark(sc)
    # Recorded only once Spark is gone: a final status means no process of the job is left.
    publish_driver_log(store, job_id, local_log)
    return record_outcome(store, job_id, outcome,
                          "the Spark driver was stopped (SIGTERM) before the job ended")


def main(argv: Sequence[str] | None = None, detached: bool = False) -> int:
    args = driver_arguments("python -m rxjobs.engines.spark", "rxjobs Spark job driver (started by rx_exec)",
                            argv)
    return run_spark_process(
        lambda: drive(args.share_dir, args.job_id, share_dir_options_from_env(), args.local_log),
        detached)


if __name__ == "__main__":
    sys.exit(main())
