"""Which failure ends a job run in a process pool (rxjobs.engines.task_failures), as a table.

The local driver once took the first future of an unordered set: when a run's
error and a dead worker's ``BrokenProcessPool`` were seen in one look, the job
failed for "a worker process died" about half the time, and a waiting
``rx_exec`` could not re-raise the run's own exception.
"""

from __future__ import annotations

import pytest

from rxjobs.engines.task_failures import TaskOutcome, job_failure, worker_died_reason

pytestmark = pytest.mark.timeout(30)

RUN_ERROR = "run 3 raised ValueError: no threes please (3)"
NOT_RUN = "task 1 could not be run: OSError: disk full"

DIED_2 = TaskOutcome(2, worker_died=True)
DIED_4 = TaskOutcome(4, worker_died=True)
FAILED_3 = TaskOutcome(3, run_error=RUN_ERROR)
FAILED_5 = TaskOutcome(5, run_error="run 5 raised KeyError: 'x'")
NOT_RUN_1 = TaskOutcome(1, not_run=NOT_RUN)
OK_0 = TaskOutcome(0)


@pytest.mark.parametrize(("outcomes", "continue_on_failure", "expected"), [
    ([], False, None),
    ([OK_0], False, None),
    ([OK_0, FAILED_3], False, RUN_ERROR),
    ([OK_0, FAILED_3], True, None),  # continuing: a run error is kept in its slot
    # The case of the intermittent failure: the run's error wins, in either order.
    ([DIED_2, FAILED_3], False, RUN_ERROR),
    ([FAILED_3, DIED_2], False, RUN_ERROR),
    ([DIED_2, DIED_4, FAILED_3], False, RUN_ERROR),
    ([DIED_4, FAILED_5, FAILED_3, DIED_2], False, RUN_ERROR),  # the lowest task's run error
    # Continuing, a dead worker still fails the job, named by the lowest task.
    ([DIED_4, FAILED_3, DIED_2], True, worker_died_reason(2)),
    ([DIED_4, DIED_2], False, worker_died_reason(2)),
    # A task that could not be run says more than a dead worker, less than a run error.
    ([DIED_2, NOT_RUN_1], True, NOT_RUN),
    ([DIED_2, NOT_RUN_1], False, NOT_RUN),
    ([DIED_2, NOT_RUN_1, FAILED_3], False, RUN_ERROR),
    ([NOT_RUN_1, FAILED_3], True, NOT_RUN),
])
def test_job_failure(outcomes: list[TaskOutcome], continue_on_failure: bool, expected: str | None) -> None:
    assert job_failure(outcomes, continue_on_failure) == expected
    assert job_failure(list(reversed(outcomes)), continue_on_failure) == expected


def test_worker_died_reason_names_the_task_and_the_likely_causes() -> None:
    assert worker_died_reason(2) == "a worker process died while running task 2 (killed, or out of memory)"
