"""The operator's ``--all-users ROOT``: ``cleanup`` and ``du`` over every user's share dir.

Each share dir is handled by a process acting as its owner (:mod:`rxjobs.sweep`);
this module only says what the sweep found.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..cleanup import CleanupOutcome
from ..retention import RetentionPolicy
from ..sweep import CHILD_TIME_LIMIT, UserCleanup, sweep_cleanup, sweep_usage
from .boundary import error, warning
from .cleanup_report import echo_entries
from .printing import human_bytes, plural, print_columns, print_json


def all_users_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--all-users ROOT`` and its ``--time-limit``."""
    def both(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option(
            "--time-limit", "time_limit", type=click.FloatRange(min=0, min_open=True),
            default=CHILD_TIME_LIMIT, show_default=True, metavar="SECONDS",
            help="With --all-users: how long the process acting as one user may take; one that is "
                 "stopped or stuck is then killed, reported, and the sweep goes on.")(func)
        return click.option("--all-users", "all_users", metavar="ROOT",
                            type=click.Path(file_okay=False, path_type=str), help=help_text)(func)
    return both


def _show_user(user: UserCleanup, dry_run: bool) -> None:
    click.echo(f"== {user.user} (uid {user.uid}): {user.share_dir}")
    if user.error is not None:
        error(f"{user.share_dir} ({user.user}): {user.error}")
        return
    assert user.run is not None
    echo_entries(list(user.run.report), user.run.why, indent="  ")
    for message in user.warnings:
        warning(f"{user.user}: {message}")
    report = user.run.report
    gone = [e for e in report if e.outcome in (CleanupOutcome.REMOVED, CleanupOutcome.WOULD_REMOVE)]
    kept = ", ".join(f"{n} {why}" for why, n in user.kept.items())
    click.echo(f"  {user.user}: {plural(len(gone), 'job')} {'would be ' if dry_run else ''}removed "
               f"({human_bytes(sum(e.bytes for e in gone))}), "
               f"{sum(user.kept.values())} kept" + (f" ({kept})" if kept else ""))


def cleanup_all_users(ctx: click.Context, root: str, policy: RetentionPolicy, dry_run: bool,
                      in_total: bool, as_json: bool, time_limit: float) -> None:
    """``cleanup --all-users ROOT``: a report per user, then the totals; exit 1 on any failure."""
    def show(user: UserCleanup) -> None:
        if not as_json:
            _show_user(user, dry_run)

    sweep = sweep_cleanup(root, policy, dry_run=dry_run, in_total=in_total, on_user=show,
                          time_limit=time_limit)
    if as_json:
        print_json(sweep.to_json())
    else:
        for skipped in sweep.skipped:
            click.echo(f"left alone {skipped.path}: {skipped.reason}")
        data = sweep.to_json()
        verb = "would be removed" if dry_run else "removed"
        freed = data["bytes_would_free"] if dry_run else data["bytes_freed"]
        click.echo(f"{plural(len(sweep.users), 'share dir')} under {sweep.root}: "
                   f"{plural(data['would_remove'] if dry_run else data['removed'], 'job')} {verb}, "
                   f"{data['kept']} kept; {human_bytes(freed)} {'would be ' if dry_run else ''}freed"
                   + (f"; {len(sweep.failed)} share dirs could not be cleaned up" if sweep.failed else ""))
    if sweep.still_over:
        warning(f"{'all share dirs together are' if in_total else 'some share dirs are'} still over "
                "--max-total-size: the rest is held by jobs the cleanup rules keep; their owners "
                "must collect their results, or pass --force")
    if sweep.failed or sweep.entries(CleanupOutcome.ERROR) or (sweep.still_over and not dry_run):
        ctx.exit(1)


def du_all_users(root: str, policy: RetentionPolicy, top: int, as_json: bool, time_limit: float) -> None:
    """``du --all-users ROOT``: a row per user, then the totals."""
    sweep = sweep_usage(root, policy, top, time_limit=time_limit)
    data = sweep.to_json()
    if as_json:
        print_json(data)
        return
    print_columns(("user", "share dirs", "jobs", "files", "size", "cleanup would free", "kept"),
                  [(user, str(sums["share_dirs"]), str(sums["jobs"]), str(sums["files"]),
                    human_bytes(sums["bytes"]), human_bytes(sums["freeable_bytes"]),
                    human_bytes(sums["kept_bytes"])) for user, sums in data["by_user"].items()],
                  right=(False, True, True, True, True, True, True))
    for failed in (u for u in sweep.users if u.error is not None):
        error(f"{failed.share_dir} ({failed.user}): {failed.error}")
    for skipped in sweep.skipped:
        click.echo(f"left alone {skipped.path}: {skipped.reason}")
    totals = data["totals"]
    click.echo(f"{plural(totals['share_dirs'], 'share dir')} under {sweep.root}: "
               f"{human_bytes(totals['bytes'])} in {plural(totals['jobs'], 'job')}; cleanup "
               f"would free {human_bytes(totals['freeable_bytes'])}")
