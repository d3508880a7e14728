"""HTML for notebooks: jobs, cleanup reports, disk use and progress, as the web page draws them.

Pure functions from small view records to HTML strings; they do no I/O and
import nothing of rxjobs, so the ``_repr_html_`` methods of ``RxRemoteJob``,
the list ``rx_get_jobs`` returns, ``CleanupReport`` and ``UsageReport`` can
all call them (lazily: outside a notebook this module is never imported).

Everything shown comes from a share dir, which is hostile input: every text
is escaped, and no value reaches an attribute unescaped.  Each fragment
carries its own ``<style>`` (scoped under ``.rxjobs-nb``), with the web
page's colours and state badges (``ui/static/ui.css``), because a notebook
has no stylesheet of ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

STATES = ("queued", "running", "finished", "failed", "canceled", "undetermined", "missing")

# The web page's palette and badges (ui.css), scoped so that a notebook's own styles are untouched.
STYLE = """<style>
.rxjobs-nb { --fg: #1d2330; --muted: #5b6473; --line: #d9dde4; --card: #fff; --accent: #1f5fbf;
  --queued: #3b6fd8; --running: #0f8fa8; --finished: #1e8a3e; --failed: #c62828;
  --canceled: #b7791f; --undetermined: #8e44ad; --missing: #888;
  font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); }
.rxjobs-nb table { border-collapse: collapse; background: var(--card); border: 1px solid var(--line); }
.rxjobs-nb th, .rxjobs-nb td { text-align: left; padding: .3rem .55rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
.rxjobs-nb th { color: var(--muted); font-weight: 600; }
.rxjobs-nb td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.rxjobs-nb td.progress, .rxjobs-nb td.when { white-space: nowrap; }
.rxjobs-nb code { font-size: .85rem; }
.rxjobs-nb .state { display: inline-block; padding: .05rem .5rem; border-radius: 4px; color: #fff;
  font-size: .8rem; font-weight: 600; background: var(--missing); }
.rxjobs-nb .state-queued { background: var(--queued); }
.rxjobs-nb .state-running { background: var(--running); }
.rxjobs-nb .state-finished { background: var(--finished); }
.rxjobs-nb .state-failed { background: var(--failed); }
.rxjobs-nb .state-canceled { background: var(--canceled); }
.rxjobs-nb .state-undetermined { background: var(--undetermined); }
.rxjobs-nb .muted, .rxjobs-nb .reason { color: var(--muted); }
.rxjobs-nb .reason { font-size: .85rem; overflow-wrap: anywhere; }
.rxjobs-nb .bar { display: inline-block; width: 9rem; height: .6rem; background: var(--line);
  border-radius: 3px; overflow: hidden; vertical-align: middle; margin-right: .4rem; }
.rxjobs-nb .bar > span { display: block; height: 100%; background: var(--accent); }
.rxjobs-nb .bar > span.state-finished { background: var(--finished); }
.rxjobs-nb .bar > span.state-failed { background: var(--failed); }
.rxjobs-nb .bar > span.state-canceled { background: var(--canceled); }
.rxjobs-nb .bar > span.state-running { background: var(--running); }
.rxjobs-nb .total { margin: .3rem 0 .5rem; }
.rxjobs-nb .kept { color: var(--canceled); font-weight: 600; }
.rxjobs-nb caption { text-align: left; font-weight: 600; padding: .2rem 0; }
</style>"""


@dataclass(frozen=True)
class JobView:
    """What a notebook shows of one job."""

    job_id: str
    state: str
    submitted: datetime | None = None
    function: str = ""
    tasks_done: int | None = None
    n_tasks: int | None = None
    files: int = 0
    bytes: int = 0
    reason: str = ""  # why the job is in its state (a failure, a lost driver), if said


@dataclass(frozen=True)
class OutcomeView:
    """One job of a cleanup report: removed or kept, and why."""

    job_id: str
    state: str
    outcome: str  # "removed", "kept", "error", "would remove" ...
    reason: str
    files: int
    bytes: int


@dataclass(frozen=True)
class UsageView:
    """One job of a disk-use report."""

    job_id: str
    state: str
    files: int
    bytes: int
    kept_because: str  # "" when a cleanup without force would remove it


def format_bytes(n: int) -> str:
    """``1536`` → ``"1.5 KiB"``: sizes as people read them (binary units, as ``du -h``)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable: the loop returns at TiB


def state_badge(state: str) -> str:
    """The web page's coloured badge of a state; an unknown state gets the grey of ``missing``."""
    known = state if state in STATES else "missing"
    return f'<span class="state state-{known}">{escape(state)}</span>'


def progress_bar(done: int | None, total: int | None, state: str = "running") -> str:
    """A bar with ``done/total tasks`` beside it; without a total, only the count."""
    if total is None or total <= 0:
        return f'<span class="muted">{escape(str(done if done is not None else "?"))} tasks</span>'
    count = max(0, min(done or 0, total))
    pct = 100.0 * count / total
    known = state if state in STATES else "running"
    return (f'<span class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="{total}" '
            f'aria-valuenow="{count}"><span class="state-{known}" style="width:{pct:.1f}%"></span></span>'
            f'<span class="muted">{count}/{total} tasks</span>')


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value is not None else "?"


def _wrap(body: str) -> str:
    return f'{STYLE}<div class="rxjobs-nb">{body}</div>'


def _job_row(job: JobView) -> str:
    reason = f'<div class="reason">{escape(job.reason)}</div>' if job.reason else ""
    return (f"<tr><td><code>{escape(job.job_id)}</code></td><td>{state_badge(job.state)}{reason}</td>"
            f'<td class="progress">{progress_bar(job.tasks_done, job.n_tasks, job.state)}</td>'
            f'<td>{escape(job.function)}</td><td class="when">{escape(_when(job.submitted))}</td>'
            f'<td class="num">{job.files}</td><td class="num">{escape(format_bytes(job.bytes))}</td></tr>')


_JOB_HEAD = ("<tr><th>job</th><th>state</th><th>progress</th><th>function</th><th>submitted</th>"
             "<th>files</th><th>size</th></tr>")


def job_html(job: JobView, share_dir: str = "") -> str:
    """One job: its state badge (with the reason), progress, function, submit time and size."""
    where = f'<caption>job in <code>{escape(share_dir)}</code></caption>' if share_dir else ""
    return _wrap(f"<table>{where}{_JOB_HEAD}{_job_row(job)}</table>")


def jobs_html(jobs: Sequence[JobView], share_dir: str = "") -> str:
    """A table of jobs, as the web page's jobs table, with a count per state above it."""
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.state] = counts.get(job.state, 0) + 1
    summary = (" ".join(f"{state_badge(s)} {n}" for s, n in counts.items())
               or '<span class="muted">no jobs</span>')
    where = f' in <code>{escape(share_dir)}</code>' if share_dir else ""
    table = f"<table>{_JOB_HEAD}{''.join(_job_row(job) for job in jobs)}</table>" if jobs else ""
    return _wrap(f'<div class="total">{len(jobs)} jobs{where}: {summary}</div>{table}')


def cleanup_html(entries: Iterable[OutcomeView]) -> str:
    """A cleanup report: totals freed, then per job what was done and why a job was kept."""
    rows, removed, kept, files, size = [], 0, 0, 0, 0
    for entry in entries:
        if entry.outcome == "removed":
            removed, files, size = removed + 1, files + entry.files, size + entry.bytes
        elif entry.outcome in ("kept", "error"):
            kept += 1
        outcome = (f'<span class="kept">{escape(entry.outcome)}</span>' if entry.outcome in ("kept", "error")
                   else escape(entry.outcome))
        rows.append(f"<tr><td><code>{escape(entry.job_id)}</code></td><td>{state_badge(entry.state)}</td>"
                    f'<td>{outcome}</td><td class="reason">{escape(entry.reason)}</td>'
                    f'<td class="num">{entry.files}</td>'
                    f'<td class="num">{escape(format_bytes(entry.bytes))}</td></tr>')
    head = ("<tr><th>job</th><th>state</th><th>outcome</th><th>why</th><th>files</th><th>size</th></tr>")
    total = (f'<div class="total">cleanup: {removed} removed, {kept} kept; '
             f"{files} files, {escape(format_bytes(size))} freed</div>")
    return _wrap(total + (f"<table>{head}{''.join(rows)}</table>" if rows else ""))


def usage_html(share_dir: str, jobs: Sequence[UsageView], largest: Sequence[UsageView]) -> str:
    """A disk-use report: totals, bytes per state, bytes kept by reason, and the largest jobs."""
    total_files = sum(j.files for j in jobs)
    total_bytes = sum(j.bytes for j in jobs)
    freeable = sum(j.bytes for j in jobs if not j.kept_because)
    per_state: dict[str, list[int]] = {}
    kept: dict[str, int] = {}
    for job in jobs:
        sums = per_state.setdefault(job.state, [0, 0, 0])
        sums[0], sums[1], sums[2] = sums[0] + 1, sums[1] + job.files, sums[2] + job.bytes
        if job.kept_because:
            kept[job.kept_because] = kept.get(job.kept_because, 0) + job.bytes
    states = "".join(f'<tr><td>{state_badge(s)}</td><td class="num">{n}</td><td class="num">{f}</td>'
                     f'<td class="num">{escape(format_bytes(b))}</td></tr>'
                     for s, (n, f, b) in per_state.items())
    reasons = "".join(f'<tr><td class="kept">{escape(why)}</td>'
                      f'<td class="num">{escape(format_bytes(b))}</td></tr>' for why, b in kept.items())
    top = "".join(f"<tr><td><code>{escape(j.job_id)}</code></td><td>{state_badge(j.state)}</td>"
                  f'<td class="num">{j.files}</td><td class="num">{escape(format_bytes(j.bytes))}</td>'
                  f'<td class="{"kept" if j.kept_because else "muted"}">'
                  f'{escape(j.kept_because or "removable")}</td></tr>'
                  for j in largest)
    body = (f'<div class="total">share dir <code>{escape(share_dir)}</code>: {len(jobs)} jobs, '
            f"{total_files} files, {escape(format_bytes(total_bytes))}; a cleanup without force frees "
            f"{escape(format_bytes(freeable))}</div>")
    if states:
        body += ('<table><caption>by state</caption><tr><th>state</th><th>jobs</th><th>files</th>'
                 f"<th>size</th></tr>{states}</table>")
    if reasons:
        body += ("<table><caption>kept, by reason</caption><tr><th>why</th><th>size</th></tr>"
                 f"{reasons}</table>")
    if top:
        body += ("<table><caption>largest jobs</caption><tr><th>job</th><th>state</th><th>files</th>"
                 f"<th>size</th><th>cleanup</th></tr>{top}</table>")
    return _wrap(body)


def progress_html(label: str, done: int | None, total: int | None, state: str) -> str:
    """The one line a waiting call shows and updates in place: label, state badge and bar."""
    bar = progress_bar(done, total, state)
    return _wrap(f"<div><code>{escape(label)}</code> {state_badge(state)} {bar}</div>")


def progress_text(label: str, done: int | None, total: int | None, state: str) -> str:
    """The plain-text twin of :func:`progress_html` (a front end without HTML shows it)."""
    count = f"{done if done is not None else '?'}/{total} tasks" if total else f"{done or 0} tasks"
    return f"{label}: {state}, {count}"
