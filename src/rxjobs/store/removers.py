"""Who is removing what from a local share dir, and whether that process still runs.

A job renamed into ``.trash/`` carries its remover's pid and start time in
its trash name (:func:`process_mark`), so that a concurrent purge leaves the
entry alone while its remover lives, and not while another process that
reused the pid does (:func:`remover_alive`).  A temporary file names its
writer's pid the same way (:func:`process_running`).

psutil is imported on first use: opening a store (``rxjobs list`` on an empty
share dir) asks about no process.
"""

from __future__ import annotations

import functools
import os
import re


def remover_alive(name: str) -> bool:
    """Whether the process that moved ``name`` into the trash still runs (not us)."""
    owner = trash_owner(name)
    return owner is not None and owner[0] != os.getpid() and process_running(*owner)


def process_mark() -> str:
    """``<pid>-<start time in 1/100 s>`` of this process: who made a trash entry."""
    return _mark_of(os.getpid())  # keyed by pid: a forked child has its own


@functools.lru_cache(maxsize=1)
def _mark_of(pid: int) -> str:
    import psutil

    return f"{pid}-{round(psutil.Process(pid).create_time() * 100)}"


# ``.<pid>-<token>`` (before trash names held a start time) or ``.<pid>-<start>-<token>``.
_TRASH_OWNER_RE = re.compile(r"\.(\d+)-(?:(\d+)-)?[0-9a-f]+\Z")


def trash_owner(name: str) -> tuple[int, int | None] | None:
    """The pid and start time (1/100 s, None in older names) in a trash entry's name."""
    m = _TRASH_OWNER_RE.search(name)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)) if m.group(2) else None


def process_running(pid: int, start: int | None) -> bool:
    """Whether process ``pid`` runs, and is the one that started at ``start`` if known."""
    import psutil

    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    return start is None or abs(round(created * 100) - start) <= 5


__all__ = ["process_mark", "process_running", "remover_alive", "trash_owner"]
