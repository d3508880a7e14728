"""Job states and the pure derivation of a job's state from its artifacts.

A job's state is never stored as a single truth that could go stale: it is
*derived*, each time it is asked for, from the files in the job directory plus
one probe of the engine (docs/design.md#job-states).  :func:`derive_status` is that
derivation as a pure function of :class:`JobFacts`; gathering the facts (I/O)
happens in :mod:`rxjobs.jobs`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RxRemoteJobStatus(str, enum.Enum):
    """The state of a job, with RevoScaleR's lowercase strings as values."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"
    UNDETERMINED = "undetermined"
    MISSING = "missing"

    def is_terminal(self) -> bool:
        """Return True when the job can no longer change on its own."""
        return self in _TERMINAL

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: RxRemoteJobStatus | str) -> RxRemoteJobStatus:
        """Accept a member or its name/value in any case (``"finished"``, ``"FINISHED"``)."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown job state {value!r}; use one of: {names}") from None


_TERMINAL = frozenset(
    {RxRemoteJobStatus.FINISHED, RxRemoteJobStatus.FAILED, RxRemoteJobStatus.CANCELED}
)


class Probe(str, enum.Enum):
    """What an engine says about a job's handle."""

    ALIVE = "alive"  # the engine holds the job; it may not have started running yet
    STARTED = "started"  # the engine holds the job and it is running
    GONE = "gone"  # the engine no longer knows the job (driver exited, keys forgotten)
    UNREACHABLE = "unreachable"  # the engine cannot be asked (scheduler down, other host)


class Record(str, enum.Enum):
    """What the driver's ``status.json`` says."""

    ABSENT = "absent"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CORRUPT = "corrupt"


@dataclass(frozen=True)
class JobFacts:
    """Everything the state of one job is derived from.

    Attributes
    ----------
    present
        The job directory exists and is not being deleted.
    job_record_ok
        ``job.json`` exists and parses.
    canceled
        The ``canceled`` marker exists.
    record
        What ``status.json`` says.
    record_reason
        The reason stored with a failed record, or with a running one that
        says why the job runs again (``requeued by Slurm after checkpoint (run
        0, attempt 2)``).
    probe
        The engine's answer about the job's handle, or None when
        there is no handle yet (submission in progress or interrupted).
    submitter_alive
        Only used when there is no handle: is the submitting process still
        alive?  None when that cannot be told (another host).
    foreign_owner
        The uid owning the job when it is not the caller: its engine handle is
        untrusted input, so the engine was not asked (None: the caller's job).
    newer_format
        ``job.json`` is of a newer format than this rxjobs reads: the error
        that says which rxjobs the job needs ("" otherwise).
    failed_runs, n_runs
        Of a finished job: how many runs raised, as its ``status.json`` says
        (None in records of older rxjobs), and how many runs it has.
    """

    present: bool
    job_record_ok: bool = True
    canceled: bool = False
    record: Record = Record.ABSENT
    record_reason: str = ""
    probe: Probe | None = None
    submitter_alive: bool | None = None
    foreign_owner: int | None = None
    newer_format: str = ""
    failed_runs: int | None = None
    n_runs: int | None = None


def finished_reason(failed_runs: int | None, n_runs: int | None) -> str:
    """The reason of a finished job: "finished", or "finished, 3 of 9 runs failed" when runs
    raised (``continue_on_failure``); ``failed_runs`` None when its record does not say."""
    if not failed_runs:
        return "finished"
    runs = "run" if failed_runs == 1 and n_runs in (None, 1) else "runs"
    if n_runs is None or n_runs < failed_runs:
        return f"finished, {failed_runs} {runs} failed"
    return f"finished, {failed_runs} of {n_runs} {runs} failed"


@dataclass(frozen=True)
class Derived:
    """A derived state and the reason for it, in words for the user."""

    status: RxRemoteJobStatus
    reason: str


def derive_status(facts: JobFacts) -> Derived:
    """Derive a job's state from its facts, following docs/design.md#job-states in order.

    Parameters
    ----------
    facts
        The observed artifacts and the engine's answer.

    Returns
    -------
    Derived
        The state and a one-line reason.
    """
    S = RxRemoteJobStatus
    if not facts.present:
        return Derived(S.MISSING, "no job directory")
    if not facts.job_record_ok and facts.newer_format:
        # A job all the same (listed, kept): only a newer rxjobs can say more.
        return Derived(S.UNDETERMINED, facts.newer_format)
    if not facts.job_record_ok:
        # Without a record naming it, a directory is no job (debris): never guess its state.
        return Derived(S.UNDETERMINED, "no readable job.json naming it: not a job")
    if facts.canceled:
        return Derived(S.CANCELED, "canceled")
    if facts.record is Record.FINISHED:
        return Derived(S.FINISHED, finished_reason(facts.failed_runs, facts.n_runs))
    if facts.record is Record.FAILED:
        return Derived(S.FAILED, facts.record_reason or "failed")
    if facts.record is Record.CORRUPT:
        return Derived(S.UNDETERMINED, "status.json is unreadable")
    if facts.foreign_owner is not None:
        return Derived(S.UNDETERMINED, f"owned by uid {facts.foreign_owner}, not by you: its engine "
                                       "is not asked (run as that user; see docs/security.md)")
    if facts.probe is None:
        if facts.submitter_alive is True:
            return Derived(S.QUEUED, "being submitted")
        if facts.submitter_alive is False:
            return Derived(S.FAILED, "submission did not complete (submitter exited)")
        return Derived(S.UNDETERMINED, "no engine handle and the submitter cannot be checked")
    running = (facts.record is Record.RUNNING and facts.record_reason) or "running"
    if facts.probe is Probe.STARTED:
        return Derived(S.RUNNING, running)
    if facts.probe is Probe.ALIVE:
        if facts.record is Record.RUNNING:
            return Derived(S.RUNNING, running)
        return Derived(S.QUEUED, "queued")
    if facts.probe is Probe.GONE:
        return Derived(S.FAILED, "driver lost: the engine no longer runs the job")
    return Derived(S.UNDETERMINED, "the engine cannot be reached")
