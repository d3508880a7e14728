"""Disk use of a share dir: per job, per state, the largest jobs, and what cleanup would free.

:func:`disk_usage` surveys the share dir once (see
:func:`rxjobs.retention.survey_jobs`) and returns a :class:`UsageReport`,
which ``rxjobs du`` prints (``--json``: :meth:`UsageReport.to_json`) and any
other view can reuse.  Nothing is removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .cleanup import Action
from .retention import RetentionPolicy, SurveyedJob, select_jobs, survey_jobs
from .status import RxRemoteJobStatus
from .store import Store
from .times import utc_now


@dataclass(frozen=True, slots=True)  # slots: a report holds one per job (100,000 in a big share dir)
class JobUsage:
    """One job's disk use, and what a cleanup without force would do to it."""

    job_id: str
    state: str
    files: int
    bytes: int
    removable: bool  # a cleanup without force would remove it now
    kept_because: str  # why it is kept, in a word ("" if removable)
    reason: str  # the cleanup rules' reason, in words
    expired: bool

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "state": self.state, "files": self.files, "bytes": self.bytes,
                "cleanup": "remove" if self.removable else "keep", "kept_because": self.kept_because,
                "reason": self.reason, "expired": self.expired}


@dataclass
class StateUsage:
    """The jobs, files and bytes of the jobs in one state."""

    jobs: int = 0
    files: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, int]:
        return {"jobs": self.jobs, "files": self.files, "bytes": self.bytes}


@dataclass(frozen=True)
class PolicyEstimate:
    """How many jobs, bytes and files a cleanup policy would remove now."""

    policy: str  # the policy, as the command that applies it (``cleanup --all --force``)
    jobs: int
    bytes: int
    files: int

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "jobs": self.jobs, "bytes": self.bytes, "files": self.files}


@dataclass
class UsageReport:
    """The disk use of a share dir, as ``rxjobs du`` shows it.

    Parameters
    ----------
    share_dir
        The share dir's URL.
    jobs
        Every job, oldest first.
    largest
        The largest jobs, largest first.
    policies
        What each cleanup policy would free now.
    """

    share_dir: str
    jobs: list[JobUsage] = field(default_factory=list)
    largest: list[JobUsage] = field(default_factory=list)
    policies: list[PolicyEstimate] = field(default_factory=list)

    @property
    def files(self) -> int:
        return sum(job.files for job in self.jobs)

    @property
    def bytes(self) -> int:
        return sum(job.bytes for job in self.jobs)

    @property
    def freeable_bytes(self) -> int:
        """What a cleanup without force would free now."""
        return sum(job.bytes for job in self.jobs if job.removable)

    @property
    def kept_bytes_by_reason(self) -> dict[str, int]:
        """The bytes a cleanup without force would keep, by why (in the order first met)."""
        kept: dict[str, int] = {}
        for job in self.jobs:
            if not job.removable:
                kept[job.kept_because] = kept.get(job.kept_because, 0) + job.bytes
        return kept

    @property
    def kept_bytes(self) -> int:
        return sum(job.bytes for job in self.jobs if not job.removable)

    @property
    def by_state(self) -> dict[str, StateUsage]:
        """Jobs, files and bytes per state (in the order first met)."""
        states: dict[str, StateUsage] = {}
        for job in self.jobs:
            sums = states.setdefault(job.state, StateUsage())
            sums.jobs += 1
            sums.files += job.files
            sums.bytes += job.bytes
        return states

    def _repr_html_(self) -> str:
        """The report as a notebook shows it: totals, bytes per state and kept by reason, largest jobs."""
        from .displays import UsageView, usage_html

        def view(job: JobUsage) -> UsageView:
            return UsageView(job.job_id, job.state, job.files, job.bytes,
                             "" if job.removable else job.kept_because)
        return usage_html(self.share_dir, [view(j) for j in self.jobs], [view(j) for j in self.largest])

    def to_json(self, lazy: bool = False) -> dict[str, Any]:
        """The JSON of ``rxjobs du --json``.

        With ``lazy``, ``jobs`` is an iterator that makes each job's object as
        it is taken: a printer that writes them one by one never holds them
        all (100,000 dicts of a big share dir).
        """
        rows = (job.to_json() for job in self.jobs)
        return {
            "share_dir": self.share_dir,
            "jobs": rows if lazy else list(rows),
            "totals": {
                "jobs": len(self.jobs),
                "files": self.files,
                "bytes": self.bytes,
                "freeable_bytes": self.freeable_bytes,
                "kept_bytes": self.kept_bytes,
                "kept_bytes_by_reason": self.kept_bytes_by_reason,
            },
            "by_state": {state: sums.to_json() for state, sums in self.by_state.items()},
            "largest": [job.to_json() for job in self.largest],
            "policies": [estimate.to_json() for estimate in self.policies],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageReport:
        """The report :meth:`to_json` gave (e.g. sent back by a sweep's child process).

        Raises
        ------
        ValueError
            ``data`` is not such a report.
        """
        def job(row: dict[str, Any]) -> JobUsage:
            return JobUsage(row["job_id"], row["state"], row["files"], row["bytes"],
                            row["cleanup"] == "remove", row["kept_because"], row["reason"], row["expired"])

        try:
            return cls(data["share_dir"], [job(row) for row in data["jobs"]],
                       [job(row) for row in data["largest"]],
                       [PolicyEstimate(**estimate) for estimate in data["policies"]])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a usage report: {exc}") from None


def kept_because(job: SurveyedJob) -> str:
    """Why a cleanup without force keeps ``job``, in a word or two."""
    if job.foreign:
        return "other user"
    return {"finished": "un-retrieved", "running": "running",
            "queued": "running",  # counted with running: both are kept until canceled
            }.get(job.status.value, job.status.value)


def job_usage(job: SurveyedJob) -> JobUsage:
    """A surveyed job's disk use and what a cleanup without force would do to it."""
    decision = job.decision(force=False)
    removable = decision.action in (Action.REMOVE, Action.CANCEL_AND_REMOVE)
    return JobUsage(job.job_id, job.status.value, job.files, job.bytes, removable,
                    "" if removable else kept_because(job), decision.reason, job.expired)


def estimate(name: str, surveyed: Sequence[SurveyedJob], policy: RetentionPolicy,
             now: datetime) -> PolicyEstimate:
    """How many jobs and bytes ``policy`` would remove now (pure: no I/O)."""
    by_id = {job.job_id: job for job in surveyed}
    chosen = [by_id[job_id] for job_id in select_jobs(surveyed, policy, now).job_ids]
    gone = [job for job in chosen if job.removable(policy.force)]
    return PolicyEstimate(name, len(gone), sum(job.bytes for job in gone), sum(job.files for job in gone))


def usage_report(share_dir: str, surveyed: Sequence[SurveyedJob], policy: RetentionPolicy | None = None,
                 top: int = 10, now: datetime | None = None) -> UsageReport:
    """The report of a survey (pure: no I/O).

    Parameters
    ----------
    share_dir
        The share dir's URL, as the report names it.
    surveyed
        The jobs of the share dir (see :func:`~rxjobs.retention.survey_jobs`);
        jobs found missing (removed while surveyed) are left out.
    policy
        A policy to estimate besides the cleanup rules alone, with
        ``--force``, and the expired jobs (none if None or empty).
    top
        How many of the largest jobs to name.
    now
        The moment ages and expiry are judged at (default: now).
    """
    now = now or utc_now()
    present = [job for job in surveyed if job.status is not RxRemoteJobStatus.MISSING]
    rows = [job_usage(job) for job in present]
    largest = sorted(rows, key=lambda r: (-r.bytes, r.job_id))[:top]
    policies = [estimate("cleanup --all", present, RetentionPolicy(), now),
                estimate("cleanup --all --force", present, RetentionPolicy(force=True), now),
                estimate("expired jobs", [j for j in present if j.expired], RetentionPolicy(), now)]
    if policy is not None and not policy.is_empty():
        policies.append(estimate(f"cleanup {policy.describe()}", present, policy, now))
    return UsageReport(share_dir, rows, largest, policies)


def disk_usage(store: Store, policy: RetentionPolicy | None = None, top: int = 10,
               now: datetime | None = None) -> UsageReport:
    """Survey a share dir and report its disk use (see :func:`usage_report`); removes nothing."""
    now = now or utc_now()
    return usage_report(store.url, survey_jobs(store, now, sizes=True), policy, top, now)
