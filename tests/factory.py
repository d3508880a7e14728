"""Jobs in every terminal state, written straight into a share dir for fault tests.

The fault tests need hundreds of jobs in known states; running each through an
engine would take minutes, so this writes the same artifacts an engine would
(through the real store), with the records a finished driver leaves.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import cloudpickle

from rxjobs import RxLocalParallel
from rxjobs.durations import format_duration
from rxjobs.ids import new_job_id
from rxjobs.records import FORMAT_VERSION, JobRecord, mark_retrieved, write_status
from rxjobs.runner import Payload, TaskResult
from rxjobs.status import Record
from rxjobs.store import Store, open_store
from rxjobs.times import utc_now_iso

KINDS = ("unretrieved", "retrieved", "failed", "canceled")


def triple(x):
    return 3 * x


class MadeJob:
    def __init__(self, job_id: str, kind: str, values: list[int], files: int) -> None:
        self.job_id = job_id
        self.kind = kind
        self.values = values
        self.files = files


def make_job(store: Store, kind: str, n_tasks: int = 3, runs_per_task: int = 2, *,
             at: datetime | None = None, share_url: str | None = None,
             expires_after: timedelta | None = None, extra_bytes: int = 0,
             job_format: int = FORMAT_VERSION) -> MadeJob:
    """Write a job whose driver ended, in one of KINDS; return what it holds.

    ``job_format`` 1 writes the layout of rxjobs before format 2: the handle in
    ``engine.json``, and an empty ``driver.log``.

    ``at`` backdates the job (its id, ``created`` and when it ended);
    ``share_url`` is the share dir its record names (default: ``store``'s);
    ``extra_bytes`` pads its first task's output, to give jobs distinct sizes.
    """
    store.ensure_root()
    job_id = new_job_id(at)
    while store.exists(store.paths(job_id).dir):
        job_id = new_job_id(at + timedelta(microseconds=1) if at else None)
        at = at + timedelta(microseconds=1) if at else None
    paths = store.paths(job_id)
    n_runs = n_tasks * runs_per_task
    runs = [{"x": i} for i in range(n_runs)]
    store.makedir(paths.dir)
    store.makedir(paths.tasks)
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=share_url or store.url)
    when = (at or datetime.now(timezone.utc)).isoformat()
    record = JobRecord(job_id=job_id, created=when, user="tester", context=cc.to_dict(),
                       n_runs=n_runs, n_tasks=n_tasks,
                       options={"continue_on_failure": True, "auto_cleanup": True,
                                "console_output": False, "task_chunk_size": runs_per_task,
                                "expires_after": format_duration(expires_after)
                                if expires_after is not None else None},
                       submitter={"host": "nowhere", "pid": 0, "create_time": 0.0},
                       function="factory.triple", format=job_format)
    handle = {"host": "nowhere", "pid": 0, "create_time": 0.0}
    if job_format == 1:
        store.write_json(paths.job_json, record.to_json())
        store.write_json(paths.engine_json, {"engine": "local", "handle": handle})
        store.write_atomic(paths.driver_log, b"")
    else:
        store.write_json(paths.job_json, replace(record, engine="local", handle=handle).to_json())
    store.write_atomic(paths.payload, cloudpickle.dumps(Payload(triple, runs, runs_per_task)))
    values = [triple(i) for i in range(n_runs)]
    for k in range(n_tasks):
        chunk = values[k * runs_per_task:(k + 1) * runs_per_task]
        pad = b"." * extra_bytes if k == 0 else b""
        store.write_atomic(paths.output(k), f"task {k}\n".encode() + pad)
        if kind != "canceled":
            result = TaskResult(task=k, first_run=k * runs_per_task, values=chunk)
            store.write_atomic(paths.result(k), cloudpickle.dumps(result))
    if at is not None:
        state = {"failed": "failed", "canceled": "running"}.get(kind, "finished")
        status = {"state": state, "reason": "run 1 raised ValueError: made up" if kind == "failed"
                  else "", "started": when, "updated": when}
        if state != "running":
            status["ended"] = when
        store.write_json(paths.status_json, status)
    elif kind == "failed":
        write_status(store, job_id, Record.FAILED, "run 1 raised ValueError: made up")
    elif kind == "canceled":
        write_status(store, job_id, Record.RUNNING)
    else:
        write_status(store, job_id, Record.FINISHED)
    if kind == "canceled":
        store.write_json(paths.canceled, {"canceled": when if at else utc_now_iso()})
        store.remove_file(paths.payload)
    if kind == "retrieved":
        mark_retrieved(store, job_id)
    return MadeJob(job_id, kind, values, store.usage(job_id).files)


def make_jobs(store: Store, per_kind: int, **kwargs) -> list[MadeJob]:
    """``per_kind`` jobs of each kind, interleaved."""
    return [make_job(store, kind, **kwargs) for _ in range(per_kind) for kind in KINDS]


def make_jobs_in_bulk(store: Store, kinds: list[str], **kwargs) -> list[MadeJob]:
    """Jobs of the given kinds, written to ``store`` in one batched upload.

    On an object store every small write is a request; the jobs are made in a
    memory:// staging share dir first, then copied with one ``fs.pipe`` of
    every file (s3fs sends those concurrently).  The result is the same files
    :func:`make_job` writes, naming ``store`` as their share dir.
    """
    staging = open_store(f"memory://rxjobs-staging-{uuid.uuid4().hex}")
    try:
        made = [make_job(staging, kind, share_url=store.url, **kwargs) for kind in kinds]
        files = {store.root + key[len(staging.root):]: staging.fs.cat_file(key)
                 for key in staging.fs.find(staging.root)}
        store.ensure_root()
        store.fs.pipe(files)
    finally:
        staging.fs.rm(staging.root, recursive=True)
    return made
