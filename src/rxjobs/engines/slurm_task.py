"""What runs on the nodes: one array task of a job, and the final job that records its end.

``python -m rxjobs.engines.slurm_task task JOB_ID --share-dir DIR`` is what
each array task of ``RxSlurm`` runs (:func:`run_array_task`), and
``... finish JOB_ID --share-dir DIR --array ARRAY_ID`` the final job
(:func:`finish_job`); the batch scripts the engine (:mod:`rxjobs.engines.slurm`)
submits start them.  This module never imports the engine: what both need is
in :mod:`rxjobs.engines.slurm_states`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from ..slurm_client import SlurmCommandError, SlurmUnreachableError, run_slurm
from ..status import Record
from .slurm_states import OPTIONS_ENV, failure_reason, final_job_name, query_array


def run_array_task(share_dir: str, job_id: str, task: int) -> int:
    """One array task: run rxjobs task ``task``, then record the end if it completes the job."""
    from .. import records
    from ..runner import count_failed_runs, run_task
    from ..store import RESULT_SUFFIX, JobPaths, open_store

    options = _options_from_env()
    store = open_store(share_dir, options)
    if records.read_status_record(store, job_id).is_final:
        return 0  # the job already failed (a first failure with continue_on_failure=False)
    summary = run_task(store.url, job_id, task, capture="fd", options=options, note_failures=True)
    job = records.read_job_record(store, job_id)
    if not job.options.get("continue_on_failure", True):
        if summary.first_error:
            if records.write_status(store, job_id, Record.FAILED, summary.first_error):
                _cancel_other_tasks(task, job.n_tasks)
                _cancel_final_job(job_id)
        return 0  # else the final job records the end: only it knows no task failed
    paths = store.paths(job_id)
    names = store.listdir(paths.tasks)
    if len(JobPaths.task_indexes(names, RESULT_SUFFIX, job.n_tasks)) == job.n_tasks:
        if not store.being_removed(job_id, or_canceled=True):
            failed = count_failed_runs(store, job_id, job.n_tasks, names)
            if records.write_status(store, job_id, Record.FINISHED, failed_runs=failed):
                _cancel_final_job(job_id)
    return 0


def _cancel_final_job(job_id: str) -> None:
    """The end is recorded: the final job, still pending behind this task, has nothing to do.

    Cancelling it spares the cluster a job launch per rxjobs job (it shows as
    CANCELLED in Slurm's records).  Only while it is pending: a final job that
    already runs is left to see the record and exit.  Best effort.
    """
    try:
        run_slurm(["scancel", "--quiet", "--state=PENDING", f"--user={os.getuid()}",
                   f"--name={final_job_name(job_id)}"], check=False)
    except Exception:  # unreachable, or no scancel on this node: the final job runs and exits
        pass


def _cancel_other_tasks(task: int, n_tasks: int) -> None:
    """Fail fast: cancel the array's other tasks (best effort; those that start skip anyway)."""
    array_id = os.environ.get("SLURM_ARRAY_JOB_ID", "")
    others = [k for k in range(n_tasks) if k != task]
    if not array_id.isdigit() or not others:
        return
    ranges = []
    start = prev = others[0]
    for k in [*others[1:], None]:
        if k is not None and k == prev + 1:
            prev = k
            continue
        ranges.append(f"{start}-{prev}" if prev > start else str(start))
        if k is not None:
            start = prev = k
    try:
        run_slurm(["scancel", f"{array_id}_[{','.join(ranges)}]"], check=False)
    except Exception:  # unreachable, or no scancel here: they start, see FAILED and skip
        pass


def finish_job(share_dir: str, job_id: str, array_id: str) -> int:
    """The final job: record FINISHED, or FAILED with Slurm's reasons for missing results."""
    from .. import records
    from ..runner import count_failed_runs
    from ..store import open_store

    store = open_store(share_dir, _options_from_env())
    if store.being_removed(job_id, or_canceled=True):
        return 0
    if records.read_status_record(store, job_id).is_final:
        return 0
    n_tasks = records.read_job_record(store, job_id).n_tasks
    reason = failure_reason(store, job_id, n_tasks, {})
    if reason is not None:  # ask Slurm why only when something is missing
        try:
            states = query_array(array_id, job_id)
        except (SlurmUnreachableError, SlurmCommandError) as exc:
            print(f"rxjobs: could not ask Slurm how the tasks ended: {exc}", file=sys.stderr)
            states = {}
        reason = failure_reason(store, job_id, n_tasks, states)
    if reason is None:
        records.write_status(store, job_id, Record.FINISHED,
                             failed_runs=count_failed_runs(store, job_id, n_tasks))
        return 0
    print(f"rxjobs: job {job_id} failed: {reason}", file=sys.stderr)
    records.write_status(store, job_id, Record.FAILED, reason)
    return 0


def _options_from_env() -> dict[str, Any] | None:
    text = os.environ.get(OPTIONS_ENV)
    return json.loads(text) if text else None


_USAGE = """usage: python -m rxjobs.engines.slurm_task task JOB_ID --share-dir DIR [--task K]
       python -m rxjobs.engines.slurm_task finish JOB_ID --share-dir DIR --array ARRAY_ID

rxjobs on Slurm: run one array task of a job (K: default $SLURM_ARRAY_TASK_ID), or
record how a job ended (its final job).  Started by the batch scripts RxSlurm submits."""


def parse_args(argv: list[str]) -> dict[str, str]:
    """``[what, job_id, --option value...]`` as a dict (no argparse: it costs every task's start).

    Raises
    ------
    SystemExit
        With the usage, for anything else.
    """
    options = {"task": ("--share-dir",), "finish": ("--share-dir", "--array")}
    if len(argv) < 2 or argv[0] not in options or argv[1].startswith("-"):
        raise SystemExit(_USAGE)
    parsed = {"what": argv[0], "job_id": argv[1]}
    allowed = set(options[argv[0]]) | ({"--task"} if argv[0] == "task" else set())
    rest = argv[2:]
    if len(rest) % 2:
        raise SystemExit(_USAGE)
    for name, value in zip(rest[::2], rest[1::2], strict=True):
        if name not in allowed:
            raise SystemExit(f"unknown option {name}\n{_USAGE}")
        parsed[name[2:]] = value
    if any(name[2:] not in parsed for name in options[argv[0]]):
        raise SystemExit(_USAGE)
    return parsed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args["what"] == "task":
        index = int(args.get("task") or os.environ["SLURM_ARRAY_TASK_ID"])
        return run_array_task(args["share-dir"], args["job_id"], index)
    return finish_job(args["share-dir"], args["job_id"], args["array"])


if __name__ == "__main__":
    sys.exit(main())
