"""The ``rxjobs`` command: list, inspect, wait for, cancel and clean up the jobs of a share dir.

The command only parses arguments and prints.  Every job operation is a call
into :mod:`rxjobs.api`; what it shows comes from the job services:
:mod:`rxjobs.listing` (``list``), :mod:`rxjobs.usage` (``du``),
:mod:`rxjobs.retention` and :mod:`rxjobs.cleanup` (``cleanup``, dry runs) and
:mod:`rxjobs.jobs` (states).  Times and durations are read by
:mod:`rxjobs.times` and :mod:`rxjobs.durations`.

Errors a user can cause end as one line on stderr, ``rxjobs: error: <message>``,
with exit status 1 (usage errors, also one line, exit with 2).  Output into a
pipe whose reader went away (``rxjobs list | head``) ends the command quietly.  Warnings of the
core are captured and shown as ``rxjobs: warning: <message>`` lines, or said by
the per-job lines of ``cleanup``.
"""

from __future__ import annotations

import errno
import json
import os
import select
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import click
from rich import box
from rich.console import Console
from rich.filesize import decimal as human_bytes
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import __version__, api, jobs, listing
from .cleanup import CleanupEntry, CleanupOutcome, CleanupReport, cleanup_jobs
from .doctor import Remedy
from .doctor import doctor as run_doctor
from .durations import parse_size
from .engines import EngineNotInstalledError
from .errors import (
    IncompleteResultsError,
    JobCanceledError,
    JobFailedError,
    JobNotFinishedError,
    JobNotFoundError,
    RxUnsupportedContextError,
)
from .ids import validate_job_id
from .options import REDACTED, has_redacted_value, storage_options
from .records import read_job_record
from .retention import POLICY_BATCH, PolicyRun, RetentionPolicy, apply_policy, load_policy
from .sharedir import default_share_dir, normalize_share_dir
from .status import RxRemoteJobStatus
from .store import Store, open_store
from .sweep import CHILD_TIME_LIMIT, UserCleanup, sweep_cleanup, sweep_usage
from .times import parse_age, parse_time, time_ago
from .usage import disk_usage
from .waiting import poll

# What a user can cause (a bad id, an unknown job, a job in the wrong state, an
# unwritable share dir): reported in one line, never with a traceback.
T = TypeVar("T")

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


class _UsageError(click.UsageError):
    """A usage error in one line, ``rxjobs: error: <message> (see '<command> --help')``, status 2.

    Click prints the usage, a hint, a blank line and then the error: four lines
    where a script reading stderr expects one.
    """

    def show(self, file: Any = None) -> None:
        where = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"rxjobs: error: {self.format_message()}{where}", err=True, file=file)


def _one_line(exc: click.UsageError) -> click.UsageError:
    """``exc`` as a one-line usage error (a request for help stays as it is: it prints the help)."""
    if isinstance(exc, (_UsageError, click.exceptions.NoArgsIsHelpError)):
        return exc
    return _UsageError(exc.format_message(), exc.ctx)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe or socket whose reader has closed it (``rxjobs list | head``)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


class _RxGroup(click.Group):
    """The command group; turns rxjobs errors into one-line messages at the command boundary."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from exc
        except (click.exceptions.Exit, click.ClickException):
            raise
        except OSError as exc:
            if exc.errno == errno.EPIPE and _stdout_reader_gone():
                raise  # click ends the command quietly, with status 1
            raise CliError(str(exc) or type(exc).__name__) from exc
        except _USER_ERRORS as exc:
            raise CliError(str(exc) or type(exc).__name__) from exc
        except Exception as exc:
            if not _is_storage_error(exc):
                raise
            raise CliError(f"the share dir's storage said: {type(exc).__name__}: {exc}") from exc


# The libraries behind object-store share dirs: their errors (no credentials, no such
# bucket, endpoint unreachable) are the user's to fix, said in one line.
_STORAGE_PACKAGES = frozenset({"botocore", "aiobotocore", "s3fs", "gcsfs", "google", "adlfs", "azure",
                               "fsspec", "aiohttp"})


def _is_storage_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in _STORAGE_PACKAGES


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

class ParsedType(click.ParamType, Generic[T]):
    """A click parameter read by a parse function that raises ValueError on bad text.

    Parameters
    ----------
    name
        The metavar shown in help (``TIME``, ``DURATION``, ``SIZE``).
    parse
        Turns the text into the value; its ValueError becomes a usage error.
    kind
        A value already of this type (a default, or a call from Python) is taken as is.
    """

    def __init__(self, name: str, parse: Callable[[str], T], kind: type[T]) -> None:
        self.name = name
        self.parse = parse
        self.kind = kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> T:
        if isinstance(value, self.kind):
            return value
        try:
            return self.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIME = ParsedType("TIME", parse_time, datetime)
# --older-than: a duration that still counts back to a date.
AGE = ParsedType("DURATION", parse_age, timedelta)
SIZE = ParsedType("SIZE", parse_size, int)
_STATE_CHOICE = click.Choice([s.value for s in RxRemoteJobStatus], case_sensitive=False)


_Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _state_option(help_text: str) -> _Decorator:
    return click.option("--state", "states", multiple=True, type=_STATE_CHOICE, help=help_text)


def _json_option(help_text: str = "Print JSON for scripts.") -> _Decorator:
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def _all_users_option(help_text: str) -> _Decorator:
    def both(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option(
            "--time-limit", "time_limit", type=click.FloatRange(min=0, min_open=True),
            default=CHILD_TIME_LIMIT, show_default=True, metavar="SECONDS",
            help="With --all-users: how long the process acting as one user may take; one that is "
                 "stopped or stuck is then killed, reported, and the sweep goes on.")(func)
        return click.option("--all-users", "all_users", metavar="ROOT",
                            type=click.Path(file_okay=False, path_type=str), help=help_text)(func)
    return both


# -- printing ----------------------------------------------------------------------------


def _console() -> Console:
    """A console on stdout; off a terminal it is wide, so tables never fold job ids."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 200))
    return console


def _table() -> Table:
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)


def _state_text(state: str, words: str | None = None) -> Text:
    """``state`` styled, said as ``words`` (e.g. "finished, 3 of 9 runs failed") if given."""
    return Text(words or state, style=_STATE_STYLES.get(state, ""))


# Rows written per echo when a long JSON list is printed.
_JSON_ROWS_PER_WRITE = 512


def _print_json(data: Any) -> None:
    """Print ``data`` as JSON, its top-level entries and list items one per line.

    ``indent`` would send ``json.dumps`` through its pure-Python encoder, a
    third of ``rxjobs du --json``'s time on a big share dir; each line here is
    encoded by the C encoder, and a long list is written as it is encoded.
    """
    for text in _json_lines(data):
        click.echo(text, nl=False)
    click.echo()


def _json_lines(data: Any, indent: str = "") -> Iterator[str]:
    """Chunks of the JSON of ``data``: a list (or a dict's list) one item per line.

    An iterator is written as a list, each item encoded as it is taken.
    """
    inner = indent + "  "
    if isinstance(data, dict) and data:
        yield "{\n"
        last = len(data) - 1
        for i, (key, value) in enumerate(data.items()):
            yield f"{inner}{json.dumps(str(key))}: "
            yield from (_json_lines(value, inner) if isinstance(value, (list, Iterator))
                        else (json.dumps(value),))
            yield ",\n" if i < last else "\n"
        yield f"{indent}}}"
    elif isinstance(data, (list, Iterator)):
        yield from _json_list_lines(data, indent)
    else:
        yield json.dumps(data)


def _json_list_lines(items: Iterable[Any], indent: str = "") -> Iterator[str]:
    """Chunks of the JSON list of ``items``, one item per line, encoded as they come."""
    chunk: list[str] = []
    lead = f"[\n{indent}  "
    for item in items:
        chunk.append(lead + json.dumps(item))
        lead = f",\n{indent}  "
        if len(chunk) >= _JSON_ROWS_PER_WRITE:
            yield "".join(chunk)
            chunk = []
    if lead.startswith("["):
        yield "[]"
    else:
        yield "".join(chunk) + f"\n{indent}]"


def _local_time(when: datetime | None) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when else "?"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- the group ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ShareDir:
    """The share dir a command works on: its URL and the storage options that reach it."""

    url: str
    options: dict[str, Any] | None = None

    def store(self) -> Store:
        return open_store(self.url, self.options)


def _parse_share_dir_options(pairs: Sequence[str], from_env: str | None) -> dict[str, Any] | None:
    """``$RXJOBS_SHARE_DIR_OPTIONS`` (a JSON object), then each ``KEY=VALUE`` over it.

    A VALUE that is JSON (``true``, ``3``, ``{"region_name": "eu-west-1"}``) is
    taken as such; anything else is a string.
    """
    options: dict[str, Any] = {}
    if from_env:
        try:
            loaded = json.loads(from_env)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"$RXJOBS_SHARE_DIR_OPTIONS is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("$RXJOBS_SHARE_DIR_OPTIONS must be a JSON object")
        options.update(loaded)
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, not {pair!r}",
                                     param_hint="'--share-dir-option'")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        options[key.strip()] = value
    redacted = has_redacted_value(options)
    if redacted is not None:
        raise click.BadParameter(
            f"the value of {redacted!r} is {REDACTED!r}, the placeholder rxjobs writes instead of a "
            "credential: give the real value, or leave credentials to the environment",
            param_hint="'--share-dir-option'")
    frozen = storage_options(options) if options else None
    return frozen.to_dict() if frozen is not None else None


@click.group(cls=_RxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--share-dir",
    envvar="RXJOBS_SHARE_DIR",
    show_envvar=True,
    metavar="DIR_OR_URL",
    help="The share dir whose jobs to manage (default: the per-user data dir).",
)
@click.option(
    "--share-dir-option", "-o", "share_dir_option", multiple=True, metavar="KEY=VALUE",
    help="An fsspec storage option of an object-store share dir, e.g. endpoint_url=http://... "
         "(repeatable; $RXJOBS_SHARE_DIR_OPTIONS may hold them all as a JSON object).",
)
@click.version_option(__version__, prog_name="rxjobs")
@click.pass_context
def cli(ctx: click.Context, share_dir: str | None, share_dir_option: tuple[str, ...]) -> None:
    """Manage rxjobs jobs: list, status, output, results, wait, cancel, cleanup, du, doctor, ui."""
    options = _parse_share_dir_options(share_dir_option, os.environ.get("RXJOBS_SHARE_DIR_OPTIONS"))
    url = normalize_share_dir(share_dir) if share_dir else default_share_dir()
    ctx.obj = ShareDir(url, options)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``rxjobs`` command (the console-script entry point and ``python -m rxjobs``).

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).
    """
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="rxjobs")
    finally:
        _flush_stdout_quietly()


def _flush_stdout_quietly() -> None:
    """Flush stdout now, so that a reader gone away costs no ``Exception ignored`` at exit."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush has nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


# -- list --------------------------------------------------------------------------------


@cli.command("list")
@_state_option("Only jobs in this state (repeatable).")
@click.option("--since", type=TIME,
              help="Only jobs submitted since: an ISO date/time, or a duration ago (30m, 2h, 7d).")
@click.option("--until", type=TIME,
              help="Only jobs submitted until: an ISO date/time, or a duration ago.")
@_json_option("Print a JSON list.")
@click.pass_obj
def list_command(share: ShareDir, states: tuple[str, ...], since: datetime | None,
                 until: datetime | None, as_json: bool) -> None:
    """List the jobs of the share dir, oldest first."""
    store = share.store()
    found = listing.list_jobs(store, start=since, end=until, states=states or None, sizes=True)
    rows = [listing.summarize(store, job) for job in found]
    if as_json:
        for text in _json_list_lines(row.to_json() for row in rows):
            click.echo(text, nl=False)
        click.echo()
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
        table.add_row(
            Text(row.job_id), _state_text(row.status.value if row.status else "?", row.state_text),
            Text(_local_time(row.submitted)), Text(row.function or "?"),
            Text("?" if row.n_runs is None else str(row.n_runs)), Text(human_bytes(row.bytes)),
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
    store = ctx.obj.store()
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
@click.option("--follow", "-f", is_flag=True,
              help="Print output as tasks produce it until the job ends, like tail -f; the exit "
                   "status is 0 if it finished, 1 otherwise.")
@click.pass_obj
def output(share: ShareDir, job_id: str, follow: bool) -> None:
    """Print the console output of a job's finished tasks, as it is (--follow: as it comes)."""
    job = api.get_job(job_id, share.url, share.options)
    if not follow:
        click.echo(api.rx_get_job_output(job), nl=False)
        return
    follower = jobs.OutputFollower(job.store, job.job_id)
    for text in follower:
        click.echo(text, nl=False)
    if follower.status is not RxRemoteJobStatus.FINISHED:
        state = follower.status.value if follower.status is not None else "unknown"
        click.echo(f"rxjobs: job {job.job_id} ended {state}", err=True)
        raise click.exceptions.Exit(1)


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
def results(share: ShareDir, job_id: str, keep: bool, as_json: bool) -> None:
    """Print each run's value of a finished job, then remove the job.

    The job is removed after a complete read (unless it was submitted with
    auto_cleanup=False), like rx_get_job_results; --keep keeps it.
    """
    job = api.get_job(job_id, share.url, share.options)
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
        return read_job_record(job.store, job.job_id).n_tasks
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
    handles = [api.get_job(job_id, ctx.obj.url, ctx.obj.options) for job_id in dict.fromkeys(job_ids)]
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
            job = api.get_job(job_id, ctx.obj.url, ctx.obj.options)
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


def _cleanup_line(entry: CleanupEntry, why: str = "") -> str:
    picked = f" [{why}]" if why else ""
    if entry.outcome is CleanupOutcome.REMOVED:
        return f"removed {entry.job_id} ({entry.status}; {_plural(entry.files, 'file')}, " \
               f"{human_bytes(entry.bytes)}){picked}"
    if entry.outcome is CleanupOutcome.WOULD_REMOVE:
        return f"would remove {entry.job_id} ({entry.status}; {_plural(entry.files, 'file')}, " \
               f"{human_bytes(entry.bytes)}){picked}"
    if entry.outcome is CleanupOutcome.MISSING:
        return f"not found {entry.job_id}: {entry.reason}"
    if entry.outcome is CleanupOutcome.ERROR:
        return f"error {entry.job_id}: {entry.reason}"
    return f"kept {entry.job_id} ({entry.status}): {entry.reason}{picked}"


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


def _run_cleanup(targets: list[tuple[Store, str]], force: bool, dry_run: bool, quiet: bool,
                 now: datetime | None = None,
                 why: dict[str, str] | None = None) -> tuple[CleanupReport, list[str]]:
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
        for i, batch in enumerate(batches):
            # Interrupted removals are finished once, before the first batch.
            part = cleanup_jobs(batch, force=force, verbose=False, dry_run=dry_run, purge=i == 0,
                                now=now)
            report.entries.extend(part.entries)
            if not quiet:
                for entry in part:
                    click.echo(_cleanup_line(entry, (why or {}).get(entry.job_id, "")),
                               err=entry.outcome is CleanupOutcome.ERROR)
            if progress is not None and bar is not None:
                progress.advance(bar, len(batch))
    named = {entry.job_id for entry in report}
    others = [str(w.message) for w in caught
              if getattr(w.message, "job_id", None) not in named]
    return report, others


def _retention_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that choose jobs among all those of the share dir (cleanup and du)."""
    for option in reversed([
        _state_option("Only jobs in this state (repeatable)."),
        click.option("--older-than", type=AGE,
                     help="Jobs submitted longer ago than this (e.g. 7d)."),
        click.option("--max-total-size", type=SIZE, metavar="SIZE",
                     help="Remove the oldest jobs the cleanup rules allow until the share dir "
                          "holds at most SIZE (e.g. 50G, 500MiB); never a job the rules keep "
                          "without --force."),
        click.option("--keep-last", type=click.IntRange(min=0), metavar="N",
                     help="Never remove the N newest jobs."),
        click.option("--policy", "policy_file", type=click.Path(dir_okay=False), metavar="FILE",
                     help="A TOML retention policy (keys: older_than, max_total_size, keep_last, "
                          "states, force); options given here win over its keys."),
        click.option("--force", is_flag=True,
                     help="Also remove un-retrieved results and running jobs (canceled first)."),
    ]):
        command = option(command)
    return command


def _policy(policy_file: str | None, states: tuple[str, ...], older_than: timedelta | None,
            max_total_size: int | None, keep_last: int | None, force: bool) -> RetentionPolicy:
    policy = load_policy(policy_file) if policy_file else RetentionPolicy()
    return policy.merged(
        older_than=older_than, max_total_size=max_total_size, keep_last=keep_last,
        states=frozenset(RxRemoteJobStatus.parse(s) for s in states) if states else None,
        force=True if force else None)


@cli.command()
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID]...")
@click.option("--all", "all_jobs", is_flag=True, help="Every job of the share dir.")
@_retention_options
@click.option("--dry-run", is_flag=True,
              help="Say exactly which jobs would be removed and the bytes that frees; remove nothing.")
@_all_users_option("Apply the policy to every user's share dir under ROOT, each as its owner "
                   "(root only).")
@click.option("--in-total", is_flag=True,
              help="With --all-users: --max-total-size bounds all the share dirs together, "
                   "not each one.")
@_json_option("Print the cleanup report as JSON.")
@click.pass_context
def cleanup(ctx: click.Context, job_ids: tuple[str, ...], all_jobs: bool, states: tuple[str, ...],
            older_than: timedelta | None, max_total_size: int | None, keep_last: int | None,
            policy_file: str | None, force: bool, dry_run: bool, all_users: str | None,
            time_limit: float, in_total: bool, as_json: bool) -> None:
    """Remove the artifacts of jobs, following the cleanup rules.

    Name jobs, or choose among all the jobs of the share dir with --all and
    the retention options (--older-than, --max-total-size, --keep-last,
    --state, --policy).  Finished jobs whose results were never retrieved,
    and running jobs, are kept unless --force; a finished job whose
    expires_after has passed is removed without it.  Exit 1 if a job named
    by id was kept or not found, if removing a job failed, or if the share dir
    is still over --max-total-size.

    With --all-users ROOT (root only), the same rules and options apply to
    every share dir under ROOT (ROOT itself, ROOT/USER, ROOT/GROUP/USER),
    each cleaned up by a process acting as the share dir's owner, with a
    report per user.
    """
    chooses = any(v is not None for v in (older_than, max_total_size, keep_last, policy_file))
    if all_users is not None:
        if job_ids:
            raise click.UsageError("--all-users applies a policy to every share dir under ROOT; "
                                   "do not name jobs with it")
        policy = _policy(policy_file, states, older_than, max_total_size, keep_last, force)
        _cleanup_all_users(ctx, all_users, policy, dry_run, in_total, as_json, time_limit)
        return
    if in_total:
        raise click.UsageError("--in-total goes with --all-users")
    if job_ids and all_jobs:
        raise click.UsageError("give job ids or --all, not both")
    if job_ids and any(v is not None for v in (max_total_size, keep_last, policy_file)):
        raise click.UsageError("--max-total-size, --keep-last and --policy choose among all the jobs "
                               "of the share dir; do not name jobs with them")
    if not job_ids and not (all_jobs or chooses or states):
        raise click.UsageError("name the jobs to clean up, or pass --all (or a retention option such "
                               "as --older-than, --max-total-size, --keep-last or --policy) for the "
                               "jobs of the share dir")
    if job_ids:
        _cleanup_named(ctx, job_ids, states, older_than, force, dry_run, as_json)
    else:
        policy = _policy(policy_file, states, older_than, max_total_size, keep_last, force)
        _cleanup_share_dir(ctx, policy, dry_run, as_json)


def _cleanup_named(ctx: click.Context, job_ids: tuple[str, ...], states: tuple[str, ...],
                   older_than: timedelta | None, force: bool, dry_run: bool, as_json: bool) -> None:
    share: ShareDir = ctx.obj
    store = share.store()
    filtered = bool(states) or older_than is not None
    cutoff = time_ago(older_than) if older_than is not None else None
    ids = [validate_job_id(job_id) for job_id in dict.fromkeys(job_ids)]  # all checked before any removal
    matching: set[str] = set()
    if filtered:
        matching = {job.job_id for job in listing.list_jobs(store, end=cutoff, states=states or None,
                                                            need_status=False)}
    selected, skipped = _select_by_id(store, ids, filtered, matching)
    for job_id in skipped if not as_json else ():
        click.echo(f"skipped {job_id}: does not match --state/--older-than")
    report, other_warnings = _run_cleanup([(store, job_id) for job_id in selected], force, dry_run,
                                          quiet=as_json)
    for message in other_warnings:
        _warning(message)
    kept = [e for e in report if e.outcome is CleanupOutcome.KEPT]
    missing = [e for e in report if e.outcome is CleanupOutcome.MISSING]
    errors = [e for e in report if e.outcome is CleanupOutcome.ERROR]
    _print_cleanup_summary(report, store, dry_run, force, as_json, skipped=skipped)
    if errors or kept or missing:
        ctx.exit(1)


def _cleanup_share_dir(ctx: click.Context, policy: RetentionPolicy, dry_run: bool,
                       as_json: bool) -> None:
    store = ctx.obj.store()
    console = _console()
    why: dict[str, str] = {}
    shown: list[Any] = []  # the progress bar and its task, once the jobs picked are known

    def started(run: PolicyRun, total: int) -> None:
        why.update(run.why)
        if not as_json and console.is_terminal and total > POLICY_BATCH:
            # rich redirects stdout/stderr while the bar shows: the lines print above it.
            progress = Progress(TextColumn("cleanup"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=console, transient=True)
            stack.enter_context(progress)
            shown.extend([progress, progress.add_task("cleanup", total=total)])

    def reported(entries: list[CleanupEntry]) -> None:
        if not as_json:
            for entry in entries:
                click.echo(_cleanup_line(entry, why.get(entry.job_id, "")),
                           err=entry.outcome is CleanupOutcome.ERROR)
        if shown:
            shown[0].advance(shown[1], len(entries))

    with ExitStack() as stack:
        caught = stack.enter_context(_captured_warnings())
        run = apply_policy(store, policy, dry_run, on_start=started, on_entries=reported)
    report = run.report
    named = {entry.job_id for entry in report}
    for message in (str(w.message) for w in caught if getattr(w.message, "job_id", None) not in named):
        _warning(message)
    still_over = run.still_over if run.picks is not None else False
    size = {}
    if run.picks is not None and policy.max_total_size is not None:
        size = {"total_bytes": run.total_bytes, "bytes_after": run.bytes_after,
                "max_total_size": policy.max_total_size, "over_max_total_size": still_over}
    extra = {"policy": policy.to_json(),
             "picked": [{"job_id": p.job_id, "why": p.why} for p in run.picks]
             if run.picks is not None else None,
             "protected": run.protected, **size}
    _print_cleanup_summary(report, store, dry_run, policy.force, as_json, extra=extra)
    if size and not as_json:
        verb = "would hold" if dry_run else "holds"
        click.echo(f"share dir {verb} {human_bytes(run.bytes_after or 0)} "
                   f"(--max-total-size {human_bytes(policy.max_total_size or 0)})")
    if still_over:
        kept = sum(1 for e in report if e.outcome is CleanupOutcome.KEPT)
        _warning(f"the share dir {'would stay' if dry_run else 'is still'} over --max-total-size: "
                 f"the rest is held by jobs the cleanup rules keep ({kept} picked and kept, and "
                 "jobs not picked); collect their results or pass --force")
    if any(e.outcome is CleanupOutcome.ERROR for e in report) or (still_over and not dry_run):
        ctx.exit(1)


def _print_cleanup_summary(report: CleanupReport, store: Store, dry_run: bool, force: bool,
                           as_json: bool, skipped: Sequence[str] = (),
                           extra: dict[str, Any] | None = None) -> None:
    would = [e for e in report if e.outcome is CleanupOutcome.WOULD_REMOVE]
    errors = [e for e in report if e.outcome is CleanupOutcome.ERROR]
    kept = [e for e in report if e.outcome is CleanupOutcome.KEPT]
    missing = [e for e in report if e.outcome is CleanupOutcome.MISSING]
    if as_json:
        data = report.to_json(lazy=True)
        data.update(share_dir=store.url, dry_run=dry_run, force=force, skipped=list(skipped),
                    would_remove=len(would), bytes_would_free=sum(e.bytes for e in would),
                    errors=len(errors), missing=len(missing), **(extra or {}))
        _print_json(data)
    elif dry_run:
        click.echo(f"dry run: {_plural(len(would), 'job')} would be removed, {len(kept)} kept; "
                   f"{human_bytes(sum(e.bytes for e in would))} would be freed "
                   f"({_plural(sum(e.files for e in would), 'file')})")
    else:
        click.echo(f"{_plural(len(report.removed), 'job')} removed, {len(kept)} kept"
                   + (f", {len(errors)} failed" if errors else "")
                   + f"; {human_bytes(report.bytes_freed)} freed "
                   f"({_plural(report.files_freed, 'file')})")


def _cleanup_all_users(ctx: click.Context, root: str, policy: RetentionPolicy, dry_run: bool,
                       in_total: bool, as_json: bool, time_limit: float) -> None:
    def show(user: UserCleanup) -> None:
        if as_json:
            return
        click.echo(f"== {user.user} (uid {user.uid}): {user.share_dir}")
        if user.error is not None:
            _error(f"{user.share_dir} ({user.user}): {user.error}")
            return
        assert user.run is not None
        why = user.run.why
        for entry in user.run.report:
            click.echo("  " + _cleanup_line(entry, why.get(entry.job_id, "")),
                       err=entry.outcome is CleanupOutcome.ERROR)
        for message in user.warnings:
            _warning(f"{user.user}: {message}")
        report = user.run.report
        gone = [e for e in report if e.outcome in (CleanupOutcome.REMOVED, CleanupOutcome.WOULD_REMOVE)]
        kept = ", ".join(f"{n} {why}" for why, n in user.kept.items())
        click.echo(f"  {user.user}: {_plural(len(gone), 'job')} {'would be ' if dry_run else ''}removed "
                   f"({human_bytes(sum(e.bytes for e in gone))}), "
                   f"{sum(user.kept.values())} kept" + (f" ({kept})" if kept else ""))

    sweep = sweep_cleanup(root, policy, dry_run=dry_run, in_total=in_total, on_user=show,
                          time_limit=time_limit)
    if as_json:
        _print_json(sweep.to_json())
    else:
        for skipped in sweep.skipped:
            click.echo(f"left alone {skipped.path}: {skipped.reason}")
        data = sweep.to_json()
        verb = "would be removed" if dry_run else "removed"
        freed = data["bytes_would_free"] if dry_run else data["bytes_freed"]
        click.echo(f"{_plural(len(sweep.users), 'share dir')} under {sweep.root}: "
                   f"{_plural(data['would_remove'] if dry_run else data['removed'], 'job')} {verb}, "
                   f"{data['kept']} kept; {human_bytes(freed)} {'would be ' if dry_run else ''}freed"
                   + (f"; {len(sweep.failed)} share dirs could not be cleaned up" if sweep.failed else ""))
    if sweep.still_over:
        _warning(f"{'all share dirs together are' if in_total else 'some share dirs are'} still over "
                 "--max-total-size: the rest is held by jobs the cleanup rules keep; their owners "
                 "must collect their results, or pass --force")
    if sweep.failed or sweep.entries(CleanupOutcome.ERROR) or (sweep.still_over and not dry_run):
        ctx.exit(1)


# -- du ----------------------------------------------------------------------------------


@cli.command()
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True, metavar="N",
              help="How many of the largest jobs to show.")
@_retention_options
@_all_users_option("Show who uses what: every user's share dir under ROOT, each surveyed as "
                   "its owner (root only).")
@_json_option()
@click.pass_obj
def du(share: ShareDir, top: int, states: tuple[str, ...], older_than: timedelta | None,
       max_total_size: int | None, keep_last: int | None, policy_file: str | None, force: bool,
       all_users: str | None, time_limit: float, as_json: bool) -> None:
    """Show disk use: per job, per state, the largest jobs, and what each policy would free.

    The policies shown are the cleanup rules alone (cleanup --all), with
    --force, the jobs whose expires_after has passed, and the policy given
    by the retention options or --policy, if any.  Nothing is removed.
    With --all-users ROOT: per user, over every share dir under ROOT.
    """
    asked = _policy(policy_file, states, older_than, max_total_size, keep_last, force)
    if all_users is not None:
        _du_all_users(all_users, asked, top, as_json, time_limit)
        return
    report = disk_usage(share.store(), asked, top)
    if as_json:
        _print_json(report.to_json(lazy=True))
        return
    console = _console()
    if report.jobs:
        table = _table()
        table.add_column("id", no_wrap=True)
        table.add_column("state")
        table.add_column("files", justify="right")
        table.add_column("size", justify="right", no_wrap=True)
        table.add_column("cleanup would")
        for job in report.jobs:
            action = "remove" if job.removable else f"keep ({job.kept_because})"
            if job.expired:
                action += ", expired"
            table.add_row(Text(job.job_id), _state_text(job.state), Text(str(job.files)),
                          Text(human_bytes(job.bytes)), Text(action))
        console.print(table)
        states_table = _table()
        states_table.add_column("state")
        states_table.add_column("jobs", justify="right")
        states_table.add_column("files", justify="right")
        states_table.add_column("size", justify="right", no_wrap=True)
        for state, sums in sorted(report.by_state.items()):
            states_table.add_row(_state_text(state), Text(str(sums.jobs)), Text(str(sums.files)),
                                 Text(human_bytes(sums.bytes)))
        console.print(states_table)
        console.print(Text("largest jobs: " + ", ".join(
            f"{job.job_id} {human_bytes(job.bytes)}" for job in report.largest)), soft_wrap=True)
    why = ", ".join(f"{reason} {human_bytes(size)}"
                    for reason, size in sorted(report.kept_bytes_by_reason.items()))
    for line in (
        f"{_plural(len(report.jobs), 'job')} in {report.share_dir}: {human_bytes(report.bytes)} "
        f"in {_plural(report.files, 'file')}",
        f"cleanup would free now: {human_bytes(report.freeable_bytes)}",
        f"kept: {human_bytes(report.kept_bytes)}" + (f" ({why})" if why else ""),
    ):
        console.print(Text(line), soft_wrap=True)
    policy_table = _table()
    policy_table.add_column("policy")
    policy_table.add_column("jobs", justify="right")
    policy_table.add_column("would free", justify="right", no_wrap=True)
    for estimate in report.policies:
        policy_table.add_row(Text(estimate.policy), Text(str(estimate.jobs)),
                             Text(human_bytes(estimate.bytes)))
    console.print(policy_table)


def _du_all_users(root: str, policy: RetentionPolicy, top: int, as_json: bool, time_limit: float) -> None:
    sweep = sweep_usage(root, policy, top, time_limit=time_limit)
    data = sweep.to_json()
    if as_json:
        _print_json(data)
        return
    table = _table()
    for column in ("user", "share dirs", "jobs", "files", "size", "cleanup would free", "kept"):
        table.add_column(column, justify="left" if column == "user" else "right", no_wrap=True)
    for user, sums in data["by_user"].items():
        table.add_row(Text(user), Text(str(sums["share_dirs"])), Text(str(sums["jobs"])),
                      Text(str(sums["files"])), Text(human_bytes(sums["bytes"])),
                      Text(human_bytes(sums["freeable_bytes"])), Text(human_bytes(sums["kept_bytes"])))
    console = _console()
    console.print(table)
    for failed in (u for u in sweep.users if u.error is not None):
        _error(f"{failed.share_dir} ({failed.user}): {failed.error}")
    for skipped in sweep.skipped:
        click.echo(f"left alone {skipped.path}: {skipped.reason}")
    totals = data["totals"]
    console.print(Text(f"{_plural(totals['share_dirs'], 'share dir')} under {sweep.root}: "
                       f"{human_bytes(totals['bytes'])} in {_plural(totals['jobs'], 'job')}; cleanup "
                       f"would free {human_bytes(totals['freeable_bytes'])}"), soft_wrap=True)


# -- adopt -----------------------------------------------------------------------------


@cli.command()
@_json_option()
@click.pass_obj
def adopt(share: ShareDir, as_json: bool) -> None:
    """Mark a share dir made by an older rxjobs, after checking it holds only jobs.

    rxjobs refuses to work in a directory without its marker file, so that a
    wrong --share-dir (your home directory, say) is never listed or cleaned
    up.  A share dir made before the marker existed is adopted once with
    this command; it is refused while it holds anything but rxjobs jobs.
    """
    found = share.store().adopt()
    if as_json:
        _print_json({"share_dir": share.url, "jobs": found})
    else:
        click.echo(f"adopted {share.url}: {_plural(len(found), 'job')}")


# -- doctor ----------------------------------------------------------------------------


@cli.command()
@click.option("--fix", is_flag=True,
              help="Remove what no job owns (crash-safely, as cleanup removes jobs).")
@_json_option()
@click.pass_obj
def doctor(share: ShareDir, fix: bool, as_json: bool) -> None:
    """Check the share dir (and the runtime dir) for what no job owns.

    Reports debris (entries that are not jobs), trash left by dead cleaners,
    temporary files of dead writers, and driver logs and Spark server files
    of dead processes; --fix removes them.  A job is never touched.  The exit
    status is 0 when all is clean (after --fix: when everything found was
    removed), 1 otherwise.
    """
    report = run_doctor(share.store(), fix=fix)
    if as_json:
        _print_json(report.to_json())
    else:
        fixed = {f.where for f in report.fixed}
        for finding in report.findings:
            if finding.where in fixed:
                state = "set aside" if finding.remedy is Remedy.SET_ASIDE else "removed"
            elif finding.where in report.errors:
                state = f"not removed: {report.errors[finding.where]}"
            elif finding.remedy is Remedy.LEAVE:
                state = "left alone"
            elif finding.remedy is Remedy.SET_ASIDE:
                state = "would set aside (--fix)"
            else:
                state = "would remove (--fix)"
            click.echo(f"{finding.kind.value}: {finding.where}: {finding.reason} [{state}]")
        if report.clean and not report.findings:
            click.echo(f"{share.url} is clean")
        else:
            left = len(report.findings) - len(report.fixed)
            click.echo(f"{_plural(len(report.findings), 'finding')}, {len(report.fixed)} removed, "
                       f"{left} left")
    if not report.clean:
        raise click.exceptions.Exit(1)
# -- ui ----------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on; anything but loopback also needs --allow-remote.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="The port to listen on (0: a free one).")
@click.option("--allow-remote", is_flag=True,
              help="Allow a --host other than loopback (the token is still required; no TLS).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser; just print the URL.")
@click.option("--unix-socket", metavar="PATH", type=click.Path(dir_okay=False, path_type=str),
              help="Listen on a Unix socket (mode 0600) instead of a port, for a browser that "
                   "reaches it through `ssh -L PORT:PATH host`.")
@click.pass_obj
def ui(share: ShareDir, host: str, port: int, allow_remote: bool, no_browser: bool,
       unix_socket: str | None) -> None:
    """Serve a web page of the share dir's jobs, their output and disk use, with safe cleanup.

    Prints the page's URL, which carries a secret token and a random path,
    and serves until Ctrl-C.  The browser is opened through a private file,
    so the token is on no command line.  Needs the ui extra: pip install
    "rxjobs[ui]".  See docs/ui.md.
    """
    from .ui import INSTALL_HINT, missing_dependencies

    missing = missing_dependencies()
    if missing:
        raise CliError(f"the web page needs {', '.join(missing)}: {INSTALL_HINT}")
    from .ui.security import is_loopback
    from .ui.server import serve

    if not is_loopback(host) and not allow_remote:
        raise click.UsageError(f"--host {host} lets other machines reach the page: add --allow-remote "
                               "if you mean it (the token is still required)")
    share.store().list_job_ids()  # a wrong --share-dir fails here, in one line, not in the page
    if unix_socket is not None and (allow_remote or port):
        raise click.UsageError("--unix-socket listens on a socket, not a port: drop --port/--allow-remote")
    try:
        serve(share.url, share.options, host=host, port=port, allow_remote=allow_remote,
              open_browser=not no_browser, echo=click.echo, unix_socket=unix_socket)
    except FileExistsError as exc:
        raise CliError(str(exc)) from None


# -- demo --------------------------------------------------------------------------------


@cli.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Run a small job without waiting and follow it through its whole life.

    It uses the share dir given to rxjobs (default: the per-user one) and
    removes its job at the end.
    """
    from .demo import run_demo

    ctx.exit(run_demo(share_dir=ctx.obj.url, echo=click.echo, share_dir_options=ctx.obj.options))


__all__ = ["CliError", "ParsedType", "cli", "main"]
