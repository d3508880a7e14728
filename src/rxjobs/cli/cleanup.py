"""``rxjobs cleanup``: remove jobs by id or by a retention policy, a line per job, following the rules.

The removals are :mod:`rxjobs.cleanup`'s and :mod:`rxjobs.retention`'s; this
module chooses the jobs from the options, shows progress and says the outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from datetime import datetime, timedelta
from typing import Any

import click

from .. import jobs, listing
from ..cleanup import CleanupEntry, CleanupOutcome, CleanupReport, iter_cleanup
from ..ids import validate_job_id
from ..retention import PolicyRun, RetentionPolicy, apply_policy
from ..status import RxRemoteJobStatus
from ..store import Store
from ..times import time_ago
from . import rich_output
from .all_users import all_users_option, cleanup_all_users
from .boundary import captured_warnings, warning
from .cleanup_report import echo_entries, print_cleanup_summary
from .params import ShareDir, json_option
from .policy import policy_from, retention_options
from .printing import human_bytes

# A cleanup of more jobs than this shows a progress bar on a terminal.
_PROGRESS_MIN_JOBS = 64


@click.command()
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID]...")
@click.option("--all", "all_jobs", is_flag=True, help="Every job of the share dir.")
@retention_options
@click.option("--dry-run", is_flag=True,
              help="Say exactly which jobs would be removed and the bytes that frees; remove nothing.")
@all_users_option("Apply the policy to every user's share dir under ROOT, each as its owner "
                  "(root only).")
@click.option("--in-total", is_flag=True,
              help="With --all-users: --max-total-size bounds all the share dirs together, "
                   "not each one.")
@json_option("Print the cleanup report as JSON.")
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
        policy = policy_from(policy_file, states, older_than, max_total_size, keep_last, force)
        cleanup_all_users(ctx, all_users, policy, dry_run, in_total, as_json, time_limit)
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
        policy = policy_from(policy_file, states, older_than, max_total_size, keep_last, force)
        _cleanup_share_dir(ctx, policy, dry_run, as_json)


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
    console = rich_output.console()
    progress = None
    if not quiet and console.is_terminal and len(targets) > _PROGRESS_MIN_JOBS:
        # rich redirects stdout/stderr while the bar shows: the lines print above it.
        progress = rich_output.cleanup_progress(console)
    with captured_warnings() as caught, progress if progress is not None else nullcontext():
        bar = progress.add_task("cleanup", total=len(targets)) if progress is not None else None
        # One cleanup of every job, each line printed as its job is done: a cleanup per
        # batch of 64 drained the deletions in flight at the end of each batch, and never
        # had enough jobs for the helper processes (docs/benchmarks.md).
        for entry in iter_cleanup(targets, force=force, verbose=False, dry_run=dry_run, now=now):
            report.entries.append(entry)
            if not quiet:
                echo_entries([entry], why or {})
            if progress is not None and bar is not None:
                progress.advance(bar, 1)
    named = {entry.job_id for entry in report}
    others = [str(w.message) for w in caught
              if getattr(w.message, "job_id", None) not in named]
    return report, others


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
        warning(message)
    print_cleanup_summary(report, store.url, dry_run, force, as_json, skipped=skipped)
    if any(e.outcome in (CleanupOutcome.ERROR, CleanupOutcome.KEPT, CleanupOutcome.MISSING)
           for e in report):
        ctx.exit(1)


def _policy_extra(run: PolicyRun, policy: RetentionPolicy, still_over: bool) -> dict[str, Any]:
    """What the JSON report says of the policy: what it picked, what it protected, the sizes."""
    size = {}
    if run.picks is not None and policy.max_total_size is not None:
        size = {"total_bytes": run.total_bytes, "bytes_after": run.bytes_after,
                "max_total_size": policy.max_total_size, "over_max_total_size": still_over}
    return {"policy": policy.to_json(),
            "picked": [{"job_id": p.job_id, "why": p.why} for p in run.picks]
            if run.picks is not None else None,
            "protected": run.protected, **size}


def _cleanup_share_dir(ctx: click.Context, policy: RetentionPolicy, dry_run: bool,
                       as_json: bool) -> None:
    store = ctx.obj.store()
    console = rich_output.console()
    why: dict[str, str] = {}
    shown: list[Any] = []  # the progress bar and its task, once the jobs picked are known

    def started(run: PolicyRun, total: int) -> None:
        why.update(run.why)
        if not as_json and console.is_terminal and total > _PROGRESS_MIN_JOBS:
            # rich redirects stdout/stderr while the bar shows: the lines print above it.
            progress = stack.enter_context(rich_output.cleanup_progress(console))
            shown.extend([progress, progress.add_task("cleanup", total=total)])

    def reported(entries: list[CleanupEntry]) -> None:
        if not as_json:
            echo_entries(entries, why)
        if shown:
            shown[0].advance(shown[1], len(entries))

    with ExitStack() as stack:
        caught = stack.enter_context(captured_warnings())
        run = apply_policy(store, policy, dry_run, on_start=started, on_entries=reported)
    report = run.report
    named = {entry.job_id for entry in report}
    for message in (str(w.message) for w in caught if getattr(w.message, "job_id", None) not in named):
        warning(message)
    still_over = run.still_over if run.picks is not None else False
    extra = _policy_extra(run, policy, still_over)
    print_cleanup_summary(report, store.url, dry_run, policy.force, as_json, extra=extra)
    if "max_total_size" in extra and not as_json:
        verb = "would hold" if dry_run else "holds"
        click.echo(f"share dir {verb} {human_bytes(run.bytes_after or 0)} "
                   f"(--max-total-size {human_bytes(policy.max_total_size or 0)})")
    if still_over:
        kept = sum(1 for e in report if e.outcome is CleanupOutcome.KEPT)
        warning(f"the share dir {'would stay' if dry_run else 'is still'} over --max-total-size: "
                f"the rest is held by jobs the cleanup rules keep ({kept} picked and kept, and "
                "jobs not picked); collect their results or pass --force")
    if any(e.outcome is CleanupOutcome.ERROR for e in report) or (still_over and not dry_run):
        ctx.exit(1)
