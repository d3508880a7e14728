"""The local engine: ``rx_exec`` of many tiny runs, and the cost of a non-waiting submit.

1. ``rx_exec(tiny, x=range(N), compute_context=RxLocalParallel(2))`` (waiting:
   submit, run, collect, remove the artifacts) against a raw
   ``ProcessPoolExecutor(2).map(tiny, range(N))`` with its default chunksize,
   pool start included, in the same run.  Target ≤ 1.0×: automatic task
   chunking should beat the naive call.  The benchmark's process is single
   threaded, so the job's driver is forked from it; the same ``rx_exec`` with
   another thread alive in the caller (a notebook kernel's case), where the
   driver is a fresh interpreter, is measured too and reported without a target.
2. A non-waiting submit, ``rx_exec(..., RxLocalParallel(wait=False))``, from
   call to return.  Target: median ≤ 150 ms.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from rxjobs import RxLocalParallel, rx_cleanup_jobs, rx_exec, rx_wait_for_job

from .cleanup_bench import machine_summary, verdict, write_docs

TARGET_RATIO = 1.0
TARGET_SUBMIT_MS = 150.0


def tiny(x: int) -> int:
    return x + 1


def time_rxjobs(runs: int, share: str, threaded: bool = False) -> float:
    cc = RxLocalParallel(num_workers=2, share_dir=share)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    if threaded:
        other.start()
    try:
        started = time.perf_counter()
        results = rx_exec(tiny, x=list(range(runs)), compute_context=cc)
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        if threaded:
            other.join()
    assert results == [x + 1 for x in range(runs)]
    return seconds


def time_pool(runs: int) -> float:
    started = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(tiny, range(runs)))
    seconds = time.perf_counter() - started
    assert results == [x + 1 for x in range(runs)]
    return seconds


def time_submit(share: str) -> float:
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=share)
    started = time.perf_counter()
    job = rx_exec(tiny, x=[1], compute_context=cc)
    seconds = time.perf_counter() - started
    rx_wait_for_job(job, timeout=120)
    rx_cleanup_jobs(job, force=True, verbose=False)
    return seconds


@dataclasses.dataclass
class Result:
    runs: int
    repeat: int
    rxjobs: list[float]
    pool: list[float]
    submit: list[float]
    threaded: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.rxjobs) / statistics.median(self.pool)

    @property
    def submit_ms(self) -> float:
        return statistics.median(self.submit) * 1000


def run(runs: int, repeat: int, submits: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="rxjobs-local-bench-") as share:
        time_rxjobs(runs, share)  # warm-up: imports, page cache
        time_pool(runs)
        times: dict[str, list[float]] = {"rxjobs": [], "pool": [], "threaded": []}
        for i in range(repeat):
            order = [("rxjobs", lambda: time_rxjobs(runs, share)), ("pool", lambda: time_pool(runs)),
                     ("threaded", lambda: time_rxjobs(runs, share, threaded=True))]
            for name, fn in order if i % 2 == 0 else reversed(order):
                times[name].append(fn())
        submit_times = [time_submit(share) for _ in range(submits)]
    return Result(runs, repeat, times["rxjobs"], times["pool"], submit_times, times["threaded"])


def format_table(r: Result) -> str:
    med = statistics.median
    return "\n".join([
        f"{r.runs} tiny runs on 2 worker processes, {r.repeat} repetition(s)   median s   min s",
        f"rxjobs: rx_exec(..., RxLocalParallel(2)), waiting      {med(r.rxjobs):8.3f} {min(r.rxjobs):7.3f}",
        f"baseline: ProcessPoolExecutor(2).map(f, range(N))      {med(r.pool):8.3f} {min(r.pool):7.3f}",
        f"rxjobs, another thread alive in the caller             {med(r.threaded):8.3f} "
        f"{min(r.threaded):7.3f}",
        f"ratio rxjobs / pool: {r.ratio:.2f}x   "
        f"target <= {TARGET_RATIO}x: {verdict(r.ratio <= TARGET_RATIO)}",
        f"ratio rxjobs with another thread / pool: {med(r.threaded) / med(r.pool):.2f}x  (no target)",
        f"non-waiting submit, call to return: median {r.submit_ms:.0f} ms over {len(r.submit)} "
        f"(min {min(r.submit) * 1000:.0f}, max {max(r.submit) * 1000:.0f})   target <= "
        f"{TARGET_SUBMIT_MS:.0f} ms: {verdict(r.submit_ms <= TARGET_SUBMIT_MS)}",
    ])


def docs_section(r: Result, table: str) -> str:
    return f"""## Local engine: tiny runs vs `ProcessPoolExecutor`, and submit latency

`python -m bench.local_exec_bench --runs {r.runs} --repeat {r.repeat}` —
`rx_exec(tiny, x=range({r.runs}), compute_context=RxLocalParallel(num_workers=2))`
(waiting: the detached driver's start, the runs, collecting the results and removing
the artifacts) against `ProcessPoolExecutor(2).map(tiny, range({r.runs}))` with the
default chunksize, pool start included; the order alternates; medians. The benchmark
runs one thread, so the driver is forked from it; the row "another thread alive" is
the same call from a multi-threaded caller (a notebook kernel), whose driver is a fresh
interpreter (no target). Then the time from calling a non-waiting `rx_exec` to its return.

- Date: {dt.date.today().isoformat()}
- Machine: {machine_summary()}
- **rxjobs / ProcessPoolExecutor: {r.ratio:.2f}× — {verdict(r.ratio <= TARGET_RATIO)}**
  (target ≤ {TARGET_RATIO}×)
- With another thread alive in the caller (fresh driver interpreter):
  {statistics.median(r.threaded) / statistics.median(r.pool):.2f}× (no target)
- **Non-waiting submit: median {r.submit_ms:.0f} ms — {verdict(r.submit_ms <= TARGET_SUBMIT_MS)}**
  (target ≤ {TARGET_SUBMIT_MS:.0f} ms)

```
{table}
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.local_exec_bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="tiny runs (default 1000)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--submits", type=int, default=20, help="non-waiting submits timed")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if min(args.runs, args.repeat, args.submits) < 1:
        parser.error("--runs, --repeat and --submits must be at least 1")
    print(machine_summary())
    result = run(args.runs, args.repeat, args.submits)
    table = format_table(result)
    print(table)
    if args.write_docs:
        write_docs(docs_section(result, table), name="local_exec_bench")
        print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
