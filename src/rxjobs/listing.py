"""Listing: the jobs of a share dir that pass a listing's filters, as typed rows.

The one listing behind ``rx_get_jobs``, ``rxjobs list`` and any other view of
a share dir.  A job belongs to the share dir it is found in; among those, a
compute context's jobs are the ones whose stored context
:meth:`~rxjobs.contexts.RxComputeContext.matches` it.

A listing reads each job's ``job.json`` once, and no more than its filters
need: a submit-time window is chosen among the directory's names (job ids
are time-ordered), a job's state is derived only when asked for, and each
distinct stored context is rebuilt and matched once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

from .contexts import RxComputeContext, RxLocalSeq
from .errors import JobNotFoundError, NewerFormatError
from .ids import job_id_time, validate_job_id
from .records import JobRecord, read_job_record
from .status import RxRemoteJobStatus, finished_reason
from .store import JobSnapshot, Store, Usage
from .times import to_utc


class ListedJob(NamedTuple):
    """One job a listing found.

    A named tuple rather than a dataclass: a big listing makes tens of
    thousands, and a tuple is the cheapest typed row to build.
    """

    job_id: str
    #: The context the job was submitted with; when its ``job.json`` is
    #: unreadable or names an engine not installed here, the context listed
    #: with (``RxLocalSeq()`` if none), so that the job can still be cleaned up.
    context: RxComputeContext
    #: The fsspec storage options that reach the job (None: the filesystem's defaults).
    share_dir_options: dict[str, Any] | None
    #: When it was submitted (UTC); None if unknown or not asked for.
    submitted: datetime | None
    #: Its derived state; None if not asked for.
    status: RxRemoteJobStatus | None
    #: Its ``job.json``; None when that is no valid record.
    record: JobRecord | None
    #: Its files and bytes, when the listing was asked for sizes; else None.
    usage: Usage | None = None
    #: Of a finished job: how many runs raised (None if not recorded or not asked for).
    failed_runs: int | None = None


def stored_context(record: JobRecord) -> RxComputeContext | None:
    """The context a job was submitted with; None for an unknown kind or an engine
    not installed here (the job is still listed, probed and cleaned up)."""
    try:
        return RxComputeContext.from_dict(record.context)
    except (ValueError, TypeError, ImportError):
        return None


def submit_time(job_id: str, record: JobRecord | None) -> datetime | None:
    """When a job was submitted (UTC): from its time-ordered id, else its record's ``created``."""
    submitted = job_id_time(job_id)
    if submitted is None and record is not None:
        submitted = record.created_time
    return submitted


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    return to_utc(value)


def list_jobs(
    store: Store,
    context: RxComputeContext | None = None,
    exact_match: bool = False,
    start: datetime | None = None,
    end: datetime | None = None,
    states: Iterable[RxRemoteJobStatus | str] | None = None,
    need_status: bool = True,
    sizes: bool = False,
    job_ids: Iterable[str] | None = None,
) -> Iterator[ListedJob]:
    """The jobs of a share dir that pass the filters, oldest first.

    Parameters
    ----------
    store
        The share dir.
    context
        Only the jobs of this compute context (same engine address; see
        ``exact_match``); None: every job of the share dir.
    exact_match
        With ``context``: only jobs submitted with the same kind of context
        and the same settings (where the share dir is and how it is reached
        are never compared).  A job whose ``job.json`` is unreadable has no
        settings to compare and is left out.
    start, end
        Only jobs submitted in this window, edges included (a naive
        ``datetime`` is local time).
    states
        Only jobs in these states (members, or strings such as ``"finished"``).
    need_status
        Fill in every row's ``submitted`` and ``status``.  Without it they
        are worked out only where a filter needs them (else None), which
        spares each job its state's derivation.
    sizes
        Fill in every row's ``usage`` too.  A job whose state or size is
        needed is visited once (:meth:`~rxjobs.store.Store.snapshot`): its
        names, sizes and records come from that one visit.
    job_ids
        Look only at these jobs, in this order, instead of listing the
        share dir (each id is validated first).  A view that shows one page
        of a big share dir lists the ids by name (:meth:`Store.list_job_ids`),
        slices them, and derives the state of the page's jobs alone.

    Yields
    ------
    ListedJob
        A row per job.  A directory without a readable ``job.json`` naming
        it is no job (debris) and is left out, as is a job removed while the
        listing runs.  A job whose ``job.json`` is of a newer format is
        listed (not with ``exact_match``), ``undetermined``, without a record.
    """
    wanted = {RxRemoteJobStatus.parse(s) for s in states} if states is not None else None
    start, end = _utc(start, "start"), _utc(end, "end")
    windowed = start is not None or end is not None
    need_time = windowed or need_status
    need_state = wanted is not None or need_status
    # The same for every job of the listing: worked out once.
    options = store.options or None
    fallback: RxComputeContext = context or RxLocalSeq()
    # Without options of its own, the store is reached with those of the job's context.
    fallback_options = options if options is not None else fallback.job_share_dir_options()
    # Contexts repeat across jobs: rebuild and match each distinct one once, and
    # spare even the lookup when a job has the context of the job before it.
    verdicts: dict[str, tuple[RxComputeContext | None, bool, dict[str, Any] | None]] = {}
    last_context: dict[str, Any] | None = None
    last_verdict: tuple[RxComputeContext | None, bool, dict[str, Any] | None] = (None, True, None)
    # A list, not a generator: the store forks its size helper only for a known number of ids.
    ids = (store.list_job_ids(start, end) if job_ids is None
           else [validate_job_id(job_id) for job_id in job_ids])
    # A job is visited once (its names, records and sizes in one look) when its state
    # or size is needed, or when the store reads many jobs faster together.
    looks: Iterable[tuple[str, JobSnapshot | None]]
    if need_state or sizes:
        looks = store.snapshots(ids, sizes=sizes)
    elif store.reads_in_bulk:
        looks = store.snapshots(ids, records=("job.json",), sizes=False)
    else:
        looks = ((job_id, None) for job_id in ids)
    for job_id, snapshot in looks:
        try:
            if snapshot is None and (need_state or sizes or store.reads_in_bulk):
                continue  # removed while we listed
            record = read_job_record(store, job_id, listed=True, snapshot=snapshot)
        except NewerFormatError:
            # A job of a newer rxjobs (one sharing the share dir, say): listed under the
            # context asked for, undetermined, and every action on it says what it needs.
            if exact_match and context is not None:
                continue
            newer = _newer_job(store, job_id, snapshot, fallback, fallback_options, need_time, need_state)
            if newer is not None and _in_window(newer, start, end) and (
                    wanted is None or newer.status in wanted):
                yield newer
            continue
        except (JobNotFoundError, ValueError, PermissionError):
            # Removed while we listed, not a job (no job.json naming it: debris, which
            # `rxjobs doctor` reports), or made unreadable by its owner: not listed.
            continue
        submitted = None
        if need_time:
            submitted = submit_time(job_id, record)
            if windowed and (submitted is None or (start is not None and submitted < start)
                             or (end is not None and submitted > end)):
                continue
        if record.context != last_context:
            key = repr(record.context)
            verdict = verdicts.get(key)
            if verdict is None:
                ctx = stored_context(record)
                is_match = ctx is not None and (context is None or ctx.matches(context, exact_match))
                verdict = (ctx, is_match, options if options is not None or ctx is None
                           else ctx.job_share_dir_options())
                verdicts[key] = verdict
            last_context, last_verdict = record.context, verdict
        stored, matched, job_options = last_verdict
        if stored is None:
            # A context this rxjobs cannot rebuild (its engine is not installed here):
            # listed with the share dir's jobs so that it can be cleaned up.
            if exact_match and context is not None:
                continue
            job_context, job_options = fallback, fallback_options
        else:
            if not matched:
                continue
            job_context = stored
        status = None
        failed_runs = None
        if need_state:
            status, failed_runs = _look_at_job(store, job_id, snapshot, record)
            if wanted is not None and status not in wanted:
                continue
        yield ListedJob(job_id, job_context, job_options, submitted, status, record,
                        snapshot.usage if snapshot is not None else None, failed_runs)


def _look_at_job(store: Store, job_id: str, snapshot: JobSnapshot | None,
                 record: JobRecord | None = None) -> tuple[RxRemoteJobStatus, int | None]:
    """The job's state (:func:`rxjobs.jobs.look_at_job`), and how many of its runs failed
    when its ``status.json`` says (a finished job's).

    :mod:`rxjobs.jobs` (and with it the engines, psutil and cloudpickle) is
    imported at the first job looked at: ``rxjobs list`` on an empty share dir
    needs none of it, and its start-up is most of that command's time.
    """
    from . import jobs

    look = jobs.look_at_job(store, job_id, snapshot, record)
    return look.status, look.status_record.failed_runs


def _newer_job(store: Store, job_id: str, snapshot: JobSnapshot | None, context: RxComputeContext,
               options: dict[str, Any] | None, need_time: bool, need_state: bool) -> ListedJob | None:
    """The row of a job whose ``job.json`` is of a newer format (None: removed meanwhile)."""
    status = None
    if need_state:
        status, _ = _look_at_job(store, job_id, snapshot)
        if status is RxRemoteJobStatus.MISSING:
            return None
    return ListedJob(job_id, context, options, job_id_time(job_id) if need_time else None, status, None,
                     snapshot.usage if snapshot is not None else None)


def _in_window(job: ListedJob, start: datetime | None, end: datetime | None) -> bool:
    if start is None and end is None:
        return True
    return job.submitted is not None and (start is None or job.submitted >= start) and (
        end is None or job.submitted <= end)


def find_job(store: Store, job_id: str) -> ListedJob:
    """The job ``job_id`` of a share dir, with the context it was submitted with.

    Its ``submitted`` is filled in, its ``status`` is not (None).

    Raises
    ------
    ValueError
        ``job_id`` is not a valid job id (checked before the disk is touched).
    JobNotFoundError
        No such job in the share dir.
    """
    validate_job_id(job_id)
    record: JobRecord | None
    try:
        record = read_job_record(store, job_id)
    except ValueError:  # a job dir with a broken job.json is still a job to clean up
        record = None
    context = stored_context(record) if record is not None else None
    if context is None:
        context = RxLocalSeq()
    options = store.options or None
    submitted = submit_time(job_id, record)
    return ListedJob(job_id, context, options if options is not None else context.job_share_dir_options(),
                     submitted, None, record)


# -- what `rxjobs list` shows of a job -----------------------------------------------------


@dataclass(frozen=True, slots=True)  # slots: `rxjobs list` holds one per job until it prints
class JobSummary:
    """A job as a listing shows it: id, state, submit time, function, runs and size."""

    job_id: str
    status: RxRemoteJobStatus | None
    submitted: datetime | None
    function: str
    n_runs: int | None
    n_tasks: int | None
    files: int
    bytes: int
    failed_runs: int | None = None

    @property
    def state_text(self) -> str:
        """The state in words: "finished, 3 of 9 runs failed" for a partly failed job."""
        if self.status is RxRemoteJobStatus.FINISHED:
            return finished_reason(self.failed_runs, self.n_runs)
        return self.status.value if self.status is not None else "?"

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``rxjobs list --json``, one object per job."""
        return {
            "job_id": self.job_id,
            "state": self.status.value if self.status is not None else None,
            "submitted": self.submitted.astimezone(timezone.utc).isoformat() if self.submitted else None,
            "function": self.function,
            "n_runs": self.n_runs,
            "n_tasks": self.n_tasks,
            "files": self.files,
            "bytes": self.bytes,
            "failed_runs": self.failed_runs,
        }


def summarize(store: Store, job: ListedJob) -> JobSummary:
    """What a listing shows of ``job``: its record's function and counts, and its size now."""
    record = job.record
    usage = job.usage if job.usage is not None else store.usage(job.job_id)
    return JobSummary(
        job.job_id, job.status, job.submitted,
        function=record.function if record is not None else "",
        n_runs=record.n_runs if record is not None else None,
        n_tasks=record.n_tasks if record is not None else None,
        files=usage.files, bytes=usage.bytes, failed_runs=job.failed_runs,
    )
