"""``rxjobs du``: disk use per job and per state, the largest jobs, and what each policy would free.

The report is :func:`rxjobs.usage.disk_usage`'s (the page's disk view shows the same).
"""

from __future__ import annotations

from datetime import timedelta

import click

from ..usage import UsageReport, disk_usage
from . import rich_output
from .all_users import all_users_option, du_all_users
from .params import ShareDir, json_option
from .policy import policy_from, retention_options
from .printing import human_bytes, plural, print_json
from .rich_output import Text, state_text


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
    console = rich_output.console()
    if report.jobs:
        _print_jobs(report, console)
    why = ", ".join(f"{reason} {human_bytes(size)}"
                    for reason, size in sorted(report.kept_bytes_by_reason.items()))
    for line in (
        f"{plural(len(report.jobs), 'job')} in {report.share_dir}: {human_bytes(report.bytes)} "
        f"in {plural(report.files, 'file')}",
        f"cleanup would free now: {human_bytes(report.freeable_bytes)}",
        f"kept: {human_bytes(report.kept_bytes)}" + (f" ({why})" if why else ""),
    ):
        console.print(Text(line), soft_wrap=True)
    policy_table = rich_output.table()
    policy_table.add_column("policy")
    policy_table.add_column("jobs", justify="right")
    policy_table.add_column("would free", justify="right", no_wrap=True)
    for estimate in report.policies:
        policy_table.add_row(Text(estimate.policy), Text(str(estimate.jobs)),
                             Text(human_bytes(estimate.bytes)))
    console.print(policy_table)


def _print_jobs(report: UsageReport, console: rich_output.Console) -> None:
    table = rich_output.table()
    table.add_column("id", no_wrap=True)
    table.add_column("state")
    table.add_column("files", justify="right")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("cleanup would")
    for job in report.jobs:
        action = "remove" if job.removable else f"keep ({job.kept_because})"
        if job.expired:
            action += ", expired"
        table.add_row(Text(job.job_id), state_text(job.state), Text(str(job.files)),
                      Text(human_bytes(job.bytes)), Text(action))
    console.print(table)
    states_table = rich_output.table()
    states_table.add_column("state")
    states_table.add_column("jobs", justify="right")
    states_table.add_column("files", justify="right")
    states_table.add_column("size", justify="right", no_wrap=True)
    for state, sums in sorted(report.by_state.items()):
        states_table.add_row(state_text(state), Text(str(sums.jobs)), Text(str(sums.files)),
                             Text(human_bytes(sums.bytes)))
    console.print(states_table)
    console.print(Text("largest jobs: " + ", ".join(
        f"{job.job_id} {human_bytes(job.bytes)}" for job in report.largest)), soft_wrap=True)
