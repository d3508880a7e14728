"""Cleanup plans: what a previewed cleanup covers, kept on the server until it is confirmed.

A preview of the page makes a :class:`Plan`: every job it covers, what the
cleanup rules decide for each and why, and a *fingerprint* of each job (the
values the rules decide on).  Confirming sends only the plan's id, so a
cleanup of 20,000 jobs is one small form, not one field per job.  Before
anything is removed the covered jobs are looked at again; if any of them
changed since the preview the plan is stale and nothing is removed
(:func:`changed_jobs`).  Otherwise exactly the plan's jobs are handed to
:func:`rxjobs.cleanup.cleanup_jobs`, which decides each one again under its
own locks, as the CLI does.  What it did is kept as a :class:`CleanupResult`,
which the result page shows on every reload without doing anything again.

Plans and results live in memory, in a :class:`PlanBook` that holds a bounded
number of each for a bounded time, and each belongs to one browser session:
another session is told there is no such plan.  The pure parts (fingerprints,
staleness, pages, the book's bounds) take no store and are tested by tables.
"""

from __future__ import annotations

import secrets
import shlex
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..cleanup import Action, CleanupEntry, CleanupOutcome
from ..retention import RetentionPolicy, SurveyedJob, select_jobs, survey_jobs
from ..store import Store
from ..times import utc_now
from . import views
from .views import Survey

PER_PAGE = 100
MAX_PLANS = 8
PLAN_SECONDS = 30 * 60
MAX_RESULTS = 16
RESULT_SECONDS = 60 * 60

Fingerprint = tuple[Any, ...]

_REMOVES = (Action.REMOVE, Action.CANCEL_AND_REMOVE)


# -- pure: one job of a plan ------------------------------------------------------------------


def fingerprint(job: SurveyedJob, force: bool) -> Fingerprint:
    """The values the cleanup rules decide ``job`` on, and their decision.

    Two looks at a job with equal fingerprints lead the rules to the same
    action: its state, whether its results were retrieved, whether it
    expired, whose it is, whether it is a job this rxjobs can read, and the
    action itself (which also depends on the state's reason).  Its size is
    left out: a running job that writes is not a changed plan.
    """
    return (job.status.value, job.retrieved, job.expired, job.foreign, job.is_job, job.newer_format,
            job.decision(force).action.value)


@dataclass(frozen=True, slots=True)
class PlanJob:
    """One job a plan covers: what the rules decide for it, and why.

    ``forced`` says what is lost when the job goes only because of force
    (empty when the rules alone remove it); ``force_removes`` whether
    ``cleanup --force`` would remove a kept job (never another user's job,
    debris or a job of a newer format).
    """

    job_id: str
    status: str
    remove: bool
    reason: str
    files: int
    bytes: int
    forced: str
    force_removes: bool
    fingerprint: Fingerprint
    picked_why: str = ""


def plan_job(job: SurveyedJob, force: bool, picked_why: str = "") -> PlanJob:
    """What a plan says of a surveyed job under ``force``."""
    decision = job.decision(force)
    remove = decision.action in _REMOVES
    gentle = job.decision(False).action in _REMOVES
    forced = "" if not remove or gentle else views.LOST_WITH_FORCE.get(
        job.status.value, "removed although the rules would keep it")
    return PlanJob(job.job_id, job.status.value, remove, decision.reason,
                   job.files if remove else 0, job.bytes if remove else 0, forced,
                   job.decision(True).action in _REMOVES, fingerprint(job, force), picked_why)


def changed_jobs(planned: Sequence[PlanJob], now: Mapping[str, Fingerprint]) -> list[str]:
    """The planned jobs whose fingerprint differs now (a job no longer there has none)."""
    return [job.job_id for job in planned if now.get(job.job_id) != job.fingerprint]


def stale_message(changed: Sequence[str]) -> str:
    """What the page says when a plan went stale."""
    n = len(changed)
    shown = ", ".join(changed[:5]) + (", …" if n > 5 else "")
    return (f"{n} {'job' if n == 1 else 'jobs'} changed since the preview ({shown}); nothing was "
            "removed: preview again")


def removal_command(share_dir: str, job_id: str) -> str:
    """The CLI command that removes a job the rules keep."""
    return f"rxjobs --share-dir {shlex.quote(share_dir)} cleanup --force {job_id}"


@dataclass(frozen=True)
class Page:
    """One page of a list: its number, the number of pages and the slice it shows."""

    number: int
    pages: int
    start: int
    stop: int

    @classmethod
    def of(cls, total: int, asked: int, per_page: int = PER_PAGE) -> Page:
        """Page ``asked`` (from 1; out of range: the nearest page) of ``total`` items."""
        pages = max(1, -(-total // per_page))
        number = min(max(1, asked), pages)
        start = (number - 1) * per_page
        return cls(number, pages, start, min(total, start + per_page))


# -- plans and results -----------------------------------------------------------------------


@dataclass
class Plan:
    """A previewed cleanup: the jobs it covers (None while it is being computed).

    Parameters
    ----------
    plan_id, session
        Its random id, and the browser session it belongs to.
    share_dir
        The share dir's URL.
    force
        Whether the cleanup removes what the rules keep.
    what
        What was asked for, as the CLI would say it (``cleanup --older-than 7d``).
    again
        The preview's query string, to preview again.
    """

    plan_id: str
    session: str
    share_dir: str
    force: bool
    what: str
    again: str
    jobs: list[PlanJob] | None = None
    error: str = ""
    result_id: str = ""
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    busy: bool = False  # being confirmed
    done: threading.Event = field(default_factory=threading.Event, repr=False)  # set once ready

    @property
    def ready(self) -> bool:
        return self.jobs is not None or bool(self.error)

    @property
    def to_remove(self) -> list[PlanJob]:
        return [job for job in self.jobs or () if job.remove]

    @property
    def to_keep(self) -> list[PlanJob]:
        return [job for job in self.jobs or () if not job.remove]

    @property
    def forced(self) -> list[PlanJob]:
        return [job for job in self.jobs or () if job.forced]

    @property
    def bytes_to_free(self) -> int:
        return sum(job.bytes for job in self.jobs or ())

    @property
    def files_to_free(self) -> int:
        return sum(job.files for job in self.jobs or ())

    def to_json(self) -> dict[str, Any]:
        """The plan as ``POST /api/cleanup`` answers it (totals; the jobs are in the report)."""
        return {"plan_id": self.plan_id, "what": self.what, "force": self.force,
                "ready": self.ready, "error": self.error or None,
                "to_remove": len(self.to_remove), "to_keep": len(self.to_keep),
                "forced": [job.job_id for job in self.forced],
                "bytes_to_free": self.bytes_to_free, "files_to_free": self.files_to_free}


@dataclass(frozen=True, slots=True)
class KeptJob:
    """A job a cleanup kept: why, and the command that would remove it ("" if none would)."""

    job_id: str
    status: str
    reason: str
    command: str


@dataclass
class CleanupResult:
    """What confirming a plan did: the jobs removed, and each kept job with why."""

    result_id: str
    session: str
    plan_id: str
    share_dir: str
    what: str
    removed: list[CleanupEntry]
    kept: list[KeptJob]
    seconds: float = 0.0

    @property
    def bytes_freed(self) -> int:
        return sum(entry.bytes for entry in self.removed)

    @property
    def files_freed(self) -> int:
        return sum(entry.files for entry in self.removed)

    def to_json(self) -> dict[str, Any]:
        """The result as ``POST /api/cleanup`` answers a confirmed plan."""
        return {"result_id": self.result_id, "plan_id": self.plan_id, "share_dir": self.share_dir,
                "removed": len(self.removed), "kept": len(self.kept),
                "bytes_freed": self.bytes_freed, "files_freed": self.files_freed,
                "jobs": [entry.to_json() for entry in self.removed]
                + [{"job_id": k.job_id, "share_dir": self.share_dir, "status": k.status,
                    "outcome": "kept", "reason": k.reason, "command": k.command or None}
                   for k in self.kept]}


def result_of(plan: Plan, entries: Sequence[CleanupEntry], result_id: str,
              seconds: float = 0.0) -> CleanupResult:
    """The result of confirming ``plan``, from what cleanup reported for its jobs to remove.

    The plan's kept jobs stay kept with the rules' reason; a job cleanup kept
    after all (it changed in the last moment, or could not be removed) is kept
    with cleanup's reason.  Every covered job is in exactly one list.
    """
    planned = {job.job_id: job for job in plan.jobs or ()}

    def command(job_id: str) -> str:
        job = planned.get(job_id)
        return removal_command(plan.share_dir, job_id) if job is None or job.force_removes else ""

    removed = [e for e in entries if e.outcome is CleanupOutcome.REMOVED]
    kept = [KeptJob(job.job_id, job.status, job.reason, command(job.job_id)) for job in plan.to_keep]
    kept += [KeptJob(e.job_id, e.status, e.reason or e.outcome.value,
                     command(e.job_id) if e.outcome is not CleanupOutcome.MISSING else "")
             for e in entries if e.outcome is not CleanupOutcome.REMOVED]
    return CleanupResult(result_id, plan.session, plan.plan_id, plan.share_dir, plan.what, removed, kept,
                         seconds)


class TooManyPlans(RuntimeError):
    """Every slot for plans holds one still being computed: try again in a moment."""


K = TypeVar("K", Plan, CleanupResult)


class _Shelf(Generic[K]):
    """At most ``size`` items, each for ``seconds``; the oldest goes first."""

    def __init__(self, size: int, seconds: float) -> None:
        self.size = size
        self.seconds = seconds
        self.items: OrderedDict[str, tuple[float, K]] = OrderedDict()

    def expire(self, now: float) -> None:
        for key in [k for k, (born, _) in self.items.items() if now - born > self.seconds]:
            del self.items[key]

    def get(self, key: str, session: str, now: float) -> K | None:
        self.expire(now)
        found = self.items.get(key)
        return found[1] if found is not None and found[1].session == session else None


class PlanBook:
    """The plans and results of one page, bounded in number and age, each tied to a session.

    Parameters
    ----------
    max_plans, plan_seconds
        At most this many plans, each kept this long.  A new plan drops the
        oldest one that is not being computed or confirmed; when there is none,
        :class:`TooManyPlans`.
    max_results, result_seconds
        At most this many results, each kept this long (the oldest goes first).
    clock
        Seconds, for ages (a test gives its own).
    """

    def __init__(self, max_plans: int = MAX_PLANS, plan_seconds: float = PLAN_SECONDS,
                 max_results: int = MAX_RESULTS, result_seconds: float = RESULT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.plans: _Shelf[Plan] = _Shelf(max_plans, plan_seconds)
        self.results: _Shelf[CleanupResult] = _Shelf(max_results, result_seconds)
        self.clock = clock
        self.lock = threading.Lock()

    def new_plan(self, session: str, share_dir: str, force: bool, what: str, again: str) -> Plan:
        """A new, empty plan for ``session`` (its jobs are filled in by :meth:`finish`)."""
        with self.lock:
            now = self.clock()
            self.plans.expire(now)
            while len(self.plans.items) >= self.plans.size:
                idle = next((k for k, (_, p) in self.plans.items.items() if p.ready and not p.busy), None)
                if idle is None:
                    raise TooManyPlans(f"{self.plans.size} cleanup previews are being made or "
                                       "confirmed: try again in a moment")
                del self.plans.items[idle]
            plan = Plan(secrets.token_urlsafe(16), session, share_dir, force, what, again, started=now)
            self.plans.items[plan.plan_id] = (now, plan)
            return plan

    def finish(self, plan: Plan, jobs: list[PlanJob] | None, error: str = "") -> None:
        """Fill in a plan's jobs (or why it could not be made)."""
        with self.lock:
            plan.jobs, plan.error = jobs, error
            plan.seconds = self.clock() - plan.started
        plan.done.set()

    def plan(self, session: str, plan_id: str) -> Plan | None:
        """``session``'s plan ``plan_id``, or None (unknown, expired or another session's)."""
        with self.lock:
            return self.plans.get(plan_id, session, self.clock())

    def claim(self, plan: Plan) -> bool:
        """Mark a ready plan as being confirmed; False if it already is, or was."""
        with self.lock:
            if plan.busy or plan.result_id or not plan.ready:
                return False
            plan.busy = True
            return True

    def release(self, plan: Plan, result: CleanupResult | None) -> None:
        """End a confirmation: with its result, or (None) with nothing done."""
        with self.lock:
            plan.busy = False
            if result is None:
                return
            now = self.clock()
            self.results.expire(now)
            while len(self.results.items) >= self.results.size:
                self.results.items.popitem(last=False)
            self.results.items[result.result_id] = (now, result)
            plan.result_id = result.result_id

    def result(self, session: str, result_id: str) -> CleanupResult | None:
        """``session``'s result ``result_id``, or None (unknown, expired or another session's)."""
        with self.lock:
            return self.results.get(result_id, session, self.clock())


def new_result_id() -> str:
    return secrets.token_urlsafe(16)


def new_session_id() -> str:
    """A fresh browser session's id (its cookie)."""
    return secrets.token_urlsafe(18)


def is_session_id(text: str) -> bool:
    """Whether a cookie's value has the shape :func:`new_session_id` gives."""
    return len(text) == 24 and all(c.isascii() and (c.isalnum() or c in "-_") for c in text)


def describe(job_ids: Sequence[str] | None, policy: RetentionPolicy) -> str:
    """What a cleanup asks for, as the CLI would say it."""
    flag = " --force" if policy.force else ""
    if job_ids is not None:
        n = len(dict.fromkeys(job_ids))
        return f"cleanup{flag} {job_ids[0]}" if n == 1 else f"cleanup{flag} of {n} named jobs"
    return "cleanup " + ("--all" + flag if policy.merged(force=False).is_empty() else policy.describe())


# -- I/O: making, checking and carrying out a plan ------------------------------------------


def plan_jobs(store: Store, job_ids: Sequence[str] | None, policy: RetentionPolicy,
              survey: Survey | None = None) -> list[PlanJob]:
    """The jobs a cleanup covers, as a plan: the named ones, or what ``policy`` picks.

    One survey of the share dir (or of the named jobs) decides them all, as
    ``rxjobs cleanup --dry-run`` does.  For a policy, ``survey`` is one
    already taken of the share dir (:data:`views.Survey`), decided on instead
    of a new one.
    """
    if job_ids is not None:
        named = list(dict.fromkeys(job_ids))
        surveyed = survey_jobs(store, utc_now(), sizes=True, job_ids=named)
        return [plan_job(job, policy.force) for job in surveyed]
    now, surveyed = survey if survey is not None else views.survey_with_sizes(store)
    selection = select_jobs(surveyed, policy, now)
    by_id = {job.job_id: job for job in surveyed}
    return [plan_job(by_id[pick.job_id], policy.force, pick.why) for pick in selection.picks]


def stale_jobs(store: Store, plan: Plan) -> list[str]:
    """The plan's jobs that changed since it was made (looked at again now)."""
    planned = plan.jobs or []
    surveyed = survey_jobs(store, utc_now(), sizes=False, job_ids=[job.job_id for job in planned])
    return changed_jobs(planned, {job.job_id: fingerprint(job, plan.force) for job in surveyed})


def carry_out(store: Store, plan: Plan) -> CleanupResult:
    """Clean up exactly the plan's jobs to remove; cleanup decides each again under its locks.

    Call it right after :func:`stale_jobs` found nothing changed: with
    force, the jobs that go only because of force are then those the
    preview named and the user confirmed.
    """
    started = time.monotonic()
    report = views.cleanup_quietly(store, [job.job_id for job in plan.to_remove], plan.force)
    return result_of(plan, list(report), new_result_id(), time.monotonic() - started)
