"""rxjobs on Slurm against submitit, on the same real single-node Slurm, in the same run.

The benchmark starts its own cluster (``munged``, ``slurmctld``, ``slurmd``
on loopback, the test cluster of ``tests/slurm_cluster.py``: 8 CPUs declared
on this machine's cores, ``select/cons_tres`` with ``CR_Core``, no
accounting), then times, in rotating order:

* **200 tiny runs, waiting**: ``rx_exec(tiny, x=range(200),
  compute_context=RxSlurm(share_dir=...))`` (automatic chunks: one array
  of a few tasks), from the call to the results in hand with the job's
  directory removed; against submitit's
  ``SlurmExecutor.map_array(tiny, range(200))`` then ``job.result()`` for
  each job (one array task per run, as submitit makes them).  Target ≤ 0.5×.
* **20 non-waiting jobs, submit → results → cleanup**: 20 ×
  ``rx_exec(tiny, x=[i], compute_context=RxSlurm(wait=False))``, then
  ``rx_wait_for_job`` and ``rx_get_job_results`` for each (which removes the
  job's directory, Slurm's output files included); against 20 ×
  ``executor.submit(tiny, i)``, ``job.result()`` for each, then ``rm -rf``
  of submitit's folder (submitit has no cleanup of its own).  Target ≤ 0.7×.

submitit reads job states with ``sacct``; this cluster has no accounting
(no ``slurmdbd``), so ``sacct`` cannot answer.  submitit is given a stand-in
(``SlurmInfoWatcher._make_command`` patched) that prints ``sacct``'s
``JobID|State|NodeList`` lines from ``squeue -t all``.  It is asked at most
every few seconds: submitit's ``result()`` mostly waits for the result
pickle, checked every second.

One untimed round of each warms up the cluster (its first job waits for the
node's registration) and the imports.  Before that, the benchmark compiles
rxjobs' and its own modules to bytecode (``compileall``), as ``pip install``
does for an installed package: with ``PYTHONDONTWRITEBYTECODE=1`` (set on the
machine these figures come from) a source checkout is otherwise compiled
again by every array task, about 0.2 s of CPU per task that an installed
rxjobs (like the installed submitit) never pays.  Medians of the repetitions are
reported; nothing asserts on time.  Needs root, the Debian packages
``slurm-wlm`` and ``munge``, and ``pip install submitit``.

Run ``python -m bench.slurm_bench --help`` from the repository root.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rxjobs import RxSlurm, rx_exec, rx_get_job_results, rx_wait_for_job
from rxjobs.store import open_store

from .cleanup_bench import machine_summary, verdict, write_docs

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"
DOCS_SECTION = "slurm_bench"
TARGET_WAITING = 0.5
TARGET_NON_WAITING = 0.7
N_JOBS = 20


def tiny(x: int) -> int:
    """The run: as small as a run gets."""
    return x + 1


def compile_sources() -> None:
    """Bytecode for rxjobs and this package, as an installed package has (see the docstring)."""
    import compileall

    import rxjobs

    for folder in (Path(rxjobs.__file__).parent, Path(__file__).parent):
        compileall.compile_dir(str(folder), quiet=1)


def _slurm_cluster_class():
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from slurm_cluster import SlurmCluster, slurm_unavailable

    return SlurmCluster, slurm_unavailable


def _standin_sacct(self) -> list[str] | None:
    """submitit's ``SlurmInfoWatcher._make_command``, answered by ``squeue`` (no accounting here)."""
    ids = {x.split("_")[0] for x in self._registered - self._finished}
    if not ids:
        return None
    script = "echo 'JobID|State|NodeList'; squeue -h -t all -o '%i|%T|%N' -j \"$1\" 2>/dev/null; true"
    return ["sh", "-c", script, "sh", ",".join(sorted(ids))]


# -- the contenders --------------------------------------------------------------------------


def rxjobs_waiting(share: str, runs: int) -> float:
    started = time.perf_counter()
    results = rx_exec(tiny, x=list(range(runs)), compute_context=RxSlurm(share_dir=share))
    elapsed = time.perf_counter() - started
    assert list(results) == [x + 1 for x in range(runs)]
    assert open_store(share).list_job_ids() == []
    return elapsed


def rxjobs_non_waiting(share: str, n_jobs: int) -> float:
    cc = RxSlurm(share_dir=share, wait=False)
    started = time.perf_counter()
    jobs = [rx_exec(tiny, x=[i], compute_context=cc) for i in range(n_jobs)]
    results = []
    for job in jobs:
        rx_wait_for_job(job)
        results.extend(rx_get_job_results(job))  # auto_cleanup: removes the job's directory
    elapsed = time.perf_counter() - started
    assert results == [i + 1 for i in range(n_jobs)]
    assert open_store(share).list_job_ids() == []
    return elapsed


def _executor(folder: Path):
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, python=sys.executable)
    executor.update_parameters(time=60, array_parallelism=256)
    return executor


def submitit_waiting(folder: Path, runs: int) -> float:
    started = time.perf_counter()
    jobs = _executor(folder).map_array(tiny, list(range(runs)))
    results = [job.result() for job in jobs]
    elapsed = time.perf_counter() - started
    assert results == [x + 1 for x in range(runs)]
    shutil.rmtree(folder)  # untimed here: a waiting user of submitit leaves it behind
    return elapsed


def submitit_non_waiting(folder: Path, n_jobs: int) -> float:
    started = time.perf_counter()
    executor = _executor(folder)
    jobs = [executor.submit(tiny, i) for i in range(n_jobs)]
    results = [job.result() for job in jobs]
    shutil.rmtree(folder)  # timed: submitit's cleanup is rm -rf of its folder
    elapsed = time.perf_counter() - started
    assert results == [i + 1 for i in range(n_jobs)]
    return elapsed


# -- running ---------------------------------------------------------------------------------


def run(runs: int, repeat: int, workdir: Path, echo: Callable[[str], None] = print) -> dict[str, list[float]]:
    import submitit.slurm.slurm as submitit_slurm

    submitit_slurm.SlurmInfoWatcher._make_command = _standin_sacct
    share = str(workdir / "rxjobs share")
    counter = iter(range(10**6))

    def folder() -> Path:
        return workdir / f"submitit-{next(counter)}"

    contenders: dict[str, Callable[[], float]] = {
        "rxjobs waiting": lambda: rxjobs_waiting(share, runs),
        "submitit waiting": lambda: submitit_waiting(folder(), runs),
        "rxjobs non-waiting": lambda: rxjobs_non_waiting(share, N_JOBS),
        "submitit non-waiting": lambda: submitit_non_waiting(folder(), N_JOBS),
    }
    echo("warm-up round (untimed)")
    rxjobs_waiting(share, 8)
    submitit_waiting(folder(), 8)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for rep in range(repeat):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            times[name].append(contenders[name]())
            echo(f"  round {rep + 1}: {name}: {times[name][-1]:.2f} s")
    return times


def format_table(times: dict[str, list[float]], runs: int) -> tuple[str, float, float]:
    med = {name: statistics.median(values) for name, values in times.items()}
    waiting = med["rxjobs waiting"] / med["submitit waiting"]
    non_waiting = med["rxjobs non-waiting"] / med["submitit non-waiting"]
    lines = [f"{'':58}median s    min s    max s"]
    labels = {
        "rxjobs waiting": f"rxjobs: rx_exec(tiny, x=range({runs}), RxSlurm()), waiting",
        "submitit waiting": f"submitit: map_array(tiny, range({runs})) + result()",
        "rxjobs non-waiting": f"rxjobs: {N_JOBS} x RxSlurm(wait=False), results, cleanup",
        "submitit non-waiting": f"submitit: {N_JOBS} x submit, result(), rm -rf folder",
    }
    for name, values in times.items():
        lines.append(f"{labels[name]:58}{med[name]:8.2f} {min(values):8.2f} {max(values):8.2f}")
    lines.append(f"ratio waiting: {waiting:.2f}x   target <= {TARGET_WAITING}x: "
                 f"{verdict(waiting <= TARGET_WAITING)}")
    lines.append(f"ratio non-waiting: {non_waiting:.2f}x   target <= {TARGET_NON_WAITING}x: "
                 f"{verdict(non_waiting <= TARGET_NON_WAITING)}")
    return "\n".join(lines), waiting, non_waiting


def docs_section(table: str, waiting: float, non_waiting: float, runs: int, repeat: int) -> str:
    import submitit

    return f"""## Slurm: rxjobs against submitit on the same cluster

`python -m bench.slurm_bench --runs {runs} --repeat {repeat}` — a single-node Slurm
(`slurm-wlm` 22.05: `munged`, `slurmctld`, `slurmd` on loopback; 8 CPUs declared,
`select/cons_tres` `CR_Core`, `batch_sched_delay=0,sched_min_interval=0`, no
accounting) started by the benchmark. Waiting: `rx_exec(tiny, x=range({runs}),
compute_context=RxSlurm())` (automatic chunks) against submitit's
`SlurmExecutor.map_array(tiny, range({runs}))` and `result()` of each job.
Non-waiting: {N_JOBS} × `rx_exec(..., RxSlurm(wait=False))`, `rx_wait_for_job`,
`rx_get_job_results` (removes each job's directory) against {N_JOBS} ×
`executor.submit`, `result()`, then `rm -rf` of submitit's folder. submitit reads
states with `sacct`, which cannot answer without accounting: it was given a stand-in
that prints `sacct`'s lines from `squeue -t all` (it mostly polls its result pickle
every second anyway). One untimed warm-up round; medians of {repeat} repetitions,
the order rotating. Targets: waiting ≤ {TARGET_WAITING}×, non-waiting ≤ {TARGET_NON_WAITING}×.

- Date: {dt.date.today().isoformat()}
- Machine: {machine_summary(f"Slurm 22.05, submitit {submitit.__version__}")}
- **Waiting, {runs} tiny runs: {waiting:.2f}× — {verdict(waiting <= TARGET_WAITING)}**
  (target ≤ {TARGET_WAITING}×)
- **Non-waiting, {N_JOBS} jobs submit → results → cleanup: {non_waiting:.2f}× —
  {verdict(non_waiting <= TARGET_NON_WAITING)}** (target ≤ {TARGET_NON_WAITING}×)

```
{table}
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slurm_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs of the waiting job (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--tmpdir", help="where the cluster and share dirs go (default: a temp dir)")
    args = parser.parse_args(argv)
    try:
        import submitit  # noqa: F401
    except ImportError:
        print('the Slurm benchmark needs submitit: pip install "rxjobs[bench]"', file=sys.stderr)
        return 1
    cluster_class, unavailable = _slurm_cluster_class()
    why = unavailable()
    if why is not None:
        print(f"the Slurm benchmark cannot run here: {why}", file=sys.stderr)
        return 1
    os.chdir(REPO_ROOT)  # submitit's tasks import this module from the submit directory
    compile_sources()
    workdir = Path(tempfile.mkdtemp(prefix="rxjobs-slurm-bench-", dir=args.tmpdir))
    cluster = cluster_class(workdir / "cluster").start()
    try:
        times = run(args.runs, args.repeat, workdir)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    table, waiting, non_waiting = format_table(times, args.runs)
    print(f"{args.runs} tiny runs / {N_JOBS} jobs on a single-node Slurm, {args.repeat} repetition(s)")
    print(table)
    if args.write_docs:
        write_docs(docs_section(table, waiting, non_waiting, args.runs, args.repeat), DOCS_PATH,
                   name=DOCS_SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
