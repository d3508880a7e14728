"""What each page shows, gathered from the job services; no job logic lives here.

Every fact comes from a service the command line uses too: the listing
(:mod:`rxjobs.listing`), a job's look and output (:mod:`rxjobs.jobs`), the
disk-use report (:mod:`rxjobs.usage`), retention (:mod:`rxjobs.retention`)
and the cleanup rules and report (:mod:`rxjobs.cleanup`).  This module only
picks, pages and shapes them for templates and JSON.

A page of a big share dir stays cheap: without a state or text filter and
sorted by submit time (job ids are time-ordered), the ids are listed by name,
sliced, and only the page's jobs are read and have their state derived.  A
server keeps a :class:`JobCatalog`, so that a refresh reads again only the
jobs that have not ended, whatever the view.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rich.filesize import decimal as human_bytes

from .. import jobs, listing
from ..cleanup import CleanupOutcome, CleanupReport, cleanup_jobs
from ..durations import parse_size
from ..ids import job_id_time, validate_job_id
from ..records import read_job_record
from ..retention import RetentionPolicy, Selection, SurveyedJob, preview_cleanup, survey_jobs
from ..status import RxRemoteJobStatus
from ..store import OUTPUT_SUFFIX, RESULT_SUFFIX, JobPaths, Store
from ..times import parse_age, parse_time, parse_timestamp, to_utc, utc_now
from ..usage import UsageReport, disk_usage

STATES = tuple(s.value for s in RxRemoteJobStatus if s is not RxRemoteJobStatus.MISSING)
SORTS = ("submitted", "id", "function", "state", "size")
# Sorts by what the ids say alone; the others read every job (function), derive
# every state (state) or measure every job (size), as a filter does.
CHEAP_SORTS = ("submitted", "id")
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 1000

# Cleanups run one at a time: warnings are caught around them (a process-wide setting).
_cleanup_lock = threading.Lock()


class BadQuery(ValueError):
    """A query parameter a user typed is not valid; the message says which and why."""


def int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text in (None, ""):
        return default
    try:
        value = int(str(text))
    except ValueError:
        raise BadQuery(f"{name} must be a whole number, not {text!r}") from None
    if not low <= value <= high:
        raise BadQuery(f"{name} must be between {low} and {high}")
    return value


@dataclass(frozen=True)
class JobsQuery:
    """The jobs table's filters, sort and page, as the query string gives them.

    ``since``/``until`` are as typed (an ISO time, local if without zone, or a
    duration ago such as ``2h``); ``text`` matches job ids and function names,
    ignoring case; ``sort`` is one of :data:`SORTS`, ``-`` first for descending.
    """

    states: tuple[str, ...] = ()
    since: str = ""
    until: str = ""
    text: str = ""
    sort: str = "-submitted"
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE

    @classmethod
    def from_params(cls, params: Any) -> JobsQuery:
        """Read a query from request parameters (a Starlette ``QueryParams``); BadQuery if invalid."""
        states = tuple(dict.fromkeys(s.lower() for s in params.getlist("state") if s))
        for state in states:
            if state not in STATES:
                raise BadQuery(f"unknown state {state!r}; the states are {', '.join(STATES)}")
        sort = params.get("sort") or "-submitted"
        if sort.lstrip("-") not in SORTS:
            raise BadQuery(f"unknown sort {sort!r}; sort by {', '.join(SORTS)} (- first: descending)")
        query = cls(states, (params.get("since") or "").strip(), (params.get("until") or "").strip(),
                    (params.get("q") or "").strip()[:200], sort,
                    int_param(params, "page", 1, 1, 10**9),
                    int_param(params, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE))
        query.window()  # BadQuery now rather than later
        return query

    def window(self) -> tuple[datetime | None, datetime | None]:
        """The submit-time window (UTC)."""
        try:
            start = parse_time(self.since) if self.since else None
            end = parse_time(self.until) if self.until else None
        except ValueError as exc:
            raise BadQuery(str(exc)) from None
        return start, end

    @property
    def sort_key(self) -> str:
        return self.sort.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    @property
    def is_cheap(self) -> bool:
        """Paged by name alone: no filter that needs every job's record or state."""
        return not self.states and not self.text and self.sort_key in CHEAP_SORTS

    def params(self, **changes: Any) -> list[tuple[str, str]]:
        """The query string's pairs, with ``changes`` (defaults left out)."""
        values = {"state": list(self.states), "since": self.since, "until": self.until, "q": self.text,
                  "sort": self.sort, "page": self.page, "per_page": self.per_page}
        values.update(changes)
        defaults = {"sort": "-submitted", "page": 1, "per_page": DEFAULT_PER_PAGE}
        pairs: list[tuple[str, str]] = []
        for name, value in values.items():
            for item in value if isinstance(value, list) else [value]:
                if item in ("", None) or defaults.get(name) == item:
                    continue
                pairs.append((name, str(item)))
        return pairs


@dataclass(frozen=True)
class JobRow:
    """One row of the jobs table: the listing's summary, the state's reason, progress and engine."""

    summary: listing.JobSummary
    reason: str
    tasks_done: int | None
    engine: str

    @property
    def job_id(self) -> str:
        return self.summary.job_id

    @property
    def state(self) -> str:
        return self.summary.status.value if self.summary.status is not None else "undetermined"

    def to_json(self) -> dict[str, Any]:
        """The row as ``rxjobs list --json`` prints it."""
        return self.summary.to_json()


@dataclass
class JobsPage:
    """A page of the jobs table."""

    query: JobsQuery
    rows: list[JobRow]
    total: int  # the jobs matching the filters (by name alone: directories named like jobs)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.per_page))


def job_rows(store: Store, job_ids: Sequence[str]) -> list[JobRow]:
    """The rows of these jobs (each read, its state derived once, its size measured)."""
    rows = []
    for job in listing.list_jobs(store, job_ids=job_ids, need_status=False):
        derived = jobs.job_status(store, job.job_id)
        if derived.status is RxRemoteJobStatus.MISSING:
            continue  # removed meanwhile
        summary = listing.summarize(store, job._replace(
            status=derived.status, submitted=listing.submit_time(job.job_id, job.record)))
        try:
            done: int | None = jobs.tasks_done(store, job.job_id)
        except (LookupError, ValueError, OSError):
            done = None
        rows.append(JobRow(summary, derived.reason, done, job.context.kind))
    return rows


class JobCatalog:
    """The jobs table's facts, kept between refreshes of one server: an ended job's never change.

    A refresh lists the ids by name (one directory listing), forgets the jobs
    gone, and reads only the jobs it has not seen end: a job in a terminal
    state (:meth:`RxRemoteJobStatus.is_terminal`) keeps its state, function,
    runs and size until it is removed.  So a view filtered by state or text,
    or sorted by function, state or size, costs a refresh what the default
    view costs (reading the jobs still queued or running), not a read of
    every job.  Shared by every request of a server (a lock guards it).
    """

    MAX_VIEWS = 32  # the filtered views whose order is kept

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._summaries: dict[str, listing.JobSummary] = {}  # of ended jobs
        self._rows: dict[str, JobRow] = {}  # of ended jobs
        # A view's picked ids, with what they were picked from: the listed ids and the unended jobs.
        self._views: dict[tuple[Any, ...], tuple[tuple[Any, ...], list[str]]] = {}

    def summaries(self, store: Store, job_ids: Sequence[str]) -> list[listing.JobSummary]:
        """Every named job's summary (state, function, runs, size), in order; removed ones left out."""
        return self._summaries_and_fresh(store, job_ids)[0]

    def _summaries_and_fresh(self, store: Store, job_ids: Sequence[str]
                             ) -> tuple[list[listing.JobSummary], tuple[listing.JobSummary, ...]]:
        with self._lock:
            known = {i: self._summaries[i] for i in job_ids if i in self._summaries}
        fresh = {}
        for job in listing.list_jobs(store, job_ids=[i for i in job_ids if i not in known],
                                     need_status=True, sizes=True):
            if job.status is RxRemoteJobStatus.MISSING:
                continue
            fresh[job.job_id] = listing.summarize(store, job._replace(
                submitted=listing.submit_time(job.job_id, job.record)))
        with self._lock:
            self._summaries.update((i, s) for i, s in fresh.items() if _ended(s.status))
        return ([known.get(i) or fresh[i] for i in job_ids if i in known or i in fresh],
                tuple(fresh.values()))

    def picked(self, store: Store, job_ids: Sequence[str], query: JobsQuery) -> list[str]:
        """The ids of ``job_ids`` that pass ``query``'s filters, in its order (ascending).

        The order is kept per view and reused while the listed ids and the
        unended jobs are as they were: a refresh of a filtered view then
        costs a listing and a read of the unended jobs, no sort.
        """
        view = (query.states, query.text.lower(), query.sort_key, query.since, query.until)
        summaries, fresh = self._summaries_and_fresh(store, job_ids)
        source = (tuple(job_ids), fresh)
        with self._lock:
            kept = self._views.get(view)
        if kept is not None and kept[0] == source:
            return kept[1]
        ids = [summary.job_id for summary in pick_and_sort(summaries, query)]
        with self._lock:
            self._views.pop(view, None)
            while len(self._views) >= self.MAX_VIEWS:
                del self._views[next(iter(self._views))]
            self._views[view] = (source, ids)
        return ids

    def rows(self, store: Store, job_ids: Sequence[str]) -> list[JobRow]:
        """The rows of these jobs (:func:`job_rows`), an ended job's from the last time it was read."""
        with self._lock:
            known = {i: self._rows[i] for i in job_ids if i in self._rows}
        fresh = {row.job_id: row for row in job_rows(store, [i for i in job_ids if i not in known])}
        with self._lock:
            self._rows.update((i, r) for i, r in fresh.items() if _ended(r.summary.status))
        return [known.get(i) or fresh[i] for i in job_ids if i in known or i in fresh]

    def forget_all_but(self, job_ids: Sequence[str]) -> None:
        """Forget the jobs not in ``job_ids`` (the share dir's, listed: the others were removed)."""
        present = set(job_ids)
        with self._lock:
            for cache in (self._summaries, self._rows):
                for job_id in [i for i in cache if i not in present]:
                    del cache[job_id]


def _ended(status: RxRemoteJobStatus | None) -> bool:
    return status is not None and status.is_terminal() and status is not RxRemoteJobStatus.MISSING


def jobs_page(store: Store, query: JobsQuery, catalog: JobCatalog | None = None) -> JobsPage:
    """One page of the share dir's jobs that pass ``query``'s filters, in its order.

    Without a state or text filter and sorted by time or id, this lists the
    ids by name and reads only the page's jobs; otherwise it reads every job
    in the window, as ``rxjobs list --state`` does, but through ``catalog``
    (a fresh one if None), which reads an ended job only once.
    """
    catalog = catalog if catalog is not None else JobCatalog()
    start, end = query.window()
    ids = store.list_job_ids(start, end)
    if start is None and end is None:
        catalog.forget_all_but(ids)
    elif any(job_id_time(i) is None for i in ids):
        # Ids not of rxjobs' time-ordered form are kept by name; their records say when.
        ids = [i for i in ids if job_id_time(i) is not None] + [
            job.job_id for job in listing.list_jobs(
                store, start=start, end=end, need_status=False,
                job_ids=[i for i in ids if job_id_time(i) is None])]
        ids.sort()
    if not query.is_cheap:
        ids = catalog.picked(store, ids, query)
    if query.descending:
        ids = ids[::-1]
    first = (query.page - 1) * query.per_page
    return JobsPage(query, catalog.rows(store, ids[first:first + query.per_page]), len(ids))


def pick_and_sort(summaries: Sequence[listing.JobSummary], query: JobsQuery) -> list[listing.JobSummary]:
    """The jobs that pass ``query``'s state and text filters, in its order (ascending)."""
    needle = query.text.lower()
    picked = [s for s in summaries
              if (not query.states or (s.status is not None and s.status.value in query.states))
              and (not needle or needle in s.job_id.lower() or needle in s.function.lower())]
    if query.sort_key == "function":
        picked.sort(key=lambda s: (s.function, s.job_id))
    elif query.sort_key == "state":
        picked.sort(key=lambda s: (s.status.value if s.status is not None else "", s.job_id))
    elif query.sort_key == "size":
        picked.sort(key=lambda s: (s.bytes, s.job_id))
    return picked


def row_cells(row: JobRow) -> dict[str, Any]:
    """What the refresh of one row of the jobs table sets: its state badge, progress and size."""
    summary = row.summary
    return {"job_id": row.job_id, "state": row.state,
            "badge": row.reason if row.state == "finished" else row.state, "reason": row.reason,
            "done": row.tasks_done if row.tasks_done is not None else 0, "n_tasks": summary.n_tasks or 0,
            "n_runs": summary.n_runs, "bytes": summary.bytes, "size": human_bytes(summary.bytes)}


def rows_version(result: JobsPage) -> str:
    """A version of what a page of the jobs table shows (an ETag): it changes when a cell does."""
    cells = [row_cells(row) for row in result.rows]
    text = json.dumps([result.total, result.pages, cells], sort_keys=True, default=str)
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:24] + '"'


def rows_json(result: JobsPage, version: str) -> dict[str, Any]:
    """The body of ``GET /api/rows``: the page's rows as cells, its totals and ``version``."""
    return {"version": version, "total": result.total, "page": result.query.page, "pages": result.pages,
            "rows": [row_cells(row) for row in result.rows]}


# -- one job ---------------------------------------------------------------------------------


@dataclass
class JobDetail:
    """What the page of one job shows."""

    row: JobRow
    user: str
    submitted: datetime | None
    started: datetime | None
    ended: datetime | None
    expires: datetime | None
    retrieved: bool
    n_tasks: int | None
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        return self.row.job_id

    @property
    def terminal(self) -> bool:
        return RxRemoteJobStatus.parse(self.row.state).is_terminal()


def job_detail(store: Store, job_id: str) -> JobDetail | None:
    """The page of a job, or None if the share dir has no such job (``job_id`` is validated)."""
    validate_job_id(job_id)
    look = jobs.look_at_job(store, job_id)
    if look.status is RxRemoteJobStatus.MISSING or look.record is None:
        return None
    found = listing.find_job(store, job_id)
    summary = listing.summarize(store, found._replace(status=look.status))
    try:
        done: int | None = jobs.tasks_done(store, job_id)
    except (LookupError, ValueError, OSError):
        done = None
    row = JobRow(summary, look.derived.reason, done, found.context.kind)
    return JobDetail(
        row, user=look.record.user, submitted=found.submitted,
        started=parse_timestamp(look.status_record.started),
        ended=jobs.ended_at(store, look) if look.status.is_terminal() else None,
        expires=jobs.expiry_time(store, look), retrieved=look.retrieved,
        n_tasks=look.record.n_tasks, context=_shown_context(look.record.context))


def _shown_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """The stored context's settings, as text (they are shown, never used)."""
    return {str(k): v if isinstance(v, (str, int, float, bool)) or v is None else repr(v)
            for k, v in list(context.items())[:40]}


MAX_OUTPUT_SHOWN = 512 * 1024


def output_tail(text: str, limit: int = MAX_OUTPUT_SHOWN) -> tuple[str, bool]:
    """The last ``limit`` characters of an output, and whether it was cut."""
    return (text[-limit:], True) if len(text) > limit else (text, False)


# -- downloads -------------------------------------------------------------------------------

MAX_DOWNLOAD_BYTES = 1 << 30  # a file is read whole to be sent: refuse giants
_TASK_FILE_RE = re.compile(r"task-([0-9]{1,9})(\.out|\.result\.pkl)\Z")


@dataclass(frozen=True)
class Download:
    """A file of one job that the page offers: the whole output, or one task's output or result.

    ``task`` is None for the whole output (``output.txt``); ``suffix`` is
    ``.out`` or ``.result.pkl`` for a task's file.
    """

    name: str
    task: int | None = None
    suffix: str = ""

    @property
    def media_type(self) -> str:
        return "application/octet-stream" if self.suffix == RESULT_SUFFIX else "text/plain; charset=utf-8"

    def filename(self, job_id: str) -> str:
        """The name the browser saves it as: the (validated) job id, then what it is."""
        return f"{validate_job_id(job_id)}-{self.name}"


def parse_download(name: str) -> Download | None:
    """The download a URL names (``output.txt``, ``task-N.out``, ``task-N.result.pkl``), or None.

    Only these names: anything else, a path or another file of the job, is refused.
    """
    if name == "output.txt":
        return Download(name)
    match = _TASK_FILE_RE.match(name)
    if match is None:
        return None
    return Download(name, int(match.group(1)), OUTPUT_SUFFIX if match.group(2) == ".out" else RESULT_SUFFIX)


def job_downloads(store: Store, job_id: str) -> list[Download]:
    """The task files of a job there are to download, task by task (outputs, then results)."""
    n_tasks = read_job_record(store, job_id).n_tasks
    names = store.listdir(store.paths(job_id).tasks)
    found = [Download(f"task-{task}{suffix}", task, suffix) for suffix in (OUTPUT_SUFFIX, RESULT_SUFFIX)
             for task in JobPaths.task_indexes(names, suffix, n_tasks)]
    return sorted(found, key=lambda d: (d.task or 0, d.suffix))


def read_download(store: Store, job_id: str, download: Download) -> bytes | None:
    """The bytes of ``download`` of the job (None: it has no such file).

    Read through the store (a symlink is never followed, a task beyond the
    job's ``n_tasks`` is refused); a pickled result is sent as it is, never
    unpickled here.
    """
    if download.task is None:
        return jobs.read_output(store, job_id).encode()
    if download.task >= read_job_record(store, job_id).n_tasks:
        return None
    paths = store.paths(job_id)
    path = paths.output(download.task) if download.suffix == OUTPUT_SUFFIX else paths.result(download.task)
    try:
        return store.read_bytes(path, limit=MAX_DOWNLOAD_BYTES)
    except FileNotFoundError:
        return None


# -- cleanup -----------------------------------------------------------------------------------


def policy_from_params(params: Mapping[str, Any], states: Sequence[str] = ()) -> RetentionPolicy:
    """A retention policy from the form fields of the CLI's options (BadQuery if invalid).

    Fields: ``older_than`` (a duration), ``max_total_size`` (a size such as
    ``50G``), ``keep_last`` (a number), ``state`` (repeatable) and ``force``.
    """
    try:
        older = str(params.get("older_than") or "").strip()
        size = str(params.get("max_total_size") or "").strip()
        keep = str(params.get("keep_last") or "").strip()
        return RetentionPolicy(
            older_than=parse_age(older) if older else None,
            max_total_size=parse_size(size) if size else None,
            keep_last=int_param({"keep_last": keep}, "keep_last", 0, 0, 10**9) if keep else None,
            states=frozenset(RxRemoteJobStatus.parse(s) for s in states) if states else None,
            force=is_on(params.get("force")))
    except ValueError as exc:
        raise BadQuery(str(exc)) from None


def is_on(value: Any) -> bool:
    """A checkbox or flag that is set (``1``, ``true``, ``on``, ``yes``, or JSON true)."""
    return value is True or str(value).lower() in ("1", "true", "on", "yes")


@dataclass
class CleanupPlan:
    """What a cleanup would do (a dry run), and what force would cost.

    ``report`` holds an entry per job looked at (``would remove`` or
    ``kept``); ``forced`` names the jobs that go only because of force, each
    with what is lost with it.
    """

    report: CleanupReport
    force: bool
    selection: Selection | None = None
    policy: RetentionPolicy | None = None
    forced: dict[str, str] = field(default_factory=dict)

    @property
    def would_remove(self) -> list[str]:
        return [e.job_id for e in self.report if e.outcome is CleanupOutcome.WOULD_REMOVE]

    @property
    def bytes_would_free(self) -> int:
        return sum(e.bytes for e in self.report if e.outcome is CleanupOutcome.WOULD_REMOVE)

    @property
    def files_would_free(self) -> int:
        return sum(e.files for e in self.report if e.outcome is CleanupOutcome.WOULD_REMOVE)


LOST_WITH_FORCE = {
    "finished": "its results, never retrieved, are deleted",
    "running": "it is canceled: the work in progress is lost",
    "queued": "it is canceled before it runs",
    "undetermined": "its state is unknown: it may still be running, and its results are deleted",
}


def _dry_run(store: Store, job_ids: Sequence[str], force: bool) -> CleanupReport:
    with _cleanup_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cleanup_jobs([(store, job_id) for job_id in job_ids], force=force, verbose=False,
                            dry_run=True)


def plan_named(store: Store, job_ids: Sequence[str], force: bool) -> CleanupPlan:
    """A dry run of cleaning up the named jobs (validated first)."""
    ids = [validate_job_id(job_id) for job_id in dict.fromkeys(job_ids)]
    report = _dry_run(store, ids, force)
    plan = CleanupPlan(report, force)
    if force:
        plan.forced = _forced(store, report, _dry_run(store, ids, False))
    return plan


Survey = tuple[datetime, list[SurveyedJob]]
"""A look at every job of a share dir (with sizes), and the moment it was taken at."""


def survey_with_sizes(store: Store) -> Survey:
    """A :data:`Survey` of the share dir, taken now."""
    now = utc_now()
    return now, survey_jobs(store, now, sizes=True)


def plan_policy(store: Store, policy: RetentionPolicy, survey: Survey | None = None) -> CleanupPlan:
    """A dry run of cleaning up what a retention policy picks.

    ``survey`` is one already taken, decided on instead of a new one: a
    preview that also makes a server-side plan looks at the jobs once.
    """
    now, surveyed = survey if survey is not None else survey_with_sizes(store)
    selection, report = preview_cleanup(store, policy, now, surveyed)
    plan = CleanupPlan(report, policy.force, selection, policy)
    if policy.force:
        _, gentle = preview_cleanup(store, policy.merged(force=False), now, surveyed)
        plan.forced = _forced(store, report, gentle)
    return plan


def _forced(store: Store, forced: CleanupReport, gentle: CleanupReport) -> dict[str, str]:
    """The jobs removed only with force, each with what is lost with it."""
    safe = {e.job_id for e in gentle if e.outcome is CleanupOutcome.WOULD_REMOVE}
    return {e.job_id: LOST_WITH_FORCE.get(e.status, "removed although the rules would keep it")
            for e in forced if e.outcome is CleanupOutcome.WOULD_REMOVE and e.job_id not in safe}


class PlanChanged(RuntimeError):
    """The jobs changed since the preview: a job now needs force that the preview did not name."""


def run_cleanup(store: Store, job_ids: Sequence[str], force: bool,
                confirmed_forced: Sequence[str] = ()) -> CleanupReport:
    """Clean up the named jobs, re-checking the rules on the server.

    The cleanup rules decide each job again as it is removed.  With force,
    every job that would go only because of force must be one the user
    confirmed (``confirmed_forced``, the jobs the preview named); otherwise
    nothing is removed and :class:`PlanChanged` says to preview again.
    """
    ids = [validate_job_id(job_id) for job_id in dict.fromkeys(job_ids)]
    if force:
        now_forced = _forced(store, _dry_run(store, ids, True), _dry_run(store, ids, False))
        unconfirmed = sorted(set(now_forced) - set(confirmed_forced))
        if unconfirmed:
            raise PlanChanged(f"{len(unconfirmed)} job(s) changed since the preview and now need "
                              f"force ({', '.join(unconfirmed[:5])}): preview the cleanup again")
    return cleanup_quietly(store, ids, force)


def cleanup_quietly(store: Store, job_ids: Sequence[str], force: bool) -> CleanupReport:
    """Clean up exactly ``job_ids`` (cleanup decides each again under its locks); its report.

    Cleanups of the page run one at a time, their warnings caught (the
    report says why each kept job was kept).
    """
    with _cleanup_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cleanup_jobs([(store, job_id) for job_id in job_ids], force=force, verbose=False)


def cleanup_json(report: CleanupReport, store: Store, dry_run: bool, force: bool,
                 plan: CleanupPlan | None = None) -> dict[str, Any]:
    """The JSON of ``rxjobs cleanup --json`` for this report (with ``--dry-run``: ``dry_run``)."""
    entries = list(report)
    would = [e for e in entries if e.outcome is CleanupOutcome.WOULD_REMOVE]
    data = report.to_json()
    data.update(share_dir=store.url, dry_run=dry_run, force=force, skipped=[],
                would_remove=len(would), bytes_would_free=sum(e.bytes for e in would),
                errors=sum(1 for e in entries if e.outcome is CleanupOutcome.ERROR),
                missing=sum(1 for e in entries if e.outcome is CleanupOutcome.MISSING))
    if plan is not None and plan.policy is not None:
        selection = plan.selection
        everything = plan.policy.merged(force=False).is_empty()
        data.update(policy=plan.policy.to_json(),
                    picked=None if everything or selection is None
                    else [{"job_id": p.job_id, "why": p.why} for p in selection.picks],
                    protected=selection.protected if selection is not None else [])
        if selection is not None and plan.policy.max_total_size is not None:
            after = selection.total_bytes - plan.bytes_would_free
            data.update(total_bytes=selection.total_bytes, bytes_after=after,
                        max_total_size=plan.policy.max_total_size,
                        over_max_total_size=after > plan.policy.max_total_size)
    return data


# -- disk use ----------------------------------------------------------------------------------

AGE_BUCKETS = ((timedelta(hours=1), "under 1 hour"), (timedelta(days=1), "1 hour to 1 day"),
               (timedelta(days=7), "1 to 7 days"), (timedelta(days=30), "7 to 30 days"),
               (timedelta.max, "over 30 days"))


@dataclass
class UsageView:
    """The disk-use page: the report of ``rxjobs du``, and its bytes by age."""

    report: UsageReport
    policy: RetentionPolicy
    by_age: list[tuple[str, int, int]]  # (bucket, jobs, bytes)


def usage_view(store: Store, policy: RetentionPolicy, top: int = 10) -> UsageView:
    """The disk use of the share dir (``rxjobs du``), with its bytes grouped by the jobs' age."""
    now = utc_now()
    report = disk_usage(store, policy, top, now)
    buckets = {label: [0, 0] for _, label in AGE_BUCKETS}
    unknown = [0, 0]
    for job in report.jobs:
        submitted = job_id_time(job.job_id)
        if submitted is None:
            unknown[0] += 1
            unknown[1] += job.bytes
            continue
        age = now - to_utc(submitted)
        label = next(label for limit, label in AGE_BUCKETS if age < limit)
        buckets[label][0] += 1
        buckets[label][1] += job.bytes
    by_age = [(label, n, size) for label, (n, size) in buckets.items()]
    if unknown[0]:
        by_age.append(("unknown", unknown[0], unknown[1]))
    return UsageView(report, policy, by_age)
