"""The cost of durability: one commit point of a local share dir, with and without fsync.

Times ``Store.write_atomic`` of a small record (temporary file, rename; with
fsync: the file before the rename and the directory after) and
``Store.remove_job`` of a small job (rename into ``.trash/``, then delete;
with fsync: both directories after the rename), alternating
``RXJOBS_FSYNC=1`` (the default) and ``RXJOBS_FSYNC=0`` in rounds, so that
both see the same machine.  Prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time

from rxjobs.store import open_store
from rxjobs.store.durability import FSYNC_ENV

from .cleanup_bench import machine_summary, write_docs


def _time_writes(store, n: int) -> list[float]:
    paths = store.paths("rxJob_bench")
    store.makedir(paths.dir, exist_ok=True)
    seconds = []
    for i in range(n):
        started = time.perf_counter()
        store.write_atomic(f"{paths.dir}/record-{i % 8}.json", b'{"state": "finished"}')
        seconds.append(time.perf_counter() - started)
    return seconds


def _time_removals(store, n: int) -> list[float]:
    seconds = []
    for i in range(n):
        paths = store.paths(f"rxJob_remove_{i}")
        store.makedir(paths.dir)
        store.write_atomic(paths.job_json, b"{}")
        started = time.perf_counter()
        store.remove_job(paths.job_id)
        seconds.append(time.perf_counter() - started)
    return seconds


def run(n: int, rounds: int, tmpdir: str | None) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {"write": {"1": [], "0": []}, "remove": {"1": [], "0": []}}
    workdir = tempfile.mkdtemp(prefix="rxjobs-fsync-bench-", dir=tmpdir)
    try:
        for r in range(rounds):
            for setting in ("1", "0") if r % 2 == 0 else ("0", "1"):
                os.environ[FSYNC_ENV] = setting
                store = open_store(os.path.join(workdir, f"share-{r}-{setting}"))
                store.ensure_root()
                times["write"][setting] += _time_writes(store, n)
                times["remove"][setting] += _time_removals(store, n)
    finally:
        os.environ.pop(FSYNC_ENV, None)
        shutil.rmtree(workdir, ignore_errors=True)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fsync_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100, help="operations per round and setting (default 100)")
    parser.add_argument("--rounds", "--repeat", type=int, default=4,
                        help="alternating rounds (default 4); --repeat is the same, for python -m bench")
    parser.add_argument("--tmpdir", default=None, help="where to make the share dirs (default: system tmp)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if min(args.n, args.rounds) < 1:
        parser.error("--n and --rounds must be at least 1")
    print(machine_summary())
    times = run(args.n, args.rounds, args.tmpdir)
    lines = [f"{args.n} x {args.rounds} operations each, median ms   fsync (default)   "
             "RXJOBS_FSYNC=0   ratio"]
    for what, label in (("write", "write_atomic of a small record"), ("remove", "remove_job of a small job")):
        on, off = statistics.median(times[what]["1"]) * 1e3, statistics.median(times[what]["0"]) * 1e3
        lines.append(f"{label:<44} {on:10.2f}   {off:14.2f}   {on / off:5.1f}x")
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        write_docs(f"""## The cost of one commit point, with and without fsync

`python -m bench.fsync_bench --n {args.n} --rounds {args.rounds}`, alternating `RXJOBS_FSYNC=1`
(the default) and `RXJOBS_FSYNC=0` in rounds of the same run. Reported, no target: the
price of durability (docs/reliability.md).

- Date: {datetime.date.today().isoformat()}
- Machine: {machine_summary()}

```
{table}
```
""", name="fsync_bench")
        print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
