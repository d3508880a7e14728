"""rxjobs.Executor and rxjobs.compat.submitit against what their users run today, in the same run.

Three comparisons, medians of ``--repeat`` rounds in rotating order, one
untimed warm-up round first:

* **local, many calls**: ``--runs`` (default 1,000) ``Executor.submit(tiny, i)``
  then ``result()`` of each, on the local engine (``RxLocalParallel()``):
  the executor gathers the calls into a job or two, removed once read;
  against ``concurrent.futures.ProcessPoolExecutor(2)``.  Target ≤ 1.5×.
  Beside it, untargeted: ``N_ONE_BY_ONE`` calls each waited for before the
  next is submitted (a job per call: what a lone call costs).
* **local, 20 jobs**: 20 ``submit`` then ``result()`` of each with
  ``rxjobs.compat.submitit.LocalExecutor``; against submitit's own
  ``LocalExecutor``.  Target ≤ 0.2×.
* **Slurm, map_array of 200**: ``AutoExecutor(...).map_array(tiny, range(200))``
  and ``result()`` of each, on the single-node Slurm of
  ``tests/slurm_cluster.py`` (root, ``slurm-wlm``, ``munge``); against
  submitit's ``SlurmExecutor.map_array`` on the same cluster (with the
  ``sacct`` stand-in of ``bench/slurm_bench.py``).  Target ≤ 0.1×.  Skipped,
  and said so, where no cluster can be started.

Nothing asserts on time.  Needs submitit (``pip install -e .[bench]``).
Run ``python -m bench.executor_bench --help`` from the repository root.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rxjobs import RxLocalParallel, list_jobs
from rxjobs.executor import Executor

from .cleanup_bench import machine_summary, verdict, write_docs

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"
DOCS_SECTION = "executor_bench"
TARGETS = {"local many": 1.5, "local 20": 0.2, "slurm map_array": 0.1}
N_LOCAL = 20
N_ARRAY = 200
N_ONE_BY_ONE = 50


def tiny(x: int) -> int:
    """The call: as small as a call gets."""
    return x + 1


# -- the contenders --------------------------------------------------------------------------


def rx_executor_many(share: str, runs: int) -> float:
    started = time.perf_counter()
    with Executor(RxLocalParallel(share_dir=share)) as ex:
        futures = [ex.submit(tiny, i) for i in range(runs)]
        results = [f.result() for f in futures]
    elapsed = time.perf_counter() - started
    assert results == [i + 1 for i in range(runs)]
    assert list_jobs(share) == []
    return elapsed


def rx_executor_one_by_one(share: str) -> float:
    started = time.perf_counter()
    with Executor(RxLocalParallel(share_dir=share)) as ex:
        results = [ex.submit(tiny, i).result() for i in range(N_ONE_BY_ONE)]
    elapsed = time.perf_counter() - started
    assert results == [i + 1 for i in range(N_ONE_BY_ONE)]
    assert list_jobs(share) == []
    return elapsed


def process_pool_many(runs: int) -> float:
    started = time.perf_counter()
    with cf.ProcessPoolExecutor(2) as ex:
        futures = [ex.submit(tiny, i) for i in range(runs)]
        results = [f.result() for f in futures]
    elapsed = time.perf_counter() - started
    assert results == [i + 1 for i in range(runs)]
    return elapsed


def rx_submitit_local(folder: Path) -> float:
    import rxjobs.compat.submitit as rx_submitit

    started = time.perf_counter()
    executor = rx_submitit.LocalExecutor(folder=folder)
    jobs = [executor.submit(tiny, i) for i in range(N_LOCAL)]
    results = [job.result() for job in jobs]
    elapsed = time.perf_counter() - started
    assert results == [i + 1 for i in range(N_LOCAL)]
    shutil.rmtree(folder)
    return elapsed


def submitit_local(folder: Path) -> float:
    import submitit

    started = time.perf_counter()
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=10)
    jobs = [executor.submit(tiny, i) for i in range(N_LOCAL)]
    results = [job.result() for job in jobs]
    elapsed = time.perf_counter() - started
    assert results == [i + 1 for i in range(N_LOCAL)]
    shutil.rmtree(folder)
    return elapsed


def rx_submitit_array(folder: Path) -> float:
    import rxjobs.compat.submitit as rx_submitit

    started = time.perf_counter()
    executor = rx_submitit.AutoExecutor(folder=folder)
    assert executor.cluster == "slurm"
    jobs = executor.map_array(tiny, list(range(N_ARRAY)))
    results = [job.result() for job in jobs]
    elapsed = time.perf_counter() - started
    assert results == [x + 1 for x in range(N_ARRAY)]
    shutil.rmtree(folder)
    return elapsed


def submitit_array(folder: Path) -> float:
    from .slurm_bench import submitit_waiting

    return submitit_waiting(folder, N_ARRAY)


# -- running ---------------------------------------------------------------------------------


def rounds(contenders: dict[str, Callable[[], float]], repeat: int,
           echo: Callable[[str], None]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for rep in range(repeat):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            times[name].append(contenders[name]())
            echo(f"  round {rep + 1}: {name}: {times[name][-1]:.2f} s")
    return times


def run(runs: int, repeat: int, workdir: Path, slurm: bool,
        echo: Callable[[str], None] = print) -> dict[str, list[float]]:
    counter = iter(range(10**6))

    def folder() -> Path:
        return workdir / f"folder-{next(counter)}"

    share = str(workdir / "rxjobs share")
    contenders: dict[str, Callable[[], float]] = {
        "rx executor many": lambda: rx_executor_many(share, runs),
        "process pool many": lambda: process_pool_many(runs),
        "rx executor one by one": lambda: rx_executor_one_by_one(share),
        "rx submitit local": lambda: rx_submitit_local(folder()),
        "submitit local": lambda: submitit_local(folder()),
    }
    echo("warm-up round (untimed)")
    rx_executor_many(share, 4)
    process_pool_many(4)
    rx_submitit_local(folder())
    submitit_local(folder())
    times = rounds(contenders, repeat, echo)
    if slurm:
        import submitit.slurm.slurm as submitit_slurm

        from .slurm_bench import _slurm_cluster_class, _standin_sacct, compile_sources

        submitit_slurm.SlurmInfoWatcher._make_command = _standin_sacct
        cluster_class, _ = _slurm_cluster_class()
        compile_sources()
        cluster = cluster_class(workdir / "cluster").start()
        try:
            echo("Slurm warm-up round (untimed)")
            rx_submitit_array(folder())
            times.update(rounds({"rx submitit map_array": lambda: rx_submitit_array(folder()),
                                 "submitit map_array": lambda: submitit_array(folder())}, repeat, echo))
        finally:
            cluster.stop()
    return times


def format_table(times: dict[str, list[float]], runs: int) -> tuple[str, dict[str, float]]:
    med = {name: statistics.median(values) for name, values in times.items()}
    labels = {
        "rx executor many": f"rxjobs.Executor(): {runs} x submit + result()",
        "process pool many": f"ProcessPoolExecutor(2): {runs} x submit + result()",
        "rx executor one by one": f"rxjobs.Executor(): {N_ONE_BY_ONE} x (submit, result()) one by one",
        "rx submitit local": f"rxjobs.compat.submitit.LocalExecutor: {N_LOCAL} x submit + result()",
        "submitit local": f"submitit.LocalExecutor: {N_LOCAL} x submit + result()",
        "rx submitit map_array": f"rxjobs.compat.submitit on Slurm: map_array({N_ARRAY}) + result()",
        "submitit map_array": f"submitit on Slurm: map_array({N_ARRAY}) + result()",
    }
    ratios = {"local many": med["rx executor many"] / med["process pool many"],
              "local 20": med["rx submitit local"] / med["submitit local"]}
    if "submitit map_array" in med:
        ratios["slurm map_array"] = med["rx submitit map_array"] / med["submitit map_array"]
    lines = [f"{'':68}median s    min s    max s"]
    for name, values in times.items():
        lines.append(f"{labels[name]:68}{med[name]:8.2f} {min(values):8.2f} {max(values):8.2f}")
    for name, ratio in ratios.items():
        lines.append(f"ratio {name}: {ratio:.2f}x   target <= {TARGETS[name]}x: "
                     f"{verdict(ratio <= TARGETS[name])}")
    return "\n".join(lines), ratios


def docs_section(table: str, ratios: dict[str, float], runs: int, repeat: int, note: str) -> str:
    import submitit

    rows = "\n".join(f"- **{name}: {ratio:.2f}× — {verdict(ratio <= TARGETS[name])}** "
                     f"(target ≤ {TARGETS[name]}×)" for name, ratio in ratios.items())
    return f"""## rxjobs.Executor and rxjobs.compat.submitit

`python -m bench.executor_bench --runs {runs} --repeat {repeat}` — local: {runs} ×
`Executor.submit(tiny, i)` then `result()` of each (the executor gathers calls submitted
together into one job, removed once every result was read) against
`ProcessPoolExecutor(2)`; beside it, untargeted, {N_ONE_BY_ONE} calls each waited for before
the next is submitted (a job per call); {N_LOCAL} jobs with `rxjobs.compat.submitit.LocalExecutor`
against submitit's `LocalExecutor`; on the single-node Slurm of `tests/slurm_cluster.py`,
`map_array(tiny, range({N_ARRAY}))` and `result()` of each against submitit's (with the
`sacct` stand-in of the Slurm benchmark). One untimed warm-up round; medians of {repeat}
repetitions, the order rotating. {note} A lone call is still a whole rxjobs job
(files written, a detached driver forked, its state derived, the job removed when read):
the one-by-one row says what that costs per call.

- Date: {dt.date.today().isoformat()}
- Machine: {machine_summary(f"submitit {submitit.__version__}")}
{rows}

```
{table}
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.executor_bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000,
                        help="calls of the local many-calls comparison (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--no-slurm", action="store_true", help="skip the Slurm comparison")
    parser.add_argument("--note", default="", help="a sentence for the docs (e.g. the machine was loaded)")
    parser.add_argument("--tmpdir", help="where the share dirs go (default: a temp dir)")
    args = parser.parse_args(argv)
    try:
        import submitit  # noqa: F401
    except ImportError:
        print('the executor benchmark needs submitit: pip install "rxjobs[bench]"', file=sys.stderr)
        return 1
    slurm = not args.no_slurm
    if slurm:
        from .slurm_bench import _slurm_cluster_class

        why = _slurm_cluster_class()[1]()
        if why is not None:
            print(f"the Slurm comparison is skipped: {why}", file=sys.stderr)
            slurm = False
    os.chdir(REPO_ROOT)  # submitit's jobs import this module from the submit directory
    workdir = Path(tempfile.mkdtemp(prefix="rxjobs-executor-bench-", dir=args.tmpdir))
    try:
        times = run(args.runs, args.repeat, workdir, slurm)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table, ratios = format_table(times, args.runs)
    print(table)
    if args.write_docs:
        write_docs(docs_section(table, ratios, args.runs, args.repeat, args.note), DOCS_PATH,
                   name=DOCS_SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
