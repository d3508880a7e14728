"""1,000 tiny runs on Dask: ``rx_exec`` against raw ``client.map`` + ``gather``.

The benchmark starts its own cluster on loopback (``dask scheduler`` and two
``dask worker`` processes, 2 threads each, no nanny, Dask's default
settings), then times, in the same run and in rotating order:

* rxjobs, waiting: ``rx_exec(tiny, x=range(N), compute_context=RxDask(address))``,
  ``task_chunk_size`` chosen by rxjobs: what a user pays, from submit
  (payload and records written to the share dir) to the results in hand and
  the job's artifacts removed (checked after each timing: the share dir must
  hold no job);
* rxjobs, non-waiting: ``rx_exec(..., RxDask(address, wait=False))`` then
  ``rx_wait_for_job(job)``, timed from the call until ``rx_wait_for_job``
  returns FINISHED, the moment a user sees the job end.  The results are
  collected and the artifacts removed afterwards, not timed (the waiting row
  times that part).  The submit alone (call to return) and the moment the job
  recorded ``finished`` in ``status.json`` are reported too: the gap between
  that moment and FINISHED seen is the waiter's polling lag;
* the baseline: ``client.gather(client.map(tiny, range(N), pure=False))``
  with an already connected client: one Dask task per run, results through
  Dask memory, nothing on disk;
* for information, no target: the same chunks of runs rxjobs makes, by hand
  (``client.map(run_chunk, chunks, pure=False)``), the work rxjobs asks of
  Dask without its bookkeeping.

Why ``pure=False``: with Dask's default ``pure=True`` the keys are hashes of
the function and its arguments, identical in every repetition.  When the
previous repetition's keys were still in the scheduler's memory (their
release still in flight), the next ``client.map`` got those results back
without running anything (about 0.06 s instead of 1 s), which made the
baseline bimodal.  Fresh keys make every repetition do the work.

Why ``client.map`` costs about 1 ms per run on this cluster: Dask's root-task
queuing (``distributed.scheduler.worker-saturation``, 1.1 by default) hands a
worker thread its next task only when it reports the previous one done, so
1,000 one-task runs on 4 threads are 250 scheduler round trips per thread;
with ``worker-saturation: inf`` the same call takes about 0.2 s.  The cluster
keeps Dask's defaults, which is what a user gets.

One untimed round of each warms up imports, connections and the workers.
Medians of the repetitions are reported; nothing asserts on time.

Run ``python -m bench.dask_bench --help`` from the repository root.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rxjobs import RxDask, RxRemoteJobStatus, rx_exec, rx_get_job_results, rx_wait_for_job

from .cleanup_bench import machine_summary, write_docs

TARGET_RATIO = 1.0  # waiting rx_exec / client.map
TARGET_RATIO_NOWAIT = 1.2  # non-waiting rx_exec until FINISHED seen / client.map
DOCS_SECTION = "dask_bench"
DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
REPO_ROOT = Path(__file__).resolve().parent.parent

# contender -> label in the table
LABELS = {
    "rxjobs": "rxjobs: rx_exec(..., RxDask(address)), waiting",
    "rxjobs-nowait": "rxjobs: RxDask(wait=False), submit -> FINISHED",
    "client.map": "baseline: client.gather(client.map(f, range(N)))",
    "chunked": "info: client.map over rxjobs' chunks",
}


def tiny(x: int) -> int:
    """The function every contender runs: as small as a run gets."""
    return x + 1


def run_chunk(xs: list[int]) -> list[int]:
    """``tiny`` over a chunk of runs, in one Dask task (the hand-chunked contender)."""
    return [tiny(x) for x in xs]


# -- the cluster (not timed) -----------------------------------------------------------


class Cluster:
    """A scheduler and workers on loopback, each in a session of its own, killed on exit."""

    def __init__(self, workdir: Path, n_workers: int, nthreads: int) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        dask = str(Path(sys.executable).with_name("dask"))
        env = dict(os.environ)
        # Workers import this module to run `tiny` (pickled by reference).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self._spawn([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                     "--dashboard-address", "127.0.0.1:0"], "scheduler.log", env)
        for i in range(n_workers):
            self._spawn([dask, "worker", self.address, "--nthreads", str(nthreads), "--no-dashboard",
                         "--host", "127.0.0.1", "--no-nanny", "--local-directory", str(workdir / f"w{i}")],
                        f"worker{i}.log", env)

    def _spawn(self, cmd: list[str], log: str, env: dict[str, str]) -> None:
        with open(self.workdir / log, "ab") as out:
            self.procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                               stderr=subprocess.STDOUT, cwd=self.workdir, env=env,
                                               start_new_session=True))

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()


# -- the contenders (timed) ------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    seconds: float
    submit: float | None = None  # non-waiting: call to return of rx_exec
    recorded: float | None = None  # non-waiting: call to ``finished`` written in status.json


def _check(results: list[int], n: int, who: str) -> None:
    if results != [x + 1 for x in range(n)]:
        raise RuntimeError(f"{who} returned wrong results; the figure would be meaningless")


def _check_no_job_left(share: Path) -> None:
    left = [p.name for p in share.iterdir() if not p.name.startswith(".")] if share.exists() else []
    if left:
        raise RuntimeError(f"rxjobs left {left} in {share}; the figure would leave out the cleanup")


def time_rxjobs(cc: RxDask, n: int) -> Timing:
    from bench.dask_bench import tiny  # by reference, also when run as __main__

    t0 = time.perf_counter()
    results = rx_exec(tiny, x=list(range(n)), compute_context=cc)
    t1 = time.perf_counter()
    _check(results, n, "rx_exec")
    _check_no_job_left(Path(cc.share_dir))
    return Timing(t1 - t0)


def time_rxjobs_nowait(cc: RxDask, n: int) -> Timing:
    from bench.dask_bench import tiny  # by reference, also when run as __main__

    wall0 = time.time()
    t0 = time.perf_counter()
    job = rx_exec(tiny, x=list(range(n)), compute_context=cc)
    t1 = time.perf_counter()
    status = rx_wait_for_job(job, timeout=300)
    t2 = time.perf_counter()
    if status is not RxRemoteJobStatus.FINISHED:
        raise RuntimeError(f"job {job.job_id} ended {status.value}, not finished")
    record = job.store.read_json(job.store.paths(job.job_id).status_json)
    ended = dt.datetime.fromisoformat(record["ended"]).timestamp() - wall0
    _check(rx_get_job_results(job, auto_cleanup=True), n, "rx_get_job_results")  # not timed
    _check_no_job_left(Path(cc.share_dir))
    return Timing(t2 - t0, submit=t1 - t0, recorded=ended)


def time_raw(client, n: int) -> Timing:
    from bench.dask_bench import tiny  # by reference, also when run as __main__

    t0 = time.perf_counter()
    results = client.gather(client.map(tiny, range(n), pure=False))
    t1 = time.perf_counter()
    _check(results, n, "client.map")
    return Timing(t1 - t0)


def time_chunked(client, n: int, chunk: int) -> Timing:
    from bench.dask_bench import run_chunk  # by reference, also when run as __main__

    t0 = time.perf_counter()
    chunks = [list(range(i, min(n, i + chunk))) for i in range(0, n, chunk)]
    results = [y for part in client.gather(client.map(run_chunk, chunks, pure=False)) for y in part]
    t1 = time.perf_counter()
    _check(results, n, "client.map over chunks")
    return Timing(t1 - t0)


# -- the run ---------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    n: int
    repeat: int
    chunk: int
    timings: dict[str, list[Timing]]

    def seconds(self, name: str) -> list[float]:
        return [t.seconds for t in self.timings[name]]

    def median(self, name: str) -> float:
        return statistics.median(self.seconds(name))

    def ratio(self, name: str) -> float:
        return self.median(name) / self.median("client.map")

    def verdict(self, name: str) -> str:
        target = TARGET_RATIO if name == "rxjobs" else TARGET_RATIO_NOWAIT
        return "PASS" if self.ratio(name) <= target else "MISS"

    def nowait_median(self, field: str) -> float:
        return statistics.median(getattr(t, field) for t in self.timings["rxjobs-nowait"])


def run(n: int, repeat: int, echo: Callable[[str], None] = print) -> Result:
    """Start a cluster, time every contender ``repeat`` times, stop it; every timing."""
    from rxjobs.arguments import choose_chunk_size
    from rxjobs.engines.dask import close_clients, get_client

    workdir = Path(tempfile.mkdtemp(prefix="rxjobs-dask-bench-"))
    cluster = Cluster(workdir, n_workers=2, nthreads=2)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                client = get_client(cluster.address)
                break
            except ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        client.wait_for_workers(2, timeout=120)
        share = str(workdir / "share")
        cc = RxDask(cluster.address, share_dir=share)
        cc_nowait = RxDask(cluster.address, share_dir=share, wait=False)
        chunk = choose_chunk_size(n, sum(client.nthreads().values()), None)
        contenders: dict[str, Callable[[], Timing]] = {
            "rxjobs": lambda: time_rxjobs(cc, n),
            "rxjobs-nowait": lambda: time_rxjobs_nowait(cc_nowait, n),
            "client.map": lambda: time_raw(client, n),
            "chunked": lambda: time_chunked(client, n, chunk),
        }
        for timed in contenders.values():  # warm-up, not timed
            timed()
        timings: dict[str, list[Timing]] = {name: [] for name in contenders}
        names = list(contenders)
        for rep in range(repeat):
            order = names[rep % len(names):] + names[:rep % len(names)]
            line = []
            for name in order:
                timings[name].append(contenders[name]())
                line.append(f"{name} {timings[name][-1].seconds:.3f} s")
            echo(f"repetition {rep + 1}/{repeat}: " + ", ".join(line))
        return Result(n, repeat, chunk, timings)
    finally:
        close_clients()  # before the scheduler goes: no client left reconnecting to it
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def format_table(result: Result) -> str:
    n = result.n
    lines = [f"{n} tiny runs, 1 scheduler + 2 workers x 2 threads on loopback, "
             f"{result.repeat} repetition(s)",
             f"{'':52} {'median s':>9} {'min s':>8} {'max s':>8}"]
    for name, label in LABELS.items():
        values = result.seconds(name)
        lines.append(f"{label:52} {statistics.median(values):9.3f} {min(values):8.3f} {max(values):8.3f}")
        if name == "rxjobs-nowait":
            lines.append(f"{'  s after the call: rx_exec returned (submit)':52} "
                         f"{result.nowait_median('submit'):9.3f}")
            lines.append(f"{'  s after the call: finished in status.json':52} "
                         f"{result.nowait_median('recorded'):9.3f}")
        if name == "chunked":
            lines[-1] += f"   ({-(-n // result.chunk)} tasks of {result.chunk} runs)"
    raw_s = result.median("client.map")
    lines.append(f"per run: rxjobs {result.median('rxjobs') / n * 1e3:.3f} ms, "
                 f"client.map {raw_s / n * 1e3:.3f} ms")
    lines.append(f"ratio rxjobs waiting / client.map: {result.ratio('rxjobs'):.2f}x   "
                 f"target <= {TARGET_RATIO}x: {result.verdict('rxjobs')}")
    lines.append(f"ratio rxjobs non-waiting (submit -> FINISHED) / client.map: "
                 f"{result.ratio('rxjobs-nowait'):.2f}x   target <= {TARGET_RATIO_NOWAIT}x: "
                 f"{result.verdict('rxjobs-nowait')}")
    lines.append(f"(for information: rxjobs waiting / hand-chunked client.map: "
                 f"{result.median('rxjobs') / result.median('chunked'):.2f}x; non-waiting: "
                 f"{result.median('rxjobs-nowait') / result.median('chunked'):.2f}x)")
    return "\n".join(lines)


# -- docs/benchmarks.md ------------------------------------------------------------------


def _machine() -> str:
    import distributed

    return machine_summary(f"distributed {distributed.__version__}")


def docs_section(result: Result, table: str) -> str:
    n, repeat = result.n, result.repeat
    return f"""## {n} tiny runs on Dask vs `client.map`

`python -m bench.dask_bench --runs {n} --repeat {repeat}` — a local `dask scheduler`
and two `dask worker` processes (2 threads each, no nanny, Dask's defaults) started by
the benchmark. Waiting: `rx_exec(tiny, x=range({n}), compute_context=RxDask(address))`
(automatic `task_chunk_size`: submit, run, collect, remove the job's artifacts).
Non-waiting: `rx_exec(..., RxDask(address, wait=False))` until `rx_wait_for_job`
returns FINISHED (results collected afterwards, not timed). Baseline:
`client.gather(client.map(tiny, range({n}), pure=False))` on an already connected
client (fresh keys every repetition, see the benchmark's docstring), in the same run.
One untimed warm-up round; medians of {repeat} repetitions, the order rotating.
Targets: waiting ≤ {TARGET_RATIO}×, non-waiting ≤ {TARGET_RATIO_NOWAIT}× `client.map`.

- Date: {dt.date.today().isoformat()}
- Machine: {_machine()}
- rxjobs median: waiting {result.median('rxjobs'):.3f} s, non-waiting {result.median('rxjobs-nowait'):.3f} s;
  `client.map` median: {result.median('client.map'):.3f} s
- **Waiting: {result.ratio('rxjobs'):.2f}× — {result.verdict('rxjobs')}** (target ≤ {TARGET_RATIO}×)
- **Non-waiting, submit to FINISHED: {result.ratio('rxjobs-nowait'):.2f}× —
  {result.verdict('rxjobs-nowait')}** (target ≤ {TARGET_RATIO_NOWAIT}×)

```
{table}
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dask_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs per job (default 1000)")
    parser.add_argument("--repeat", type=int, default=7, help="repetitions, medians reported (default 7)")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS_PATH.name}")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.repeat < 1:
        parser.error("--runs and --repeat must be at least 1")
    print(_machine())
    result = run(args.runs, args.repeat)
    table = format_table(result)
    print(table)
    if args.write_docs:
        write_docs(docs_section(result, table), DOCS_PATH, name=DOCS_SECTION)
        print(f"wrote {DOCS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
