"""Retention: which jobs of a share dir a policy hands to cleanup.

A :class:`RetentionPolicy` (``rxjobs cleanup --older-than 30d --max-total-size
50G --keep-last 10``, or the same keys in a TOML file) picks jobs; the cleanup
rules (:func:`rxjobs.cleanup.decide_cleanup`) still decide, job by job,
whether a picked job may go.  The picking is :func:`select_jobs`, a pure
function of a survey of the share dir, tested by a table;
:func:`survey_jobs` does the I/O of that survey.

What a policy picks:

- ``states`` and ``keep_last`` restrict everything: only jobs in those states
  are considered, and the ``keep_last`` newest jobs are never picked;
- with neither ``older_than`` nor ``max_total_size``, every job considered is
  picked (``rxjobs cleanup --all``);
- otherwise a job is picked when it is older than ``older_than``, or expired
  (its own ``expires_after`` has passed since it ended), or — oldest first,
  among the jobs the rules would remove — while the share dir's total is
  still above ``max_total_size`` once the jobs picked so far are gone.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from . import jobs
from .cleanup import (
    Action,
    CleanupEntry,
    CleanupOutcome,
    CleanupReport,
    Decision,
    decide_cleanup,
    iter_cleanup,
)
from .durations import format_duration, format_size, parse_size, to_timedelta
from .ids import job_id_time
from .status import RxRemoteJobStatus
from .store import JobSnapshot, Store
from .times import parse_timestamp, time_ago, utc_now

POLICY_KEYS = ("older_than", "max_total_size", "keep_last", "states", "force")


@dataclass(frozen=True)
class RetentionPolicy:
    """Which jobs a retention run hands to cleanup (see the module docstring).

    Parameters
    ----------
    older_than
        Pick jobs submitted longer ago than this.
    max_total_size
        Pick the oldest jobs the rules would remove until the share dir's
        total is at most this many bytes.
    keep_last
        Never pick the ``keep_last`` newest jobs.
    states
        Consider only jobs in these states.
    force
        Cleanup with force: un-retrieved results and running jobs go too.
    """

    older_than: timedelta | None = None
    max_total_size: int | None = None
    keep_last: int | None = None
    states: frozenset[RxRemoteJobStatus] | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if self.keep_last is not None and (not isinstance(self.keep_last, int)
                                           or isinstance(self.keep_last, bool) or self.keep_last < 0):
            raise ValueError(f"keep_last must be a whole number of jobs, not {self.keep_last!r}")
        if self.max_total_size is not None and self.max_total_size < 0:
            raise ValueError("max_total_size cannot be negative")
        if self.older_than is not None:
            time_ago(self.older_than)  # ValueError for a duration reaching back before year 1

    @property
    def has_rules(self) -> bool:
        """Whether the policy picks by age or size (else it picks every job considered)."""
        return self.older_than is not None or self.max_total_size is not None

    def is_empty(self) -> bool:
        return self == RetentionPolicy()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "policy") -> RetentionPolicy:
        """Build a policy from its keys, as in a TOML file; ValueError names a bad key."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: a policy is a table of keys ({', '.join(POLICY_KEYS)})")
        data = dict(data)
        if "state" in data and "states" not in data:
            data["states"] = data.pop("state")
        unknown = sorted(set(data) - set(POLICY_KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; "
                             f"a policy has: {', '.join(POLICY_KEYS)}")
        try:
            states = data.get("states")
            if isinstance(states, str):
                states = [states]
            keep_last = data.get("keep_last")
            force = data.get("force", False)
            if not isinstance(force, bool):
                raise ValueError(f"force must be true or false, not {force!r}")
            if keep_last is not None and (not isinstance(keep_last, int) or isinstance(keep_last, bool)):
                raise ValueError(f"keep_last must be a whole number, not {keep_last!r}")
            return cls(
                older_than=(to_timedelta(data["older_than"], "older_than")
                            if data.get("older_than") is not None else None),
                max_total_size=(parse_size(data["max_total_size"])
                                if data.get("max_total_size") is not None else None),
                keep_last=keep_last,
                states=(frozenset(RxRemoteJobStatus.parse(s) for s in states)
                        if states is not None else None),
                force=force,
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RetentionPolicy:
        """The policy :meth:`to_json` gave (its ``max_total_size`` in bytes); ValueError if not one.

        Not :meth:`from_mapping`: that reads what a person wrote, where a size
        without a unit is refused.
        """
        size = data.get("max_total_size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ValueError(f"policy: max_total_size must be a number of bytes, not {size!r}")
        keys = {k: v for k, v in data.items() if v is not None and k != "max_total_size"}
        return replace(cls.from_mapping(keys), max_total_size=size)

    def merged(self, **overrides: Any) -> RetentionPolicy:
        """This policy with the given keys replaced (None leaves a key as it is)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def describe(self) -> str:
        """The policy as the ``rxjobs cleanup`` flags that say it."""
        parts = []
        if self.older_than is not None:
            parts.append(f"--older-than {format_duration(self.older_than)}")
        if self.max_total_size is not None:
            parts.append(f"--max-total-size {format_size(self.max_total_size)}")
        if self.keep_last is not None:
            parts.append(f"--keep-last {self.keep_last}")
        for state in sorted(s.value for s in self.states or ()):
            parts.append(f"--state {state}")
        if self.force:
            parts.append("--force")
        return " ".join(parts) or "--all"

    def to_json(self) -> dict[str, Any]:
        return {
            "older_than": format_duration(self.older_than) if self.older_than is not None else None,
            "max_total_size": self.max_total_size,
            "keep_last": self.keep_last,
            "states": sorted(s.value for s in self.states) if self.states is not None else None,
            "force": self.force,
        }


def load_policy(path: str | os.PathLike[str]) -> RetentionPolicy:
    """Read a retention policy from a TOML file (the keys of :class:`RetentionPolicy`).

    Raises
    ------
    ValueError
        The file is not TOML, or has an unknown key or a bad value.
    OSError
        The file cannot be read.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{os.fspath(path)} is not valid TOML: {exc}") from None
    return RetentionPolicy.from_mapping(data, source=os.fspath(path))


# -- the survey (I/O) and the selection (pure) ----------------------------------------------


_FOREIGN = Decision(Action.KEEP, "owned by another user: never removed", warn=True)
# The rules are a pure function of a few values that most jobs share (a report of
# 100,000 jobs asks them half a million times): each distinct case is decided once.
_decide = functools.lru_cache(maxsize=4096)(decide_cleanup)


@dataclass(frozen=True, slots=True)  # slots: a survey of a big share dir holds 100,000
class SurveyedJob:
    """What a retention run knows about one job of the share dir."""

    job_id: str
    submitted: datetime | None
    status: RxRemoteJobStatus
    reason: str = ""
    retrieved: bool = False
    expired: bool = False
    foreign: bool = False  # owned by another user: never removed
    files: int = 0
    bytes: int = 0
    is_job: bool = True  # False: debris, never removed
    newer_format: bool = False  # a job this rxjobs cannot read: never removed

    def decision(self, force: bool) -> Decision:
        """What cleanup would do to this job (the rules of docs/design.md#cleanup-rules)."""
        if self.foreign:
            return _FOREIGN
        return _decide(self.status, self.retrieved, force, self.reason, self.expired, self.is_job,
                       self.newer_format)

    def removable(self, force: bool) -> bool:
        return self.decision(force).action in (Action.REMOVE, Action.CANCEL_AND_REMOVE)

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "submitted": self.submitted.isoformat() if self.submitted else None,
                "status": self.status.value, "reason": self.reason, "retrieved": self.retrieved,
                "expired": self.expired, "foreign": self.foreign, "files": self.files, "bytes": self.bytes,
                "is_job": self.is_job, "newer_format": self.newer_format}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SurveyedJob:
        """The job :meth:`to_json` gave; ValueError if ``data`` is not one."""
        try:
            return cls(data["job_id"], parse_timestamp(data["submitted"]),
                       RxRemoteJobStatus.parse(data["status"]), data["reason"], bool(data["retrieved"]),
                       bool(data["expired"]), bool(data["foreign"]), int(data["files"]), int(data["bytes"]),
                       bool(data.get("is_job", True)), bool(data.get("newer_format", False)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a surveyed job: {exc}") from None


@dataclass(frozen=True)
class Pick:
    """A job the policy hands to cleanup, and the rule that picked it."""

    job_id: str
    why: str


@dataclass
class Selection:
    """What a policy picks from a share dir, oldest job first."""

    picks: list[Pick] = field(default_factory=list)
    protected: list[str] = field(default_factory=list)  # the keep_last newest jobs
    total_bytes: int = 0  # every job of the share dir
    bytes_after: int = 0  # once the picked jobs the rules allow are removed
    max_total_size: int | None = None

    @property
    def job_ids(self) -> list[str]:
        return [p.job_id for p in self.picks]

    @property
    def still_over(self) -> bool:
        """The share dir stays above ``max_total_size`` even after this cleanup."""
        return self.max_total_size is not None and self.bytes_after > self.max_total_size


def _age_key(job: SurveyedJob) -> tuple[datetime, str]:
    return (job.submitted or datetime.min.replace(tzinfo=timezone.utc), job.job_id)


def select_jobs(surveyed: Sequence[SurveyedJob], policy: RetentionPolicy, now: datetime) -> Selection:
    """Pick the jobs ``policy`` hands to cleanup (pure: no I/O).

    Parameters
    ----------
    surveyed
        Every job of the share dir (see :func:`survey_jobs`).
    policy
        The retention policy.
    now
        The moment ``older_than`` counts back from.

    Returns
    -------
    Selection
        The picked jobs, oldest first, each with the rule that picked it.
    """
    present = sorted((j for j in surveyed if j.status is not RxRemoteJobStatus.MISSING), key=_age_key)
    total = sum(j.bytes for j in present)
    protected: list[str] = []
    if policy.keep_last:
        protected = [j.job_id for j in present[-policy.keep_last:]]
    shielded = set(protected)
    considered = [j for j in present if j.job_id not in shielded
                  and (policy.states is None or j.status in policy.states)]
    picked: dict[str, str] = {}
    if not policy.has_rules:
        for job in considered:
            picked[job.job_id] = "expired" if job.expired else (
                "in state " + job.status.value if policy.states is not None else "every job")
    else:
        older_than = policy.older_than
        cutoff = time_ago(older_than, now) if older_than is not None else None
        for job in considered:
            if job.expired:
                picked[job.job_id] = "expired"
            elif older_than is not None and cutoff is not None and job.submitted is not None \
                    and job.submitted <= cutoff:
                picked[job.job_id] = f"older than {format_duration(older_than)}"
    after = total - sum(j.bytes for j in considered
                        if j.job_id in picked and j.removable(policy.force))
    if policy.max_total_size is not None:
        for job in considered:
            if after <= policy.max_total_size:
                break
            if job.job_id not in picked and job.removable(policy.force):
                picked[job.job_id] = f"share dir over {policy.max_total_size} bytes"
                after -= job.bytes
    picks = [Pick(j.job_id, picked[j.job_id]) for j in considered if j.job_id in picked]
    return Selection(picks, protected, total, after, policy.max_total_size)


def survey_jobs(store: Store, now: datetime | None = None, sizes: bool = True,
                threads: int = 8, job_ids: Sequence[str] | None = None) -> list[SurveyedJob]:
    """Look at every job of a share dir once: state, markers, expiry and (if asked) size.

    Every job is visited once through :meth:`Store.snapshots` (the store
    chooses how: one job after another on a local disk, in bulk on an object
    store).  A job whose state follows from what that visit read (it ended,
    was canceled, is broken or another user's) is derived at once; the jobs
    still running, whose engines must be asked, are looked at afterwards in
    up to ``threads`` threads (a probe may wait on the network).  One job's
    problem never stops the survey: it is ``undetermined``, with the error.
    ``job_ids`` limits the survey to those jobs (a job not there is ``missing``).
    """
    now = now or utc_now()
    me = os.geteuid()
    ids = store.list_job_ids() if job_ids is None else list(job_ids)
    found: list[SurveyedJob | None] = []
    running: list[tuple[int, str, JobSnapshot]] = []
    done = 0
    looks = store.snapshots(ids, sizes=sizes)
    while done < len(ids):
        try:
            for job_id, snapshot in looks:
                done += 1
                if snapshot is None:
                    found.append(SurveyedJob(job_id, job_id_time(job_id), RxRemoteJobStatus.MISSING))
                    continue
                try:
                    seen = jobs.settled_look(store, job_id, snapshot)
                    if seen is None:
                        running.append((len(found), job_id, snapshot))
                    found.append(None if seen is None else _surveyed(store, job_id, snapshot, seen, now, me))
                except Exception as exc:
                    found.append(_undetermined(job_id, exc))
        except Exception as exc:  # the visit of ids[done] failed: the others go on
            found.append(_undetermined(ids[done], exc))
            done += 1
            looks = store.snapshots(ids[done:], sizes=sizes)

    def look(job: tuple[int, str, JobSnapshot]) -> SurveyedJob:
        _, job_id, snapshot = job
        try:
            return _surveyed(store, job_id, snapshot, jobs.look_at_job(store, job_id, snapshot), now, me)
        except Exception as exc:
            return _undetermined(job_id, exc)

    if running:
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(running)))) as pool:
            for (i, _, _), job in zip(running, pool.map(look, running), strict=True):
                found[i] = job
    return [job for job in found if job is not None]


def _undetermined(job_id: str, exc: Exception) -> SurveyedJob:
    return SurveyedJob(job_id, job_id_time(job_id), RxRemoteJobStatus.UNDETERMINED,
                       f"{type(exc).__name__}: {exc}")


def _surveyed(store: Store, job_id: str, snapshot: JobSnapshot, seen: jobs.JobLook, now: datetime,
              me: int) -> SurveyedJob:
    """What a survey keeps of a job it looked at."""
    submitted = job_id_time(job_id)
    if submitted is None and seen.record is not None:
        submitted = seen.record.created_time
    usage = snapshot.usage
    return SurveyedJob(
        job_id, submitted, seen.status, seen.derived.reason,
        retrieved=seen.status is RxRemoteJobStatus.FINISHED and seen.retrieved,
        expired=jobs.is_expired(store, seen, now),
        foreign=snapshot.owner is not None and snapshot.owner != me,
        files=usage.files if usage else 0, bytes=usage.bytes if usage else 0,
        is_job=seen.is_job, newer_format=seen.newer_format)


# -- applying a policy to one share dir ------------------------------------------------------

# Entries handed to ``on_entries`` at a time: a caller sees progress as jobs are done.
POLICY_BATCH = 64


@dataclass
class PolicyRun:
    """What applying a retention policy to one share dir did (or, on a dry run, would do).

    Parameters
    ----------
    share_dir
        The share dir's URL.
    policy
        The policy applied.
    dry_run
        Nothing was removed; ``report`` says what would be.
    report
        One entry per picked job.
    picks
        The picked jobs and the rule that picked each (None: every job, no survey).
    protected
        The ``keep_last`` newest jobs, never picked.
    total_bytes
        The share dir's size before (when it was measured).
    """

    share_dir: str
    policy: RetentionPolicy
    dry_run: bool
    report: CleanupReport
    picks: list[Pick] | None = None
    protected: list[str] = field(default_factory=list)
    total_bytes: int | None = None

    @property
    def bytes_after(self) -> int | None:
        """The share dir's size once the removed (or would-be removed) jobs are gone."""
        if self.total_bytes is None:
            return None
        gone = (CleanupOutcome.REMOVED, CleanupOutcome.WOULD_REMOVE)
        return self.total_bytes - sum(e.bytes for e in self.report if e.outcome in gone)

    @property
    def still_over(self) -> bool:
        """The share dir is (or would stay) above the policy's ``max_total_size``."""
        after = self.bytes_after
        return self.policy.max_total_size is not None and after is not None \
            and after > self.policy.max_total_size

    @property
    def why(self) -> dict[str, str]:
        """The rule that picked each job, by id."""
        return {p.job_id: p.why for p in self.picks or ()}

    def to_json(self) -> dict[str, Any]:
        return {"share_dir": self.share_dir, "policy": self.policy.to_json(), "dry_run": self.dry_run,
                "report": self.report.to_json(),
                "picked": [{"job_id": p.job_id, "why": p.why} for p in self.picks]
                if self.picks is not None else None,
                "protected": self.protected, "total_bytes": self.total_bytes}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PolicyRun:
        """The run :meth:`to_json` gave; ValueError if ``data`` is not one."""
        try:
            picked = data["picked"]
            return cls(data["share_dir"], RetentionPolicy.from_json(data["policy"]),
                       bool(data["dry_run"]), CleanupReport.from_json(data["report"]),
                       [Pick(p["job_id"], p["why"]) for p in picked] if picked is not None else None,
                       list(data["protected"]), data["total_bytes"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a policy run: {exc}") from None


def _dry_entry(url: str, job: SurveyedJob, force: bool) -> CleanupEntry:
    """What a dry run says of a surveyed job: what cleanup would do, and the bytes it frees."""
    decision = job.decision(force)
    removable = decision.action in (Action.REMOVE, Action.CANCEL_AND_REMOVE)
    return CleanupEntry(job.job_id, url, job.status.value,
                        CleanupOutcome.WOULD_REMOVE if removable else CleanupOutcome.KEPT, decision.reason,
                        files=job.files if removable else 0, bytes=job.bytes if removable else 0,
                        expired=job.expired)


def apply_policy(store: Store, policy: RetentionPolicy, dry_run: bool = False,
                 now: datetime | None = None, selection: Selection | None = None,
                 on_start: Callable[[PolicyRun, int], None] | None = None,
                 on_entries: Callable[[list[CleanupEntry]], None] | None = None,
                 helper_processes: bool = True) -> PolicyRun:
    """Apply a retention policy to a share dir: survey, pick, then clean up what was picked.

    The cleanup rules still decide each picked job (un-retrieved results and
    running jobs stay without ``policy.force``).

    Parameters
    ----------
    store
        The share dir.
    policy
        What to pick (no rule at all: every job, handed to the rules without a survey).
    dry_run
        Remove nothing; say what would go and the bytes that frees.
    now
        The moment ages and expiry are judged at (default: now).
    selection
        Jobs already picked (by a caller that surveyed several share dirs and
        chose among them all); the policy then only gives ``force``.
    on_start
        Called once, before any job is cleaned up, with the run so far (what was
        picked and why, an empty report) and the number of jobs to hand to cleanup.
    on_entries
        Called with each batch of entries as cleanup reports them (progress).
    helper_processes
        Whether a big cleanup may delete in helper processes (see
        :func:`~rxjobs.cleanup.cleanup_jobs`); a sweep's child acting as a
        share dir's owner starts none.
    """
    now = now or utc_now()
    surveyed: list[SurveyedJob] = []
    if selection is None and not policy.merged(force=False).is_empty():
        surveyed = survey_jobs(store, now, sizes=policy.max_total_size is not None or dry_run)
        selection = select_jobs(surveyed, policy, now)
    if selection is None:
        targets = store.list_job_ids()
        run = PolicyRun(store.url, policy, dry_run, CleanupReport())
    else:
        targets = selection.job_ids
        measured = policy.max_total_size is not None or bool(selection.total_bytes)
        run = PolicyRun(store.url, policy, dry_run, CleanupReport(), list(selection.picks),
                        list(selection.protected), selection.total_bytes if measured else None)
    if on_start is not None:
        on_start(run, len(targets))
    if dry_run and surveyed:
        by_id = {job.job_id: job for job in surveyed}
        entries = [_dry_entry(store.url, by_id[job_id], policy.force) for job_id in targets]
        run.report.entries.extend(entries)
        if on_entries is not None:
            on_entries(entries)
        return run
    # One cleanup of every target, its entries handed on a batch at a time as they are
    # done: a cleanup per batch drained the deletions in flight at the end of each
    # batch, and never had enough jobs for the helper processes (docs/benchmarks.md).
    batch: list[CleanupEntry] = []
    for entry in iter_cleanup([(store, job_id) for job_id in targets], force=policy.force,
                              verbose=False, dry_run=dry_run, now=now,
                              helper_processes=helper_processes):
        run.report.entries.append(entry)
        batch.append(entry)
        if len(batch) == POLICY_BATCH or len(run.report.entries) == len(targets):
            if on_entries is not None:
                on_entries(batch)
            batch = []
    return run


def preview_cleanup(store: Store, policy: RetentionPolicy, now: datetime | None = None,
                    surveyed: Sequence[SurveyedJob] | None = None) -> tuple[Selection, CleanupReport]:
    """What a cleanup by ``policy`` would do now, removing nothing (a dry run).

    Parameters
    ----------
    store
        The share dir.
    policy
        The retention policy (an empty one: every job, as ``cleanup --all``).
    now
        The moment ages and expiry are judged at (default: now).
    surveyed
        A survey of the share dir already made (default: one is made, with sizes).

    Returns
    -------
    tuple
        The selection, and a report with an entry per picked job, oldest first:
        ``would remove`` with the files and bytes that frees, or ``kept`` with
        the cleanup rules' reason.  A cleanup that follows re-checks every rule.
    """
    now = now or utc_now()
    if surveyed is None:
        surveyed = survey_jobs(store, now, sizes=True)
    selection = select_jobs(surveyed, policy, now)
    by_id = {job.job_id: job for job in surveyed}
    report = CleanupReport([_dry_entry(store.url, by_id[job_id], policy.force)
                            for job_id in selection.job_ids])
    return selection, report
