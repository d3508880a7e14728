"""A job's life in the share dir: submit, status, output, results, cancel.

These functions work on ``(store, job_id)`` and know no engine by name: the
engine of a job is looked up from its own ``job.json``.  The ``rx_*``
functions of :mod:`rxjobs.api` are a thin facade over them.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import cloudpickle
import psutil

from .contexts import RxComputeContext
from .durations import to_timedelta
from .engines import SubmittedJob, get_engine
from .errors import (
    IncompleteResultsError,
    JobCanceledError,
    JobFailedError,
    JobNotFinishedError,
    JobNotFoundError,
)
from .runner import Payload, load_task_result
from .status import Derived, JobFacts, Probe, Record, RxRemoteJobStatus, derive_status
from .store import FORMAT_VERSION, Store, new_job_id, utc_now_iso


@dataclass(frozen=True)
class JobRecord:
    """The content of ``job.json``, written once at submit."""

    job_id: str
    created: str
    user: str
    context: dict[str, Any]
    n_runs: int
    n_tasks: int
    options: dict[str, Any]
    submitter: dict[str, Any]
    function: str = ""
    format: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Any) -> JobRecord:
        """Parse ``job.json``; ValueError when it is not a job record."""
        if not isinstance(data, dict):
            raise ValueError("job.json is not a JSON object")
        try:
            fields = dict(
                job_id=str(data["job_id"]),
                created=str(data["created"]),
                user=str(data.get("user", "")),
                context=dict(data["context"]),
                n_runs=int(data["n_runs"]),
                n_tasks=int(data["n_tasks"]),
                options=dict(data.get("options") or {}),
                submitter=dict(data.get("submitter") or {}),
                function=str(data.get("function", "")),
                format=int(data.get("format", FORMAT_VERSION)),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # Overflow: int(Infinity)
            raise ValueError(f"job.json is not a valid job record: {exc!r}") from None
        if fields["format"] > FORMAT_VERSION:
            raise ValueError(
                f"job.json has format {fields['format']}, newer than this rxjobs understands "
                f"({FORMAT_VERSION}); upgrade rxjobs"
            )
        # Not cls(**fields): a frozen dataclass's __init__ sets each field through
        # object.__setattr__, which took half of the time a listing spent per record.
        record = object.__new__(cls)
        record.__dict__.update(fields)
        return record

    def compute_context(self) -> RxComputeContext:
        return RxComputeContext.from_dict(self.context)


def read_job_record(store: Store, job_id: str, listed: bool = False) -> JobRecord:
    """Read ``job.json``.

    Parameters
    ----------
    store, job_id
        The share dir and the job.
    listed
        ``job_id`` was just returned by ``store.list_job_ids()`` (not validated again).

    Raises
    ------
    JobNotFoundError
        The job is not there (never was, or removed).
    ValueError
        The job is there but its record is missing, unreadable or invalid.
    """
    try:
        return JobRecord.from_json(store.read_job_json(job_id, listed=listed))
    except FileNotFoundError:
        entries = store.job_entries(job_id)
        if entries is not None and "deleting" not in entries:
            raise ValueError(f"job {job_id} has no job.json (incomplete submission)") from None
        raise JobNotFoundError(f"job {job_id} not found in share dir {store.url}") from None
    except OSError as exc:  # a directory, a fifo, unreadable: not a job record
        raise ValueError(f"job.json of job {job_id} cannot be read: {exc}") from None


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
        )
        store.write_json(paths.job_json, record.to_json())
        store.write_atomic(paths.payload, data)
        handle = engine.submit(SubmittedJob(store.url, job_id, context, payload.n_tasks,
                                            share_dir_options=store.options or None))
        store.write_json(paths.engine_json, {"engine": context.engine, "handle": handle})
    except BaseException:
        store.discard_new_job(job_id)  # nothing is left behind, even on a full disk
        raise
    return job_id


# -- status ------------------------------------------------------------------------------


def read_status_record(store: Store, job_id: str) -> tuple[Record, dict[str, Any]]:
    """What ``status.json`` says: (record, its content)."""
    try:
        data = store.read_json(store.paths(job_id).status_json)
    except FileNotFoundError:
        return Record.ABSENT, {}
    except (ValueError, OSError):  # corrupt, or not a readable file
        return Record.CORRUPT, {}
    try:
        record = Record(data["state"])
    except (KeyError, TypeError, ValueError):
        return Record.CORRUPT, {}
    if record not in (Record.RUNNING, Record.FINISHED, Record.FAILED):
        return Record.CORRUPT, {}  # only a driver's three states are ever written
    return record, data


def write_status(store: Store, job_id: str, state: Record, reason: str = "",
                 details: dict[str, Any] | None = None) -> bool:
    """Record the driver's view of the job; refuses to leave a terminal record.

    Only a job's driver calls this.  ``details`` are engine facts the driver
    learned (e.g. a Spark application id); they are kept in later records.
    Returns False when the record was already final (finished/failed) and so
    was left alone.
    """
    current, data = read_status_record(store, job_id)
    if current in (Record.FINISHED, Record.FAILED):
        return False
    now = utc_now_iso()
    record = {"state": state.value, "reason": reason, "updated": now,
              "started": data.get("started") or now}
    kept = data.get("details") if isinstance(data.get("details"), dict) else {}
    if kept or details:
        record["details"] = {**kept, **(details or {})}
    if state in (Record.FINISHED, Record.FAILED):
        record["ended"] = now
    store.write_json(store.paths(job_id).status_json, record)
    return True


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
    status_record: dict[str, Any] = field(default_factory=dict)
    entries: frozenset[str] = frozenset()

    @property
    def status(self) -> RxRemoteJobStatus:
        return self.derived.status

    @property
    def retrieved(self) -> bool:
        """The ``retrieved`` marker was there when the job was looked at."""
        return "retrieved" in self.entries


def _gather(store: Store, job_id: str) -> tuple[JobFacts, JobRecord | None, dict[str, Any],
                                                frozenset[str]]:
    paths = store.paths(job_id)
    # One look at the job directory's names gives presence and markers (one
    # listing request on an object store).
    entries = store.job_entries(job_id)
    if entries is None or "deleting" in entries:
        return JobFacts(present=False), None, {}, frozenset()
    canceled = "canceled" in entries
    record, data = read_status_record(store, job_id)
    try:
        job = read_job_record(store, job_id)
    except JobNotFoundError:
        return JobFacts(present=False), None, {}, frozenset()
    except ValueError:
        job = None
    facts = dict(present=True, job_record_ok=job is not None, canceled=canceled,
                 record=record, record_reason=str(data.get("reason", "")))
    if canceled or record in (Record.FINISHED, Record.FAILED, Record.CORRUPT) or job is None:
        return JobFacts(**facts), job, data, entries
    try:
        engine_record = store.read_json(paths.engine_json)
    except FileNotFoundError:
        return JobFacts(**facts, submitter_alive=_submitter_alive(job.submitter)), job, data, entries
    except ValueError:
        return JobFacts(**facts, probe=Probe.UNREACHABLE), job, data, entries
    try:
        probe = get_engine(engine_record["engine"]).probe(engine_record["handle"])
    except Exception:
        probe = Probe.UNREACHABLE
    return JobFacts(**facts, probe=probe), job, data, entries


def gather_facts(store: Store, job_id: str) -> JobFacts:
    """Read everything the state of a job is derived from, probing its engine once."""
    return _gather(store, job_id)[0]


def look_at_job(store: Store, job_id: str) -> JobLook:
    """Derive a job's state (DESIGN.md §2) and keep the records read on the way."""
    facts, record, data, entries = _gather(store, job_id)
    derived = derive_status(facts)
    if derived.status is RxRemoteJobStatus.FAILED and derived.reason.startswith(
        ("driver lost", "submission did not complete")
    ):
        # The driver may have written its final record and exited between our
        # reading status.json and probing it: look once more before saying lost.
        facts, record, data, entries = _gather(store, job_id)
        derived = derive_status(facts)
    return JobLook(derived, record, data, entries)


def job_status(store: Store, job_id: str) -> Derived:
    """The derived state of a job (DESIGN.md §2)."""
    return look_at_job(store, job_id).derived


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
    candidates = []
    if look.status is RxRemoteJobStatus.CANCELED and look.record is not None:
        try:
            marker = store.read_json(store.paths(look.record.job_id).canceled)
            candidates.append(marker.get("canceled") if isinstance(marker, dict) else None)
        except (OSError, ValueError):
            pass
    candidates += [look.status_record.get("ended"), look.status_record.get("updated")]
    if look.record is not None:
        candidates.append(look.record.created)
    for text in candidates:
        when = parse_utc(text)
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


def parse_utc(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


# -- output and results ------------------------------------------------------------------


def read_output(store: Store, job_id: str) -> str:
    """The console output of every task that has finished, in task order."""
    job = read_job_record(store, job_id)
    paths = store.paths(job_id)
    parts = []
    for task in range(job.n_tasks):
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


@dataclass
class Results:
    """A finished job's run values in run order, with the indexes of runs that raised."""

    values: list[Any]
    failed: list[int]


def _being_removed(store: Store, job_id: str) -> bool:
    entries = store.job_entries(job_id)
    return entries is None or "deleting" in entries


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
            if _being_removed(store, job_id):
                raise JobNotFoundError(
                    f"job {job_id} was removed from {store.url} while its results were read"
                ) from None
            raise IncompleteResultsError(
                f"job {job_id} is finished but the result of task {task} is missing; "
                "nothing was deleted"
            ) from None
        values.extend(result.values)
        failed.extend(result.failed)
    if not store.is_local and _being_removed(store, job_id):
        # Without atomic rename a removal deletes file by file: what was read may
        # mix files from before and during it, so it is never returned.
        raise JobNotFoundError(f"job {job_id} was removed from {store.url} while its results were read")
    if len(values) != job.n_runs:
        raise IncompleteResultsError(
            f"job {job_id} has {len(values)} results for {job.n_runs} runs; nothing was deleted"
        )
    return Results(values, failed)


def tasks_done(store: Store, job_id: str) -> int:
    """How many tasks of a job have written their result file."""
    paths = store.paths(job_id)
    present = set(store.listdir(paths.tasks))
    n_tasks = read_job_record(store, job_id).n_tasks
    return sum(1 for k in range(n_tasks) if paths.result(k).rsplit("/", 1)[-1] in present)


def mark_retrieved(store: Store, job_id: str) -> None:
    """Note that the results were returned, so cleanup may remove the job without force."""
    store.write_json(store.paths(job_id).retrieved, {"retrieved": utc_now_iso()})


def is_retrieved(store: Store, job_id: str) -> bool:
    return store.exists(store.paths(job_id).retrieved)


# -- cancel ------------------------------------------------------------------------------


def cancel_job(store: Store, job_id: str) -> bool:
    """Stop a queued or running job and delete its payload and results.

    ``job.json``, ``status.json`` and the console output are kept, so status
    and output still answer; cleanup then removes the job without force.
    Returns False if the job had already ended (nothing to cancel).
    """
    status = job_status(store, job_id).status
    if status is RxRemoteJobStatus.MISSING:
        raise JobNotFoundError(f"job {job_id} not found in share dir {store.url}")
    if status.is_terminal():
        return False
    with store.lock(job_id):
        return _cancel_locked(store, job_id)


def _cancel_locked(store: Store, job_id: str) -> bool:
    status = job_status(store, job_id).status  # again, now that no cleanup can interleave
    if status is RxRemoteJobStatus.MISSING or status.is_terminal():
        return False
    paths = store.paths(job_id)
    store.write_json(paths.canceled, {"canceled": utc_now_iso()})
    stop_on_engine(store, job_id)
    store.remove_file(paths.payload)
    for name in store.listdir(paths.tasks):
        if name.endswith(".result.pkl"):
            store.remove_file(f"{paths.tasks}/{name}")
    return True


def stop_on_engine(store: Store, job_id: str) -> bool:
    """Ask the job's engine to stop it (best effort); True if something was stopped."""
    try:
        engine_record = store.read_json(store.paths(job_id).engine_json)
        return bool(get_engine(engine_record["engine"]).cancel(engine_record["handle"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return False



@contextmanager
def job_sleep(store: Store, job_id: str) -> Iterator[Callable[[float], None] | None]:
    """A sleep that returns early when the job may have ended, if its engine offers one.

    Engines may define ``sleeper(handle)`` (see :mod:`rxjobs.engines.base`):
    the local engine waits on its driver's exit, so a waiting caller sees a
    short job end at once rather than at its next poll.  Yields None for a
    plain sleep; a waiter re-checks the status after every sleep either way.
    What the sleeper holds (a pidfd, a socket) is released on exit.
    """
    sleeper = None
    try:
        engine_record = store.read_json(store.paths(job_id).engine_json)
        make = getattr(get_engine(engine_record["engine"]), "sleeper", None)
        sleeper = make(engine_record["handle"]) if make is not None else None
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError):
        sleeper = None
    try:
        yield sleeper
    finally:
        close = getattr(sleeper, "close", None)
        if close is not None:
            close()
