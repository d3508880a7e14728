"""Rich output for the commands that draw progress bars or small tables (``du``, ``wait``, ``cleanup``).

Kept apart from :mod:`rxjobs.cli.printing` so that ``rxjobs --help``, ``list``
and ``status`` never import rich's console.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

_STATE_STYLES = {
    "queued": "blue",
    "running": "cyan",
    "finished": "green",
    "failed": "red",
    "canceled": "yellow",
    "undetermined": "magenta",
    "missing": "dim",
}


def console() -> Console:
    """A console on stdout; off a terminal it is wide, so tables never fold job ids."""
    found = Console(highlight=False)
    if not found.is_terminal:
        found = Console(highlight=False, width=max(found.width, 200))
    return found


def table() -> Table:
    """An empty table in the commands' one style: a rule under the headers, no edges."""
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)


def state_text(state: str) -> Text:
    """A job state, in its colour."""
    return Text(state, style=_STATE_STYLES.get(state, ""))


def cleanup_progress(on: Console) -> Progress:
    """The transient progress bar of a long cleanup (the per-job lines print above it)."""
    return Progress(TextColumn("cleanup"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=on, transient=True)


def tasks_progress(on: Console) -> Progress:
    """One bar per job of tasks done, with the job's state (``wait --progress``)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("tasks  {task.fields[state]}"), TimeElapsedColumn(), console=on)


__all__ = ["Console", "Text", "cleanup_progress", "console", "state_text", "table", "tasks_progress"]
