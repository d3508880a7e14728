"""submitit's ``helpers``: as_completed, CommandFunction, DelayedSubmission, Checkpointable."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Iterator
from typing import Any

from .job import DelayedSubmission, FailedJobError, Job

__all__ = ["Checkpointable", "CommandFunction", "DelayedSubmission", "as_completed"]


def as_completed(jobs: Iterable[Job], timeout: float | None = None,
                 poll_frequency: float = 10.0) -> Iterator[Job]:
    """Yield the jobs as they end, the first to end first.

    Between looks it waits from 0.05 s growing up to ``poll_frequency`` s.

    Raises
    ------
    TimeoutError
        ``timeout`` seconds passed with jobs still running.
    """
    pending = list(jobs)
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = min(0.05, poll_frequency)
    while pending:
        still = []
        for job in pending:
            if job.done():
                yield job
            else:
                still.append(job)
        if len(still) < len(pending):
            delay = min(0.05, poll_frequency)
        pending = still
        if not pending:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{len(pending)} job(s) still running after {timeout} s")
        time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
        delay = min(poll_frequency, delay * 1.5)


class CommandFunction:
    """A command (a list, run without a shell) as a function that returns its stdout.

    Arguments given when calling are appended: positional ones as they are,
    keyword ones as ``--key=value``.  A non-zero exit raises
    ``FailedJobError`` with the command's stderr.
    """

    def __init__(self, command: list[str], verbose: bool = True, cwd: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        if isinstance(command, str) or not isinstance(command, list):
            raise TypeError("command must be a list of strings (it runs without a shell), "
                            f"not {type(command).__name__}")
        self.command = list(command)
        self.verbose = verbose
        self.cwd = cwd
        self.env = env

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        full = [*self.command, *map(str, args), *(f"--{key}={value}" for key, value in kwargs.items())]
        done = subprocess.run(full, cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if self.verbose and done.stdout:
            print(done.stdout, end="")
        if done.returncode != 0:
            raise FailedJobError(f"command {full} failed with exit code {done.returncode}:\n{done.stderr}")
        return done.stdout


class Checkpointable:
    """A callable that, when Slurm signals a timeout or preemption, is requeued as it is then.

    ``checkpoint`` gets the call's arguments and returns the submission to
    requeue (here: this object, in its current state, with the same
    arguments), or None not to be requeued.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("a Checkpointable subclass defines __call__, the work it does")

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission | None:
        return DelayedSubmission(self, *args, **kwargs)
