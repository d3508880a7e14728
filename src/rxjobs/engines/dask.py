"""The Dask engine: a job's tasks run on an existing Dask distributed cluster.

``submit`` sends one Dask task per rxjobs task, with key
``<job_id>-task-<k>``, each running :func:`rxjobs.runner.run_task` on a
worker (workers write results and console output straight into the share
dir; the first task to start writes the RUNNING record), and one final task
``<job_id>-final`` that depends on all of them and writes ``status.json``
(finished, or failed with its reason).  Every task is fire-and-forget, so the
job runs to its end with no client connected: the submitting process may
exit at once.  Nothing is kept in Dask memory but the small summaries the
final task reads.

``probe`` asks the scheduler about the job's final key; ``cancel`` makes the
scheduler forget every key of the job and interrupts the worker threads still
running its tasks (see :func:`_interrupt_job_threads`).  The handle in
``engine.json`` is ``{"scheduler": address, "job_id": ..., "n_tasks": ...}``;
the keys are derived from it.

``sleeper`` lets a waiter wake as soon as a job ends: the final task (or a
first failure that stops the job, or a cancel) logs the job id on the
scheduler's ``rxjobs-job-ended`` event topic, to which every client of this
module subscribes; the waiter then re-reads the status at once instead of at
its next poll.

Workers need ``rxjobs`` installed (the tasks call into it) and must be able
to import the module of a job's function when it is pickled by reference.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import urlsplit

from distributed import Client, fire_and_forget

from ..status import Probe, Record
from .base import Handle, SubmittedJob

# A scheduler that does not answer within this long is "unreachable" (UNDETERMINED):
# probes are cheap round trips, and a status call must not hang on a dead scheduler.
_CONNECT_TIMEOUT_S = 10.0
_CALL_TIMEOUT_S = 10.0
# After a failed connection, calls fail at once for this long (a cleanup probes
# many jobs of one scheduler from several threads).
_DOWN_TTL_S = 2.0
# How long submit waits for the scheduler to have registered the job's tasks.
_SUBMIT_TIMEOUT_S = 60.0
# The scheduler event topic on which a job's end is announced (message: the job id).
# The scheduler keeps a bounded log per topic, so one topic for all jobs stays small.
ENDED_TOPIC = "rxjobs-job-ended"


class DaskSchedulerUnreachableError(ConnectionError):
    """The Dask scheduler of a context cannot be reached."""


class JobInterrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """Raised inside a worker thread running a task of a job that was canceled.

    A ``BaseException``, like ``KeyboardInterrupt``, so that a run's
    ``except Exception`` does not swallow it.
    """


def task_key(job_id: str, task: int) -> str:
    """The Dask key of task ``task`` of a job."""
    return f"{job_id}-task-{task}"


def final_key(job_id: str) -> str:
    """The Dask key of the job's final task, which records how the job ended."""
    return f"{job_id}-final"


# -- the client, one per scheduler address and process ----------------------------------


_clients: dict[tuple[int, str], Client] = {}
_down: dict[str, tuple[float, str]] = {}  # address -> (until, why)
_clients_lock = threading.Lock()


def get_client(address: str) -> Client:
    """A connected client of the scheduler at ``address``, cached for this process.

    Raises
    ------
    DaskSchedulerUnreachableError
        The scheduler does not answer (refused, timed out, or failed a moment ago).
    """
    key = (os.getpid(), address)  # a forked child must not use its parent's client
    with _clients_lock:
        client = _clients.get(key)
        if client is not None and client.status == "running":
            return client
        if client is not None:
            _clients.pop(key, None)
            _close_quietly(client)
        until, why = _down.get(address, (0.0, ""))
        if time.monotonic() < until:
            raise DaskSchedulerUnreachableError(_unreachable_message(address, why))
        try:
            _check_listening(address)
            client = _connect(address)
        except (OSError, TimeoutError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            _down[address] = (time.monotonic() + _DOWN_TTL_S, why)
            raise DaskSchedulerUnreachableError(_unreachable_message(address, why)) from exc
        _down.pop(address, None)
        _clients[key] = client
        return client


def _connect(address: str) -> Client:
    """A client of the scheduler at ``address``; a client that failed to connect is closed here.

    A ``Client`` whose constructor failed is still collected later, and its
    ``__del__`` then waits for its close (twice the connect timeout): at the
    program's exit, behind an "Exception ignored" traceback.  So the half-made
    client is kept in hand and closed now, quietly.
    """
    client = Client.__new__(Client)
    try:
        client.__init__(address, timeout=_CONNECT_TIMEOUT_S, set_as_default=False,  # type: ignore[misc]
                        name="rxjobs")
    except BaseException:
        _close_quietly(client)
        raise
    return client


def close_clients() -> None:
    """Close every scheduler client this process has cached.

    A cached client whose scheduler goes away keeps trying to reconnect in
    the background; a program that stops its own cluster (a test suite, a
    notebook) calls this first.
    """
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
        _down.clear()
    for client in clients:
        _close_quietly(client)


def _check_listening(address: str) -> None:
    """Fail fast when nothing listens at a TCP address (Dask would retry until its timeout)."""
    parts = urlsplit(address)
    if parts.scheme != "tcp" or not parts.hostname or not parts.port:
        return
    with socket.create_connection((parts.hostname, parts.port), timeout=_CONNECT_TIMEOUT_S):
        pass


def _unreachable_message(address: str, why: str) -> str:
    return (f"cannot reach the Dask scheduler at {address} ({why}); check that `dask scheduler` "
            f"runs there (workers: `dask worker {address}`) or fix RxDask(address=...)")


def _close_quietly(client: Client) -> None:
    try:
        client.close(timeout=2)
    except Exception:
        pass
    finally:
        if getattr(client, "status", "closed") != "closed":
            client.status = "closed"  # its __del__ must not wait for the close again at exit


def _task_states(client: Client, keys: list[str]) -> dict[str, str | None]:
    """The scheduler's state of each key (None for a key it does not know).

    Raises OSError or TimeoutError when the scheduler does not answer.
    """
    scheduler = client.scheduler
    if scheduler is None:
        raise OSError("the Dask client has no scheduler connection")
    try:
        return client.sync(scheduler.get_task_status, keys=keys, callback_timeout=_CALL_TIMEOUT_S)
    except asyncio.CancelledError:  # the client closed under the call
        raise TimeoutError("the call to the Dask scheduler was cancelled") from None


# -- waking waiters when a job ends -----------------------------------------------------


# job id -> the event its sleepers wait on; an entry lives as long as a sleeper holds it.
_ended_events: weakref.WeakValueDictionary[str, threading.Event] = weakref.WeakValueDictionary()
_subscribed: weakref.WeakSet[Client] = weakref.WeakSet()
_ended_lock = threading.Lock()


def _subscribe(client: Client) -> None:
    """Have ``client`` hear of every job's end (once per client)."""
    with _ended_lock:
        if client not in _subscribed:
            client.subscribe_topic(ENDED_TOPIC, _on_job_ended)
            _subscribed.add(client)


def _on_job_ended(event: tuple[float, Any]) -> None:
    """Run by the client's event loop for each announced end: wake that job's sleepers."""
    job_id = event[1]
    with _ended_lock:
        ended = _ended_events.get(job_id) if isinstance(job_id, str) else None
    if ended is not None:
        ended.set()


def _announce_end(job_id: str, client: Client | None = None) -> None:
    """Say on the scheduler that ``job_id`` ended (from a task if no client); best effort."""
    try:
        if client is None:
            from distributed import get_worker

            get_worker().log_event(ENDED_TOPIC, job_id)
        elif client.scheduler is not None:  # Client.log_event, bounded: a cancel must not hang on it
            client.sync(client.scheduler.log_event, topic=ENDED_TOPIC, msg=job_id,
                        callback_timeout=_CALL_TIMEOUT_S)
    except Exception:  # waiters poll anyway: a lost announcement only delays them
        pass


class _JobEndSleeper:
    """``sleep(seconds)`` that returns early once, when the job's end is announced."""

    def __init__(self, ended: threading.Event) -> None:
        self._ended = ended  # held: keeps the job's entry in _ended_events alive
        self._woken = False

    def __call__(self, seconds: float) -> None:
        if self._woken:
            # Woken once already: the waiter saw the end, or the status disagrees
            # (e.g. the scheduler became unreachable); plain sleeps from now on.
            time.sleep(seconds)
        elif self._ended.wait(max(0.0, seconds)):
            self._woken = True


# -- the engine -------------------------------------------------------------------------


class DaskEngine:
    """Run, probe and cancel jobs on a Dask distributed cluster."""

    def parallelism(self, context: Any) -> int:
        """Worker threads of the whole cluster (at least 1)."""
        client = get_client(context.address)
        return max(1, sum(client.nthreads().values()))

    def submit(self, job: SubmittedJob) -> Handle:
        address = getattr(job.context, "address", "")
        client = get_client(address)
        # Subscribed before the tasks are sent, down the same ordered stream: the
        # scheduler knows this client listens before the job can end.
        _subscribe(client)
        n = job.n_tasks
        # The share dir's storage options travel with the tasks (through the
        # scheduler, like the tasks' other arguments), never through the share dir.
        options = job.share_dir_options
        tasks = client.map(_run_job_task, [job.share_dir] * n, [job.job_id] * n, range(n),
                           key=[task_key(job.job_id, k) for k in range(n)], pure=False,
                           options=options)
        fire_and_forget(tasks)
        final = client.submit(_finish_job, job.share_dir, job.job_id, tasks, options=options,
                              key=final_key(job.job_id), pure=False)
        fire_and_forget(final)
        # The client sends all of the above down one ordered stream, which may
        # still be in flight: a process exiting now could lose the
        # fire-and-forget requests.  Once the scheduler knows a task sent after
        # them, it has processed them too.
        fence = client.submit(_submitted, key=f"{job.job_id}-submitted", pure=False)
        deadline = time.monotonic() + _SUBMIT_TIMEOUT_S
        fence_key = str(fence.key)
        while _task_states(client, [fence_key])[fence_key] is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Dask scheduler at {address} did not take job {job.job_id} "
                                   f"within {_SUBMIT_TIMEOUT_S:.0f} s")
            time.sleep(0.005)
        fence.release()
        return {"scheduler": address, "job_id": job.job_id, "n_tasks": n}

    def probe(self, handle: Handle) -> Probe:
        # Only the final key is asked about: it is known from submit until the job
        # ends.  Whether the job started is not the scheduler's to say (a
        # "processing" task may still wait in a worker's queue): the first task
        # that starts writes the RUNNING record.
        try:
            client = get_client(handle["scheduler"])
            last = final_key(handle["job_id"])
            state = _task_states(client, [last])[last]
        except (OSError, TimeoutError):  # connection refused or lost, call timed out
            return Probe.UNREACHABLE
        if state in (None, "forgotten", "memory", "erred"):
            # Forgotten (scheduler restarted, keys canceled), ended (status.json is
            # written before the final task ends, and the core reads it again), or
            # unable to end (a task erred, e.g. the workers running it kept dying).
            return Probe.GONE
        return Probe.STARTED if state == "processing" else Probe.ALIVE

    def cancel(self, handle: Handle) -> bool:
        # Best effort: a forced cleanup cancels, then removes the job whatever this says.
        try:
            client = get_client(handle["scheduler"])
            return _stop_job(client, handle["job_id"], int(handle["n_tasks"]))
        except Exception:  # unreachable, or the connection failed under the calls
            return False

    def sleeper(self, handle: Handle) -> Callable[[float], None] | None:
        """A sleep that returns as soon as the job's end is announced (see engines/base.py).

        Parameters
        ----------
        handle
            The job's handle from ``engine.json``.

        Returns
        -------
        callable or None
            ``sleep(seconds)``; None when the scheduler cannot be reached (sleep plainly).
        """
        try:
            client = get_client(handle["scheduler"])
        except (OSError, TimeoutError):
            return None
        job_id = handle["job_id"]
        with _ended_lock:
            ended = _ended_events.get(job_id)
            if ended is None:
                ended = _ended_events[job_id] = threading.Event()
        # A job that ends before the subscription reaches the scheduler is not
        # announced to this client: its waiter sees the end at its next poll.
        _subscribe(client)
        return _JobEndSleeper(ended)


def _stop_job(client: Client, job_id: str, n_tasks: int) -> bool:
    """Make the scheduler forget a job's keys and interrupt its running tasks.

    Returns True if any key was still live or any task was interrupted.
    """
    keys = [task_key(job_id, k) for k in range(n_tasks)] + [final_key(job_id)]
    live = [k for k, state in _task_states(client, keys).items() if state in _LIVE]
    if live:
        # Undo fire_and_forget: release the keys on behalf of the fire-and-forget
        # pseudo-client (the very message distributed.fire_and_forget sends, with
        # "releases" for "desires").  Nobody else wants them, so the scheduler
        # forgets them at once and tells the workers to drop them.
        # Client.cancel(force=True) is not used: the scheduler asserts that every
        # key it cancels is wanted by some client, which a finished task held
        # only for the final task is not, and the failed assertion drops the
        # client's connection.
        client._send_to_scheduler(
            {"op": "client-releases-keys", "keys": keys, "client": "fire-and-forget"})
        deadline = time.monotonic() + _CALL_TIMEOUT_S
        while any(state in _LIVE for state in _task_states(client, live).values()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
    # A forgotten key is not started any more, but Dask lets a running task
    # finish: interrupt the threads still running this job's tasks.
    interrupted = _run_on_workers(client, _interrupt_job_threads, job_id)
    if live:  # its final task will not run now: say the job ended (canceled or failed)
        _announce_end(job_id, client)
    return bool(live) or interrupted > 0


# Scheduler states of a key that will still run (or is running).
_LIVE = frozenset({"released", "waiting", "queued", "no-worker", "processing"})


def _run_on_workers(client: Client, function, *args) -> int:
    """Run ``function(*args)`` on every worker; the sum of the integer answers (bounded wait)."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        answers = pool.submit(client.run, function, *args, on_error="return").result(
            timeout=_CALL_TIMEOUT_S)
    except FutureTimeout:  # a worker that does not answer must not hang a cancel
        return 0
    finally:
        pool.shutdown(wait=False)
    return sum(a for a in answers.values() if isinstance(a, int))


ENGINE = DaskEngine()


# -- what runs on the workers -----------------------------------------------------------


def _submitted() -> None:
    """The fence task of :meth:`DaskEngine.submit`; does nothing."""


def _run_job_task(share_dir: str, job_id: str, task: int,
                  options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One rxjobs task on a Dask worker; returns a summary for the final task, never raises."""
    from .. import records
    from ..store import open_store

    summary: dict[str, Any] = {"task": task}
    try:
        store = open_store(share_dir, options)
        paths = store.paths(job_id)
        done = _run_interruptible(job_id, _start_and_run, store, job_id, task)
        if done is None:
            return {**summary, "interrupted": True}
        if store.exists(paths.canceled):
            # Canceled while this task ran: its late result must not outlive the cancel.
            store.remove_file(paths.result(task))
            return {**summary, "interrupted": True}
        summary.update(skipped=done.skipped, first_error=done.first_error, failed=done.failed)
        if done.first_error:
            job = records.read_job_record(store, job_id)
            if not job.options.get("continue_on_failure", True):
                _fail_job_now(store, job_id, job.n_tasks, done.first_error)
    except Exception as exc:  # the final task reports it
        summary["error"] = f"task {task} could not be run: {type(exc).__name__}: {exc}"
    return summary


def _start_and_run(store, job_id: str, task: int):
    """Say the job runs (QUEUED -> RUNNING) if no task did yet, then run the task.

    Runs interruptible: a cancel, or another task's first failure, interrupts
    it, so it cannot write RUNNING after the job was recorded FAILED, except
    in the instant of the write itself (which :func:`_fail_job_now` repairs).
    """
    from .. import records
    from ..runner import TaskSummary, run_task

    record = records.read_status_record(store, job_id).state
    if record in (Record.FINISHED, Record.FAILED):  # failed by another task's first error
        return TaskSummary(task, 0, skipped=True)
    if record is Record.ABSENT:
        records.write_status(store, job_id, Record.RUNNING)  # refuses to leave a final record
    return run_task(store.url, job_id, task, capture="python", options=store.options or None)


def _fail_job_now(store, job_id: str, n_tasks: int, reason: str) -> None:
    """``continue_on_failure=False``: the first failure ends the job at once."""
    from .. import records

    if not records.write_status(store, job_id, Record.FAILED, reason):
        return  # another task's failure came first
    _stop_rest_of_job(job_id, n_tasks)
    # A task that read "no record" just before the FAILED record was written may
    # have written RUNNING over it before it was interrupted: write it again.
    record = records.read_status_record(store, job_id).state
    if record is not Record.FAILED:
        records.write_status(store, job_id, Record.FAILED, reason)


def _stop_rest_of_job(job_id: str, n_tasks: int) -> None:
    """From a task on a worker: stop the job's other tasks (best effort).

    Tasks that still start see the FAILED record and skip, so nothing is
    lost if this fails; it frees the worker threads sooner.
    """
    try:
        from distributed import get_client as get_worker_client

        _stop_job(get_worker_client(), job_id, n_tasks)
    except Exception:
        pass


def _finish_job(share_dir: str, job_id: str, summaries: list[dict[str, Any]],
                options: dict[str, Any] | None = None) -> str:
    """The final task: record how the job ended in ``status.json``, then announce the end."""
    try:
        return _record_end(share_dir, job_id, summaries, options)
    finally:
        _announce_end(job_id)


def _record_end(share_dir: str, job_id: str, summaries: list[dict[str, Any]],
                options: dict[str, Any] | None) -> str:
    from .. import records
    from ..store import open_store

    store = open_store(share_dir, options)
    paths = store.paths(job_id)
    entries = store.job_entries(job_id)
    if entries is None or "canceled" in entries or "deleting" in entries:
        return "canceled or removed"
    job = records.read_job_record(store, job_id)
    continue_on_failure = bool(job.options.get("continue_on_failure", True))
    failure = None
    for summary in sorted(summaries, key=lambda s: s["task"]):
        if summary.get("error"):
            failure = summary["error"]
        elif summary.get("first_error") and not continue_on_failure:
            failure = summary["first_error"]
        if failure:
            break
    if failure is None:
        present = set(store.listdir(paths.tasks))
        missing = [k for k in range(job.n_tasks)
                   if paths.result(k).rsplit("/", 1)[-1] not in present]
        if missing:
            failure = f"no result was written for task(s) {', '.join(map(str, missing[:10]))}"
    if failure is None:
        failed_runs = sum(s["failed"] for s in summaries if isinstance(s.get("failed"), int))
        records.write_status(store, job_id, Record.FINISHED, failed_runs=failed_runs)
        return "finished"
    records.write_status(store, job_id, Record.FAILED, failure)
    return "failed"


# -- interrupting the threads of a canceled job -----------------------------------------
#
# Dask cannot stop a task that is running: canceling its key only drops the
# result.  A worker runs tasks in threads, so rxjobs raises JobInterrupted in
# the threads running the canceled job's tasks (PyThreadState_SetAsyncExc, the
# mechanism behind KeyboardInterrupt-like stops of threads).  It is delivered
# at the thread's next Python bytecode: a run blocked in one long C call (a
# 5-minute time.sleep, a big numpy call) finishes that call first.
#
# The exception must never escape into Dask's own code: a thread registers
# itself before running the task and unregisters (under the same lock as the
# interrupter) after, clearing an exception that was set but not yet
# delivered; one delivered late, while unregistering, is caught there too.

_running: dict[int, list[Any]] = {}  # thread ident -> [job_id, interrupt sent]
_running_lock = threading.Lock()


def _run_interruptible(job_id: str, function, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, or None if the job was canceled while it ran."""
    ident = threading.get_ident()
    try:
        try:
            with _running_lock:
                _running[ident] = [job_id, False]
            return function(*args, **kwargs)
        finally:
            _unregister_thread(ident)
    except JobInterrupted:
        _unregister_thread(ident)
        return None


def _unregister_thread(ident: int) -> None:
    with _running_lock:
        entry = _running.pop(ident, None)
        if entry is not None and entry[1]:
            _set_async_exc(ident, None)  # an interrupt sent but not delivered yet: drop it


def _interrupt_job_threads(job_id: str) -> int:
    """Interrupt every thread of this process running a task of ``job_id``; how many."""
    count = 0
    with _running_lock:
        for ident, entry in _running.items():
            if entry[0] == job_id and not entry[1]:
                entry[1] = True
                count += _set_async_exc(ident, JobInterrupted)
    return count


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> int:
    """Raise ``exc`` in thread ``ident`` at its next bytecode (None clears a pending one)."""
    set_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    arg = ctypes.py_object(exc) if exc is not None else None
    changed = set_exc(ctypes.c_ulong(ident), arg)
    if changed > 1:  # "should not happen": undo, as the C API documentation says
        set_exc(ctypes.c_ulong(ident), None)
        return 0
    return changed
