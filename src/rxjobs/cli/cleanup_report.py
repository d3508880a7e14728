"""How a cleanup's outcome is said: a line per job and a summary (``cleanup``, ``cleanup --all-users``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from ..cleanup import CleanupEntry, CleanupOutcome, CleanupReport
from .printing import human_bytes, plural, print_json


def cleanup_line(entry: CleanupEntry, why: str = "") -> str:
    """One job's outcome, with why the policy picked it (``why``), if it did."""
    picked = f" [{why}]" if why else ""
    if entry.outcome is CleanupOutcome.REMOVED:
        return f"removed {entry.job_id} ({entry.status}; {plural(entry.files, 'file')}, " \
               f"{human_bytes(entry.bytes)}){picked}"
    if entry.outcome is CleanupOutcome.WOULD_REMOVE:
        return f"would remove {entry.job_id} ({entry.status}; {plural(entry.files, 'file')}, " \
               f"{human_bytes(entry.bytes)}){picked}"
    if entry.outcome is CleanupOutcome.MISSING:
        return f"not found {entry.job_id}: {entry.reason}"
    if entry.outcome is CleanupOutcome.ERROR:
        return f"error {entry.job_id}: {entry.reason}"
    return f"kept {entry.job_id} ({entry.status}): {entry.reason}{picked}"


def echo_entries(entries: Sequence[CleanupEntry], why: dict[str, str], indent: str = "") -> None:
    """Print a line per job; a failed removal's line goes to stderr."""
    for entry in entries:
        click.echo(indent + cleanup_line(entry, why.get(entry.job_id, "")),
                   err=entry.outcome is CleanupOutcome.ERROR)


def print_cleanup_summary(report: CleanupReport, share_url: str, dry_run: bool, force: bool,
                          as_json: bool, skipped: Sequence[str] = (),
                          extra: dict[str, Any] | None = None) -> None:
    """The summary of one share dir's cleanup: JSON, or one line of counts and bytes."""
    would = [e for e in report if e.outcome is CleanupOutcome.WOULD_REMOVE]
    errors = [e for e in report if e.outcome is CleanupOutcome.ERROR]
    kept = [e for e in report if e.outcome is CleanupOutcome.KEPT]
    missing = [e for e in report if e.outcome is CleanupOutcome.MISSING]
    if as_json:
        data = report.to_json(lazy=True)
        data.update(share_dir=share_url, dry_run=dry_run, force=force, skipped=list(skipped),
                    would_remove=len(would), bytes_would_free=sum(e.bytes for e in would),
                    errors=len(errors), missing=len(missing), **(extra or {}))
        print_json(data)
    elif dry_run:
        click.echo(f"dry run: {plural(len(would), 'job')} would be removed, {len(kept)} kept; "
                   f"{human_bytes(sum(e.bytes for e in would))} would be freed "
                   f"({plural(sum(e.files for e in would), 'file')})")
    else:
        click.echo(f"{plural(len(report.removed), 'job')} removed, {len(kept)} kept"
                   + (f", {len(errors)} failed" if errors else "")
                   + f"; {human_bytes(report.bytes_freed)} freed "
                   f"({plural(report.files_freed, 'file')})")
