"""``rxjobs du``: disk use per job and per state, the largest jobs, and what each policy would free.

The report is :func:`rxjobs.usage.disk_usage`'s (the page's disk view shows the same).
"""

from __future__ import annotations

from datetime import timedelta

import click

from ..usage import UsageReport, disk_usage
from .all_users import all_users_option, du_all_users
from .params import ShareDir, json_option
from .policy import policy_from, retention_options
from .printing import STATE_COLORS, human_bytes, plural, print_columns, print_json


@click.command()
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True, metavar="N",
              help="How many of the largest jobs to show.")
@retention_options
@all_users_option("Show who uses what: every user's share dir under ROOT, each surveyed as "
                  "its owner (root only).")
@json_option()
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
    asked = policy_from(policy_file, states, older_than, max_total_size, keep_last, force)
    if all_users is not None:
        du_all_users(all_users, asked, top, as_json, time_limit)
        return
    report = disk_usage(share.store(), asked, top)
    if as_json:
        print_json(report.to_json(lazy=True))
        return
    _print_report(report)


def _print_report(report: UsageReport) -> None:
    if report.jobs:
        _print_jobs(report)
    why = ", ".join(f"{reason} {human_bytes(size)}"
                    for reason, size in sorted(report.kept_bytes_by_reason.items()))
    click.echo(f"{plural(len(report.jobs), 'job')} in {report.share_dir}: {human_bytes(report.bytes)} "
               f"in {plural(report.files, 'file')}")
    click.echo(f"cleanup would free now: {human_bytes(report.freeable_bytes)}")
    click.echo(f"kept: {human_bytes(report.kept_bytes)}" + (f" ({why})" if why else ""))
    click.echo()
    print_columns(("policy", "jobs", "would free"),
                  [(e.policy, str(e.jobs), human_bytes(e.bytes)) for e in report.policies],
                  right=(False, True, True))


def _print_jobs(report: UsageReport) -> None:
    rows = []
    for job in report.jobs:
        action = "remove" if job.removable else f"keep ({job.kept_because})"
        if job.expired:
            action += ", expired"
        rows.append((job.job_id, job.state, str(job.files), human_bytes(job.bytes), action))
    print_columns(("id", "state", "files", "size", "cleanup would"), rows,
                  right=(False, False, True, True, False), colors=[STATE_COLORS.get(r[1]) for r in rows])
    click.echo()
    by_state = sorted(report.by_state.items())
    print_columns(("state", "jobs", "files", "size"),
                  [(state, str(s.jobs), str(s.files), human_bytes(s.bytes)) for state, s in by_state],
                  right=(False, True, True, True), colors=[STATE_COLORS.get(state) for state, _ in by_state],
                  colored=0)
    click.echo()
    click.echo("largest jobs: "
               + ", ".join(f"{job.job_id} {human_bytes(job.bytes)}" for job in report.largest))
