"""Run every benchmark in ``bench/``: ``python -m bench`` (``make bench``).

Every module ``bench/<name>_bench.py`` is a benchmark with a ``main(argv)``.
``--repeat`` and ``--write-docs`` go to each of them; the size options go to
the benchmarks that take them (``--jobs``: cleanup, listing, S3; ``--runs``:
local exec, Dask, Spark), so ``python -m bench --jobs 50 --runs 50 --repeat 1``
is a quick pass over everything.  The cleanup and growth benchmarks take several
sizes (``--jobs 2000,10000``), one table (cleanup) or one row (growth) each; the
listing and S3 benchmarks take the first of them.  ``--full`` runs the growth
benchmark over 1,000, 10,000 and 100,000 jobs (tens of minutes, about 2.5 million
files); ``--kernel`` also times the local engine inside a real ipykernel kernel.
Both need the ``bench`` extra (``pip install -e .[bench]``).  ``joblib_bench``
(GridSearchCV on the rxjobs joblib backend against loky and Dask's backend)
needs scikit-learn, which the ``test`` extra installs.

A quiet machine's full record: ``python -m bench --full --kernel --write-docs``.
A benchmark that cannot run here (an engine not installed, no Java) is
reported and the others still run; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import pkgutil
import re
import sys
import traceback
from pathlib import Path
from typing import TextIO

# size option -> the benchmarks that take it
SIZE_OPTIONS = {
    "--jobs": {"cleanup_bench", "cli_bench", "growth_bench", "job_files_bench", "listing_bench", "s3_bench",
               "ui_bench"},
    "--runs": {"local_exec_bench", "dask_bench", "spark_bench", "executor_bench"},
}
# benchmarks that take a comma-separated list of sizes (the others get the first)
SIZE_LISTS = {"cleanup_bench", "growth_bench"}
# flags -> the benchmarks that take them
FLAGS = {"--full": {"growth_bench"}, "--kernel": {"local_exec_bench"}}


def benchmark_names() -> list[str]:
    """The ``*_bench`` modules of this package, cleanup first, then by name."""
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if m.name.endswith("_bench"))
    return sorted(names, key=lambda n: n != "cleanup_bench")


def forwarded_args(name: str, args: argparse.Namespace) -> list[str]:
    argv = []
    if args.repeat is not None:
        argv += ["--repeat", str(args.repeat)]
    if args.write_docs:
        argv.append("--write-docs")
    for flag, takers in FLAGS.items():
        if getattr(args, flag.lstrip("-")) and name in takers:
            argv.append(flag)
    for option, takers in SIZE_OPTIONS.items():
        value = getattr(args, option.lstrip("-"))
        if value is not None and name in takers:
            argv += [option, str(value) if name in SIZE_LISTS else str(value).split(",")[0]]
    return argv


def _sizes(text: str) -> str:
    """One size or a comma-separated list of sizes, each a positive integer."""
    parts = text.split(",")
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected sizes like 2000 or 2000,10000, not {text!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    names = benchmark_names()
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run rxjobs' benchmarks.")
    parser.add_argument("--only", action="append", choices=names, metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(names)}")
    parser.add_argument("--repeat", type=int, help="repetitions of each benchmark (default: its own)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--jobs", type=_sizes, metavar="N[,N...]",
                        help="jobs of the cleanup, growth, listing and S3 benchmarks; cleanup and "
                        "growth run each size of a list, the others the first (default: each "
                        "benchmark's own, "
                        "e.g. 2000,10000 for cleanup)")
    parser.add_argument("--full", action="store_true",
                        help="growth benchmark over 1,000, 10,000 and 100,000 jobs (slow)")
    parser.add_argument("--kernel", action="store_true",
                        help="local exec benchmark also inside an ipykernel kernel")
    parser.add_argument("--runs", type=int, help="runs per job of the local exec, Dask and Spark "
                        "benchmarks (default: each benchmark's own)")
    args = parser.parse_args(argv)
    failed = []
    verdicts: dict[str, list[str]] = {}
    for name in args.only or names:
        print(f"== bench.{name}", flush=True)
        tee = VerdictTee(sys.stdout)
        try:
            module = importlib.import_module(f"{__package__ or 'bench'}.{name}")
            with contextlib.redirect_stdout(tee):
                status = module.main(forwarded_args(name, args))
        except (Exception, SystemExit) as exc:
            verdicts[name] = tee.verdicts
            if isinstance(exc, SystemExit) and exc.code in (0, None):
                continue
            traceback.print_exc()
            print(f"== bench.{name} did not run to its end: {type(exc).__name__}: {exc}", flush=True)
            failed.append(name)
            continue
        verdicts[name] = tee.verdicts
        if status:
            failed.append(name)
    print(summary(verdicts, failed), flush=True)
    return 1 if failed else 0


VERDICT = re.compile(r"\b(PASS|MISS)\b")


class VerdictTee(io.TextIOBase):
    """Writes through to ``stream`` and keeps the lines that give a target's verdict."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.verdicts: list[str] = []
        self._line = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self._line += text
        *lines, self._line = self._line.split("\n")
        # The report's own lines, not the Markdown written into the docs.
        self.verdicts += [line.strip() for line in lines
                          if VERDICT.search(line) and not line.lstrip().startswith(("-", "*", "|", "#"))]
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def summary(verdicts: dict[str, list[str]], failed: list[str]) -> str:
    """Every target's verdict line, by benchmark, and the count of each verdict."""
    lines = ["== summary: every target, PASS or MISS"]
    for name, found in verdicts.items():
        lines += [f"{name}: {line}" for line in found]
        if not found and name not in failed:
            lines.append(f"{name}: (no target)")
    every = [line for found in verdicts.values() for line in found]
    lines.append(f"{sum('PASS' in v for v in every)} PASS, {sum('MISS' in v for v in every)} MISS")
    if failed:
        lines.append(f"benchmarks that did not complete: {', '.join(failed)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
