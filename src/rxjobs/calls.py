"""A Python call (a function with positional and keyword arguments) as one rxjobs run.

rxjobs runs call ``function(**run)``, one dict of keyword arguments per run.
The :class:`rxjobs.Executor` and :mod:`rxjobs.compat.submitit` take the
standard library's form instead, ``fn(*args, **kwargs)``: they send
:class:`Call` as the job's function and ``{"args": ..., "kwargs": ...}`` as
each run.  This module is what a worker unpickles and runs, so it imports
nothing of rxjobs (a worker pays for no more than it needs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Call:
    """Run ``fn(*args, **kwargs)`` from one run's keyword arguments ``args`` and ``kwargs``.

    Parameters
    ----------
    fn
        The function the user submitted.

    Notes
    -----
    ``__module__`` and ``__qualname__`` are the user's function's, so that the
    job's ``function`` field in ``job.json`` (shown by ``rxjobs list`` and the
    web page) names what the user submitted, not this wrapper.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__module__ = getattr(fn, "__module__", None) or "?"
        self.__qualname__ = getattr(fn, "__qualname__", None) or type(fn).__qualname__

    def __call__(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        return self.fn(*args, **(kwargs or {}))

    def __repr__(self) -> str:
        return f"Call({self.fn!r})"


def as_run(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The run (keyword arguments of :class:`Call`) for ``fn(*args, **kwargs)``."""
    return {"args": tuple(args), "kwargs": dict(kwargs)}


def invoke(fn: Callable[..., Any], args: tuple[Any, ...] = (),
           kwargs: dict[str, Any] | None = None) -> Any:
    """Run ``fn(*args, **kwargs)``: the job function when each run carries its own function.

    :mod:`rxjobs.compat.submitit` batches submissions of different functions
    into one job; the payload is pickled whole, so a function shared by many
    runs is stored once.
    """
    return fn(*args, **(kwargs or {}))


def as_invocation(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The run (keyword arguments of :func:`invoke`) for ``fn(*args, **kwargs)``."""
    return {"fn": fn, "args": tuple(args), "kwargs": dict(kwargs)}


def run_batch(batch: Callable[[], list[Any]]) -> list[Any]:
    """What a task of the joblib backend (:mod:`rxjobs.joblib`) runs for one batch: joblib's
    ``BatchedCalls``, which returns its calls' values.

    It lives here, not in :mod:`rxjobs.joblib`, so that a worker unpickling a
    batch imports nothing of rxjobs' facades (a quarter of a second per job's
    worker).
    """
    return batch()
