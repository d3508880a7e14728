"""A share dir of 20,000 jobs for the page and the CLI at scale, made in seconds.

Running 20,000 jobs through an engine would take an hour; this writes one job
of each kind with :func:`factory.make_job` (the artifacts a finished driver
leaves, through the real store), then copies them round-robin under job ids one
second apart, each copy with its own ``job.json`` (its id and ``created``).
The result lists, sizes and cleans up as 20,000 real jobs do.

Use the session fixture ``big_share`` (``tests/conftest.py``): it is made once
per test session and shared, so a test must not remove or change its jobs;
copy it, or preview cleanups without confirming them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rxjobs.ids import new_job_id
from rxjobs.records import JobRecord
from rxjobs.store import open_store

from factory import KINDS, make_job

BIG_JOBS = 20_000


def make_big_share(share: Path, n: int = BIG_JOBS) -> dict[str, list[str]]:
    """Write ``n`` jobs into ``share`` (a new directory); return their ids by kind.

    The kinds are :data:`factory.KINDS` in turn; the newest job ended an hour
    ago, the oldest ``n`` seconds before that.
    """
    store = open_store(str(share))
    store.ensure_root()
    staging = open_store(str(share.parent / f"{share.name}-templates"))
    templates = [make_job(staging, kind, share_url=store.url) for kind in KINDS]
    records = [JobRecord.from_json(json.loads((Path(staging.root) / t.job_id / "job.json").read_bytes()))
               for t in templates]
    end = datetime.now(timezone.utc) - timedelta(hours=1)
    by_kind: dict[str, list[str]] = {kind: [] for kind in KINDS}
    clones = []
    for i in range(n):
        k = i % len(templates)
        created = end - timedelta(seconds=n - 1 - i)
        job_id = new_job_id(created)
        clones.append((k, job_id, created))
        by_kind[templates[k].kind].append(job_id)

    def clone(k: int, job_id: str, created: datetime) -> None:
        shutil.copytree(Path(staging.root) / templates[k].job_id, share / job_id, symlinks=True)
        record = dataclasses.replace(records[k], job_id=job_id, created=created.isoformat())
        # Test data, not a user's: no fsync per file (the session's jobs are made anew each run).
        (share / job_id / "job.json").write_text(json.dumps(record.to_json()))

    for k, job_id, created in clones:
        clone(k, job_id, created)
    shutil.rmtree(staging.root)
    return by_kind
