"""The ``rxjobs`` command as a user runs it: start-up included, against ``du -s``.

Each command runs as a fresh ``python -m rxjobs`` process, its output to a
pipe that is read and dropped (off a terminal, as in a script), and is timed
from the parent: interpreter start, imports, the work and the output.

* ``--help`` and ``list`` on an empty share dir: target at most 0.120 s each
  (issue 27: import only what the command uses).
* At ``--jobs`` jobs (default 2,000; the issue's figure is 20,000), a share
  dir of clones of one real finished local-engine job (the growth
  benchmark's builder): ``list`` as a table against ``list --json``
  (target ≤ 1.5×), and ``list --json`` and ``du --json`` against ``du -s``
  of the same share dir (target ≤ 2.5×).  ``du`` as a table and ``python -c
  pass`` (the interpreter alone) are shown for reference.

Medians over ``--repeat`` rounds (default 5), the commands rotating in
order; a warm-up round first.  rxjobs' sources are compiled to bytecode
first (``compileall``), as an installed package is: with
``PYTHONDONTWRITEBYTECODE`` set, every run would compile them again and the
figures would time the compiler.  Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .cleanup_bench import machine_summary, make_template, verdict, write_docs
from .growth_bench import build

DEFAULT_JOBS = 2000
TARGET_START_S = 0.120
TARGET_TABLE_RATIO = 1.5
TARGET_DU_RATIO = 2.5
ROOT = Path(__file__).resolve().parent.parent


def commands(empty: Path, share: Path) -> dict[str, list[str]]:
    """What is timed: a name -> its command line."""
    rxjobs = [sys.executable, "-m", "rxjobs"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "--help": [*rxjobs, "--help"],
        "list (empty)": [*rxjobs, "--share-dir", str(empty), "list"],
        "du -s": ["du", "-s", str(share)],
        "list": [*rxjobs, "--share-dir", str(share), "list"],
        "list --json": [*rxjobs, "--share-dir", str(share), "list", "--json"],
        "du --json": [*rxjobs, "--share-dir", str(share), "du", "--json"],
        "du": [*rxjobs, "--share-dir", str(share), "du"],
    }


def timed(argv: list[str]) -> float:
    """Seconds ``argv`` takes as a process, its output read through a pipe."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - started


def measure(runs: dict[str, list[str]], repeat: int) -> dict[str, float]:
    """The median seconds of each command over ``repeat`` rotated rounds, after a warm-up."""
    for argv in runs.values():
        timed(argv)
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeat):
        for name in names[i % len(names):] + names[:i % len(names)]:
            times[name].append(timed(runs[name]))
        print(f"  round {i + 1}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names), flush=True)
    return {name: statistics.median(found) for name, found in times.items()}


def report(medians: dict[str, float], jobs: int) -> tuple[str, list[str]]:
    """A Markdown table of the medians and the verdict lines of the targets."""
    lines = ["| command | median s | ratio |", "|---|---:|---|"]
    ratios = {
        "list": ("list --json", medians["list"] / medians["list --json"]),
        "list --json": ("du -s", medians["list --json"] / medians["du -s"]),
        "du --json": ("du -s", medians["du --json"] / medians["du -s"]),
        "du": ("du -s", medians["du"] / medians["du -s"]),
    }
    for name, seconds in medians.items():
        ratio = f"{ratios[name][1]:.2f}× {ratios[name][0]}" if name in ratios else ""
        lines.append(f"| `{name}` | {seconds:.3f} | {ratio} |")
    verdicts = [
        f"{verdict(medians['--help'] <= TARGET_START_S)} rxjobs --help {medians['--help'] * 1000:.0f} ms "
        f"(target ≤ {TARGET_START_S * 1000:.0f} ms)",
        f"{verdict(medians['list (empty)'] <= TARGET_START_S)} rxjobs list, empty share dir "
        f"{medians['list (empty)'] * 1000:.0f} ms (target ≤ {TARGET_START_S * 1000:.0f} ms)",
        f"{verdict(ratios['list'][1] <= TARGET_TABLE_RATIO)} list as a table at {jobs} jobs: "
        f"{ratios['list'][1]:.2f}× list --json (target ≤ {TARGET_TABLE_RATIO}×)",
        f"{verdict(ratios['list --json'][1] <= TARGET_DU_RATIO)} list --json at {jobs} jobs: "
        f"{ratios['list --json'][1]:.2f}× du -s (target ≤ {TARGET_DU_RATIO}×)",
        f"{verdict(ratios['du --json'][1] <= TARGET_DU_RATIO)} du --json at {jobs} jobs: "
        f"{ratios['du --json'][1]:.2f}× du -s (target ≤ {TARGET_DU_RATIO}×)",
    ]
    return "\n".join(lines), verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                        help=f"jobs in the big share dir (default {DEFAULT_JOBS})")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--workdir", type=Path, help="build the share dirs here and keep them (default: "
                        "a temporary directory); a share dir of the right size already there is reused")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeat < 1:
        parser.error("--jobs and --repeat must be at least 1")
    print(machine_summary())
    # A warm install: its bytecode written once (compileall writes it whatever
    # PYTHONDONTWRITEBYTECODE says), so no run pays for compiling rxjobs.
    if not compileall.compile_dir(ROOT / "src", quiet=1):
        print("warning: some of src/ did not compile to bytecode", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rxjobs-cli-bench-")))
        made = sorted((workdir / "template").glob("rxJob_*"))
        template = made[0] if made else make_template(workdir)
        share = build(template, workdir, args.jobs)
        empty = workdir / "empty"
        subprocess.run([sys.executable, "-m", "rxjobs", "--share-dir", str(empty), "list"], check=True,
                       capture_output=True, cwd=ROOT)
        subprocess.run(["sync"], check=False)
        medians = measure(commands(empty, share), args.repeat)
    table, verdicts = report(medians, args.jobs)
    print(table)
    for line in verdicts:
        print(line)
    if args.write_docs:
        write_docs("\n".join([
            "## The rxjobs command, start-up included (bench/cli_bench.py)", "",
            f"`python -m bench.cli_bench --jobs {args.jobs} --repeat {args.repeat}` on "
            f"{machine_summary()}.  Each command is a fresh `python -m rxjobs` process timed "
            "from its parent, output to a pipe; medians.", "", table, "",
            *[f"- {line}" for line in verdicts]]), name="cli_bench")
        print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
