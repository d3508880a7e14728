"""The records of a job's directory, typed, each with one reader and one writer.

``job.json`` (written at submit, then once more with the engine's handle),
``status.json`` (the driver's record), ``engine.json`` (the engine's handle of
a job written in format 1) and the ``canceled`` and ``retrieved`` markers
are read and written only here, as the dataclasses below with
``to_json``/``from_json``: the on-disk format is a contract (docs/format.md),
versioned by ``format``.  Everything read from a share dir is hostile, so
``from_json`` checks every field's type and range, and a record that is not
what rxjobs writes raises ValueError, never anything else.

Engines write a job's status through :func:`write_status`; they never import
the job services.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .errors import JobNotFoundError, NewerFormatError
from .ids import validate_job_id
from .status import Record
from .store import JobSnapshot, Store, loads_record
from .times import parse_timestamp, utc_now_iso
from .version import __version__

FORMAT_VERSION = 2
# Format 1 kept the engine's handle in engine.json; format 2 keeps it in job.json.
HANDLE_IN_JOB_RECORD = 2
# How a version is spelled in job.json's "rxjobs" (anything else is not quoted back).
_VERSION_RE = re.compile(r"[0-9][0-9A-Za-z.+-]{0,40}")
# More runs than any job could hold in a share dir: a record claiming more is hostile.
MAX_RUNS = 1 << 40


def _int_in_range(data: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key} must be a whole number from {low} to {high}, not {value!r}")
    return value


def _text(data: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {type(value).__name__}")
    return value


def _mapping(data: Mapping[str, Any], key: str, required: bool = False) -> dict[str, Any]:
    value = data[key] if required else data.get(key) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a JSON object, not {type(value).__name__}")
    return value


@dataclass(frozen=True)
class JobRecord:
    """The content of ``job.json``, written at submit and again once the engine took the job.

    ``engine`` and ``handle`` are empty until the engine accepted the job
    (format 2); a format-1 job keeps them in ``engine.json`` instead.
    """

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
    rxjobs: str = ""  # the version of rxjobs that wrote it (missing in records of rxjobs before 0.2.0)
    engine: str = ""
    handle: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        if data["handle"] is None:  # not accepted by an engine yet: no such fields
            del data["engine"], data["handle"]
        return data

    @classmethod
    def from_json(cls, data: Any) -> JobRecord:
        """Parse ``job.json``; ValueError when it is not a job record."""
        if not isinstance(data, dict):
            raise ValueError("job.json is not a JSON object")
        # Before any other field: a newer format may have changed them.
        _check_format(data)
        try:
            fields: dict[str, Any] = dict(
                job_id=validate_job_id(data["job_id"]),
                created=_text(data, "created"),
                user=_text(data, "user", ""),
                context=_mapping(data, "context", required=True),
                n_runs=_int_in_range(data, "n_runs", 0, MAX_RUNS),
                n_tasks=_int_in_range(data, "n_tasks", 0, MAX_RUNS),
                options=_mapping(data, "options"),
                submitter=_mapping(data, "submitter"),
                function=_text(data, "function", ""),
                format=_int_in_range(data, "format", 1, 1 << 31) if "format" in data else 1,
                rxjobs=_text(data, "rxjobs", ""),
                engine=_text(data, "engine", ""),
                handle=_mapping(data, "handle", required=True) if "handle" in data else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"job.json is not a valid job record: {exc!r}") from None
        if fields["n_tasks"] > max(fields["n_runs"], 1):
            raise ValueError("job.json is not a valid job record: more tasks than runs")
        if (fields["handle"] is None) != (fields["engine"] == ""):
            raise ValueError("job.json is not a valid job record: an engine without a handle, or "
                             "a handle without an engine")
        # Not cls(**fields): a frozen dataclass's __init__ sets each field through
        # object.__setattr__, which took half of the time a listing spent per record.
        record = object.__new__(cls)
        record.__dict__.update(fields)
        return record

    @property
    def created_time(self) -> datetime | None:
        """``created`` as an aware UTC datetime (None if unreadable)."""
        return parse_timestamp(self.created)


def _check_format(data: dict[str, Any]) -> None:
    """NewerFormatError naming the rxjobs a ``job.json`` needs, when its format is newer than ours."""
    fmt = data.get("format")
    if isinstance(fmt, bool) or not isinstance(fmt, int) or not FORMAT_VERSION < fmt <= 1 << 31:
        return  # ours, or not a format at all (said by the field checks)
    writer = data.get("rxjobs")
    needs = (f"rxjobs {writer} or newer" if isinstance(writer, str) and _VERSION_RE.fullmatch(writer)
             else f"an rxjobs that reads format {fmt}")
    job = data.get("job_id")
    which = f"job {job}" if isinstance(job, str) and len(job) < 100 and job.isprintable() else "this job"
    raise NewerFormatError(
        f"{which} has format {fmt}, newer than rxjobs {__version__} reads (format {FORMAT_VERSION}): "
        f"it needs {needs}; upgrade rxjobs (pip install -U rxjobs)")


def read_job_record(store: Store, job_id: str, listed: bool = False,
                    snapshot: JobSnapshot | None = None) -> JobRecord:
    """Read ``job.json``: the one read a listing makes per job.

    Parameters
    ----------
    store, job_id
        The share dir and the job.
    listed
        ``job_id`` was just returned by ``store.list_job_ids()`` (not validated again).
    snapshot
        A look at the job directory that read ``job.json`` already
        (:meth:`~rxjobs.store.Store.snapshot`): parsed from it, not read again.

    Raises
    ------
    JobNotFoundError
        The job is not there (never was, or removed).
    ValueError
        The directory is there but holds no valid record naming this id: it is
        no job (debris, which cleanup never removes; ``rxjobs doctor`` reports it).
    NewerFormatError
        A job of a newer format than this rxjobs reads (a ValueError too); the
        message names the rxjobs it needs.
    """
    paths = store.paths(job_id, validated=listed or snapshot is not None)
    try:
        if snapshot is not None:
            data = loads_record(snapshot.record("job.json"), paths.job_json)
        else:
            data = store.read_json(paths.job_json)
        try:
            record = JobRecord.from_json(data)
        except NewerFormatError:
            if data.get("job_id") != job_id:  # a newer job's record, copied or planted: no job
                raise ValueError(f"{paths.job_json} names another job: not a job "
                                 "(a copied or planted directory; see `rxjobs doctor`)") from None
            raise
    except FileNotFoundError:
        entries = snapshot.entries if snapshot is not None else store.job_entries(job_id)
        if entries is not None and "deleting" not in entries:
            raise ValueError(f"{paths.dir} has no job.json: not a job (an incomplete "
                             "submission, or debris; see `rxjobs doctor`)") from None
        raise JobNotFoundError(f"job {job_id} not found in share dir {store.url}") from None
    except PermissionError:
        raise  # not the caller's to read: said as such, not as a broken record
    except OSError as exc:  # a directory, a fifo...: not a job record
        raise ValueError(f"job.json of job {job_id} cannot be read: {exc}") from None
    if record.job_id != job_id:
        raise ValueError(f"{paths.job_json} names job {record.job_id!r}, not {job_id!r}: not a job "
                         "(a copied or planted directory; see `rxjobs doctor`)")
    return record


def write_job_record(store: Store, record: JobRecord) -> None:
    """Write ``job.json`` (at submit; again by :func:`write_engine_record`)."""
    store.write_json(store.paths(record.job_id).job_json, record.to_json())


@dataclass(frozen=True)
class StatusRecord:
    """What the driver's ``status.json`` says (``state`` ABSENT or CORRUPT when it says nothing usable)."""

    state: Record
    reason: str = ""
    started: str | None = None
    updated: str | None = None
    ended: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    failed_runs: int | None = None  # of a finished job: how many runs raised (None: not recorded)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"state": self.state.value, "reason": self.reason,
                                "started": self.started, "updated": self.updated}
        if self.ended is not None:
            data["ended"] = self.ended
        if self.details:
            data["details"] = self.details
        if self.failed_runs is not None:
            data["failed_runs"] = self.failed_runs
        return data

    @classmethod
    def from_json(cls, data: Any) -> StatusRecord:
        """Parse ``status.json``; a record that is not a driver's gives state CORRUPT."""
        try:
            state = Record(data["state"])
            if state not in (Record.RUNNING, Record.FINISHED, Record.FAILED):
                raise ValueError("only a driver's three states are ever written")
            reason = data.get("reason") or ""
            details = data.get("details") or {}
            times = [data.get(k) for k in ("started", "updated", "ended")]
            failed_runs = data.get("failed_runs")  # absent from records of older rxjobs
            if not isinstance(reason, str) or not isinstance(details, dict) or any(
                    t is not None and not isinstance(t, str) for t in times):
                raise ValueError("fields of the wrong type")
            if failed_runs is not None and (type(failed_runs) is not int or not 0 <= failed_runs <= MAX_RUNS):
                raise ValueError("failed_runs is not a count of runs")
        except (KeyError, TypeError, ValueError, AttributeError):
            return CORRUPT_STATUS
        # As JobRecord.from_json: not cls(...), whose frozen __init__ sets each field
        # through object.__setattr__ (a survey reads one of these per job).
        record = object.__new__(cls)
        record.__dict__.update(state=state, reason=reason, started=times[0], updated=times[1],
                               ended=times[2], details=details, failed_runs=failed_runs)
        return record

    @property
    def is_final(self) -> bool:
        return self.state in (Record.FINISHED, Record.FAILED)


ABSENT_STATUS = StatusRecord(Record.ABSENT)
CORRUPT_STATUS = StatusRecord(Record.CORRUPT)


def read_status_record(store: Store, job_id: str, snapshot: JobSnapshot | None = None) -> StatusRecord:
    """What ``status.json`` says (ABSENT when there is none, CORRUPT when unreadable);
    parsed from ``snapshot`` when one read it already."""
    try:
        if snapshot is not None:
            data = loads_record(snapshot.record("status.json"), "status.json")
        else:
            data = store.read_json(store.paths(job_id).status_json)
    except FileNotFoundError:
        return ABSENT_STATUS
    except (ValueError, OSError):  # corrupt, or not a readable file
        return CORRUPT_STATUS
    return StatusRecord.from_json(data)


def write_status(store: Store, job_id: str, state: Record, reason: str = "",
                 details: dict[str, Any] | None = None, failed_runs: int | None = None) -> bool:
    """Record the driver's view of the job; refuses to leave a terminal record.

    Only a job's driver calls this.  ``details`` are engine facts the driver
    learned (e.g. a Spark application id); they are kept in later records.
    ``failed_runs``: of a finished job run with ``continue_on_failure``, how
    many runs raised (their exceptions are in their result slots).
    Returns False when the record was already final (finished/failed) and so
    was left alone.
    """
    if state not in (Record.RUNNING, Record.FINISHED, Record.FAILED):
        raise ValueError(f"a driver records running, finished or failed, not {state.value}")
    path = store.paths(job_id).status_json
    current = read_status_record(store, job_id)
    if current.is_final:
        return False
    if current.state is Record.ABSENT and state is Record.RUNNING:
        # The first record is created exclusively: a task that saw no record must not
        # overwrite a FAILED record another task wrote meanwhile (Dask tasks race so).
        try:
            first = _next_status(current, state, reason, details, failed_runs)
            store.write_exclusive(path, _status_json(first))
            return True
        except FileExistsError:
            current = read_status_record(store, job_id)
            if current.is_final:
                return False
    store.write_atomic(path, _status_json(_next_status(current, state, reason, details, failed_runs)))
    return True


def _next_status(current: StatusRecord, state: Record, reason: str,
                 details: dict[str, Any] | None, failed_runs: int | None = None) -> StatusRecord:
    now = utc_now_iso()
    return StatusRecord(state, reason, started=current.started or now, updated=now,
                        ended=now if state in (Record.FINISHED, Record.FAILED) else None,
                        details={**current.details, **(details or {})}, failed_runs=failed_runs)


def _status_json(record: StatusRecord) -> bytes:
    return json.dumps(record.to_json(), indent=1, sort_keys=True).encode()


@dataclass(frozen=True)
class EngineRecord:
    """The content of ``engine.json``: which engine runs the job, and its handle.

    The handle is whatever the engine returned from ``submit``; it is
    untrusted input like everything in a share dir, and only ever handed back
    to that engine for a job that belongs to the caller.
    """

    engine: str
    handle: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"engine": self.engine, "handle": self.handle}

    @classmethod
    def from_json(cls, data: Any) -> EngineRecord:
        if not isinstance(data, dict) or not isinstance(data.get("engine"), str) \
                or not isinstance(data.get("handle"), dict):
            raise ValueError("engine.json is not an engine record ({engine, handle})")
        return cls(data["engine"], data["handle"])


def engine_record_of(store: Store, record: JobRecord) -> EngineRecord:
    """The engine and handle of a job whose ``job.json`` is ``record``.

    Format 2 keeps them in ``job.json`` itself; format 1 in ``engine.json``.

    Raises
    ------
    FileNotFoundError
        No engine has accepted the job yet (or its format-1 ``engine.json`` is gone).
    ValueError
        ``engine.json`` is not an engine record.
    """
    if record.format >= HANDLE_IN_JOB_RECORD:
        if record.handle is None:
            raise FileNotFoundError(f"job {record.job_id} has no engine handle yet")
        return EngineRecord(record.engine, record.handle)
    return EngineRecord.from_json(store.read_json(store.paths(record.job_id).engine_json))


def read_engine_record(store: Store, job_id: str) -> EngineRecord:
    """Read the job's engine and handle (see :func:`engine_record_of`); FileNotFoundError if
    there is none yet, ValueError if the records are not valid."""
    try:
        record = read_job_record(store, job_id)
    except JobNotFoundError as exc:
        raise FileNotFoundError(str(exc)) from None
    return engine_record_of(store, record)


def write_engine_record(store: Store, record: JobRecord, engine: EngineRecord) -> JobRecord:
    """Record the handle the engine returned for the job: ``job.json`` again, whole and
    atomically, by the process that wrote it at submit (its one writer).  A format-1
    record (only ever met in tests of old share dirs) gets its ``engine.json``."""
    if record.format < HANDLE_IN_JOB_RECORD:
        store.write_json(store.paths(record.job_id).engine_json, engine.to_json())
        return record
    accepted = replace(record, engine=engine.engine, handle=engine.handle)
    write_job_record(store, accepted)
    return accepted


def mark_retrieved(store: Store, job_id: str) -> None:
    """Note that the results were returned, so cleanup may remove the job without force."""
    store.write_json(store.paths(job_id).retrieved, {"retrieved": utc_now_iso()})


def mark_canceled(store: Store, job_id: str) -> None:
    """Write the ``canceled`` marker (by cancel, before the engine is asked to stop)."""
    store.write_json(store.paths(job_id).canceled, {"canceled": utc_now_iso()})


def canceled_time(store: Store, job_id: str) -> datetime | None:
    """When the job was canceled, from its marker (None if absent or unreadable)."""
    try:
        marker = store.read_json(store.paths(job_id).canceled)
    except (OSError, ValueError):
        return None
    return parse_timestamp(marker.get("canceled")) if isinstance(marker, dict) else None
