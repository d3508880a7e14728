"""Multi-task jobs, the run side: one run as N ranks (submitit's ``nodes`` × ``tasks_per_node``).

A run of a multi-task job calls :func:`run_ranks`, which starts the run's N
ranks and gathers their values:

* on Slurm, one ``srun`` step of N tasks inside the array task's allocation
  (submitted with ``--nodes`` and ``--ntasks-per-node``); Slurm tells each
  task its rank (``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NTASKS``);
* on the local engine, N processes of this machine, told their rank by
  ``RXJOBS_GLOBAL_RANK``, ``RXJOBS_LOCAL_RANK`` and ``RXJOBS_NUM_TASKS``.

Each rank is ``python -m rxjobs.compat.submitit.ranks``: it loads the job's
payload, runs the run's call and writes its outcome to
``tasks/run-<i>.rank-<r>.pkl`` (:meth:`~rxjobs.store.JobPaths.rank_outcome`,
one writer per file).  The run's value is the list of the ranks' values, in
rank order, and the rank files are removed once read; a rank that raised
makes the run raise that exception (the lowest such rank's).
:class:`~rxjobs.compat.submitit.environment.JobEnvironment` reads the rank
in the rank's process.  What the ranks print goes to the task's captured
output, as the run's own would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import traceback
from typing import Any

import cloudpickle

from ...runner import current_run, load_payload
from ...store import Store, open_store
from .environment import LOCAL_RANK_ENV, NUM_TASKS_ENV, RANK_ENV

_OPTIONS_ENV = "RXJOBS_RANK_STORE_OPTIONS"
LAUNCHERS = ("srun", "local")


class RankError(RuntimeError):
    """A rank of a multi-task run ended without an outcome (killed, or it could not start)."""


def run_ranks(fn: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
              num_tasks: int = 1, launcher: str = "local") -> list[Any]:
    """Run ``fn(*args, **kwargs)`` as ``num_tasks`` ranks; their values, in rank order.

    The job function of multi-task submissions (the run's keyword arguments
    are those of :func:`rxjobs.calls.invoke` plus ``num_tasks`` and
    ``launcher``, ``"srun"`` or ``"local"``).  ``fn``, ``args`` and
    ``kwargs`` are not used here: each rank reads them from the payload.

    Raises
    ------
    Exception
        The exception of the lowest rank that raised.
    RankError
        A rank left no outcome.
    """
    where = current_run()
    if where is None:
        raise RuntimeError("a multi-task run runs inside an rxjobs task")
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, not {launcher!r}")
    store, job_id, run = where.store, where.job_id, where.run
    command = [sys.executable, "-m", __name__, store.url, job_id, str(run)]
    env = dict(os.environ)
    # The ranks import what this process imports: a function pickled by reference must load there.
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p or os.getcwd() for p in sys.path))
    if store.options:
        env[_OPTIONS_ENV] = json.dumps(store.options)
    codes: dict[int, int] = {}
    if launcher == "srun":
        srun = shutil.which("srun") or "srun"
        done = subprocess.run([srun, f"--ntasks={num_tasks}", "--kill-on-bad-exit=0", *command],
                              env=env, check=False)
        codes = dict.fromkeys(range(num_tasks), done.returncode)
    else:
        procs = []
        for rank in range(num_tasks):
            rank_env = {**env, RANK_ENV: str(rank), LOCAL_RANK_ENV: str(rank), NUM_TASKS_ENV: str(num_tasks)}
            procs.append(subprocess.Popen(command, env=rank_env))
        codes = {rank: proc.wait() for rank, proc in enumerate(procs)}
    return _gather(store, job_id, run, num_tasks, codes)


def _gather(store: Store, job_id: str, run: int, num_tasks: int, codes: dict[int, int]) -> list[Any]:
    """The ranks' values in rank order, their files removed; the lowest failing rank's error raised."""
    paths = store.paths(job_id)
    outcomes = []
    for rank in range(num_tasks):
        path = paths.rank_outcome(run, rank)
        try:
            outcomes.append(cloudpickle.loads(store.read_trusted(path)))
        except FileNotFoundError:
            outcomes.append(("lost", f"rank {rank} of {num_tasks} ended without an outcome "
                                     f"(exit status {codes.get(rank)})"))
    for rank in range(num_tasks):
        store.remove_file(paths.rank_outcome(run, rank))
    for kind, value in outcomes:
        if kind == "raised":
            raise value
        if kind == "lost":
            raise RankError(value)
    return [value for _, value in outcomes]


def run_rank(share_dir: str, job_id: str, run: int, rank: int) -> None:
    """One rank: run the run's call and write its outcome (value or exception) for the gatherer."""
    options = json.loads(os.environ[_OPTIONS_ENV]) if os.environ.get(_OPTIONS_ENV) else None
    store = open_store(share_dir, options)
    call = load_payload(store, job_id).runs[run]
    try:
        outcome: tuple[str, Any] = ("value", call["fn"](*call.get("args", ()), **(call.get("kwargs") or {})))
    except Exception as exc:
        text = traceback.format_exc()
        print(text, file=sys.stderr, end="")
        exc.remote_traceback = text  # type: ignore[attr-defined]
        outcome = ("raised", exc)
    try:
        data = cloudpickle.dumps(outcome)
    except Exception as exc:  # a value (or exception) that cannot be pickled: said, not lost
        data = cloudpickle.dumps(("raised", RankError(f"rank {rank}'s outcome cannot be pickled: {exc}")))
    store.write_atomic(store.paths(job_id).rank_outcome(run, rank), data)


def current_rank() -> int:
    """This process's rank: ``RXJOBS_GLOBAL_RANK`` (local ranks), else ``SLURM_PROCID``, else 0."""
    return int(os.environ.get(RANK_ENV) or os.environ.get("SLURM_PROCID") or 0)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or not args[2].isdigit():
        raise SystemExit("usage: python -m rxjobs.compat.submitit.ranks SHARE_DIR JOB_ID RUN\n"
                         "(one rank of a multi-task run; started by run_ranks)")
    run_rank(args[0], args[1], int(args[2]), current_rank())
    return 0


if __name__ == "__main__":
    sys.exit(main())
