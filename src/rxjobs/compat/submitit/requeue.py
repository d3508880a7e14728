"""Checkpoint and requeue on Slurm, the run side: what a checkpointable call does on its node.

A job whose function has a ``checkpoint`` method (``helpers.Checkpointable``)
is submitted with ``--signal=B:USR2@<signal_delay_s>`` and runs through
:func:`run_checkpointable`.  When Slurm sends the signal (a time limit
near, a preemption, or ``scancel --signal=USR2 --batch``), the handler asks
the callable for its ``checkpoint(*args, **kwargs)``; a
``DelayedSubmission`` is written to the run's checkpoint file
(``tasks/run-<i>.checkpoint.pkl``, :meth:`~rxjobs.store.JobPaths.checkpoint`)
and the array task is requeued (``scontrol requeue``), which the job's
``status.json`` then says: a ``running`` record whose reason reads
``requeued by Slurm after checkpoint (run 0, attempt 2)`` (:func:`requeued_reason`).
When it runs again, the run resumes with that submission instead of the
original call, so the job stays one rxjobs job and ``result()`` waits through
the requeue.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from ... import records
from ...runner import CurrentRun, current_run
from ...status import Record

# How long a requeued task lets Slurm stop it before it exits by itself (the requeue
# is already recorded by slurmctld when `scontrol requeue` returns).
_REQUEUE_GRACE_S = 5.0


def has_checkpoint(fn: Any) -> bool:
    """The callable can be checkpointed (submitit's rule: a ``checkpoint`` or
    ``__submitit_checkpoint__`` method)."""
    return callable(getattr(fn, "__submitit_checkpoint__", None)) or callable(getattr(fn, "checkpoint", None))


def requeued_reason(run: int, restart_count: str | None) -> str:
    """The job's reason once run ``run`` is requeued; ``restart_count`` is the
    attempt's ``$SLURM_RESTART_COUNT`` (unset in a first attempt, which is 1)."""
    done = int(restart_count) if restart_count and restart_count.isdigit() else 0
    return f"requeued by Slurm after checkpoint (run {run}, attempt {done + 2})"


def _checkpoint_method(fn: Any) -> Callable[..., Any]:
    method = getattr(fn, "__submitit_checkpoint__", None)
    return method if callable(method) else fn.checkpoint


def _resumed(where: CurrentRun) -> Any | None:
    """The submission a previous attempt of this run checkpointed, if any."""
    path = where.store.paths(where.job_id).checkpoint(where.run)
    try:
        data = where.store.read_trusted(path)
    except FileNotFoundError:
        return None
    return cloudpickle.loads(data)


def _requeue_on_signal(where: CurrentRun, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Install the USR2 handler: checkpoint the call, save it, requeue this array task."""
    job = os.environ.get("SLURM_JOB_ID")
    if job is None or not has_checkpoint(fn):
        return

    def handler(signum: int, frame: Any) -> None:
        submission = _checkpoint_method(fn)(*args, **kwargs)
        if submission is None:
            return  # the callable does not want to be requeued: it runs on until Slurm stops it
        where.store.write_atomic(where.store.paths(where.job_id).checkpoint(where.run),
                                 cloudpickle.dumps(submission))
        from ...slurm_client import run_slurm

        # Said in the job's record (never over a recorded end) before the requeue, which
        # has Slurm stop this process: a requeued job stays running, and its reason says
        # why it runs again.
        records.write_status(where.store, where.job_id, Record.RUNNING,
                             requeued_reason(where.run, os.environ.get("SLURM_RESTART_COUNT")))
        try:
            run_slurm(["scontrol", "requeue", job])
        except BaseException:
            records.write_status(where.store, where.job_id, Record.RUNNING)  # not requeued after all
            raise
        print(f"rxjobs: run {where.run} checkpointed and requeued (Slurm job {job})", file=sys.stderr,
              flush=True)
        time.sleep(_REQUEUE_GRACE_S)  # Slurm stops this attempt; nothing is written for it
        os._exit(0)

    signal.signal(signal.SIGUSR2, handler)


def run_checkpointable(fn: Callable[..., Any], args: tuple[Any, ...] = (),
                       kwargs: dict[str, Any] | None = None) -> Any:
    """Run ``fn(*args, **kwargs)``, or the submission a requeued attempt checkpointed.

    The job function of submissions whose callable has ``checkpoint``
    (the same keyword arguments as :func:`rxjobs.calls.invoke`).
    """
    kwargs = kwargs or {}
    where = current_run()
    if where is not None:
        resumed = _resumed(where)
        if resumed is not None:
            fn, args, kwargs = resumed.function, tuple(resumed.args), dict(resumed.kwargs)
        _requeue_on_signal(where, fn, args, kwargs)
    return fn(*args, **kwargs)
