"""Polling with a deadline: the one waiting loop of rxjobs, with a replaceable clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Clock:
    """Monotonic time and sleep; tests substitute a fast-forward clock."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


CLOCK = Clock()


def poll(
    check: Callable[[], T | None],
    timeout: float | None = None,
    first_delay: float = 0.05,
    max_delay: float = 1.0,
    clock: Clock | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T | None:
    """Call ``check`` until it returns something other than None, or time runs out.

    The delay between calls grows from ``first_delay`` to ``max_delay`` so
    that a short job is seen at once and a long one costs little.  Returns
    the last value of ``check`` (None on timeout).  ``sleep`` replaces the
    clock's sleep between calls: one that returns early when the awaited
    thing may have happened (a job's driver exited) makes the wait end at
    once instead of at the next poll.
    """
    clock = clock or CLOCK
    sleep = sleep or clock.sleep
    deadline = None if timeout is None else clock.now() + timeout
    delay = first_delay
    while True:
        value = check()
        if value is not None:
            return value
        if deadline is not None:
            left = deadline - clock.now()
            if left <= 0:
                return None
            sleep(min(delay, left))
        else:
            sleep(delay)
        delay = min(max_delay, delay * 1.5)
