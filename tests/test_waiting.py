"""The polling loop, on a fast-forward clock."""

from __future__ import annotations

from rxjobs.waiting import Clock, poll


class FastClock(Clock):
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def test_poll_returns_the_first_value_and_backs_off():
    clock = FastClock()
    calls = iter([None, None, None, "done"])
    assert poll(lambda: next(calls), clock=clock, first_delay=0.1, max_delay=0.2) == "done"
    assert clock.sleeps == [0.1, 0.15000000000000002, 0.2]


def test_poll_gives_up_at_the_deadline():
    clock = FastClock()
    assert poll(lambda: None, timeout=10, clock=clock, max_delay=1.0) is None
    assert 10 <= clock.t < 10.001
    assert max(clock.sleeps) <= 1.0


def test_poll_without_timeout_waits_as_long_as_it_takes():
    clock = FastClock()
    state = {"n": 0}

    def check():
        state["n"] += 1
        return "ok" if clock.t > 3600 else None

    assert poll(check, clock=clock) == "ok"
    assert state["n"] > 3600 / 1.0
