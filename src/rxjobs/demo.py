"""``rxjobs demo``: one job that does not wait, followed step by step through its whole life.

Submit with a random seed, watch the state change, list, read the console
output, see a cleanup without force keep the finished job whose results were
never retrieved (with its warning), collect the results — the same random
numbers as the same seed gives in this process — clean up, and see the job
gone: the job functions of revoscalepy in the order a user meets them.  The
job is removed at the end, whatever happens.
"""

from __future__ import annotations

import contextlib
import io
import random
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from .api import (
    RxRemoteJob,
    rx_cleanup_jobs,
    rx_exec,
    rx_get_job_output,
    rx_get_job_results,
    rx_get_job_status,
    rx_get_jobs,
)
from .contexts import RxLocalParallel, RxLocalSeq
from .status import RxRemoteJobStatus
from .waiting import poll

DEMO_RUNS = 10
DEMO_SEED = 42


def square(x: int) -> tuple[int, float]:
    """Print a line, take a moment (so that the job is seen running) and return ``x * x``
    with one random draw of the run's own stream.

    Parameters
    ----------
    x
        The number to square.

    Returns
    -------
    tuple
        ``x * x`` and ``random.random()``.
    """
    draw = round(random.random(), 4)
    print(f"square({x}) = {x * x}, random draw {draw}")
    time.sleep(0.2)
    return x * x, draw


def _follow(job: RxRemoteJob, echo: Callable[[str], object], timeout: float) -> RxRemoteJobStatus:
    """Say each state the job is seen in until it ends; return the last one."""
    seen: list[RxRemoteJobStatus] = []

    def check() -> RxRemoteJobStatus | None:
        state = rx_get_job_status(job)
        if not seen or seen[-1] is not state:
            seen.append(state)
            echo(f"   rx_get_job_status: {state.value}")
        return state if state.is_terminal() or state is RxRemoteJobStatus.MISSING else None

    ended = poll(check, timeout=timeout, first_delay=0.02, max_delay=0.25)
    return ended if ended is not None else rx_get_job_status(job)


def run_demo(share_dir: str | None = None, echo: Callable[[str], object] = print,
             timeout: float = 300.0, share_dir_options: dict | None = None) -> int:
    """Run a small job on ``RxLocalParallel(wait=False)`` and show each step of its life.

    Parameters
    ----------
    share_dir
        Where the job's artifacts go; default the default share dir.  The
        demo removes its job at the end.
    echo
        Called with each line to show.
    timeout
        Seconds to let the job run before giving up.
    share_dir_options
        fsspec storage options of an object-store share dir.

    Returns
    -------
    int
        0 if every step did what it should, 1 otherwise (an exit status).
    """
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=share_dir,
                         share_dir_options=share_dir_options)
    echo(f"compute context: {cc!r}")
    started = datetime.now(timezone.utc) - timedelta(seconds=1)
    job = rx_exec(square, x=list(range(DEMO_RUNS)), rng_seed=DEMO_SEED, compute_context=cc)
    assert isinstance(job, RxRemoteJob)  # a context that does not wait returns the job
    try:
        echo(f"1. rx_exec submitted job {job.job_id} ({DEMO_RUNS} runs of square(x) on 2 workers, "
             f"rng_seed={DEMO_SEED}) and returned at once. Each run draws from its own random "
             "stream, made from the seed and the run's index: the same numbers whatever engine, "
             "chunk size or number of workers runs it")
        echo("2. its state as it goes:")
        state = _follow(job, echo, timeout)

        echo("3. rx_get_jobs lists the jobs of this compute context since the demo started:")
        for listed in rx_get_jobs(cc, start_time=started, verbose=False):
            mark = "   <- this demo" if listed == job else ""
            echo(f"   {rx_get_job_status(listed).value:<10} {listed.job_id}{mark}")

        echo("4. rx_get_job_output (the console output of its runs):")
        for line in rx_get_job_output(job).splitlines():
            echo(f"   | {line}")

        if state is not RxRemoteJobStatus.FINISHED:
            echo(f"error: the job did not finish: it is {state.value}")
            return 1
        echo("5. rx_cleanup_jobs without force, before the results were retrieved:")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = rx_cleanup_jobs(job, verbose=False)
        for warning in caught:
            echo(f"   warning: {warning.message}")
        echo(f"   {report}; the job is still {rx_get_job_status(job).value}")
        if report.removed or rx_get_job_status(job) is not RxRemoteJobStatus.FINISHED or not caught:
            echo("error: a finished job whose results were never retrieved must be kept, with a warning")
            return 1

        results = rx_get_job_results(job, auto_cleanup=False)
        values = [value for value, _ in results]
        draws = [draw for _, draw in results]
        echo(f"6. rx_get_job_results(auto_cleanup=False): {values}")
        echo(f"   their random draws: {draws}")
        with contextlib.redirect_stdout(io.StringIO()):
            again = rx_exec(square, x=list(range(DEMO_RUNS)), rng_seed=DEMO_SEED,
                            compute_context=RxLocalSeq())
        same = isinstance(again, list) and [draw for _, draw in again] == draws
        echo(f"   the same seed run here, one run after another (RxLocalSeq), draws the same "
             f"numbers: {same}")
        expected = [x * x for x in range(DEMO_RUNS)]
        if values != expected or not same:
            echo(f"error: expected {expected} and the same draws")
            return 1

        echo("   the results are marked retrieved, so cleanup needs no force:")
        report = rx_cleanup_jobs(job, verbose=False)
        echo(f"7. rx_cleanup_jobs: {report}")
        after = rx_get_job_status(job)
        echo(f"8. rx_get_job_status now: {after.value}")
        if after is not RxRemoteJobStatus.MISSING:
            echo("error: the job is still there after cleanup")
            return 1
        echo("demo finished: every step did what it should")
        return 0
    finally:
        if rx_get_job_status(job) is not RxRemoteJobStatus.MISSING:
            job.close()  # whatever went wrong, leave nothing behind
