"""``rxjobs output``, ``results``, ``wait`` and ``cancel``: following and ending jobs by id.

Every job operation is a call into :mod:`rxjobs.api`.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import click

from .. import api, jobs
from ..errors import JobNotFoundError
from ..records import read_job_record
from ..status import RxRemoteJobStatus
from ..waiting import poll
from .boundary import USER_ERRORS, captured_warnings, error, warning
from .params import ShareDir, json_option
from .printing import print_json

if TYPE_CHECKING:
    from rich.console import Console


@click.command()
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


@click.command()
@click.argument("job_id")
@click.option("--keep", is_flag=True,
              help="Keep the job (marked retrieved: cleanup removes it later without --force).")
@json_option("Print a JSON list: each value as itself if JSON can hold it, else its repr.")
@click.pass_obj
def results(share: ShareDir, job_id: str, keep: bool, as_json: bool) -> None:
    """Print each run's value of a finished job, then remove the job.

    The job is removed after a complete read (unless it was submitted with
    auto_cleanup=False), like rx_get_job_results; --keep keeps it.
    """
    job = api.get_job(job_id, share.url, share.options)
    with captured_warnings() as caught:
        values = api.rx_get_job_results(job, console_output=False, auto_cleanup=False if keep else None)
    for caught_warning in caught:
        warning(str(caught_warning.message))
    if as_json:
        print_json([_jsonable(v) for v in values])
        return
    for i, value in enumerate(values):
        click.echo(f"{i}: {value!r}")


def _n_tasks(job: api.RxRemoteJob) -> int | None:
    try:
        return read_job_record(job.store, job.job_id).n_tasks
    except (JobNotFoundError, ValueError):
        return None


def _tasks_done(job: api.RxRemoteJob) -> int:
    try:
        return jobs.tasks_done(job.store, job.job_id)
    except (JobNotFoundError, ValueError):
        return 0


def _wait_all(handles: list[api.RxRemoteJob], timeout: float | None,
              console: Console | None) -> dict[str, RxRemoteJobStatus]:
    """Wait until every job has ended or ``timeout`` passes; a progress bar per job on ``console``."""
    from . import rich_output

    ended: dict[str, RxRemoteJobStatus] = {}
    progress = rich_output.tasks_progress(console) if console is not None else None
    bars: dict[str, tuple[Any, int | None]] = {}
    if progress is not None:
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
                done = _tasks_done(job) if n_tasks is not None else 0
                if state is RxRemoteJobStatus.FINISHED and n_tasks is not None:
                    done = n_tasks
                progress.update(bar, completed=done, state=state.value)
            if state.is_terminal() or state is RxRemoteJobStatus.MISSING:
                ended[job.job_id] = state
        return True if len(ended) == len(handles) else None

    with progress if progress is not None else nullcontext():
        poll(check, timeout=timeout, first_delay=0.05, max_delay=0.5)
    return ended


@click.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Give up after this many seconds (default: wait as long as it takes).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar of tasks done (default: on a terminal).")
@click.pass_context
def wait(ctx: click.Context, job_ids: tuple[str, ...], timeout: float | None,
         progress: bool | None) -> None:
    """Wait for jobs to end; exit 0 if all finished, 1 otherwise (failed, canceled, timed out)."""
    from . import rich_output  # here: output, results and cancel draw no bars

    handles = [api.get_job(job_id, ctx.obj.url, ctx.obj.options) for job_id in dict.fromkeys(job_ids)]
    console = rich_output.console()
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


@click.command()
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
            error(f"job {job_id} could not be canceled: it has already ended ({state.value})")
        except USER_ERRORS as exc:
            error(str(exc))
        failed = True
    if failed:
        ctx.exit(1)
