"""``rxjobs adopt`` and ``rxjobs doctor``: the share dir itself, not its jobs."""

from __future__ import annotations

import click

from ..doctor import DoctorReport, Remedy
from ..doctor import doctor as run_doctor
from .params import ShareDir, json_option
from .printing import plural, print_json


@click.command()
@json_option()
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
        print_json({"share_dir": share.url, "jobs": found})
    else:
        click.echo(f"adopted {share.url}: {plural(len(found), 'job')}")


@click.command()
@click.option("--fix", is_flag=True,
              help="Remove what no job owns (crash-safely, as cleanup removes jobs).")
@json_option()
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
        print_json(report.to_json())
    else:
        _print_findings(report, share.url)
    if not report.clean:
        raise click.exceptions.Exit(1)


def _finding_state(report: DoctorReport, where: str, remedy: Remedy, fixed: set[str]) -> str:
    if where in fixed:
        return "set aside" if remedy is Remedy.SET_ASIDE else "removed"
    if where in report.errors:
        return f"not removed: {report.errors[where]}"
    if remedy is Remedy.LEAVE:
        return "left alone"
    if remedy is Remedy.SET_ASIDE:
        return "would set aside (--fix)"
    return "would remove (--fix)"


def _print_findings(report: DoctorReport, url: str) -> None:
    fixed = {f.where for f in report.fixed}
    for finding in report.findings:
        state = _finding_state(report, finding.where, finding.remedy, fixed)
        click.echo(f"{finding.kind.value}: {finding.where}: {finding.reason} [{state}]")
    if report.clean and not report.findings:
        click.echo(f"{url} is clean")
    else:
        left = len(report.findings) - len(report.fixed)
        click.echo(f"{plural(len(report.findings), 'finding')}, {len(report.fixed)} removed, {left} left")
