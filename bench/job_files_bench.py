"""Files per job: listing and cleanup of one-run jobs in format 2 against the same jobs in format 1.

Issue 28, item 2.  One real one-run job that prints nothing runs on the local
engine; its finished directory (format 2) holds 5 entries: ``job.json`` (with
the engine's handle), ``payload.pkl``, ``status.json``, ``tasks/`` and
``tasks/0.result.pkl``.  The same job as rxjobs wrote it in format 1 adds the
3 entries format 2 leaves out: ``engine.json``, an empty ``driver.log`` and an
empty ``tasks/0.out`` (``job.json`` says format 1, without the handle).

Each layout is cloned ``--jobs`` times (default 2,000) into a fresh share dir,
then timed as a user pays: ``rx_get_jobs`` (the listing), then
``rx_cleanup_jobs(force=True)`` (the cleanup).  Both layouts are built and
timed alternately in the same run, ``--repeat`` times; the figures are the
medians, per job, and the ratio format 2 / format 1 (lower is better).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rxjobs import RxLocalParallel, RxRemoteJobStatus, rx_cleanup_jobs, rx_exec, rx_get_jobs, rx_wait_for_job

from .cleanup_bench import clone_jobs, machine_summary, unique_job_ids, write_docs

DOCS_SECTION = "job_files_bench"
LAYOUTS = ("format 1", "format 2")


def quiet(i: int) -> int:
    """The template job's function: prints nothing."""
    return i + 1


def make_templates(workdir: Path) -> dict[str, Path]:
    """A real finished one-run job (format 2), and the same job laid out as format 1."""
    share = workdir / "template"
    job = rx_exec(quiet, i=[1], compute_context=RxLocalParallel(wait=False, share_dir=str(share)))
    status = rx_wait_for_job(job, timeout=300)
    if status is not RxRemoteJobStatus.FINISHED:
        raise RuntimeError(f"the template job {job.job_id} ended {status.value}, not finished")
    new = share / job.job_id
    old = workdir / "template-format-1" / job.job_id
    shutil.copytree(new, old)
    record = json.loads((old / "job.json").read_bytes())
    engine = {"engine": record.pop("engine"), "handle": record.pop("handle")}
    record["format"] = 1
    (old / "job.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    (old / "engine.json").write_text(json.dumps(engine, indent=1, sort_keys=True))
    (old / "driver.log").write_bytes(b"")
    (old / "tasks" / "0.out").write_bytes(b"")
    return {"format 1": old, "format 2": new}


def entries(job_dir: Path) -> int:
    """Entries under a job directory, directories included."""
    return sum(1 for _ in job_dir.rglob("*"))


def _jobs_left(share: Path) -> list[str]:
    """Job directories still in a share dir (``.locks``, ``.trash`` and the marker left out)."""
    return [p.name for p in share.iterdir() if not p.name.startswith(".")]


@dataclass
class Result:
    n_jobs: int
    repeat: int
    entries: dict[str, int] = field(default_factory=dict)
    listing: dict[str, list[float]] = field(default_factory=dict)
    cleanup: dict[str, list[float]] = field(default_factory=dict)

    def per_job_us(self, what: dict[str, list[float]], layout: str) -> float:
        return statistics.median(what[layout]) / self.n_jobs * 1e6

    def ratio(self, what: dict[str, list[float]]) -> float:
        return statistics.median(what["format 2"]) / statistics.median(what["format 1"])


def run(n_jobs: int, repeat: int, tmpdir: str | None = None) -> Result:
    result = Result(n_jobs, repeat)
    with tempfile.TemporaryDirectory(prefix="rxjobs-job-files-", dir=tmpdir) as work:
        workdir = Path(work)
        templates = make_templates(workdir)
        for layout, template in templates.items():
            result.entries[layout] = entries(template)
            result.listing[layout], result.cleanup[layout] = [], []
        for round_ in range(repeat):
            for layout, template in templates.items():
                share = workdir / f"share-{round_}-{layout.replace(' ', '')}"
                clone_jobs(template, share, unique_job_ids(n_jobs))
                cc = RxLocalParallel(share_dir=str(share))
                t0 = time.perf_counter()
                found = rx_get_jobs(cc, verbose=False)
                t1 = time.perf_counter()
                report = rx_cleanup_jobs(found, force=True, verbose=False)
                t2 = time.perf_counter()
                if len(found) != n_jobs or len(report.removed) != n_jobs or _jobs_left(share):
                    raise RuntimeError(f"{layout}: listed {len(found)}, removed {len(report.removed)} "
                                       f"of {n_jobs} jobs; the figure would be meaningless")
                result.listing[layout].append(t1 - t0)
                result.cleanup[layout].append(t2 - t1)
                shutil.rmtree(share)
    return result


def format_table(r: Result) -> str:
    lines = [f"{r.n_jobs} finished one-run jobs that printed nothing, median of {r.repeat} rounds",
             "", "| layout | entries per job | listing per job | cleanup per job |",
             "|---|---|---|---|"]
    for layout in LAYOUTS:
        lines.append(f"| {layout} | {r.entries[layout]} | {r.per_job_us(r.listing, layout):.0f} µs "
                     f"| {r.per_job_us(r.cleanup, layout):.0f} µs |")
    lines.append(f"| format 2 / format 1 | | {r.ratio(r.listing):.2f}× | {r.ratio(r.cleanup):.2f}× |")
    return "\n".join(lines)


def docs_section(r: Result, table: str) -> str:
    return (f"## Files per job: format 2 against format 1 (issue 28)\n\n"
            f"`python -m bench.job_files_bench --jobs {r.n_jobs} --repeat {r.repeat}` on "
            f"{machine_summary()}.\n\n{table}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.job_files_bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="one-run jobs per share dir (default 2000)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--tmpdir", default=None, help="where to build the share dirs")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    result = run(args.jobs, args.repeat, args.tmpdir)
    table = format_table(result)
    print(table)
    if args.write_docs:
        write_docs(docs_section(result, table), name=DOCS_SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
