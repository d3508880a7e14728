"""A job's life in the share dir: submit, status, output, results, cancel.

These functions work on ``(store, job_id)`` and know no engine by name: the
engine of a job is looked up from its own ``job.json``.  The ``rx_*``
functions of :mod:`rxjobs.api` are a thin facade over them.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import cloudpickle
import psutil

from .arguments import choose_chunk_size
from .contexts import RxComputeContext
from .dirwatch import NameWatch, WatchingSleeper
from .durations import format_duration, to_timedelta
from .engines import SubmittedJob, get_engine
from .errors import (
    EngineRefusedError,
    IncompleteResultsError,
    JobCanceledError,
    JobFailedError,
    JobNotFinishedError,
    JobNotFoundError,
    NewerFormatError,
)
from .ids import new_job_id
from .preload import referenced_modules
from .records import (
    ABSENT_STATUS,
    EngineRecord,
    JobRecord,
    StatusRecord,
    canceled_time,
    engine_record_of,
    mark_canceled,
    mark_retrieved,
    read_engine_record,
    read_job_record,
    read_status_record,
    write_engine_record,
    write_job_record,
)
from .runner import Payload, load_task_result
from .runtime import driver_log_file, is_held, take_driver_log
from .status import Derived, JobFacts, Probe, Record, RxRemoteJobStatus, derive_status
from .store import OUTPUT_SUFFIX, RESULT_SUFFIX, JobPaths, JobSnapshot, Store
from .times import parse_timestamp, utc_now_iso
from .version import __version__
from .waiting import CLOCK, Clock, poll

# -- submit ------------------------------------------------------------------------------


def _process_identity() -> dict[str, Any]:
    me = psutil.Process()
    return {"host": socket.gethostname(), "pid": me.pid, "create_time": me.create_time()}


def submit_job(
    store: Store,
    context: RxComputeContext,
    payload: Payload,
    options: dict[str, Any],
) -> str:
    """Write a job's artifacts and start it on its engine; return the job id.

    The payload is pickled before anything touches the disk, so a function
    that cannot be pickled fails here with nothing left behind; if starting
    the job fails, the job directory is removed again.
    """
    try:
        data = cloudpickle.dumps(payload)
    except Exception as exc:
        raise TypeError(
            f"the function or its arguments cannot be pickled, so they cannot be sent to "
            f"workers: {type(exc).__name__}: {exc}"
        ) from exc
    if context.engine is None:
        raise ValueError(f"{context.kind} runs in the calling process and keeps no jobs")
    engine = get_engine(context.engine)
    store.ensure_root()
    job_id = new_job_id()
    paths = store.paths(job_id)
    store.makedir(paths.dir)
    try:
        store.makedir(paths.tasks)
        fn = payload.function
        record = JobRecord(
            job_id=job_id,
            created=utc_now_iso(),
            user=getpass.getuser(),
            context=context.to_dict(),
            n_runs=len(payload.runs),
            n_tasks=payload.n_tasks,
            options=options,
            submitter=_process_identity(),
            function=f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}",
            rxjobs=__version__,
        )
        write_job_record(store, record)
        store.write_atomic(paths.payload, data)
        handle = engine.submit(SubmittedJob(store.url, job_id, context, payload.n_tasks,
                                            share_dir_options=store.options or None,
                                            modules=tuple(referenced_modules(data))))
        write_engine_record(store, record, EngineRecord(context.engine, handle))
    except BaseException:
        store.discard_new_job(job_id)  # nothing is left behind, even on a full disk
        drop_driver_log(store, job_id, salvage=False)
        raise
    return job_id


# -- status ------------------------------------------------------------------------------


def _submitter_alive(identity: dict[str, Any]) -> bool | None:
    if identity.get("host") != socket.gethostname():
        return None
    return process_matches(identity.get("pid"), identity.get("create_time"))


def process_matches(pid: Any, create_time: Any) -> bool:
    """Is process ``pid`` alive and the very process that started at ``create_time``?"""
    try:
        proc = psutil.Process(int(pid))
        if abs(proc.create_time() - float(create_time)) > 0.05:
            return False  # the pid was reused by another process
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, TypeError, ValueError):
        return False
    except psutil.AccessDenied:
        return True


@dataclass(frozen=True)
class JobLook:
    """One look at a job: its derived state and the records it was derived from."""

    derived: Derived
    record: JobRecord | None = None
    status_record: StatusRecord = ABSENT_STATUS
    entries: frozenset[str] = frozenset()
    newer_format: bool = False  # job.json is of a newer format: a job, but not this rxjobs' to handle

    @property
    def status(self) -> RxRemoteJobStatus:
        return self.derived.status

    @property
    def is_job(self) -> bool:
        """A job, whether or not this rxjobs reads it; False: debris (no ``job.json`` naming it)."""
        return self.record is not None or self.newer_format or self.status is RxRemoteJobStatus.MISSING

    @property
    def retrieved(self) -> bool:
        """The ``retrieved`` marker was there when the job was looked at."""
        return "retrieved" in self.entries


def foreign_owner(store: Store, job_id: str) -> int | None:
    """The uid owning the job if it is not the caller (None: the caller's, or no owners here).

    Engine handles are untrusted: a job's engine is probed, waited on or
    stopped only for a job that belongs to the caller (docs/security.md).
    """
    owner = store.owner_uid(job_id)
    return owner if owner is not None and owner != os.geteuid() else None


def _gather(store: Store, job_id: str, snapshot: JobSnapshot | None = None,
            record: JobRecord | None = None, probe: bool = True,
            ) -> tuple[JobFacts, JobRecord | None, StatusRecord, frozenset[str]] | None:
    """The facts a job's state is derived from, and the records read on the way.

    ``record``: its ``job.json``, already read and checked by the caller.
    Without ``probe``, None when the facts would need the engine asked.
    """
    # One look at the job directory's names gives presence and markers (one
    # listing request on an object store); a snapshot holds it, and the records.
    entries = snapshot.entries if snapshot is not None else store.job_entries(job_id)
    if entries is None or "deleting" in entries:
        return JobFacts(present=False), None, ABSENT_STATUS, frozenset()
    canceled = "canceled" in entries
    status = read_status_record(store, job_id, snapshot)
    job = record
    newer = ""
    if job is None:
        try:
            job = read_job_record(store, job_id, snapshot=snapshot)
        except JobNotFoundError:
            return JobFacts(present=False), None, ABSENT_STATUS, frozenset()
        except NewerFormatError as exc:
            newer = str(exc)
        except ValueError:
            job = None
    facts = JobFacts(present=True, job_record_ok=job is not None, canceled=canceled,
                     record=status.state, record_reason=status.reason, failed_runs=status.failed_runs,
                     n_runs=job.n_runs if job is not None else None, newer_format=newer)
    # A job that has ended (or cannot be told apart from debris) is settled by its
    # files alone: no engine is asked, no process looked up.
    if canceled or status.state in (Record.FINISHED, Record.FAILED, Record.CORRUPT) or job is None:
        return facts, job, status, entries
    if snapshot is not None:
        owner = snapshot.owner if snapshot.owner is not None and snapshot.owner != os.geteuid() else None
    else:
        owner = foreign_owner(store, job_id)
    if owner is not None:
        return replace(facts, foreign_owner=owner), job, status, entries
    if not probe:
        return None
    try:
        engine = engine_record_of(store, job)
    except FileNotFoundError:
        return replace(facts, submitter_alive=_submitter_alive(job.submitter)), job, status, entries
    except (ValueError, OSError):
        return replace(facts, probe=Probe.UNREACHABLE), job, status, entries
    try:
        found = get_engine(engine.engine).probe(engine.handle)
    except Exception:
        found = Probe.UNREACHABLE
    return replace(facts, probe=found), job, status, entries


def gather_facts(store: Store, job_id: str) -> JobFacts:
    """Read everything the state of a job is derived from, probing its engine once."""
    gathered = _gather(store, job_id)
    assert gathered is not None  # with probe=True there is always an answer
    return gathered[0]


def look_at_job(store: Store, job_id: str, snapshot: JobSnapshot | None = None,
                record: JobRecord | None = None) -> JobLook:
    """Derive a job's state (docs/design.md#job-states) and keep the records read on the way.

    With ``snapshot`` (:meth:`~rxjobs.store.Store.snapshot` of the job, just
    taken), its names and records are used instead of reading them again;
    with ``record`` (its ``job.json``, read by the caller from that snapshot),
    that is not parsed again.
    """
    gathered = _gather(store, job_id, snapshot, record)
    assert gathered is not None
    return _derive(store, job_id, *gathered)


def settled_look(store: Store, job_id: str, snapshot: JobSnapshot,
                 record: JobRecord | None = None) -> JobLook | None:
    """:func:`look_at_job` from ``snapshot`` alone, or None when the engine must be asked.

    A survey derives every job that has ended (or is gone, canceled, broken,
    another user's) at the cost of parsing its records, and leaves the few
    still running to :func:`look_at_job`, whose engine probes may wait on
    the network and so are worth running side by side.
    """
    gathered = _gather(store, job_id, snapshot, record, probe=False)
    return None if gathered is None else _derive(store, job_id, *gathered)


def _derive(store: Store, job_id: str, facts: JobFacts, record: JobRecord | None, status: StatusRecord,
            entries: frozenset[str]) -> JobLook:
    derived = derive_status(facts)
    if derived.status is RxRemoteJobStatus.FAILED and derived.reason.startswith(
        ("driver lost", "submission did not complete")
    ):
        # The driver may have written its final record and exited between our
        # reading status.json and probing it: look once more before saying lost.
        gathered = _gather(store, job_id)
        assert gathered is not None
        facts, record, status, entries = gathered
        derived = derive_status(facts)
    return JobLook(derived, record, status, entries, bool(facts.newer_format))


def job_status(store: Store, job_id: str) -> Derived:
    """The derived state of a job (docs/design.md#job-states)."""
    return look_at_job(store, job_id).derived


def refuse_newer_format(store: Store, job_id: str) -> None:
    """NewerFormatError, naming the rxjobs it needs, if the job's ``job.json`` is of a newer format.

    Any other trouble with the record is left to the action that follows.
    """
    try:
        read_job_record(store, job_id)
    except NewerFormatError:
        raise
    except (JobNotFoundError, ValueError, OSError):
        pass


# -- retention ---------------------------------------------------------------------------


def expires_after(record: JobRecord | None) -> timedelta | None:
    """The job's ``expires_after`` option (None: the job never expires)."""
    value = record.options.get("expires_after") if record is not None else None
    if value is None:
        return None
    try:
        return to_timedelta(value, "expires_after")
    except (TypeError, ValueError):
        return None  # an unreadable option never makes a job expire


def ended_at(store: Store, look: JobLook) -> datetime | None:
    """When a terminal job ended: ``status.json``'s ``ended``; for a canceled job the
    ``canceled`` marker's time; else the last ``updated`` record, else the submit time."""
    if look.status is RxRemoteJobStatus.CANCELED and look.record is not None:
        when = canceled_time(store, look.record.job_id)
        if when is not None:
            return when
    for text in (look.status_record.ended, look.status_record.updated,
                 look.record.created if look.record is not None else None):
        when = parse_timestamp(text)
        if when is not None:
            return when
    return None


def expiry_time(store: Store, look: JobLook) -> datetime | None:
    """When a terminal job with ``expires_after`` expires (None if it never does, or has not ended)."""
    after = expires_after(look.record)
    if after is None or not look.status.is_terminal():
        return None
    ended = ended_at(store, look)
    return ended + after if ended is not None else None


def is_expired(store: Store, look: JobLook, now: datetime | None = None) -> bool:
    """A terminal job whose ``expires_after`` has passed since it ended."""
    when = expiry_time(store, look)
    return when is not None and (now or datetime.now(timezone.utc)) >= when


# -- output and results ------------------------------------------------------------------


def read_output(store: Store, job_id: str) -> str:
    """The console output of every task, in task order: all of it for a task that has
    finished, what it printed so far (published by its worker) for one that runs."""
    job = read_job_record(store, job_id)
    paths = store.paths(job_id)
    parts = []
    for task in JobPaths.task_indexes(store.listdir(paths.tasks), OUTPUT_SUFFIX, job.n_tasks):
        try:
            parts.append(store.read_bytes(paths.output(task)).decode(errors="replace"))
        except FileNotFoundError:
            continue
    try:
        driver = store.read_bytes(paths.driver_log).decode(errors="replace")
    except FileNotFoundError:
        driver = ""
    if driver.strip():
        parts.append(f"--- driver log ---\n{driver}")
    return "".join(parts)


# -- following output --------------------------------------------------------------------

DRIVER_LOG_HEADER = "--- driver log ---\n"


@dataclass(frozen=True)
class FollowState:
    """What :class:`OutputFollower` has printed so far.

    Attributes
    ----------
    task_offsets
        How many characters of each task's output were printed.
    done_tasks
        Tasks whose output was printed to its end (their task had finished).
    driver_offset
        How many characters of the driver log were printed.
    in_driver_log
        The last thing printed was driver log (no header needed before more).
    """

    task_offsets: Mapping[int, int] = field(default_factory=dict)
    done_tasks: frozenset[int] = frozenset()
    driver_offset: int = 0
    in_driver_log: bool = False


def _fresh(text: str, offset: int, whole: bool) -> tuple[str, int]:
    """The part of ``text`` after ``offset`` to print now (whole lines unless ``whole``),
    and the offset to start from; a text that shrank (rewritten whole) is printed afresh."""
    offset = offset if offset <= len(text) else 0
    fresh = text[offset:]
    if not whole:
        fresh = fresh[:fresh.rfind("\n") + 1]
    return fresh, offset


def next_output(state: FollowState, task_outputs: Mapping[int, str], driver_log: str,
                final: bool, finished_tasks: frozenset[int] = frozenset(),
                ) -> tuple[list[str], FollowState]:
    """What to print next, from what is there now; pure (tested by a table).

    Parameters
    ----------
    state
        What was printed before.
    task_outputs
        The output of tasks whose output file is there (task -> text, what the
        task printed so far); what of it is new is printed, in task order,
        whole lines only while the task runs.
    driver_log
        The driver log as it is now.  Only whole lines are printed until
        ``final`` (the job has ended), and a header goes before driver-log text
        that follows task output (or opens the follow).
    final
        The job has ended: print whatever is left, a last partial line included.
    finished_tasks
        Tasks of ``task_outputs`` that had finished when their output was read:
        their output is complete, so a last partial line is printed too.

    Returns
    -------
    (chunks, state)
        The texts to print, in order, and what has been printed then.
    """
    chunks = []
    in_driver_log = state.in_driver_log
    offsets = dict(state.task_offsets)
    done = set(state.done_tasks)
    for task in sorted(set(task_outputs) - done):
        whole = final or task in finished_tasks
        fresh, offset = _fresh(task_outputs[task], offsets.get(task, 0), whole)
        if fresh:
            chunks.append(fresh)
            in_driver_log = False
        offsets[task] = offset + len(fresh)
        if whole:
            done.add(task)
    fresh, offset = _fresh(driver_log, state.driver_offset, final)
    if fresh:
        if not in_driver_log:
            chunks.append(DRIVER_LOG_HEADER)
        chunks.append(fresh)
        in_driver_log = True
    return chunks, FollowState(offsets, frozenset(done), offset + len(fresh), in_driver_log)


class OutputFollower:
    """A job's console output as it is produced, like ``tail -f``: iterate for the texts.

    What each task prints is shown as it reaches the share dir (its worker
    publishes it while the task runs, see :mod:`rxjobs.runner`), whole lines
    at a time, in task order among what appeared together; the driver log as
    it grows (whole lines).  The iteration ends when the job has ended (or was
    removed); :attr:`status` then says how it ended.  ``rx_get_job_output`` is
    the one-look version.

    Parameters
    ----------
    store, job_id
        The job.
    max_delay
        The longest pause between two looks (seconds); the pauses grow to it
        from 0.05 s, and end early when the job's engine says it may have ended.
    clock
        The clock that sleeps when the engine offers no early wake-up (tests
        use a fast-forward one).

    Raises
    ------
    JobNotFoundError
        On iteration: no such job.
    """

    def __init__(self, store: Store, job_id: str, max_delay: float = 1.0,
                 clock: Clock | None = None) -> None:
        self.store = store
        self.job_id = job_id
        self.max_delay = max_delay
        self.clock = clock or CLOCK
        self.status: RxRemoteJobStatus | None = None

    def __iter__(self) -> Iterator[str]:
        job = read_job_record(self.store, self.job_id)
        state = FollowState()
        delay = 0.05
        with job_sleep(self.store, self.job_id) as sleeper:
            while True:
                status = job_status(self.store, self.job_id).status
                ended = status.is_terminal() or status is RxRemoteJobStatus.MISSING
                outputs, finished = self._task_outputs(job.n_tasks, state)
                chunks, state = next_output(state, outputs, self._driver_log(), final=ended,
                                            finished_tasks=finished)
                yield from chunks
                if ended:
                    self.status = status
                    return
                (sleeper or self.clock.sleep)(delay)
                delay = min(self.max_delay, delay * 1.5)

    def _task_outputs(self, n_tasks: int, state: FollowState) -> tuple[dict[int, str], frozenset[int]]:
        """The output of every task not printed to its end yet, and those of them whose
        result file was there before their output was read (so it is complete: a
        worker writes its last output before its result)."""
        paths = self.store.paths(self.job_id)
        names = self.store.listdir(paths.tasks)
        finished = frozenset(JobPaths.task_indexes(names, RESULT_SUFFIX, n_tasks))
        found = {}
        for task in JobPaths.task_indexes(names, OUTPUT_SUFFIX, n_tasks):
            if task in state.done_tasks:
                continue
            try:
                found[task] = self.store.read_bytes(paths.output(task)).decode(errors="replace")
            except (FileNotFoundError, ValueError):
                continue
        return found, finished & frozenset(found)

    def _driver_log(self) -> str:
        try:
            return self.store.read_bytes(self.store.paths(self.job_id).driver_log).decode(errors="replace")
        except (FileNotFoundError, ValueError):
            return ""


@dataclass
class Results:
    """A finished job's run values in run order, with the indexes of runs that raised."""

    values: list[Any]
    failed: list[int]


def read_results(store: Store, job_id: str) -> Results:
    """Read all of a finished job's results, or raise; never returns a partial list.

    On stores without atomic rename, the job is checked not to be being
    removed (no ``deleting`` marker) before and after the results are read.
    """
    derived = job_status(store, job_id)
    status = derived.status
    if status is RxRemoteJobStatus.MISSING:
        raise JobNotFoundError(f"job {job_id} not found in share dir {store.url}")
    if status in (RxRemoteJobStatus.RUNNING, RxRemoteJobStatus.QUEUED):
        raise JobNotFinishedError(
            f"job {job_id} is still {status.value}; wait for it with rx_wait_for_job "
            "(or `rxjobs wait`) and collect the results then"
        )
    if status is RxRemoteJobStatus.CANCELED:
        raise JobCanceledError(f"job {job_id} was canceled; its results were deleted")
    if status is RxRemoteJobStatus.FAILED:
        raise JobFailedError(f"job {job_id} failed: {derived.reason}")
    if status is RxRemoteJobStatus.UNDETERMINED:
        raise JobNotFinishedError(
            f"the state of job {job_id} cannot be determined ({derived.reason}); "
            "try again when its engine is reachable"
        )
    job = read_job_record(store, job_id)
    values: list[Any] = []
    failed: list[int] = []
    for task in range(job.n_tasks):
        try:
            result = load_task_result(store, job_id, task)
        except FileNotFoundError:
            if store.being_removed(job_id):
                raise JobNotFoundError(
                    f"job {job_id} was removed from {store.url} while its results were read"
                ) from None
            raise IncompleteResultsError(
                f"job {job_id} is finished but the result of task {task} is missing; "
                "nothing was deleted"
            ) from None
        values.extend(result.values)
        failed.extend(result.failed)
    if store.removal_may_tear(job_id):
        # Without atomic rename a removal deletes file by file: what was read may
        # mix files from before and during it, so it is never returned.
        raise JobNotFoundError(f"job {job_id} was removed from {store.url} while its results were read")
    if len(values) != job.n_runs:
        raise IncompleteResultsError(
            f"job {job_id} has {len(values)} results for {job.n_runs} runs; nothing was deleted"
        )
    return Results(values, failed)


@dataclass(frozen=True)
class RunOutcome:
    """One run's outcome as its task's result file holds it: a value, or the exception it raised."""

    run: int
    value: Any
    failed: bool


def peek_results(store: Store, job_id: str, max_runs: int) -> tuple[list[RunOutcome], int]:
    """The first ``max_runs`` run outcomes whose task results are on disk, in run order.

    A look, not a collection: nothing is marked ``retrieved`` or removed, the
    job may still be running (only the tasks done so far are read), and the
    results are unpickled only through the trust check of
    :func:`~rxjobs.runner.load_task_result` (``UntrustedShareDirError``
    otherwise).  Reading stops at the task that reaches ``max_runs``.

    Returns
    -------
    tuple
        The outcomes, and how many runs the job has in all (``n_runs``).
    """
    job = read_job_record(store, job_id)
    paths = store.paths(job_id)
    outcomes: list[RunOutcome] = []
    for task in JobPaths.task_indexes(store.listdir(paths.tasks), RESULT_SUFFIX, job.n_tasks):
        if len(outcomes) >= max_runs:
            break
        try:
            result = load_task_result(store, job_id, task)
        except FileNotFoundError:
            continue
        failed = set(result.failed)
        for i, value in enumerate(result.values):
            run = result.first_run + i
            outcomes.append(RunOutcome(run, value, run in failed))
    outcomes.sort(key=lambda outcome: outcome.run)
    return outcomes[:max_runs], job.n_runs


def tasks_done(store: Store, job_id: str) -> int:
    """How many tasks of a job have written their result file."""
    paths = store.paths(job_id)
    n_tasks = read_job_record(store, job_id).n_tasks
    return len(JobPaths.task_indexes(store.listdir(paths.tasks), RESULT_SUFFIX, n_tasks))


# -- the life of a job as rx_exec runs it -------------------------------------------------


def load_engine(context: RxComputeContext) -> None:
    """Import the engine of ``context`` now.

    For callers that submit later from another thread, possibly while the
    interpreter exits: an engine's first import can register exit hooks
    (``concurrent.futures`` does), which Python refuses once it is exiting.
    """
    if context.engine is not None:
        get_engine(context.engine)


def prepare_job(context: RxComputeContext, function: Callable[..., Any], runs: list[dict[str, Any]],
                task_chunk_size: int | None, continue_on_failure: bool, console_output: bool | None,
                auto_cleanup: bool | None, expires_after: Any,
                rng_seed: int | None = None) -> tuple[Payload, dict[str, Any]]:
    """The payload and the ``job.json`` options of a job, the context's settings filling in
    what the caller left as None (revoscalepy's rule for ``console_output``/``auto_cleanup``);
    ``rng_seed`` (validated) goes into both."""
    console = getattr(context, "console_output", False) if console_output is None else console_output
    cleanup = getattr(context, "auto_cleanup", True) if auto_cleanup is None else auto_cleanup
    expiry = getattr(context, "expires_after", None) if expires_after is None else expires_after
    expiry = to_timedelta(expiry, "expires_after") if expiry is not None else None
    if context.engine is None:
        raise ValueError(f"{context.kind} runs in the calling process and keeps no jobs")
    chunk = choose_chunk_size(len(runs), get_engine(context.engine).parallelism(context), task_chunk_size)
    payload = Payload(function, runs, chunk, bool(continue_on_failure), rng_seed=rng_seed)
    options = {"continue_on_failure": bool(continue_on_failure), "console_output": bool(console),
               "auto_cleanup": bool(cleanup), "task_chunk_size": chunk, "wait": context.waits,
               "expires_after": format_duration(expiry) if expiry is not None else None,
               "rng_seed": rng_seed}
    return payload, options


def collect_results(store: Store, job_id: str, console_output: bool | None = None,
                    auto_cleanup: bool | None = None,
                    show: Callable[[str], None] | None = None) -> Results:
    """Read a finished job's results whole, then remove the job or mark it retrieved.

    ``console_output``/``auto_cleanup`` default to the job's own options;
    ``show`` receives the console output when it is to be shown.  The job is
    removed only after the complete read, under its lock: a crash before
    leaves it intact and un-retrieved, so nothing is lost.
    """
    with store.lock(job_id):
        options = read_job_record(store, job_id).options
        results = read_results(store, job_id)
        console = options.get("console_output", False) if console_output is None else console_output
        cleanup = options.get("auto_cleanup", True) if auto_cleanup is None else auto_cleanup
        if console and show is not None:
            show(read_output(store, job_id))
        _settle_locked(store, job_id, cleanup)
    return results


def removes_when_collected(store: Store, job_id: str) -> bool:
    """Whether the job is removed once its results are read (its ``auto_cleanup``), else
    marked retrieved (see :func:`settle_read_job`)."""
    return bool(read_job_record(store, job_id).options.get("auto_cleanup", True))


def settle_read_job(store: Store, job_id: str, remove: bool,
                    defer: Callable[[Callable[[], object]], object] | None = None) -> None:
    """A job whose outcome the caller has read whole: remove it, or mark it retrieved.

    For callers that read the results before deciding they were delivered
    (an :class:`rxjobs.Executor` future hands its value over only when
    ``result()`` is called).  A job already gone is no error.

    With ``defer``, a removal is cut in two: the job is detached under its
    lock (from then on it reads as missing to every reader), and the rest,
    making that durable and deleting its files, is handed to ``defer`` (a
    thread the interpreter waits for at its exit), for a caller that needs
    the job gone from view but not yet off the disk.  If the process dies
    before that, the next cleanup finishes it from the trash.
    """
    with store.lock(job_id):
        if not remove or defer is None:
            if remove or store.job_entries(job_id) is not None:
                _settle_locked(store, job_id, remove)
            return
        try:
            token = store.detach_job(job_id, durable=False)
        except JobNotFoundError:
            return  # another cleanup removed it after our read
    defer(lambda: store.delete_detached(token, make_durable=True))


def _settle_locked(store: Store, job_id: str, remove: bool) -> None:
    if remove:
        try:
            store.remove_job(job_id)
        except JobNotFoundError:
            pass  # another cleanup removed it after our read
    else:
        mark_retrieved(store, job_id)


def landed_tasks(store: Store, job_id: str, n_tasks: int) -> list[int]:
    """The tasks of a job whose result file is there now, in task order."""
    return JobPaths.task_indexes(store.listdir(store.paths(job_id).tasks), RESULT_SUFFIX, n_tasks)


def task_output(store: Store, job_id: str, task: int) -> str | None:
    """The console output of one task (None until the task has written it)."""
    try:
        return store.read_bytes(store.paths(job_id).output(task)).decode(errors="replace")
    except FileNotFoundError:
        return None


def task_outcomes(store: Store, job_id: str, task: int) -> list[RunOutcome]:
    """The run outcomes of one task whose result file is there, in run order."""
    result = load_task_result(store, job_id, task)
    failed = set(result.failed)
    return [RunOutcome(result.first_run + i, value, result.first_run + i in failed)
            for i, value in enumerate(result.values)]



def wait_with_callback(store: Store, job_id: str, callback: Callable[[Any], Any] | None,
                       watch: Callable[[RxRemoteJobStatus], None] | None = None) -> None:
    """Wait until the job ends, calling ``callback`` on each run's value as its task lands,
    and ``watch`` with the job's state at each look (a progress display)."""
    seen: set[int] = set()
    n_tasks = read_job_record(store, job_id).n_tasks
    paths = store.paths(job_id)

    def check() -> RxRemoteJobStatus | None:
        if callback is not None:
            for task in JobPaths.task_indexes(store.listdir(paths.tasks), RESULT_SUFFIX, n_tasks):
                if task in seen:
                    continue
                seen.add(task)
                for value in load_task_result(store, job_id, task).values:
                    callback(value)
        status = job_status(store, job_id).status
        if watch is not None:
            watch(status)
        return status if status.is_terminal() or status is RxRemoteJobStatus.MISSING else None

    with job_sleep(store, job_id) as sleep:
        poll(check, first_delay=0.02, max_delay=0.5, sleep=sleep)
    if callback is not None and job_status(store, job_id).status is RxRemoteJobStatus.FINISHED:
        check()  # tasks that landed between the last look and the end


def first_run_error(store: Store, job_id: str) -> BaseException | None:
    """The exception of the first run that raised (for a waiting rx_exec to re-raise), if any."""
    try:
        n_tasks = read_job_record(store, job_id).n_tasks
    except Exception:
        return None
    names = store.listdir(store.paths(job_id).tasks)
    for task in JobPaths.task_indexes(names, RESULT_SUFFIX, n_tasks):
        try:
            result = load_task_result(store, job_id, task)
        except Exception:
            continue
        for offset, value in enumerate(result.values):
            if result.first_run + offset in result.failed and isinstance(value, BaseException):
                return value
    return None



# -- cancel ------------------------------------------------------------------------------


def cancel_job(store: Store, job_id: str) -> bool:
    """Stop a queued or running job and delete its payload and results.

    ``job.json``, ``status.json`` and the console output are kept, so status
    and output still answer; cleanup then removes the job without force.
    Returns False if the job had already ended (nothing to cancel).

    Raises
    ------
    EngineRefusedError
        The scheduler refused to stop it (``scancel`` denied): it is marked
        canceled in the share dir but still runs there; its payload and
        results are kept.
    """
    status = job_status(store, job_id).status
    if status is RxRemoteJobStatus.MISSING:
        raise JobNotFoundError(f"job {job_id} not found in share dir {store.url}")
    owner = foreign_owner(store, job_id)
    if owner is not None:
        raise PermissionError(f"job {job_id} is owned by uid {owner}, not by you: only its owner "
                              "can cancel it (an operator runs rxjobs as that user)")
    if status.is_terminal():
        return False
    with store.lock(job_id):
        return _cancel_locked(store, job_id)


def _cancel_locked(store: Store, job_id: str) -> bool:
    status = job_status(store, job_id).status  # again, now that no cleanup can interleave
    if status is RxRemoteJobStatus.MISSING or status.is_terminal():
        return False
    paths = store.paths(job_id)
    mark_canceled(store, job_id)
    stopped = stop_on_engine(store, job_id)
    # Once the driver's processes are gone, the kernel lets go of their log's lock
    # a moment later.
    drop_driver_log(store, job_id, salvage=True, wait=2.0 if stopped else 0.0)
    store.remove_file(paths.payload)
    for name in store.listdir(paths.tasks):
        if name.endswith(".result.pkl"):
            store.remove_file(f"{paths.tasks}/{name}")
    return True


def stop_on_engine(store: Store, job_id: str) -> bool:
    """Ask the job's engine to stop it (best effort); True if something was stopped.

    Only a job of the caller's own is stopped: its handle is untrusted input.

    Raises
    ------
    EngineRefusedError
        The scheduler refused (a handle naming another user's Slurm job).
    """
    if foreign_owner(store, job_id) is not None:
        return False
    try:
        engine = read_engine_record(store, job_id)
        return bool(get_engine(engine.engine).cancel(engine.handle))
    except EngineRefusedError:
        raise  # the scheduler said no: the caller must not say "canceled"
    except (FileNotFoundError, ValueError, OSError):
        return False


def drop_driver_log(store: Store, job_id: str, salvage: bool, wait: float = 0.0) -> bool:
    """Remove the log a dead driver of the job left in the runtime dir; True if there was one.

    Only drivers of jobs on object stores keep such a log (see
    :mod:`rxjobs.runtime`); a driver that ends copies it into ``driver.log``
    and removes it itself, but one that was killed cannot.  With ``salvage``
    (cancel), what it says is copied into the job's ``driver.log`` first.  A log
    still held by a live driver is left to it, after up to ``wait`` seconds.
    """
    if store.os_path(store.paths(job_id).driver_log) is not None:
        return False  # its driver wrote the job's driver.log itself, and left no copy

    def take() -> tuple[bytes | None] | None:
        """(the log's content, or None if there is none); None while a driver holds it."""
        try:
            data = take_driver_log(job_id)
            if data is None and is_held(driver_log_file(job_id)):
                return None
            return (data,)
        except OSError:
            return (None,)

    taken = poll(take, timeout=wait, first_delay=0.01, max_delay=0.2) if wait else take()
    data = taken[0] if taken is not None else None
    if data is None:
        return False
    if salvage and data.strip():
        try:
            store.write_atomic(store.paths(job_id).driver_log, data)
        except (OSError, ValueError):
            pass  # the log is a convenience: the job's state does not depend on it
    return True


@contextmanager
def job_sleep(store: Store, job_id: str) -> Iterator[Callable[[float], None] | None]:
    """A sleep that returns early when the job may have ended, if its engine offers one.

    Engines may define ``sleeper(handle)`` (see :mod:`rxjobs.engines.base`):
    the local engine waits on its driver's exit, so a waiting caller sees a
    short job end at once rather than at its next poll.  A sleeper that waits
    on a descriptor (``fileno()``) also wakes when ``status.json`` or the
    ``canceled`` marker lands in a job directory on a local filesystem
    (:mod:`rxjobs.dirwatch`): the record is written before the driver's exit.
    Yields None for a plain sleep; a waiter re-checks the status after every
    sleep either way.  What the sleeper holds (a pidfd, a socket) is released on exit.
    """
    sleeper = None
    try:
        if foreign_owner(store, job_id) is None:
            engine = read_engine_record(store, job_id)
            make = getattr(get_engine(engine.engine), "sleeper", None)
            sleeper = make(engine.handle) if make is not None else None
            if sleeper is not None and callable(getattr(sleeper, "fileno", None)):
                sleeper = _watching(store, job_id, sleeper)
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError):
        sleeper = None
    try:
        yield sleeper
    finally:
        close = getattr(sleeper, "close", None)
        if close is not None:
            close()


def _watching(store: Store, job_id: str, sleeper: Any) -> Any:
    """``sleeper``, also woken by the job's end record landing (if it can be watched)."""
    paths = store.paths(job_id)
    directory = store.os_path(paths.dir)
    names = [os.path.basename(path) for path in (paths.status_json, paths.canceled)]
    watch = NameWatch.open(directory, names) if directory is not None else None
    return WatchingSleeper(sleeper, watch) if watch is not None else sleeper
