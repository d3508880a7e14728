"""Progress bars for the commands that wait or remove for long (``wait``, ``cleanup``).

The only module of the command line that imports rich's console: every table
is printed by :func:`rxjobs.cli.printing.print_columns`, so ``rxjobs --help``,
``list``, ``status`` and ``du`` never pay for rich.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def console() -> Console:
    """A console on stdout, which says whether stdout is a terminal (bars are drawn only there)."""
    found = Console(highlight=False)
    if not found.is_terminal:
        found = Console(highlight=False, width=max(found.width, 200))
    return found


def cleanup_progress(on: Console) -> Progress:
    """The transient progress bar of a long cleanup (the per-job lines print above it)."""
    return Progress(TextColumn("cleanup"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=on, transient=True)


def tasks_progress(on: Console) -> Progress:
    """One bar per job of tasks done, with the job's state (``wait --progress``)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("tasks  {task.fields[state]}"), TimeElapsedColumn(), console=on)


__all__ = ["Console", "cleanup_progress", "console", "tasks_progress"]
