"""Which failure ends a job run in a process pool: a pure decision over the tasks' outcomes.

A driver that stops at the first failure (``continue_on_failure=False``) may
see several tasks end in one look: a run that raised, and a pool that broke
(a worker process died, so every task still in the pool ends with
``BrokenProcessPool``).  The job's reason must not depend on the order in
which the driver happens to look at them: the run's own exception is what
the user asked about and what a waiting ``rx_exec`` re-raises, so it wins
over a task that could not be run, which wins over a dead worker.  Among
equals, the lowest task wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskOutcome:
    """How one task ended, as its driver saw it.

    Attributes
    ----------
    task
        The task index.
    run_error
        The first run error the task reported (``TaskSummary.first_error``), if any.
    not_run
        Why the task could not be run (an exception other than a dead worker), if so.
    worker_died
        Whether the worker process running (or about to run) the task died.
    failed_runs
        How many of the task's runs raised (``TaskSummary.failed``), when it ran.
    """

    task: int
    run_error: str | None = None
    not_run: str | None = None
    worker_died: bool = False
    failed_runs: int = 0


def worker_died_reason(task: int) -> str:
    """The job's reason when a worker died and nothing better is known."""
    return f"a worker process died while running task {task} (killed, or out of memory)"


def job_failure(outcomes: Iterable[TaskOutcome], continue_on_failure: bool) -> str | None:
    """The reason the job fails for, given the outcomes seen so far (None: it goes on).

    A run error counts only when the job stops at the first failure; then it
    wins over a task that could not be run, which wins over a dead worker, each
    taken from the lowest task.
    """
    ordered = sorted(outcomes, key=lambda outcome: outcome.task)
    if not continue_on_failure:
        for outcome in ordered:
            if outcome.run_error:
                return outcome.run_error
    for outcome in ordered:
        if outcome.not_run:
            return outcome.not_run
    for outcome in ordered:
        if outcome.worker_died:
            return worker_died_reason(outcome.task)
    return None
