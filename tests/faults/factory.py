"""Jobs in every terminal state, written straight into a share dir for fault tests.

The fault tests need hundreds of jobs in known states; running each through an
engine would take minutes, so this writes the same artifacts an engine would
(through the real store), with the records a finished driver leaves.
"""

from __future__ import annotations

import cloudpickle

from rxjobs import RxLocalParallel
from rxjobs.jobs import JobRecord, Record, mark_retrieved, write_status
from rxjobs.runner import Payload, TaskResult
from rxjobs.store import Store, new_job_id, utc_now_iso

KINDS = ("unretrieved", "retrieved", "failed", "canceled")


def triple(x):
    return 3 * x


class MadeJob:
    def __init__(self, job_id: str, kind: str, values: list[int], files: int) -> None:
        self.job_id = job_id
        self.kind = kind
        self.values = values
        self.files = files


def make_job(store: Store, kind: str, n_tasks: int = 3, runs_per_task: int = 2) -> MadeJob:
    """Write a job whose driver ended, in one of KINDS; return what it holds."""
    store.ensure_root()
    job_id = new_job_id()
    while store.exists(store.paths(job_id).dir):
        job_id = new_job_id()
    paths = store.paths(job_id)
    n_runs = n_tasks * runs_per_task
    runs = [{"x": i} for i in range(n_runs)]
    store.makedir(paths.dir)
    store.makedir(paths.tasks)
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=store.url)
    record = JobRecord(job_id=job_id, created=utc_now_iso(), user="tester", context=cc.to_dict(),
                       n_runs=n_runs, n_tasks=n_tasks,
                       options={"continue_on_failure": True, "auto_cleanup": True,
                                "console_output": False, "task_chunk_size": runs_per_task},
                       submitter={"host": "nowhere", "pid": 0, "create_time": 0.0},
                       function="factory.triple")
    store.write_json(paths.job_json, record.to_json())
    store.write_atomic(paths.payload, cloudpickle.dumps(Payload(triple, runs, runs_per_task)))
    store.write_json(paths.engine_json, {"engine": "local", "handle": {
        "host": "nowhere", "pid": 0, "create_time": 0.0}})
    values = [triple(i) for i in range(n_runs)]
    for k in range(n_tasks):
        chunk = values[k * runs_per_task:(k + 1) * runs_per_task]
        store.write_atomic(paths.output(k), f"task {k}\n".encode())
        if kind != "canceled":
            result = TaskResult(task=k, first_run=k * runs_per_task, values=chunk)
            store.write_atomic(paths.result(k), cloudpickle.dumps(result))
    if kind == "failed":
        write_status(store, job_id, Record.FAILED, "run 1 raised ValueError: made up")
    elif kind == "canceled":
        write_status(store, job_id, Record.RUNNING)
        store.write_json(paths.canceled, {"canceled": utc_now_iso()})
        store.remove_file(paths.payload)
    else:
        write_status(store, job_id, Record.FINISHED)
    if kind == "retrieved":
        mark_retrieved(store, job_id)
    return MadeJob(job_id, kind, values, store.usage(job_id).files)


def make_jobs(store: Store, per_kind: int) -> list[MadeJob]:
    """``per_kind`` jobs of each kind, interleaved."""
    return [make_job(store, kind) for _ in range(per_kind) for kind in KINDS]
