"""Listing: ``rx_get_jobs`` over many jobs, against a plain scandir + job.json loop.

Three figures, each against a baseline measured in the same run:

1. ``rx_get_jobs(cc, verbose=False)`` over ``--jobs`` jobs (default 20,000) of
   several states, against a loop of ``os.scandir`` + ``json.load`` of each
   ``job.json`` (what any listing must at least do).  Target ≤ 1.5×.
2. ``rx_get_jobs`` with a time window holding 1% of the jobs, against the full
   listing: job ids are time-ordered, so a window skips jobs by name.
   Target ≤ 0.05×.
3. Peak RSS of a fresh process iterating ``rx_get_jobs`` over ``--rss-jobs``
   jobs (default 100,000).  Target ≤ 200 MB.

The jobs are copies of small real finished, failed and canceled jobs (the
format is ours), with ids one second apart so that time windows mean something.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta, timezone
from pathlib import Path

from rxjobs import (
    RxComputeContext,
    RxLocalParallel,
    RxRemoteJobStatus,
    rx_cancel_job,
    rx_exec,
    rx_get_jobs,
    rx_wait_for_job,
)
from rxjobs.ids import job_id_time, new_job_id
from rxjobs.records import JobRecord
from rxjobs.store import open_store

from .cleanup_bench import machine_summary, verdict, write_docs

TARGET_FULL = 1.5
TARGET_WINDOW = 0.05
TARGET_RSS_MB = 200.0


def fail_on_odd(i: int) -> int:
    if i % 2:
        raise ValueError(f"odd {i}")
    return i


def nap(seconds: float) -> float:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return seconds


def make_templates(workdir: Path) -> list[Path]:
    """Real jobs in three states: finished, failed, canceled (small: listing reads job.json)."""
    share = workdir / "templates"
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=str(share))
    done = rx_exec(fail_on_odd, i=[0, 2], compute_context=cc)
    if rx_wait_for_job(done, timeout=300) is not RxRemoteJobStatus.FINISHED:
        raise RuntimeError("the finished template did not finish")
    finished = share / done.job_id
    failed = rx_exec(fail_on_odd, i=[0, 1, 2, 3], continue_on_failure=False, compute_context=cc)
    if rx_wait_for_job(failed, timeout=300) is not RxRemoteJobStatus.FAILED:
        raise RuntimeError("the failed template did not fail")
    canceled = rx_exec(nap, seconds=[300, 300], compute_context=cc)
    deadline = time.monotonic() + 120
    while rx_get_jobs(cc, states=["running"], verbose=False) == [] and time.monotonic() < deadline:
        time.sleep(0.05)
    rx_cancel_job(canceled)
    return [finished, share / failed.job_id, share / canceled.job_id]


def spaced_job_ids(n: int, end: dt.datetime) -> list[str]:
    """``n`` job ids one second apart, the last at ``end``."""
    return [new_job_id(end - timedelta(seconds=n - 1 - i)) for i in range(n)]


def clone_spread(templates: list[Path], share: Path, job_ids: list[str]) -> None:
    """Copy the templates round-robin under ``job_ids``, with matching job.json."""
    import shutil

    store = open_store(str(share))
    store.ensure_root()
    # The templates are outside the share dir: read as plain files, not through its store.
    records = [JobRecord.from_json(json.loads((t / "job.json").read_bytes())) for t in templates]
    submitted_with = RxComputeContext.from_dict(records[0].context)
    context = dataclasses.replace(submitted_with, share_dir=store.url).to_dict()
    for i, job_id in enumerate(job_ids):
        template, record = templates[i % len(templates)], records[i % len(templates)]
        shutil.copytree(template, share / job_id, symlinks=True)
        created = job_id_time(job_id)
        clone = dataclasses.replace(record, job_id=job_id, context=context,
                                    created=created.isoformat() if created else record.created)
        store.write_json(store.paths(job_id).job_json, clone.to_json())


def plain_listing(share: Path) -> int:
    """The baseline: scandir and load every job.json."""
    n = 0
    with os.scandir(share) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            with open(os.path.join(entry.path, "job.json"), "rb") as f:
                json.load(f)
            n += 1
    return n


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


# Peak RSS from VmHWM: ru_maxrss would carry the forking parent's peak over execve.
_PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"

_RSS_CHILD = f"""
import sys
from rxjobs import RxLocalParallel, rx_get_jobs
n = 0
for job in rx_get_jobs(RxLocalParallel(share_dir=sys.argv[1]), verbose=False):
    n += 1
print(n, {_PEAK})
"""

_RSS_BASELINE = f"""
from rxjobs import RxLocalParallel, rx_get_jobs
print(0, {_PEAK})
"""


def peak_rss(share: Path | None) -> tuple[int, float]:
    """(jobs listed, peak RSS in MB) of a fresh process listing ``share`` (None: import only)."""
    code = _RSS_CHILD if share is not None else _RSS_BASELINE
    argv = [sys.executable, "-c", code] + ([str(share)] if share is not None else [])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), float(out[1])


@dataclasses.dataclass
class Result:
    n_jobs: int
    repeat: int
    full: list[float]
    plain: list[float]
    window: list[float]
    window_jobs: int
    rss_jobs: int
    rss_mb: float
    rss_import_mb: float

    @property
    def ratio_full(self) -> float:
        return statistics.median(self.full) / statistics.median(self.plain)

    @property
    def ratio_window(self) -> float:
        return statistics.median(self.window) / statistics.median(self.full)


def run(n_jobs: int, rss_jobs: int, repeat: int, tmpdir: str | None = None) -> Result:
    with tempfile.TemporaryDirectory(prefix="rxjobs-listing-", dir=tmpdir) as work:
        work_path = Path(work)
        templates = make_templates(work_path)
        end = dt.datetime.now(timezone.utc) - timedelta(hours=1)
        share = work_path / "share"
        ids = spaced_job_ids(n_jobs, end)
        clone_spread(templates, share, ids)
        cc = RxLocalParallel(share_dir=str(share))
        window_start = job_id_time(ids[-max(1, n_jobs // 100)])
        window_jobs = len(rx_get_jobs(cc, start_time=window_start, verbose=False))

        def full_listing() -> None:
            assert len(rx_get_jobs(cc, verbose=False)) == n_jobs

        def baseline() -> None:
            assert plain_listing(share) == n_jobs

        def window_listing() -> None:
            assert len(rx_get_jobs(cc, start_time=window_start, verbose=False)) == window_jobs

        contenders = [(full_listing, []), (baseline, []), (window_listing, [])]
        for fn, _ in contenders:
            fn()  # warm-up, untimed: imports, first-use caches, the page cache
        for i in range(repeat):
            # The order rotates, so that no contender always runs after the same one.
            for fn, times in contenders[i % 3:] + contenders[:i % 3]:
                times.append(timed(fn)[0])
        full, plain, window = (times for _, times in contenders)
        rss_share = share
        if rss_jobs > n_jobs:
            rss_share = work_path / "rss-share"
            clone_spread(templates, rss_share, spaced_job_ids(rss_jobs, end))
        else:
            rss_jobs = n_jobs  # the share dir above, already big enough
        listed, rss_mb = peak_rss(rss_share)
        assert listed == rss_jobs, (listed, rss_jobs)
        _, rss_import_mb = peak_rss(None)
    return Result(n_jobs, repeat, full, plain, window, window_jobs, rss_jobs, rss_mb, rss_import_mb)


def format_table(r: Result) -> str:
    med = statistics.median
    return "\n".join([
        f"{r.n_jobs} jobs (finished, failed, canceled), {r.repeat} repetition(s)        median s",
        f"rx_get_jobs(cc, verbose=False)                                  {med(r.full):8.3f}",
        f"baseline: scandir + json.load(job.json)                         {med(r.plain):8.3f}",
        f"rx_get_jobs(cc, start_time=...) -> {r.window_jobs} jobs (1%)"
        f"{' ' * max(1, 28 - len(str(r.window_jobs)))}{med(r.window):8.3f}",
        f"ratio full listing / plain loop: {r.ratio_full:.2f}x   target <= {TARGET_FULL}x: "
        f"{verdict(r.ratio_full <= TARGET_FULL)}",
        f"ratio 1% window / full listing: {r.ratio_window:.3f}x  target <= {TARGET_WINDOW}x: "
        f"{verdict(r.ratio_window <= TARGET_WINDOW)}",
        f"peak RSS iterating rx_get_jobs over {r.rss_jobs} jobs: {r.rss_mb:.0f} MB "
        f"(python + rxjobs alone: {r.rss_import_mb:.0f} MB)   target <= {TARGET_RSS_MB:.0f} MB: "
        f"{verdict(r.rss_mb <= TARGET_RSS_MB)}",
    ])


def docs_section(r: Result, table: str) -> str:
    return f"""## Listing jobs vs a plain scandir loop

`python -m bench.listing_bench --jobs {r.n_jobs} --rss-jobs {r.rss_jobs} --repeat {r.repeat}` —
copies of real finished, failed and canceled local-engine jobs, ids one second apart.
`rx_get_jobs(cc, verbose=False)` (reads and matches every job.json) against a loop of
`os.scandir` + `json.load` of each `job.json`; a 1% time window against the full
listing; peak RSS of a fresh process iterating `rx_get_jobs` over {r.rss_jobs} jobs.
One untimed warm-up round, then medians of {r.repeat} repetitions, in the same run, the order rotating.

- Date: {dt.date.today().isoformat()}
- Machine: {machine_summary()}
- **Full listing: {r.ratio_full:.2f}× the plain loop — {verdict(r.ratio_full <= TARGET_FULL)}**
  (target ≤ {TARGET_FULL}×)
- **1% window: {r.ratio_window:.3f}× the full listing — {verdict(r.ratio_window <= TARGET_WINDOW)}**
  (target ≤ {TARGET_WINDOW}×)
- **Peak RSS over {r.rss_jobs} jobs: {r.rss_mb:.0f} MB — {verdict(r.rss_mb <= TARGET_RSS_MB)}**
  (target ≤ {TARGET_RSS_MB:.0f} MB)

```
{table}
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.listing_bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20000, help="jobs to list (default 20000)")
    parser.add_argument("--rss-jobs", type=int, default=100000,
                        help="jobs for the peak-RSS figure (default 100000)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--tmpdir", default=None, help="where to build the share dirs")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if min(args.jobs, args.rss_jobs, args.repeat) < 1:
        parser.error("--jobs, --rss-jobs and --repeat must be at least 1")
    print(machine_summary())
    result = run(args.jobs, args.rss_jobs, args.repeat, args.tmpdir)
    table = format_table(result)
    print(table)
    if args.write_docs:
        write_docs(docs_section(result, table), name="listing_bench")
        print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
