"""What a Spark driver process needs, whether it runs one job or many.

Both the per-job driver (:mod:`rxjobs.engines.spark`) and the persistent
server (:mod:`rxjobs.engines.spark_server`) build on this module, and neither
imports the other: the Spark configuration of a compute context
(:func:`spark_conf`, :func:`parallelism`, :func:`prepare_environment`),
starting and stopping a SparkContext with every process below it
(:func:`start_spark`, :func:`stop_spark`), the SIGTERM that interrupts a
starting Spark (:class:`DriverState`, :class:`Terminated`), running a job's
tasks as one Spark job and recording how it ended (:func:`run_tasks`,
:class:`Outcome`, :func:`record_outcome`, :func:`spark_error`), and the life
of the detached process itself (:func:`run_spark_process`).

The executor side lives here too: the Spark tasks are this module's
functions, pickled by reference, so an executor's Python worker imports this
module (and :mod:`rxjobs.runner`), never the engine or the server.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import psutil

from ..status import Record
from .drivers import become_driver, kill_now, wait_gone

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


# -- the executor side -------------------------------------------------------------------


def _run_spark_task(share_dir: str, job_id: str, first_errors: Any, failed_runs: Any,
                    options: dict[str, Any] | None, task: int) -> None:
    """One Spark task = one rxjobs task, run in an executor's Python worker.

    PySpark's Python workers run one task at a time each, so the task's
    console output is captured at the file-descriptor level.  The share dir's
    storage options come in the task's closure, never through the share dir.
    """
    from ..runner import run_task

    summary = run_task(share_dir, job_id, task, capture="fd", options=options)
    failed_runs.add(summary.failed)
    if first_errors is not None and summary.first_error:
        first_errors.add([summary.first_error])


def _run_spark_partition(share_dir: str, job_id: str, first_errors: Any, failed_runs: Any,
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
        failed_runs.add(summary.failed)
        if first_errors is not None and summary.first_error:
            first_errors.add([summary.first_error])
            return


def _spread(tasks: list[int], partitions: int) -> list[int]:
    """Order ``tasks`` so that Spark's contiguous slices deal them out round-robin:
    neighbouring tasks (often of similar cost) land on different slots."""
    return sorted(tasks, key=lambda k: (k % partitions, k))


def _list_param() -> Any:
    from pyspark.accumulators import AccumulatorParam

    class ListParam(AccumulatorParam):
        def zero(self, value):
            return []

        def addInPlace(self, value1, value2):  # noqa: N802 - PySpark's name
            value1.extend(value2)
            return value1

    return ListParam()


# -- a driver's SparkContext -------------------------------------------------------------


class Terminated(BaseException):
    """SIGTERM arrived while Spark was starting (raised by :meth:`DriverState.on_sigterm`).

    A ``BaseException``, so that no ``except Exception`` inside PySpark's start
    swallows it.
    """


@dataclass
class Outcome:
    """How the job ended, as the driver saw it."""

    state: str  # "finished", "failed", "canceled" or "terminated"
    reason: str = ""
    log: str = ""  # what the driver log should say about it (a Spark error's traceback)
    failed_runs: int | None = None  # of a finished job: runs that raised (continue_on_failure)


class DriverState:
    """What a driver process's SIGTERM handler shares with the driver's code.

    Attributes
    ----------
    stop : threading.Event
        Set by SIGTERM: running jobs end "terminated" (see :func:`run_tasks`).
    interruptible : bool
        While True (Spark is starting), SIGTERM also raises :class:`Terminated`
        in the main thread; the driver sets it to False once Spark is up.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.interruptible = True  # raise on SIGTERM (only while Spark is starting)

    def on_sigterm(self, signum: int, frame: Any) -> None:
        """The SIGTERM handler: set :attr:`stop`; raise :class:`Terminated` while interruptible."""
        self.stop.set()
        if self.interruptible:
            self.interruptible = False
            raise Terminated()


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


def start_spark(conf: dict[str, str]) -> Any:
    """Start this process's SparkContext with ``conf`` (see :func:`spark_conf`); return it.

    Its gateway JVM becomes a child of this process: :func:`stop_spark` ends it.
    """
    from pyspark import SparkConf, SparkContext

    return SparkContext(conf=SparkConf().setAll(sorted(conf.items())))


_PY_ERROR_LINE = re.compile(
    r"(?!org\.|java\.|scala\.|py4j\.)[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(:.*)?\Z")


def spark_error(exc: BaseException) -> str:
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


def run_tasks(sc: Any, store: Any, job_id: str, n_tasks: int, stop_on_failure: bool,
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
    first_errors: Any = sc.accumulator([], _list_param()) if stop_on_failure else None
    # An accumulator updated in an action counts each task once, retried or not.
    failed_runs: Any = sc.accumulator(0)
    task = partial(_run_spark_task, store.url, job_id, first_errors, failed_runs, store.options or None)
    errors: list[BaseException] = []
    done = threading.Event()

    if partitions is not None and partitions < len(pending):
        grouped = partial(_run_spark_partition, store.url, job_id, first_errors, failed_runs,
                          store.options or None)

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
        elif first_errors is not None and first_errors.value:
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
    if first_errors is not None and first_errors.value:
        return Outcome("failed", first_errors.value[0])
    if errors and stop.is_set():
        return Outcome("terminated")
    if errors:
        log = "".join(traceback.format_exception(errors[0]))
        return Outcome("failed", f"the Spark job failed: {spark_error(errors[0])}", log)
    return Outcome("finished", failed_runs=int(failed_runs.value))


def record_outcome(store: Any, job_id: str, outcome: Outcome, terminated_reason: str,
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
    records.write_status(store, job_id, Record.FINISHED, failed_runs=outcome.failed_runs)
    return 0


def stop_spark(sc: Any) -> None:
    """Stop Spark and wait until no process below the driver is left (killing stragglers).

    ``sc`` is None when Spark was interrupted while starting: then whatever
    it had started is terminated.
    """
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


def run_spark_process(body: Callable[[], int], detached: bool) -> int:
    """Run ``body`` as a detached Spark process (a job driver, the persistent server) and exit.

    Detaches unless already detached (stderr is already the process's log),
    ignores SIGINT, becomes a subreaper so that nothing Spark starts escapes,
    and exits with ``body``'s code through ``os._exit``: py4j threads must
    not keep a process alive after Spark has stopped.
    """
    become_driver(detached)
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

