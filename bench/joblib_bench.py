"""A small scikit-learn GridSearchCV through joblib: the ``rxjobs`` backend against loky and Dask's.

The search: ``GridSearchCV(SVC(), 3 C x 3 gamma, cv=3, n_jobs=2)`` on the iris
data set (27 fits), as a data scientist writes it, only the joblib backend
changing.  Timed in the same run, in rotating order, after one untimed round
each (imports, loky's workers, the cluster's connections):

* local: ``parallel_config(backend="rxjobs", compute_context=RxLocalParallel())``
  against ``parallel_config(backend="loky")`` (loky keeps its workers between
  calls, as it does for a user); target ≤ 1.5×;
* Dask: ``RxDask(address)`` against Dask's own joblib backend
  (``parallel_config(backend="dask")`` with a connected ``distributed.Client``),
  on the same cluster (a scheduler and two workers of 2 threads, started
  here, as ``dask_bench`` does); target ≤ 1.0×.

Each search's best parameters are checked equal to loky's; every rxjobs job is
collected and removed (the share dir is checked empty).  Medians are
reported; nothing asserts on time.  Run ``python -m bench.joblib_bench --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cleanup_bench import machine_summary, write_docs

TARGET_LOCAL = 1.5  # rxjobs local / loky
TARGET_DASK = 1.0  # rxjobs on Dask / Dask's joblib backend
DOCS_SECTION = "joblib_bench"
DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
GRID = {"C": [0.1, 1, 10], "gamma": [0.01, 0.1, 1]}


def search(backend: str, **config: Any) -> dict[str, Any]:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    with joblib.parallel_config(backend=backend, **config):
        return GridSearchCV(SVC(), GRID, n_jobs=2, cv=3).fit(X, y).best_params_  # type: ignore[no-any-return]


def timed(contenders: dict[str, Callable[[], Any]], repeat: int) -> dict[str, list[float]]:
    names = list(contenders)
    for name in names:  # untimed warm-up round
        contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeat):
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def run(repeat: int, with_dask: bool) -> tuple[dict[str, list[float]], str]:
    from rxjobs import RxDask, RxLocalParallel, rx_get_jobs
    from rxjobs.joblib import register_rxjobs

    register_rxjobs()
    work = Path(tempfile.mkdtemp(prefix="rxjobs-joblib-bench-"))
    reference = search("loky")
    share = str(work / "share")
    notes = []
    try:
        def checked(result: dict[str, Any]) -> None:
            assert result == reference, (result, reference)

        contenders: dict[str, Callable[[], Any]] = {
            "loky": lambda: checked(search("loky")),
            "rxjobs local": lambda: checked(
                search("rxjobs", compute_context=RxLocalParallel(share_dir=share))),
        }
        stack = contextlib.ExitStack()
        if with_dask:
            from distributed import Client

            from .dask_bench import Cluster

            (work / "dask").mkdir()
            cluster = Cluster(work / "dask", n_workers=2, nthreads=2)
            stack.callback(cluster.stop)
            client = stack.enter_context(Client(cluster.address, timeout=120))
            client.wait_for_workers(2, timeout=120)
            contenders["dask joblib"] = lambda: checked(search("dask"))
            contenders["rxjobs dask"] = lambda: checked(
                search("rxjobs", compute_context=RxDask(cluster.address, share_dir=share)))
        with stack:
            times = timed(contenders, repeat)
        left = rx_get_jobs(RxLocalParallel(share_dir=share), verbose=False)
        notes.append(f"jobs left in the share dir after all runs: {len(left)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return times, "; ".join(notes)


def format_table(times: dict[str, list[float]]) -> str:
    lines = [f"{'contender':<14} {'median s':>9} {'min s':>8} {'max s':>8}"]
    for name, values in times.items():
        lines.append(f"{name:<14} {statistics.median(values):>9.3f} {min(values):>8.3f} {max(values):>8.3f}")
    return "\n".join(lines)


def ratios(times: dict[str, list[float]]) -> dict[str, float]:
    med = {name: statistics.median(values) for name, values in times.items()}
    out = {"local": med["rxjobs local"] / med["loky"]}
    if "rxjobs dask" in med:
        out["dask"] = med["rxjobs dask"] / med["dask joblib"]
    return out


def docs_section(times: dict[str, list[float]], repeat: int, table: str, notes: str) -> str:
    import joblib
    import sklearn

    got = ratios(times)
    local_line = (f"- **Local: {got['local']:.2f}× loky — "
                  f"{'PASS' if got['local'] <= TARGET_LOCAL else 'MISS'}** (target ≤ {TARGET_LOCAL}×)\n")
    dask_line = (f"- **Dask: {got['dask']:.2f}× Dask's joblib backend — "
                 f"{'PASS' if got['dask'] <= TARGET_DASK else 'MISS'}** (target ≤ {TARGET_DASK}×)\n"
                 if "dask" in got else "- Dask: not run\n")
    return f"""## GridSearchCV through joblib: the rxjobs backend vs loky and Dask's backend

`python -m bench.joblib_bench --repeat {repeat}` — `GridSearchCV(SVC(), 3x3 grid, cv=3,
n_jobs=2)` on iris (27 fits), only the joblib backend changing; one untimed round each,
medians of {repeat}, order rotating; best parameters checked equal to loky's.

- Date: {dt.date.today().isoformat()}
- Machine: {machine_summary(f"joblib {joblib.__version__}, scikit-learn {sklearn.__version__}")}
{local_line}{dask_line}- {notes}

```
{table}
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.joblib_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions, medians reported (default 5)")
    parser.add_argument("--no-dask", action="store_true", help="only the local comparison")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS_PATH.name}")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    times, notes = run(args.repeat, not args.no_dask)
    table = format_table(times)
    print(table)
    for name, value in ratios(times).items():
        print(f"{name}: {value:.2f}x")
    print(notes)
    if args.write_docs:
        write_docs(docs_section(times, args.repeat, table, notes), DOCS_PATH, name=DOCS_SECTION)
        print(f"wrote {DOCS_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
