"""1,000 tiny runs on Dask: ``rx_exec`` against raw ``client.map`` + ``gather``.

The benchmark starts its own cluster on loopback (``dask scheduler`` and two
``dask worker`` processes, 2 threads each, no nanny), then times, in the same
run and in rotating order:

* rxjobs: ``rx_exec(tiny, x=range(N), compute_context=RxDask(address))``,
  waiting, ``task_chunk_size`` chosen by rxjobs: what a user pays, from
  submit (payload and records written to the share dir) to the results in
  hand and the job's artifacts removed;
* the baseline: ``client.gather(client.map(tiny, range(N)))`` with an
  already connected client: one Dask task per run, results through Dask
  memory, nothing on disk.

One untimed round of each warms up imports, connections and the workers.
Medians of the repetitions are reported; nothing asserts on time.

Run ``python -m bench.dask_bench --help`` from the repository root.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
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

import rxjobs
from rxjobs import RxDask, rx_exec

TARGET_RATIO = 1.0
DOCS_SECTION = "dask_bench"
DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
REPO_ROOT = Path(__file__).resolve().parent.parent


def tiny(x: int) -> int:
    """The function both contenders run: as small as a run gets."""
    return x + 1


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


def time_rxjobs(cc: RxDask, n: int) -> float:
    from bench.dask_bench import tiny  # by reference, also when run as __main__

    t0 = time.perf_counter()
    results = rx_exec(tiny, x=list(range(n)), compute_context=cc)
    t1 = time.perf_counter()
    if results != [x + 1 for x in range(n)]:
        raise RuntimeError("rx_exec returned wrong results; the figure would be meaningless")
    return t1 - t0


def time_raw(client, n: int) -> float:
    from bench.dask_bench import tiny  # by reference, also when run as __main__

    t0 = time.perf_counter()
    results = client.gather(client.map(tiny, range(n)))
    t1 = time.perf_counter()
    if results != [x + 1 for x in range(n)]:
        raise RuntimeError("client.map returned wrong results")
    return t1 - t0


# -- the run ---------------------------------------------------------------------------


def run(n: int, repeat: int, echo: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Start a cluster, time both contenders ``repeat`` times, stop it; every timing."""
    from rxjobs.engines.dask import get_client

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
        cc = RxDask(cluster.address, share_dir=str(workdir / "share"))
        contenders: dict[str, Callable[[], float]] = {
            "rxjobs": lambda: time_rxjobs(cc, n),
            "client.map": lambda: time_raw(client, n),
        }
        for timed in contenders.values():  # warm-up, not timed
            timed()
        seconds: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for rep in range(repeat):
            order = names[rep % len(names):] + names[:rep % len(names)]
            line = []
            for name in order:
                seconds[name].append(contenders[name]())
                line.append(f"{name} {seconds[name][-1]:.3f} s")
            echo(f"repetition {rep + 1}/{repeat}: " + ", ".join(line))
        return seconds
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def format_table(n: int, seconds: dict[str, list[float]]) -> str:
    rxjobs_s, raw_s = statistics.median(seconds["rxjobs"]), statistics.median(seconds["client.map"])
    ratio = rxjobs_s / raw_s
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    rows = [
        ("rxjobs: rx_exec(..., RxDask(address)), waiting", seconds["rxjobs"]),
        ("baseline: client.gather(client.map(f, range(N)))", seconds["client.map"]),
    ]
    lines = [f"{n} tiny runs, 1 scheduler + 2 workers x 2 threads on loopback, "
             f"{len(seconds['rxjobs'])} repetition(s)",
             f"{'':52} {'median s':>9} {'min s':>8} {'max s':>8}"]
    for label, values in rows:
        lines.append(f"{label:52} {statistics.median(values):9.3f} {min(values):8.3f} {max(values):8.3f}")
    lines.append(f"per run: rxjobs {rxjobs_s / n * 1e3:.3f} ms, client.map {raw_s / n * 1e3:.3f} ms")
    lines.append(f"ratio rxjobs / client.map: {ratio:.2f}x   target <= {TARGET_RATIO}x: {verdict}")
    return "\n".join(lines)


# -- docs/benchmarks.md ------------------------------------------------------------------


def machine_summary() -> str:
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    import distributed

    return (f"{os.cpu_count()} CPUs (nproc {nproc}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, rxjobs {rxjobs.__version__}, "
            f"distributed {distributed.__version__}")


def docs_section(n: int, repeat: int, seconds: dict[str, list[float]], table: str) -> str:
    rxjobs_s, raw_s = statistics.median(seconds["rxjobs"]), statistics.median(seconds["client.map"])
    ratio = rxjobs_s / raw_s
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    return f"""## {n} tiny runs on Dask vs `client.map`

`python -m bench.dask_bench --runs {n} --repeat {repeat}` — a local `dask scheduler`
and two `dask worker` processes (2 threads each, no nanny) started by the benchmark;
`rx_exec(tiny, x=range({n}), compute_context=RxDask(address))` (waiting, automatic
`task_chunk_size`: submit, run, collect, remove the job's artifacts) against
`client.gather(client.map(tiny, range({n})))` on an already connected client,
in the same run. One untimed warm-up round; medians of {repeat} repetitions, the order
rotating. Target: rxjobs ≤ {TARGET_RATIO}× `client.map`.

- Date: {dt.date.today().isoformat()}
- Machine: {machine_summary()}
- rxjobs median: {rxjobs_s:.3f} s; `client.map` median: {raw_s:.3f} s
- **Ratio rxjobs / client.map: {ratio:.2f}× — {verdict}** (target ≤ {TARGET_RATIO}×)

```
{table}
```
"""


def write_docs(section: str) -> None:
    """Replace this benchmark's section of ``docs/benchmarks.md``, keeping the others."""
    from .cleanup_bench import write_docs as write_section

    write_section(section, DOCS_PATH, name=DOCS_SECTION)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dask_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs per job (default 1000)")
    parser.add_argument("--repeat", type=int, default=7, help="repetitions, medians reported (default 7)")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS_PATH.name}")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.repeat < 1:
        parser.error("--runs and --repeat must be at least 1")
    print(machine_summary())
    seconds = run(args.runs, args.repeat)
    table = format_table(args.runs, seconds)
    print(table)
    if args.write_docs:
        write_docs(docs_section(args.runs, args.repeat, seconds, table))
        print(f"wrote {DOCS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
