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
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import psutil

from ..status import Probe, Record
from .base import Handle, SubmittedJob
from .drivers import (
    detach,
    exit_sleeper,
    kill_now,
    probe_driver,
    publish_driver_log,
    send_signal,
    share_dir_options_from_env,
    start_driver,
    stop_driver,
    wait_gone,
)

_CANCEL_GRACE_S = 15.0  # the driver's own orderly stop takes a few seconds (bounded below)
_STOP_WAIT_S = 8.0  # after stopping Spark, how long the driver waits for its processes to exit
_DEFAULT_PARALLELISM = 2
_CHECK_INTERVAL_S = 0.2  # how often a running job looks for fail-fast errors and stop requests

_LOCAL_MASTER = re.compile(r"local(?:\[\s*(\*|\d+)\s*(?:,\s*\d+\s*)?\])?\Z")
_LOCAL_CLUSTER_MASTER = re.compile(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*\d+\s*\]\Z")


def is_local_master(master: str) -> bool:
    """``local``, ``local[N]``, ``local[*]``, ``local[N,F]`` or ``local-cluster[...]``."""
    return bool(_LOCAL_MASTER.match(master) or _LOCAL_CLUSTER_MASTER.match(master))


def parallelism(context: Any) -> int:
    """How many Spark tasks run at once, from the settings alone (no cluster is asked).

    ``spark.default.parallelism`` if configured; the N of ``local[N]``;
    ``spark.cores.max``; else executors x cores per executor; else 2.
    """
    extra = dict(getattr(context, "extra_spark_config", None) or ())
    master = str(getattr(context, "master", "") or "")
    if _positive_int(extra.get("spark.default.parallelism")):
        return _positive_int(extra["spark.default.parallelism"])
    m = _LOCAL_MASTER.match(master)
    if m:
        n = m.group(1)
        if n is None:
            return 1
        return (os.cpu_count() or 1) if n == "*" else max(1, int(n))
    m = _LOCAL_CLUSTER_MASTER.match(master)
    if m:
        return max(1, int(m.group(1)) * int(m.group(2)))
    if _positive_int(extra.get("spark.cores.max")):
        return _positive_int(extra["spark.cores.max"])
    executors = getattr(context, "num_executors", None) or _positive_int(
        extra.get("spark.executor.instances"))
    cores = getattr(context, "executor_cores", None) or _positive_int(extra.get("spark.executor.cores"))
    if executors or cores:
        return max(1, int(executors or _DEFAULT_PARALLELISM) * int(cores or 1))
    return _DEFAULT_PARALLELISM


def _positive_int(value: Any) -> int:
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        return 0
    return n if n > 0 else 0


def spark_conf(context: Any, job_id: str, environ: Mapping[str, str] | None = None,
               python: str | None = None) -> dict[str, str]:
    """The Spark configuration of a job's application, from its compute context.

    The named settings of ``RxSpark`` win over the same keys in
    ``extra_spark_config``.  Defaults that the user did not set: the
    application name is the job id, the web UI is off, and executors run the
    driver's Python (``sys.executable``, the submitter's) with the driver's
    ``PYTHONPATH``, so that the functions and modules the caller could
    import can be imported on executors too, and the driver JVM skips the
    C2 JIT (``-XX:TieredStopAtLevel=1``).
    """
    environ = os.environ if environ is None else environ
    conf = {str(k): str(v) for k, v in (getattr(context, "extra_spark_config", None) or ())}
    named = {
        "spark.master": context.master,
        "spark.app.name": context.app_name,
        "spark.executor.instances": context.num_executors,
        "spark.executor.cores": context.executor_cores,
        "spark.executor.memory": context.executor_mem,
        "spark.driver.memory": context.driver_mem,
    }
    conf.update({k: str(v) for k, v in named.items() if v is not None})
    conf.setdefault("spark.app.name", job_id)
    # Names the job on the JVM's command line, so `ps` shows which job it serves.
    conf["spark.rxjobs.jobId"] = job_id
    conf.setdefault("spark.ui.enabled", "false")
    conf.setdefault("spark.ui.showConsoleProgress", "false")  # no progress bars in driver.log
    # The driver JVM only schedules tasks and lives for one job: the C2 JIT's
    # warm-up costs more than it saves (starts about 1.5 s faster without it).
    conf.setdefault("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1")
    if "spark.pyspark.python" not in conf and not environ.get("PYSPARK_PYTHON"):
        conf["spark.pyspark.python"] = python or sys.executable
    if not is_local_master(context.master) and environ.get("PYTHONPATH"):
        # Local executors inherit the driver's environment; remote ones get it here.
        conf.setdefault("spark.executorEnv.PYTHONPATH", environ["PYTHONPATH"])
    return conf


class SparkEngine:
    """Start, probe and stop detached Spark drivers, or jobs on a persistent Spark server.

    A context with ``persistent_run=True`` sends its jobs to the persistent
    server of its settings (:mod:`rxjobs.engines.spark_server`); the handle
    then names the server (``"server"`` key) as well as the job.
    """

    def parallelism(self, context: Any) -> int:
        return parallelism(context)

    def submit(self, job: SubmittedJob) -> Handle:
        from ..store import open_store

        if getattr(job.context, "persistent_run", False):
            from . import spark_server

            return spark_server.submit(job)
        store = open_store(job.share_dir, job.share_dir_options)
        return start_driver("rxjobs.engines.spark", store, job.job_id, [], engine="Spark",
                            options=job.share_dir_options)

    def probe(self, handle: Handle) -> Probe:
        if "server" in handle:
            from . import spark_server

            return spark_server.probe(handle)
        return probe_driver(handle)

    def sleeper(self, handle: Handle) -> Callable[[float], None] | None:
        """A sleep that returns when the job ends: its server says so, or its driver exits."""
        if "server" in handle:
            from . import spark_server

            return spark_server.sleeper(handle)
        return exit_sleeper(handle)

    def cancel(self, handle: Handle) -> bool:
        """SIGTERM the driver (it cancels the job group and stops Spark), then kill what is left;
        for a job on a persistent server, ask the server to cancel the job's group."""
        if "server" in handle:
            from . import spark_server

            return spark_server.cancel(handle)
        return stop_driver(handle, _terminate_driver, grace=_CANCEL_GRACE_S)

    def connect(self, context: Any, reset: bool = False) -> Any:
        """Start (or reuse) the persistent Spark server of ``context``; see ``rx_spark_connect``."""
        from . import spark_server

        return spark_server.connect(context, reset=reset)

    def disconnect(self, context: Any) -> bool:
        """Stop the persistent Spark server of ``context``; see ``rx_spark_disconnect``."""
        from . import spark_server

        return spark_server.disconnect(context)


ENGINE = SparkEngine()


# -- the executor side -------------------------------------------------------------------


def _terminate_driver(driver: psutil.Process, tree: list[psutil.Process]) -> None:
    send_signal(driver, signal.SIGTERM)  # the driver cancels the job group and stops Spark


def _run_spark_task(share_dir: str, job_id: str, first_errors: Any,
                    options: dict[str, Any] | None, task: int) -> None:
    """One Spark task = one rxjobs task, run in an executor's Python worker.

    PySpark's Python workers run one task at a time each, so the task's
    console output is captured at the file-descriptor level.  The share dir's
    storage options come in the task's closure, never through the share dir.
    """
    from ..runner import run_task

    summary = run_task(share_dir, job_id, task, capture="fd", options=options)
    if first_errors is not None and summary.first_error:
        first_errors.add([summary.first_error])


def _run_spark_partition(share_dir: str, job_id: str, first_errors: Any,
                         options: dict[str, Any] | None, tasks: Any) -> None:
    """Several rxjobs tasks in one Spark task, one after another (the persistent server's way).

    A Spark task costs tens of milliseconds whatever it does, so a warm
    application runs as few of them as there are slots.  After a run fails
    with ``first_errors`` (fail fast), the rest of the partition is left:
    the accumulator reaches the driver when the Spark task ends, and the
    driver then cancels the others.
    """
    from ..runner import run_task

    for task in tasks:
        summary = run_task(share_dir, job_id, task, capture="fd", options=options)
        if first_errors is not None and summary.first_error:
            first_errors.add([summary.first_error])
            return


def _spread(tasks: list[int], partitions: int) -> list[int]:
    """Order ``tasks`` so that Spark's contiguous slices deal them out round-robin:
    neighbouring tasks (often of similar cost) land on different slots."""
    return sorted(tasks, key=lambda k: (k % partitions, k))


def _list_param():
    from pyspark.accumulators import AccumulatorParam

    class ListParam(AccumulatorParam):
        def zero(self, value):
            return []

        def addInPlace(self, value1, value2):  # noqa: N802 - PySpark's name
            value1.extend(value2)
            return value1

    return ListParam()


# -- running a job's tasks: shared by the per-job driver and the persistent server --------


class _Terminated(BaseException):
    """SIGTERM arrived while Spark was starting."""


@dataclass
class Outcome:
    """How the job ended, as the driver saw it."""

    state: str  # "finished", "failed", "canceled" or "terminated"
    reason: str = ""
    log: str = ""  # what the driver log should say about it (a Spark error's traceback)


class _DriverState:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.interruptible = True  # raise on SIGTERM (only while Spark is starting)

    def on_sigterm(self, signum: int, frame: Any) -> None:
        self.stop.set()
        if self.interruptible:
            self.interruptible = False
            raise _Terminated()


def _become_subreaper() -> None:
    """Orphaned descendants (a dead daemon's workers) are re-parented to the driver, not init."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_CHILD_SUBREAPER = 36
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
        except (OSError, AttributeError):
            pass


def prepare_environment(context: Any, conf: Mapping[str, str]) -> None:
    """The environment a driver's SparkContext needs (set before it starts)."""
    if is_local_master(context.master):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # nothing listens beyond loopback
    # PySpark takes the workers' Python from this variable (shipped to every executor).
    os.environ.setdefault("PYSPARK_PYTHON", conf.get("spark.pyspark.python", sys.executable))


def _start_spark(conf: dict[str, str]):
    from pyspark import SparkConf, SparkContext

    return SparkContext(conf=SparkConf().setAll(sorted(conf.items())))


_PY_ERROR_LINE = re.compile(
    r"(?!org\.|java\.|scala\.|py4j\.)[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(:.*)?\Z")


def _spark_error(exc: BaseException) -> str:
    """A one-line reason for a failed Spark job (the full error is in the driver log).

    When a task's Python raised, that is the exception at the end of the
    Python traceback Spark carries in its message.
    """
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in text:
        after = lines[next(i for i, ln in enumerate(lines) if "Traceback (most recent" in ln):]
        raised = [ln for ln in after if _PY_ERROR_LINE.match(ln)]
        if raised:
            return f"a task could not be run: {raised[0]}"[:500]
    return (lines[0] if lines else type(exc).__name__)[:500]


def run_tasks(sc, store, job_id: str, n_tasks: int, stop_on_failure: bool,
              stop: threading.Event, partitions: int | None = None) -> Outcome:
    """Run the job's tasks that have no result yet as one Spark job of job group ``job_id``.

    Returns as soon as the Spark job ends (no polling delay), the first run
    fails with ``stop_on_failure``, the ``canceled`` marker appears, or
    ``stop`` is set ("terminated"); in the last three cases the job group is
    cancelled first.  ``partitions``: run the rxjobs tasks in at most this
    many Spark tasks, several one after another in each (default: one Spark
    task per rxjobs task).
    """
    paths = store.paths(job_id)
    pending = [k for k in range(n_tasks) if not store.exists(paths.result(k))]
    if not pending:
        return Outcome("finished")
    first_errors = sc.accumulator([], _list_param()) if stop_on_failure else None
    task = partial(_run_spark_task, store.url, job_id, first_errors, store.options or None)
    errors: list[BaseException] = []
    done = threading.Event()

    if partitions is not None and partitions < len(pending):
        grouped = partial(_run_spark_partition, store.url, job_id, first_errors, store.options or None)

        def start() -> None:
            sc.parallelize(_spread(pending, partitions), partitions).foreachPartition(grouped)
    else:
        def start() -> None:
            sc.parallelize(pending, len(pending)).foreach(task)

    def run() -> None:
        sc.setJobGroup(job_id, f"rxjobs job {job_id}", interruptOnCancel=True)
        try:
            start()
        except BaseException as exc:  # reported by the calling thread
            errors.append(exc)
        finally:
            done.set()

    runner = threading.Thread(target=run, name=f"rxjobs-{job_id}", daemon=True)
    runner.start()
    next_marker_check = time.monotonic() + 1.0
    outcome: Outcome | None = None
    while not done.wait(_CHECK_INTERVAL_S):
        if stop.is_set():
            outcome = Outcome("terminated")
        elif stop_on_failure and first_errors.value:
            outcome = Outcome("failed", first_errors.value[0])
        elif time.monotonic() >= next_marker_check:
            next_marker_check = time.monotonic() + 1.0
            if store.exists(paths.canceled):
                outcome = Outcome("canceled")
        if outcome is not None:
            sc.cancelJobGroup(job_id)
            runner.join(_STOP_WAIT_S)
            return outcome
    runner.join()
    if store.exists(paths.canceled):
        return Outcome("canceled")
    if stop_on_failure and first_errors.value:
        return Outcome("failed", first_errors.value[0])
    if errors and stop.is_set():
        return Outcome("terminated")
    if errors:
        log = "".join(traceback.format_exception(errors[0]))
        return Outcome("failed", f"the Spark job failed: {_spark_error(errors[0])}", log)
    return Outcome("finished")


def record_outcome(store, job_id: str, outcome: Outcome, terminated_reason: str,
                   log: str | None = None) -> int:
    """Write the job's final ``status.json`` (nothing for a canceled job); the exit code.

    ``log``, if given, is written to the job's ``driver.log`` first (the
    persistent server keeps no per-job log file of its own).
    """
    from .. import records

    if store.exists(store.paths(job_id).canceled) or outcome.state == "canceled":
        return 0
    if log:
        try:
            store.write_atomic(store.paths(job_id).driver_log, log.encode())
        except OSError:
            pass  # the log is a convenience; the job's state does not depend on it
    if outcome.state == "terminated":
        records.write_status(store, job_id, Record.FAILED, terminated_reason)
        return 1
    if outcome.state == "failed":
        records.write_status(store, job_id, Record.FAILED, outcome.reason)
        return 1
    records.write_status(store, job_id, Record.FINISHED)
    return 0


def _stop_spark(sc) -> None:
    """Stop Spark and wait until no process below the driver is left (killing stragglers)."""
    if sc is not None:
        try:
            sc.stop()
        except Exception:
            traceback.print_exc()
    try:
        from pyspark import SparkContext

        proc = getattr(SparkContext._gateway, "proc", None)
    except Exception:
        proc = None
    if proc is not None and proc.stdin is not None:
        try:
            proc.stdin.close()  # the gateway JVM exits when its stdin closes
        except OSError:
            pass
    me = psutil.Process()
    below = me.children(recursive=True)
    if sc is None:  # Spark was interrupted while starting: nothing to stop in order
        for child in below:
            try:
                child.terminate()
            except psutil.NoSuchProcess:
                pass
    alive = wait_gone(below, timeout=_STOP_WAIT_S)
    if alive:
        print(f"rxjobs: {len(alive)} Spark processes did not exit; killing them", file=sys.stderr)
        kill_now(alive, timeout=_STOP_WAIT_S)
    # Anything orphaned meanwhile was re-parented to us (we are a subreaper).
    kill_now(me.children(recursive=True), timeout=_STOP_WAIT_S)


# -- the per-job driver process -----------------------------------------------------------


def drive(share_dir: str, job_id: str, options: dict[str, Any] | None = None,
          local_log: str | None = None) -> int:
    """Run every task of a job as one Spark job, stop Spark, and record how it ended."""
    from .. import records
    from ..store import open_store

    store = open_store(share_dir, options)
    paths = store.paths(job_id)
    if store.exists(paths.canceled):
        return 0
    state = _DriverState()
    signal.signal(signal.SIGTERM, state.on_sigterm)
    sc = None
    try:
        # The driver never unpickles the user's function: executors do.
        record = records.read_job_record(store, job_id)
        stop_on_failure = not bool(record.options.get("continue_on_failure", True))
        context = record.compute_context()
        conf = spark_conf(context, job_id)
        prepare_environment(context, conf)
        print(f"rxjobs: starting Spark for job {job_id} on {context.master}", file=sys.stderr)
        sc = _start_spark(conf)
        state.interruptible = False
        if state.stop.is_set():
            raise _Terminated()
        app_id = sc.applicationId
        print(f"rxjobs: job {job_id} runs as Spark application {app_id}", file=sys.stderr)
        records.write_status(store, job_id, Record.RUNNING,
                          details={"spark_application_id": app_id, "spark_master": sc.master})
        outcome = run_tasks(sc, store, job_id, record.n_tasks, stop_on_failure, state.stop)
        if outcome.log:
            print(outcome.log, file=sys.stderr, end="")
    except _Terminated:
        outcome = Outcome("terminated")
    except Exception as exc:
        traceback.print_exc()
        outcome = Outcome("failed", f"Spark could not run the job: {type(exc).__name__}: "
                                    f"{_spark_error(exc)} (see the driver log)")
    finally:
        state.interruptible = False
        _stop_spark(sc)
    # Recorded only once Spark is gone: a final status means no process of the job is left.
    publish_driver_log(store, job_id, local_log)
    return record_outcome(store, job_id, outcome,
                          "the Spark driver was stopped (SIGTERM) before the job ended")


def main(argv: Sequence[str] | None = None, detached: bool = False) -> int:
    parser = argparse.ArgumentParser(prog="python -m rxjobs.engines.spark",
                                     description="rxjobs Spark job driver (started by rx_exec)")
    parser.add_argument("job_id")
    parser.add_argument("--share-dir", required=True)
    parser.add_argument("--local-log", help="a local copy of the driver log, published at the end")
    args = parser.parse_args(argv)
    return run_spark_process(
        lambda: drive(args.share_dir, args.job_id, share_dir_options_from_env(), args.local_log),
        detached)


def run_spark_process(body: Callable[[], int], detached: bool) -> int:
    """Run ``body`` as a detached Spark process (a job driver, the persistent server) and exit.

    Detaches unless already detached (stderr is already the process's log),
    ignores SIGINT, becomes a subreaper so that nothing Spark starts escapes,
    and exits with ``body``'s code through ``os._exit``: py4j threads must
    not keep a process alive after Spark has stopped.
    """
    if not detached:
        detach(log_fd=2)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _become_subreaper()
    code = 1
    try:
        code = body()
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
