"""Forked helper processes of the store: when a fork is safe here, and a child's one way out.

The size helper (:mod:`.size_helper`) is forked from the calling process,
which has every module imported already: ready at once, where a new
interpreter took hundreds of milliseconds on a busy machine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import NoReturn


def fork_is_safe() -> bool:
    """Whether this process may fork a helper: ``os.fork`` exists and it runs one thread
    (a fork copies the calling thread alone, and a lock another thread held would stay
    held in the child)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def run_child(body: Callable[[], None]) -> NoReturn:
    """In a forked child: run ``body``, then exit, 0 if it returned and 1 if it raised.

    A child never unwinds into its parent's code (the caller's ``finally``
    blocks, ``atexit`` handlers, buffered output flushed twice), whatever
    ``body`` raises, ``KeyboardInterrupt`` and ``SystemExit`` included.
    """
    code = 1
    try:
        body()
        code = 0
    except BaseException:  # noqa: BLE001, S110 - a child must not unwind into its parent's code
        pass
    finally:
        os._exit(code)
