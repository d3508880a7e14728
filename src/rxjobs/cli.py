"""The ``rxjobs`` command: list, inspect, wait for, cancel and clean up the jobs of a share dir.

The command only parses arguments and prints.  Every job operation is a call
into :mod:`rxjobs.api`; read-only details come from :mod:`rxjobs.jobs`,
:mod:`rxjobs.cleanup` (dry runs) and :mod:`rxjobs.store` (sizes).

Errors a user can cause end as one line on stderr, ``rxjobs: error: <message>``,
with exit status 1 (click's own usage errors exit with 2).  Warnings of the
core are captured and shown as ``rxjobs: warning: <message>`` lines, or said by
the per-job lines of ``cleanup``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta, timezone
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.filesize import decimal as human_bytes
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import __version__, api, jobs
from .cleanup import CleanupEntry, CleanupReport, cleanup_jobs
from .contexts import RxUnsupportedContextError
from .engines import EngineNotInstalledError
from .errors import (
    IncompleteResultsError,
    JobCanceledError,
    JobFailedError,
    JobNotFinishedError,
    JobNotFoundError,
)
from .status import RxRemoteJobStatus
from .store import Store, default_share_dir, normalize_share_dir, validate_job_id
from .waiting import poll

# What a user can cause (a bad id, an unknown job, a job in the wrong state, an
# unwritable share dir): reported in one line, never with a traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    JobNotFoundError,
    JobNotFinishedError,
    JobFailedError,
    JobCanceledError,
    IncompleteResultsError,
    EngineNotInstalledError,
    RxUnsupportedContextError,
    OSError,
)

_STATE_STYLES = {
    "queued": "blue",
    "running": "cyan",
    "finished": "green",
    "failed": "red",
    "canceled": "yellow",
    "undetermined": "magenta",
    "missing": "dim",
}

# Jobs handed to the core per cleanup call, so that a big cleanup shows progress.
_CLEANUP_BATCH = 64


class CliError(click.ClickException):
    """An error reported as ``rxjobs: error: <message>`` on stderr, exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"rxjobs: error: {self.format_message()}", err=True, file=file)


class _RxGroup(click.Group):
    """The command group; turns rxjobs errors into one-line messages at the command boundary."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except _USER_ERRORS as exc:
            raise CliError(str(exc) or type(exc).__name__) from exc


def _error(message: str) -> None:
    click.echo(f"rxjobs: error: {message}", err=True)


def _warning(message: str) -> None:
    click.echo(f"rxjobs: warning: {message}", err=True)


@contextmanager
def _captured_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the core's warnings instead of letting Python print them with a source line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


# -- argument types ----------------------------------------------------------------------

_DURATION_RE = re.compile(r"(?:\d+(?:\.\d*)?[smhdw])+")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``30m``, ``2h``, ``7d``, ``1w`` or ``1h30m``.

    Parameters
    ----------
    text
        Numbers each followed by a unit: ``s``, ``m``, ``h``, ``d`` or ``w``.

    Returns
    -------
    timedelta

    Raises
    ------
    ValueError
        ``text`` is not a duration.
    """
    compact = text.strip().lower().replace(" ", "")
    if not _DURATION_RE.fullmatch(compact):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 2h, 7d, 1w)")
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART_RE.findall(compact))
    return timedelta(seconds=seconds)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """Parse a point in time: an ISO date/time, or a duration ago (``2h`` is two hours ago).

    Parameters
    ----------
    text
        ``2026-11-28``, ``2026-11-28T14:30``, ``2026-11-28 14:30:00+01:00``,
        ``...Z``, or a duration such as ``30m``, ``2h``, ``7d``.  A date/time
        without a UTC offset is local time.
    now
        The moment durations count back from (default: now).

    Returns
    -------
    datetime
        A timezone-aware datetime.

    Raises
    ------
    ValueError
        ``text`` is neither.
    """
    try:
        return (now or datetime.now(timezone.utc)) - parse_duration(text)
    except ValueError:
        pass
    iso = text.strip()
    if iso[-1:] in ("Z", "z"):
        iso = iso[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f"not a date/time or duration: {text!r} (use e.g. 2026-11-28, 2026-11-28T14:30, "
            "or a duration ago such as 30m, 2h, 7d)"
        ) from None
    return when if when.tzinfo is not None else when.astimezone()  # naive: local time


class _TimeType(click.ParamType):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _DurationType(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIME = _TimeType()
DURATION = _DurationType()
_STATE_CHOICE = click.Choice([s.value for s in RxRemoteJobStatus], case_sensitive=False)


_Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _state_option(help_text: str) -> _Decorator:
    return click.option("--state", "states", multiple=True, type=_STATE_CHOICE, help=help_text)


def _json_option(help_text: str = "Print JSON for scripts.") -> _Decorator:
    return click.option("--json", "as_json", is_flag=True, help=help_text)


# -- printing ----------------------------------------------------------------------------


def _console() -> Console:
    """A console on stdout; off a terminal it is wide, so tables never fold job ids."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 200))
    return console


def _table() -> Table:
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)


def _state_text(state: str) -> Text:
    return Text(state, style=_STATE_STYLES.get(state, ""))


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _local_time(when: datetime | None) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when else "?"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- the group ---------------------------------------------------------------------------


@click.group(cls=_RxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--share-dir",
    envvar="RXJOBS_SHARE_DIR",
    show_envvar=True,
    metavar="DIR_OR_URL",
    help="The share dir whose jobs to manage (default: the per-user data dir).",
)
@click.version_option(__version__, prog_name="rxjobs")
@click.pass_context
def cli(ctx: click.Context, share_dir: str | None) -> None:
    """Manage rxjobs jobs: list, status, output, results, wait, cancel, cleanup, du."""
    ctx.obj = normalize_share_dir(share_dir) if share_dir else default_share_dir()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``rxjobs`` command (the console-script entry point and ``python -m rxjobs``).

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).
    """
    cli.main(args=list(argv) if argv is not None else None, prog_name="rxjobs")


# -- list --------------------------------------------------------------------------------


def _job_summary(store: Store, job_id: str, created: datetime | None, state: str) -> dict[str, Any]:
    try:
        record = jobs.read_job_record(store, job_id)
        function, n_runs, n_tasks = record.function, record.n_runs, record.n_tasks
    except (JobNotFoundError, ValueError):  # removed meanwhile, or a broken job.json
        function, n_runs, n_tasks = "", None, None
    usage = store.usage(job_id)
    return {
        "job_id": job_id,
        "state": state,
        "submitted": created.astimezone(timezone.utc).isoformat() if created else None,
        "function": function,
        "n_runs": n_runs,
        "n_tasks": n_tasks,
        "files": usage.files,
        "bytes": usage.bytes,
    }


@cli.command("list")
@_state_option("Only jobs in this state (repeatable).")
@click.option("--since", type=TIME,
              help="Only jobs submitted since: an ISO date/time, or a duration ago (30m, 2h, 7d).")
@click.option("--until", type=TIME,
              help="Only jobs submitted until: an ISO date/time, or a duration ago.")
@_json_option("Print a JSON list.")
@click.pass_obj
def list_command(share_dir: str, states: tuple[str, ...], since: datetime | None,
                 until: datetime | None, as_json: bool) -> None:
    """List the jobs of the share dir, oldest first."""
    store = Store(share_dir)
    found = api.list_jobs(share_dir, start_time=since, end_time=until, states=states or None)
    rows = [_job_summary(store, job.job_id, created, status.value) for job, created, status in found]
    if as_json:
        _print_json(rows)
        return
    console = _console()
    if not rows:
        console.print(Text(f"no jobs in {store.url}"))
        return
    table = _table()
    table.add_column("id", no_wrap=True)
    table.add_column("state")
    table.add_column("submitted", no_wrap=True)
    table.add_column("function", overflow="fold")
    table.add_column("runs", justify="right")
    table.add_column("size", justify="right", no_wrap=True)
    for row in rows:
        submitted = datetime.fromisoformat(row["submitted"]) if row["submitted"] else None
        table.add_row(
            Text(row["job_id"]), _state_text(row["state"]), Text(_local_time(submitted)),
            Text(row["function"] or "?"), Text("?" if row["n_runs"] is None else str(row["n_runs"])),
            Text(human_bytes(row["bytes"])),
        )
    console.print(table)
    console.print(Text(f"{_plural(len(rows), 'job')} in {store.url}"), soft_wrap=True)


# -- status / output / results -----------------------------------------------------------


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@_json_option()
@click.pass_context
def status(ctx: click.Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Show the state of jobs and the reason for it (exit 1 if a job is not found)."""
    store = Store(ctx.obj)
    rows = []
    failed = False
    for job_id in job_ids:
        try:
            derived = jobs.job_status(store, job_id)
        except ValueError as exc:
            _error(str(exc))
            failed = True
            continue
        reason = derived.reason
        if derived.status is RxRemoteJobStatus.MISSING:
            reason = f"not found in share dir {store.url}"
            _error(f"job {job_id} {reason}")
            failed = True
        rows.append({"job_id": job_id, "state": derived.status.value, "reason": reason})
    if as_json:
        _print_json(rows)
    elif rows:
        table = _table()
        table.add_column("id", no_wrap=True)
        table.add_column("state")
        table.add_column("reason", overflow="fold")
        for row in rows:
            table.add_row(Text(row["job_id"]), _state_text(row["state"]), Text(row["reason"]))
        _console().print(table)
    if failed:
        ctx.exit(1)


@cli.command()
@click.argument("job_id")
@click.pass_obj
def output(share_dir: str, job_id: str) -> None:
    """Print the console output of a job's finished tasks, as it is."""
    text = api.rx_get_job_output(api.get_job(job_id, share_dir))
    click.echo(text, nl=False)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return repr(value)
    return value


@cli.command()
@click.argument("job_id")
@click.option("--keep", is_flag=True,
              help="Keep the job (marked retrieved: cleanup removes it later without --force).")
@_json_option("Print a JSON list: each value as itself if JSON can hold it, else its repr.")
@click.pass_obj
def results(share_dir: str, job_id: str, keep: bool, as_json: bool) -> None:
    """Print each run's value of a finished job, then remove the job.

    The job is removed after a complete read (unless it was submitted with
    auto_cleanup=False), like rx_get_job_results; --keep keeps it.
    """
    job = api.get_job(job_id, share_dir)
    with _captured_warnings() as caught:
        values = api.rx_get_job_results(job, console_output=False, auto_cleanup=False if keep else None)
    for warning in caught:
        _warning(str(warning.message))
    if as_json:
        _print_json([_jsonable(v) for v in values])
        return
    for i, value in enumerate(values):
        click.echo(f"{i}: {value!r}")


# -- wait / cancel -----------------------------------------------------------------------


def _n_tasks(job: api.RxRemoteJob) -> int | None:
    try:
        return jobs.read_job_record(job.store, job.job_id).n_tasks
    except (JobNotFoundError, ValueError):
        return None


def _tasks_done(job: api.RxRemoteJob, n_tasks: int) -> int:
    try:
        return jobs.tasks_done(job.store, job.job_id)
    except (JobNotFoundError, ValueError):
        return 0


def _wait_all(handles: list[api.RxRemoteJob], timeout: float | None,
              console: Console | None) -> dict[str, RxRemoteJobStatus]:
    """Wait until every job has ended or ``timeout`` passes; a progress bar per job on ``console``."""
    ended: dict[str, RxRemoteJobStatus] = {}
    progress = None
    bars: dict[str, tuple[Any, int | None]] = {}
    if console is not None:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("tasks  {task.fields[state]}"), TimeElapsedColumn(),
                            console=console)
        for job in handles:
            n_tasks = _n_tasks(job)
            bars[job.job_id] = (progress.add_task(job.job_id, total=n_tasks, state=""), n_tasks)

    def check() -> bool | None:
        for job in handles:
            if job.job_id in ended:
                continue
            state = api.rx_get_job_status(job)
            if progress is not None:
                bar, n_tasks = bars[job.job_id]
                done = _tasks_done(job, n_tasks) if n_tasks is not None else 0
                if state is RxRemoteJobStatus.FINISHED and n_tasks is not None:
                    done = n_tasks
                progress.update(bar, completed=done, state=state.value)
            if state.is_terminal() or state is RxRemoteJobStatus.MISSING:
                ended[job.job_id] = state
        return True if len(ended) == len(handles) else None

    with progress if progress is not None else nullcontext():
        poll(check, timeout=timeout, first_delay=0.05, max_delay=0.5)
    return ended


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Give up after this many seconds (default: wait as long as it takes).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar of tasks done (default: on a terminal).")
@click.pass_context
def wait(ctx: click.Context, job_ids: tuple[str, ...], timeout: float | None,
         progress: bool | None) -> None:
    """Wait for jobs to end; exit 0 if all finished, 1 otherwise (failed, canceled, timed out)."""
    handles = [api.get_job(job_id, ctx.obj) for job_id in dict.fromkeys(job_ids)]
    console = _console()
    show = console.is_terminal if progress is None else progress
    ended = _wait_all(handles, timeout, console if show else None)
    all_finished = True
    for job in handles:
        derived = jobs.job_status(job.store, job.job_id)
        if job.job_id not in ended and not (
            derived.status.is_terminal() or derived.status is RxRemoteJobStatus.MISSING
        ):
            click.echo(f"{job.job_id}: still {derived.status.value} after {timeout or 0:g} s")
            all_finished = False
            continue
        line = f"{job.job_id}: {derived.status.value}"
        if derived.status is not RxRemoteJobStatus.FINISHED:
            all_finished = False
            if derived.reason and derived.reason != derived.status.value:
                line += f" ({derived.reason})"
        click.echo(line)
    if not all_finished:
        ctx.exit(1)


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@click.pass_context
def cancel(ctx: click.Context, job_ids: tuple[str, ...]) -> None:
    """Stop queued or running jobs; exit 1 if one could not be canceled (e.g. it had ended)."""
    failed = False
    for job_id in dict.fromkeys(job_ids):
        try:
            job = api.get_job(job_id, ctx.obj)
            if api.rx_cancel_job(job):
                click.echo(f"canceled {job_id}")
                continue
            state = api.rx_get_job_status(job)
            _error(f"job {job_id} could not be canceled: it has already ended ({state.value})")
        except _USER_ERRORS as exc:
            _error(str(exc))
        failed = True
    if failed:
        ctx.exit(1)


# -- cleanup -----------------------------------------------------------------------------


def _cleanup_line(entry: CleanupEntry) -> str:
    if entry.outcome == "removed":
        return f"removed {entry.job_id} ({entry.status}; {_plural(entry.files, 'file')}, " \
               f"{human_bytes(entry.bytes)})"
    if entry.outcome == "would remove":
        return f"would remove {entry.job_id} ({entry.status}; {_plural(entry.files, 'file')}, " \
               f"{human_bytes(entry.bytes)})"
    if entry.outcome == "missing":
        return f"not found {entry.job_id}: {entry.reason}"
    if entry.outcome == "error":
        return f"error {entry.job_id}: {entry.reason}"
    return f"kept {entry.job_id} ({entry.status}): {entry.reason}"


def _select_by_id(store: Store, job_ids: Sequence[str], filtered: bool,
                  matching: set[str]) -> tuple[list[str], list[str]]:
    """Split named jobs into those to hand to cleanup and those the filters leave out."""
    selected, skipped = [], []
    for job_id in job_ids:
        if filtered and job_id not in matching and (
            jobs.job_status(store, job_id).status is not RxRemoteJobStatus.MISSING
        ):
            skipped.append(job_id)
        else:
            selected.append(job_id)  # unknown ids too: cleanup reports them as not found
    return selected, skipped


def _run_cleanup(targets: list[tuple[Store, str]], force: bool, dry_run: bool,
                 quiet: bool) -> tuple[CleanupReport, list[str]]:
    """Clean up job by job, a line each (and a progress bar on a terminal).

    Returns the report and the warnings that no per-job line says (e.g. about the trash).
    """
    report = CleanupReport()
    batches = [targets[i:i + _CLEANUP_BATCH] for i in range(0, len(targets), _CLEANUP_BATCH)]
    console = _console()
    progress = None
    if not quiet and console.is_terminal and len(batches) > 1:
        # rich redirects stdout/stderr while the bar shows: the lines print above it.
        progress = Progress(TextColumn("cleanup"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console, transient=True)
    with _captured_warnings() as caught, progress if progress is not None else nullcontext():
        bar = progress.add_task("cleanup", total=len(targets)) if progress is not None else None
        for batch in batches:
            part = cleanup_jobs(batch, force=force, verbose=False, dry_run=dry_run)
            report.entries.extend(part.entries)
            if not quiet:
                for entry in part:
                    click.echo(_cleanup_line(entry), err=entry.outcome == "error")
            if progress is not None and bar is not None:
                progress.advance(bar, len(batch))
    named = {entry.job_id for entry in report}
    others = [str(w.message) for w in caught
              if getattr(w.message, "job_id", None) not in named]
    return report, others


@cli.command()
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID]...")
@click.option("--all", "all_jobs", is_flag=True, help="Every job of the share dir.")
@_state_option("Only jobs in this state (repeatable).")
@click.option("--older-than", type=DURATION, help="Only jobs submitted longer ago than this (e.g. 7d).")
@click.option("--force", is_flag=True,
              help="Also remove un-retrieved results and running jobs (canceled first).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@_json_option("Print the cleanup report as JSON.")
@click.pass_context
def cleanup(ctx: click.Context, job_ids: tuple[str, ...], all_jobs: bool, states: tuple[str, ...],
            older_than: timedelta | None, force: bool, dry_run: bool, as_json: bool) -> None:
    """Remove the artifacts of jobs, following the cleanup rules.

    Finished jobs whose results were never retrieved, and running jobs, are
    kept unless --force.  Exit 1 if a job named by id was kept or not found,
    or if removing a job failed.
    """
    if not job_ids and not all_jobs:
        raise click.UsageError("name the jobs to clean up, or pass --all for every job of the share dir")
    if job_ids and all_jobs:
        raise click.UsageError("give job ids or --all, not both")
    share_dir = ctx.obj
    store = Store(share_dir)
    filtered = bool(states) or older_than is not None
    cutoff = datetime.now(timezone.utc) - older_than if older_than is not None else None
    ids = [validate_job_id(job_id) for job_id in dict.fromkeys(job_ids)]  # all checked before any removal
    matching: set[str] = set()
    if filtered:
        matching = {job.job_id for job, _, _ in
                    api.list_jobs(share_dir, end_time=cutoff, states=states or None)}
    if ids:
        selected, skipped = _select_by_id(store, ids, filtered, matching)
    else:
        selected = sorted(matching) if filtered else store.list_job_ids()
        skipped = []

    for job_id in skipped if not as_json else ():
        click.echo(f"skipped {job_id}: does not match --state/--older-than")
    report, other_warnings = _run_cleanup([(store, job_id) for job_id in selected], force, dry_run,
                                          quiet=as_json)
    for message in other_warnings:
        _warning(message)

    would = [e for e in report if e.outcome == "would remove"]
    errors = [e for e in report if e.outcome == "error"]
    kept = [e for e in report if e.outcome == "kept"]
    missing = [e for e in report if e.outcome == "missing"]
    if as_json:
        data = report.to_json()
        data.update(share_dir=store.url, dry_run=dry_run, force=force, skipped=skipped,
                    would_remove=len(would), bytes_would_free=sum(e.bytes for e in would),
                    errors=len(errors), missing=len(missing))
        _print_json(data)
    elif dry_run:
        click.echo(f"dry run: {_plural(len(would), 'job')} would be removed, {len(kept)} kept; "
                   f"{human_bytes(sum(e.bytes for e in would))} would be freed")
    else:
        click.echo(f"{_plural(len(report.removed), 'job')} removed, {len(kept)} kept"
                   + (f", {len(errors)} failed" if errors else "")
                   + f"; {human_bytes(report.bytes_freed)} freed "
                   f"({_plural(report.files_freed, 'file')})")
    if errors or (ids and (kept or missing)):
        ctx.exit(1)


# -- du ----------------------------------------------------------------------------------

_KEPT_BECAUSE = {
    "finished": "un-retrieved",
    "running": "running",
    "queued": "running",  # counted with running: both are kept until canceled
    "undetermined": "undetermined",
}


@cli.command()
@_json_option()
@click.pass_obj
def du(share_dir: str, as_json: bool) -> None:
    """Show the disk use of each job and what cleanup (without --force) would free."""
    store = Store(share_dir)
    with _captured_warnings():  # a dry run: the kept jobs are said in the table
        report = cleanup_jobs([(store, job_id) for job_id in store.list_job_ids()],
                              force=False, verbose=False, dry_run=True)
    rows = []
    for entry in report:
        if entry.outcome == "missing":
            continue  # removed while we looked
        if entry.outcome == "would remove":
            files, size, action, why = entry.files, entry.bytes, "remove", ""
        else:
            usage = store.usage(entry.job_id)
            files, size, action = usage.files, usage.bytes, "keep"
            why = "error" if entry.outcome == "error" else _KEPT_BECAUSE.get(entry.status, entry.status)
        rows.append({"job_id": entry.job_id, "state": entry.status, "files": files, "bytes": size,
                     "cleanup": action, "kept_because": why, "reason": entry.reason})
    kept_by: dict[str, int] = {}
    for row in rows:
        if row["cleanup"] == "keep":
            kept_by[row["kept_because"]] = kept_by.get(row["kept_because"], 0) + row["bytes"]
    totals = {
        "jobs": len(rows),
        "files": sum(r["files"] for r in rows),
        "bytes": sum(r["bytes"] for r in rows),
        "freeable_bytes": sum(r["bytes"] for r in rows if r["cleanup"] == "remove"),
        "kept_bytes": sum(kept_by.values()),
        "kept_bytes_by_reason": kept_by,
    }
    if as_json:
        _print_json({"share_dir": store.url, "jobs": rows, "totals": totals})
        return
    console = _console()
    if rows:
        table = _table()
        table.add_column("id", no_wrap=True)
        table.add_column("state")
        table.add_column("files", justify="right")
        table.add_column("size", justify="right", no_wrap=True)
        table.add_column("cleanup would")
        for row in rows:
            action = "remove" if row["cleanup"] == "remove" else f"keep ({row['kept_because']})"
            table.add_row(Text(row["job_id"]), _state_text(row["state"]), Text(str(row["files"])),
                          Text(human_bytes(row["bytes"])), Text(action))
        console.print(table)
    why = ", ".join(f"{reason} {human_bytes(size)}" for reason, size in sorted(kept_by.items()))
    for line in (
        f"{_plural(totals['jobs'], 'job')} in {store.url}: {human_bytes(totals['bytes'])} "
        f"in {_plural(totals['files'], 'file')}",
        f"cleanup would free now: {human_bytes(totals['freeable_bytes'])}",
        f"kept: {human_bytes(totals['kept_bytes'])}" + (f" ({why})" if why else ""),
    ):
        console.print(Text(line), soft_wrap=True)


# -- demo --------------------------------------------------------------------------------


@cli.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Run a small job without waiting and follow it through its whole life.

    It uses the share dir given to rxjobs (default: the per-user one) and
    removes its job at the end.
    """
    from .demo import run_demo

    ctx.exit(run_demo(share_dir=ctx.obj, echo=click.echo))


__all__ = ["CliError", "cli", "main", "parse_duration", "parse_time"]
