"""Plain printing: JSON for scripts, aligned columns, sizes, times and plurals.

Nothing here imports rich: ``list`` and ``status`` print through :func:`print_columns`,
which writes 20,000 rows in a fraction of the time a rich table takes to lay them
out.  The commands that show progress bars use :mod:`rxjobs.cli.rich_output`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import click
from rich.filesize import decimal as human_bytes

# The colour of each job state on a terminal (off a terminal, click strips it).
STATE_COLORS = {
    "queued": "blue",
    "running": "cyan",
    "finished": "green",
    "failed": "red",
    "canceled": "yellow",
    "undetermined": "magenta",
    "missing": "bright_black",
}

# Rows written per echo when a long JSON list or table is printed.
_ROWS_PER_WRITE = 512

__all__ = ["STATE_COLORS", "human_bytes", "json_list_lines", "local_time", "plural", "print_columns",
           "print_json"]


def print_json(data: Any) -> None:
    """Print ``data`` as JSON, its top-level entries and list items one per line.

    ``indent`` would send ``json.dumps`` through its pure-Python encoder, a
    third of ``rxjobs du --json``'s time on a big share dir; each line here is
    encoded by the C encoder, and a long list is written as it is encoded.
    """
    for text in _json_lines(data):
        click.echo(text, nl=False)
    click.echo()


def _json_lines(data: Any, indent: str = "") -> Iterator[str]:
    """Chunks of the JSON of ``data``: a list (or a dict's list) one item per line.

    An iterator is written as a list, each item encoded as it is taken.
    """
    inner = indent + "  "
    if isinstance(data, dict) and data:
        yield "{\n"
        last = len(data) - 1
        for i, (key, value) in enumerate(data.items()):
            yield f"{inner}{json.dumps(str(key))}: "
            yield from (_json_lines(value, inner) if isinstance(value, (list, Iterator))
                        else (json.dumps(value),))
            yield ",\n" if i < last else "\n"
        yield f"{indent}}}"
    elif isinstance(data, (list, Iterator)):
        yield from json_list_lines(data, indent)
    else:
        yield json.dumps(data)


def json_list_lines(items: Iterable[Any], indent: str = "") -> Iterator[str]:
    """Chunks of the JSON list of ``items``, one item per line, encoded as they come."""
    chunk: list[str] = []
    lead = f"[\n{indent}  "
    for item in items:
        chunk.append(lead + json.dumps(item))
        lead = f",\n{indent}  "
        if len(chunk) >= _ROWS_PER_WRITE:
            yield "".join(chunk)
            chunk = []
    if lead.startswith("["):
        yield "[]"
    else:
        yield "".join(chunk) + f"\n{indent}]"


def print_columns(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] = (),
                  colors: Sequence[str | None] = (), colored: int = 1) -> None:
    """Print ``rows`` under ``headers`` in aligned columns, a rule under the headers.

    The layout is that of the rich tables the other commands print (columns three
    spaces apart), without their cost: each cell is measured once and each line
    is one ``str`` join.  Cells are never folded, so a long id keeps its shape.

    Parameters
    ----------
    headers
        The column titles.
    rows
        The cells, as text.
    right
        Per column, whether it is right-justified (numbers, sizes).
    colors
        Per row, a click colour for its cell in column ``colored`` (the job state), or None.
    colored
        The column that ``colors`` colours.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    justify = [right[i] if i < len(right) else False for i in range(len(headers))]

    def line(cells: Sequence[str], color: str | None = None) -> str:
        parts = [cell.rjust(w) if r else cell.ljust(w)
                 for cell, w, r in zip(cells, widths, justify, strict=True)]
        if color is not None:
            parts[colored] = click.style(parts[colored], fg=color)
        return "   ".join(parts).rstrip()

    chunk = [click.style(line(headers), bold=True), "─" * (sum(widths) + 3 * (len(widths) - 1))]
    for i, row in enumerate(rows):
        chunk.append(line(row, colors[i] if i < len(colors) else None))
        if len(chunk) >= _ROWS_PER_WRITE:
            click.echo("\n".join(chunk))
            chunk = []
    if chunk:
        click.echo("\n".join(chunk))


def local_time(when: datetime | None) -> str:
    """``when`` in local time, to the second, or ``?``."""
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when else "?"


def plural(n: int, word: str) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
