"""``rxjobs list`` and ``rxjobs status``: the jobs of a share dir and their states.

Printed through :func:`rxjobs.cli.printing.print_columns`, not rich: a table of
20,000 jobs costs little more than their JSON.  The job services are imported
when a command has a job to look at: ``rxjobs list`` on an empty share dir
stops after one listing of its names.
"""

from __future__ import annotations

from datetime import datetime

import click

from ..status import RxRemoteJobStatus
from .boundary import error
from .params import TIME, ShareDir, json_option, state_option
from .printing import (
    STATE_COLORS,
    human_bytes,
    json_list_lines,
    local_time,
    plural,
    print_columns,
    print_json,
)


@click.command("list")
@state_option("Only jobs in this state (repeatable).")
@click.option("--since", type=TIME,
              help="Only jobs submitted since: an ISO date/time, or a duration ago (30m, 2h, 7d).")
@click.option("--until", type=TIME,
              help="Only jobs submitted until: an ISO date/time, or a duration ago.")
@json_option("Print a JSON list.")
@click.pass_obj
def list_command(share: ShareDir, states: tuple[str, ...], since: datetime | None,
                 until: datetime | None, as_json: bool) -> None:
    """List the jobs of the share dir, oldest first."""
    store = share.store()
    # One listing of the names (the window chosen by name, as the listing would): a share
    # dir with no job needs none of the listing's machinery (records, contexts), so an
    # empty `rxjobs list` does not even import it.
    ids = store.list_job_ids(since, until)
    rows = []
    if ids:
        from .. import listing

        found = listing.list_jobs(store, start=since, end=until, states=states or None, sizes=True,
                                  job_ids=ids)
        rows = [listing.summarize(store, job) for job in found]
    if as_json:
        for text in json_list_lines(row.to_json() for row in rows):
            click.echo(text, nl=False)
        click.echo()
        return
    if not rows:
        click.echo(f"no jobs in {store.url}")
        return
    cells = []
    colors = []
    for row in rows:
        state = row.status.value if row.status else "?"
        cells.append((row.job_id, row.state_text if row.status else "?", local_time(row.submitted),
                      row.function or "?",
                      "?" if row.n_runs is None else str(row.n_runs), human_bytes(row.bytes)))
        colors.append(STATE_COLORS.get(state))
    print_columns(("id", "state", "submitted", "function", "runs", "size"), cells,
                  right=(False, False, False, False, True, True), colors=colors)
    click.echo(f"{plural(len(rows), 'job')} in {store.url}")


@click.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@json_option()
@click.pass_context
def status(ctx: click.Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Show the state of jobs and the reason for it (exit 1 if a job is not found)."""
    from .. import jobs  # here: `list` shares this module, and an empty listing needs no jobs service

    store = ctx.obj.store()
    rows = []
    failed = False
    for job_id in job_ids:
        try:
            derived = jobs.job_status(store, job_id)
        except ValueError as exc:
            error(str(exc))
            failed = True
            continue
        reason = derived.reason
        if derived.status is RxRemoteJobStatus.MISSING:
            reason = f"not found in share dir {store.url}"
            error(f"job {job_id} {reason}")
            failed = True
        rows.append({"job_id": job_id, "state": derived.status.value, "reason": reason})
    if as_json:
        print_json(rows)
    elif rows:
        print_columns(("id", "state", "reason"), [(r["job_id"], r["state"], r["reason"]) for r in rows],
                      colors=[STATE_COLORS.get(r["state"]) for r in rows])
    if failed:
        ctx.exit(1)
