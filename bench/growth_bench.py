"""How listing, ``du``, a dry run and a forced cleanup grow with the share dir, against ``du -s``.

For each size (``--sizes 1000,4000`` by default; ``--full``: 1,000, 10,000
and 100,000 jobs) a share dir is filled with clones of one real finished
local-engine job (23 files in format 2, 25 before: ``bench.cleanup_bench.make_template`` and
``clone_jobs``, written from memory, not timed).  Then each of these runs in
a fresh Python process (``python -m bench.growth_bench --child OP SHARE``),
which times the operation itself (not the interpreter start) and reports its
peak RSS:

* ``list``: ``rxjobs list --json`` (every job's state and size);
* ``du``: ``rxjobs du --json`` (the web page's disk view is the same
  ``usage.disk_usage`` report);
* ``dry-run``: ``rxjobs cleanup --all --older-than 1s --dry-run --json``;
* ``du -s``: the baseline, ``du -s SHARE`` (a C process, one walk);
* ``cleanup``: ``rxjobs cleanup --all --force --json``, last, once per size
  (it removes the share dir's jobs).

The first four rotate in order over ``--repeat`` rounds; medians.  Targets:

1. *Sizes at the speed of du*: ``list``, ``du`` and ``dry-run`` each
   ≤ 2.5× ``du -s`` of the same share dir in the same run (at every size).
2. *A cost that grows linearly*: for each of ``list``, ``du``, ``dry-run``
   and ``cleanup``, the time per job at the largest size ≤ 1.3× the time per
   job at the smallest.
3. Peak RSS of ``list`` and ``du`` ≤ 200 MB at the largest size.

``--plot docs/growth.png`` (the default with ``--write-docs``) draws the time
per job against the number of jobs (matplotlib, in the ``bench`` extra).
Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rxjobs.store import open_store
from rxjobs.store.durability import FSYNC_ENV

from .cleanup_bench import clone_jobs, machine_summary, make_template, unique_job_ids, verdict, write_docs

DEFAULT_SIZES = (1000, 4000)
FULL_SIZES = (1000, 10000, 100000)
TARGET_DU_RATIO = 2.5
TARGET_GROWTH = 1.3
TARGET_RSS_MB = 200.0
READ_OPS = ("list", "du", "dry-run")
CLI_ARGS = {
    "list": ["list", "--json"],
    "du": ["du", "--json"],
    "dry-run": ["cleanup", "--all", "--older-than", "1s", "--dry-run", "--json"],
    "cleanup": ["cleanup", "--all", "--force", "--json"],
}
BUILDERS = 6  # processes that build a share dir (not timed)
PLOT_PATH = Path(__file__).resolve().parent.parent / "docs" / "growth.png"


# -- one operation in a fresh process ------------------------------------------------------


def child(op: str, share: str) -> int:
    """Run one operation here; print its seconds and this process's peak RSS as JSON."""
    if op == "du -s":
        started = time.perf_counter()
        subprocess.run(["du", "-s", share], check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    else:
        from rxjobs.cli import cli

        out = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(out):
            try:
                cli.main(args=["--share-dir", share, *CLI_ARGS[op]], prog_name="rxjobs",
                         standalone_mode=False)
            except SystemExit as exc:
                if exc.code not in (0, None):
                    raise
        seconds = time.perf_counter() - started
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "rss_kb": rss}))
    return 0


def run_child(op: str, share: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of ``op`` run in a fresh process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p or os.getcwd() for p in sys.path))
    done = subprocess.run([sys.executable, "-m", "bench.growth_bench", "--child", op, str(share)],
                          check=True, capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return float(found["seconds"]), float(found["rss_kb"]) / 1024


# -- a run -------------------------------------------------------------------------------


@dataclasses.dataclass
class SizeResult:
    jobs: int
    files: int
    times: dict[str, list[float]]
    rss_mb: dict[str, float]

    def median(self, op: str) -> float:
        return statistics.median(self.times[op]) if self.times[op] else float("nan")

    def per_job_us(self, op: str) -> float:
        return self.median(op) / self.jobs * 1e6

    def du_ratio(self, op: str) -> float:
        return self.median(op) / self.median("du -s")


def build(template: Path, workdir: Path, jobs: int) -> Path:
    """The share dir of ``jobs`` clones in ``workdir``: built, or kept from a ``--build-only`` run."""
    share = workdir / f"share-{jobs}"
    if share.is_dir():
        found = sum(1 for entry in os.scandir(share) if entry.is_dir() and not entry.name.startswith("."))
        if found == jobs:
            print(f"reusing the {jobs} jobs in {share}", flush=True)
            return share
        shutil.rmtree(share)
    print(f"building {jobs} jobs in {share} ...", flush=True)
    # A scratch share dir: no fsync per record while building (2.5 million files at
    # --full); one sync below before anything is timed.
    saved = os.environ.get(FSYNC_ENV)
    os.environ[FSYNC_ENV] = "0"
    try:
        open_store(str(share)).ensure_root()
        ids = unique_job_ids(jobs)
        # Creating a file waits on the filesystem's journal far more than on a CPU: a
        # few builders side by side make the 2.5 million files of --full several times
        # faster.
        parts = [ids[i::BUILDERS] for i in range(BUILDERS)]
        with ProcessPoolExecutor(BUILDERS) as pool:
            for done in pool.map(clone_jobs, [template] * BUILDERS, [share] * BUILDERS, parts):
                assert done is None
    finally:
        if saved is None:
            del os.environ[FSYNC_ENV]
        else:
            os.environ[FSYNC_ENV] = saved
    return share


def measure(share: Path, jobs: int, repeat: int, cleanup: bool = True) -> SizeResult:
    time.sleep(1.1)  # every job older than the dry run's 1s
    subprocess.run(["sync"], check=False)
    files = sum(len(names) for _, _, names in os.walk(share))
    ops = ("du -s", *READ_OPS)
    times: dict[str, list[float]] = {op: [] for op in (*ops, "cleanup")}
    rss: dict[str, float] = {}
    run_child("du -s", share)  # warm the page cache and the interpreter's files
    # du -s reads no file: without this the first timed op would read every record from
    # the disk (at 100,000 jobs on a busy machine, `list` took 3x the warm dry run so).
    run_child("list", share)
    for i in range(repeat):
        order = ops[i % len(ops):] + ops[:i % len(ops)]
        for op in order:
            seconds, peak = run_child(op, share)
            times[op].append(seconds)
            rss[op] = max(rss.get(op, 0.0), peak)
        print(f"  round {i + 1}: " + ", ".join(f"{op} {times[op][-1]:.3f}s ({rss[op]:.0f} MB)"
                                                for op in ops), flush=True)
    if not cleanup:
        print(f"  no forced cleanup at {jobs} jobs (--cleanup-up-to); {share} is left to remove",
              flush=True)
        return SizeResult(jobs, files, times, rss)
    seconds, peak = run_child("cleanup", share)
    times["cleanup"].append(seconds)
    rss["cleanup"] = peak
    print(f"  cleanup {seconds:.3f}s ({peak:.0f} MB)", flush=True)
    left = [n for n in os.listdir(share) if not n.startswith(".")]
    if left:
        raise RuntimeError(f"the forced cleanup left {len(left)} jobs in {share}")
    shutil.rmtree(share)
    return SizeResult(jobs, files, times, rss)


def growth(results: list[SizeResult], op: str) -> tuple[float, SizeResult] | None:
    """Time per job at the largest size ``op`` was timed at, over that at the smallest;
    None if it was timed at fewer than two sizes (``--cleanup-up-to``)."""
    timed = [r for r in results if r.times[op]]
    if len(timed) < 2:
        return None
    return timed[-1].per_job_us(op) / timed[0].per_job_us(op), timed[-1]


def format_table(results: list[SizeResult], repeat: int) -> str:
    lines = [f"growth with the share dir, {repeat} repetition(s) of the reads (cleanup once per size)",
             "jobs      files   op          median s   us/job   x du -s   peak RSS MB"]
    for r in results:
        for op in ("du -s", *READ_OPS, "cleanup"):
            ratio = "" if op in ("du -s", "cleanup") else f"{r.du_ratio(op):7.2f}x"
            lines.append(f"{r.jobs:<9} {r.files:<7} {op:<10} {r.median(op):9.3f} {r.per_job_us(op):8.1f} "
                         f"{ratio:>9} {r.rss_mb.get(op, 0):10.0f}")
    for op in READ_OPS:
        worst = max(r.du_ratio(op) for r in results)
        lines.append(f"{op}: at most {worst:.2f}x du -s   target <= {TARGET_DU_RATIO}x: "
                     f"{verdict(worst <= TARGET_DU_RATIO)}")
    if len(results) > 1:
        for op in (*READ_OPS, "cleanup"):
            found = growth(results, op)
            if found is None:
                lines.append(f"{op}: timed at fewer than two sizes: no growth figure")
                continue
            g, last = found
            lines.append(f"{op}: time per job at {last.jobs} / at {results[0].jobs}: {g:.2f}x   "
                         f"target <= {TARGET_GROWTH}x: {verdict(g <= TARGET_GROWTH)}"
                         + ("" if last is results[-1] else f"   (not timed at {results[-1].jobs})"))
    last = results[-1]
    for op in ("list", "du"):
        lines.append(f"{op}: peak RSS at {last.jobs} jobs {last.rss_mb[op]:.0f} MB   target <= "
                     f"{TARGET_RSS_MB:.0f} MB: {verdict(last.rss_mb[op] <= TARGET_RSS_MB)}")
    return "\n".join(lines)


def plot(results: list[SizeResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for op in ("du -s", *READ_OPS, "cleanup"):
        timed = [r for r in results if r.times[op]]
        ax.plot([r.jobs for r in timed], [r.per_job_us(op) for r in timed], marker="o", label=op)
    ax.set_xscale("log")
    ax.set_yscale("log")  # cleanup's unlinks and du -s's stats differ tenfold
    ax.set_xlabel("jobs in the share dir")
    ax.set_ylabel("µs per job (median)")
    ax.set_title("rxjobs: time per job as the share dir grows (flat = linear)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def docs_section(results: list[SizeResult], table: str, argv: str, plot_name: str | None) -> str:
    picture = f"\n![time per job against the number of jobs]({plot_name})\n" if plot_name else ""
    return f"""## Growth with the share dir: list, du, dry run, cleanup vs `du -s`

`python -m bench.growth_bench {argv}` — share dirs of
{", ".join(f"{r.jobs:,}" for r in results)} clones of a finished local-engine job (23 files),
each operation in a fresh process (its own time, not the interpreter start, and its
peak RSS): `rxjobs list --json`, `rxjobs du --json` (the web page's disk view is the
same report), `rxjobs cleanup --all --older-than 1s --dry-run --json`, against
`du -s` of the same share dir in the same rounds; then `rxjobs cleanup --all --force`
once per size. Targets: list, du and the dry run ≤ {TARGET_DU_RATIO}× `du -s`; time per job
at the largest size ≤ {TARGET_GROWTH}× the smallest; peak RSS of list and du
≤ {TARGET_RSS_MB:.0f} MB at the largest.

- Date: {dt.date.today().isoformat()}
- Machine: {machine_summary()}
{picture}
```
{table}
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.growth_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", help="comma-separated job counts (default 1000,4000)")
    parser.add_argument("--jobs", help="the same as --sizes (what `python -m bench --jobs` passes)")
    parser.add_argument("--full", action="store_true", help="1,000, 10,000 and 100,000 jobs "
                        "(about 2.5 million files; tens of minutes)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the reads (default 3)")
    parser.add_argument("--tmpdir", help="where to build the share dirs (default: the system's)")
    parser.add_argument("--workdir", type=Path, help="build the share dirs here and keep them until "
                        "measured (default: a temporary directory); a share dir of the right size "
                        "already there is reused")
    parser.add_argument("--cleanup-up-to", type=int, metavar="N", help="time the forced cleanup "
                        "only at sizes up to N jobs (a larger share dir is left in --workdir)")
    parser.add_argument("--build-only", action="store_true", help="with --workdir: build the share "
                        "dirs and stop (building 100,000 jobs takes longer than measuring them)")
    parser.add_argument("--plot", type=Path, help=f"write the growth plot (default with --write-docs: "
                        f"{PLOT_PATH.relative_to(PLOT_PATH.parent.parent)})")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--child", nargs=2, metavar=("OP", "SHARE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)
    text = args.sizes or args.jobs
    sizes = FULL_SIZES if args.full else (tuple(int(s) for s in text.split(",")) if text else DEFAULT_SIZES)
    if min(sizes) < 1 or args.repeat < 1:
        parser.error("sizes and --repeat must be at least 1")
    if args.build_only and args.workdir is None:
        parser.error("--build-only goes with --workdir")
    print(machine_summary())
    results = []
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="rxjobs-growth-bench-", dir=args.tmpdir)))
        made = sorted((workdir / "template").glob("rxJob_*"))
        template = made[0] if made else make_template(workdir)
        for jobs in sorted(sizes):
            share = build(template, workdir, jobs)
            if not args.build_only:
                results.append(measure(share, jobs, args.repeat,
                                       cleanup=args.cleanup_up_to is None or jobs <= args.cleanup_up_to))
    if args.build_only:
        return 0
    table = format_table(results, args.repeat)
    print(table)
    plot_path = args.plot or (PLOT_PATH if args.write_docs else None)
    if plot_path is not None and len(results) > 1:
        plot(results, plot_path)
        print(f"wrote {plot_path}")
    if args.write_docs:
        shown = "--full" if args.full else f"--sizes {','.join(str(s) for s in sizes)}"
        if args.cleanup_up_to is not None:
            shown += f" --cleanup-up-to {args.cleanup_up_to}"
        write_docs(docs_section(results, table, f"{shown} --repeat {args.repeat}",
                                plot_path.name if plot_path is not None and len(results) > 1 else None),
                   name="growth_bench")
        print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
