"""The local engine: ``rx_exec`` of many tiny runs, and the cost of a non-waiting submit.

1. ``rx_exec(tiny, x=range(N), compute_context=RxLocalParallel(2))`` (waiting:
   submit, run, collect, remove the artifacts) against a raw
   ``ProcessPoolExecutor(2).map(tiny, range(N))`` with its default chunksize,
   pool start included, in the same run.  Target ≤ 1.0×: automatic task
   chunking should beat the naive call.
2. The same ``rx_exec`` from a caller with another thread alive (a notebook
   kernel's case: such a caller is never forked, its drivers come from the
   fork server), against the same pool in the same process.  Target ≤ 0.5×.
   With ``--kernel``, the same pair is also timed inside a real ``ipykernel``
   kernel driven through ``jupyter_client`` (reported, the same target).
3. A non-waiting submit, ``rx_exec(..., RxLocalParallel(wait=False))``, from
   call to return.  Target: median ≤ 150 ms.

The fork server is started by the warm-up round (its first start, about one
interpreter start, is paid once per user and session, and is not timed).
``--no-fork-server`` sets ``RXJOBS_FORK_SERVER=0`` to time drivers started the
old way (fresh interpreters) for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import cloudpickle

from rxjobs import RxLocalParallel, rx_cleanup_jobs, rx_exec, rx_wait_for_job

from .cleanup_bench import machine_summary, verdict, write_docs

TARGET_RATIO = 1.0
TARGET_THREADED_RATIO = 0.5
TARGET_SUBMIT_MS = 150.0


def tiny(x: int) -> int:
    return x + 1


# A notebook's functions are defined in its cells and pickled by value; so is ``tiny``
# here, whether this module runs as ``__main__`` or is imported by ``python -m bench``
# (by reference, each pool worker of a driver the fork server forked would import it).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def time_rxjobs(runs: int, share: str, threaded: bool = False,
                fn: Callable[[int], int] = tiny) -> float:
    cc = RxLocalParallel(num_workers=2, share_dir=share)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    if threaded:
        other.start()
    try:
        started = time.perf_counter()
        results = rx_exec(fn, x=list(range(runs)), compute_context=cc)
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        if threaded:
            other.join()
    assert results == [x + 1 for x in range(runs)]
    return seconds


def time_pool(runs: int, fn: Callable[[int], int] = tiny) -> float:
    started = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(fn, range(runs)))
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
    kernel_rxjobs: list[float] = dataclasses.field(default_factory=list)
    kernel_pool: list[float] = dataclasses.field(default_factory=list)
    kernel_threads: int = 0

    @property
    def ratio(self) -> float:
        return statistics.median(self.rxjobs) / statistics.median(self.pool)

    @property
    def threaded_ratio(self) -> float:
        return statistics.median(self.threaded) / statistics.median(self.pool)

    @property
    def kernel_ratio(self) -> float | None:
        if not self.kernel_rxjobs:
            return None
        return statistics.median(self.kernel_rxjobs) / statistics.median(self.kernel_pool)

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


def kernel_round(runs: int, repeat: int, fn: Callable[[int], int]) -> dict[str, object]:
    """Inside a notebook kernel: the waiting ``rx_exec`` and the pool, alternating (JSON-able).

    ``fn`` is the tiny function, defined in the kernel's cell as a notebook's are.
    """
    with tempfile.TemporaryDirectory(prefix="rxjobs-kernel-bench-") as share:
        time_rxjobs(runs, share, fn=fn)  # warm-up
        time_pool(runs, fn)
        rx: list[float] = []
        pool: list[float] = []
        for i in range(repeat):
            order = [(rx, lambda: time_rxjobs(runs, share, fn=fn)), (pool, lambda: time_pool(runs, fn))]
            for sink, timed in order if i % 2 == 0 else reversed(order):
                sink.append(timed())
    return {"rxjobs": rx, "pool": pool, "threads": threading.active_count()}


def run_in_kernel(runs: int, repeat: int, timeout: float = 600.0) -> dict[str, object]:
    """Run :func:`kernel_round` in a fresh ``ipykernel`` kernel started by ``jupyter_client``."""
    from jupyter_client.manager import start_new_kernel

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *sys.path])
    manager, client = start_new_kernel(kernel_name="python3", cwd=root, env=env)
    try:
        code = ("import json\nfrom bench.local_exec_bench import kernel_round\n"
                "def tiny(x):\n    return x + 1\n"
                f"print('KERNEL-RESULT ' + json.dumps(kernel_round({runs}, {repeat}, tiny)))\n")
        out: list[str] = []
        reply = client.execute_interactive(
            code, timeout=timeout,
            output_hook=lambda msg: out.append(msg["content"].get("text", "")
                                               if msg["msg_type"] == "stream" else ""))
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"the kernel round failed: {reply['content'].get('evalue')}")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    for line in "".join(out).splitlines():
        if line.startswith("KERNEL-RESULT "):
            return json.loads(line.split(" ", 1)[1])
    raise RuntimeError("the kernel printed no result")


def format_table(r: Result) -> str:
    med = statistics.median
    return "\n".join([
        f"{r.runs} tiny runs on 2 worker processes, {r.repeat} repetition(s)   median s   min s",
        f"rxjobs: rx_exec(..., RxLocalParallel(2)), waiting      {med(r.rxjobs):8.3f} {min(r.rxjobs):7.3f}",
        f"baseline: ProcessPoolExecutor(2).map(f, range(N))      {med(r.pool):8.3f} {min(r.pool):7.3f}",
        f"rxjobs, another thread alive in the caller             {med(r.threaded):8.3f} "
        f"{min(r.threaded):7.3f}",
        *([f"in an ipykernel kernel ({r.kernel_threads} threads): rxjobs   {med(r.kernel_rxjobs):8.3f} "
           f"{min(r.kernel_rxjobs):7.3f}",
           f"in an ipykernel kernel: ProcessPoolExecutor(2).map    {med(r.kernel_pool):8.3f} "
           f"{min(r.kernel_pool):7.3f}"] if r.kernel_rxjobs else []),
        f"ratio rxjobs / pool: {r.ratio:.2f}x   "
        f"target <= {TARGET_RATIO}x: {verdict(r.ratio <= TARGET_RATIO)}",
        f"ratio rxjobs with another thread / pool: {r.threaded_ratio:.2f}x   "
        f"target <= {TARGET_THREADED_RATIO}x: {verdict(r.threaded_ratio <= TARGET_THREADED_RATIO)}",
        *([f"ratio in an ipykernel kernel, rxjobs / pool: {r.kernel_ratio:.2f}x   target <= "
           f"{TARGET_THREADED_RATIO}x: {verdict(r.kernel_ratio <= TARGET_THREADED_RATIO)}"]
          if r.kernel_ratio is not None else []),
        f"non-waiting submit, call to return: median {r.submit_ms:.0f} ms over {len(r.submit)} "
        f"(min {min(r.submit) * 1000:.0f}, max {max(r.submit) * 1000:.0f})   target <= "
        f"{TARGET_SUBMIT_MS:.0f} ms: {verdict(r.submit_ms <= TARGET_SUBMIT_MS)}",
    ])


def docs_section(r: Result, table: str) -> str:
    return f"""## Local engine: tiny runs vs `ProcessPoolExecutor`, and submit latency

`python -m bench.local_exec_bench --runs {r.runs} --repeat {r.repeat}{kernel_option(r)}` —
`rx_exec(tiny, x=range({r.runs}), compute_context=RxLocalParallel(num_workers=2))`
(waiting: the detached driver's start, the runs, collecting the results and removing
the artifacts) against `ProcessPoolExecutor(2).map(tiny, range({r.runs}))` with the
default chunksize, pool start included; the order alternates; medians. Drivers come
from the fork server (started once by the untimed warm-up round). The row "another
thread alive" is the same call from a multi-threaded caller (a notebook kernel's case),
and `--kernel` runs the pair inside a real `ipykernel` kernel through `jupyter_client`.
Then the time from calling a non-waiting `rx_exec` to its return.

- Date: {dt.date.today().isoformat()}
- Machine: {machine_summary()}
- **rxjobs / ProcessPoolExecutor: {r.ratio:.2f}× — {verdict(r.ratio <= TARGET_RATIO)}**
  (target ≤ {TARGET_RATIO}×)
- **With another thread alive in the caller: {r.threaded_ratio:.2f}× —
  {verdict(r.threaded_ratio <= TARGET_THREADED_RATIO)}** (target ≤ {TARGET_THREADED_RATIO}×)
{kernel_line(r)}- **Non-waiting submit: median {r.submit_ms:.0f} ms —
  {verdict(r.submit_ms <= TARGET_SUBMIT_MS)}**
  (target ≤ {TARGET_SUBMIT_MS:.0f} ms)

```
{table}
```
"""


def kernel_option(r: Result) -> str:
    return " --kernel" if r.kernel_rxjobs else ""


def kernel_line(r: Result) -> str:
    if r.kernel_ratio is None:
        return "- Inside an ipykernel kernel: not run (`--kernel`)\n"
    return (f"- **Inside an ipykernel kernel ({r.kernel_threads} threads alive): {r.kernel_ratio:.2f}× — "
            f"{verdict(r.kernel_ratio <= TARGET_THREADED_RATIO)}** (target ≤ {TARGET_THREADED_RATIO}×)\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.local_exec_bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="tiny runs (default 1000)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--submits", type=int, default=20, help="non-waiting submits timed")
    parser.add_argument("--kernel", action="store_true",
                        help="also time the pair inside an ipykernel kernel (needs the bench extra)")
    parser.add_argument("--no-fork-server", action="store_true",
                        help="start drivers as fresh interpreters (RXJOBS_FORK_SERVER=0), for comparison")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if min(args.runs, args.repeat, args.submits) < 1:
        parser.error("--runs, --repeat and --submits must be at least 1")
    if args.no_fork_server:
        os.environ["RXJOBS_FORK_SERVER"] = "0"
    print(machine_summary())
    result = run(args.runs, args.repeat, args.submits)
    if args.kernel:
        found = run_in_kernel(args.runs, args.repeat)
        result.kernel_rxjobs = list(found["rxjobs"])  # type: ignore[call-overload]
        result.kernel_pool = list(found["pool"])  # type: ignore[call-overload]
        result.kernel_threads = int(found["threads"])  # type: ignore[call-overload]
    table = format_table(result)
    print(table)
    if args.write_docs:
        write_docs(docs_section(result, table), name="local_exec_bench")
        print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
