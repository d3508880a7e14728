"""Cleanup of many finished jobs with force, against parallel ``rm -rf`` of the same directories.

One real small job runs on the local engine (``RxLocalParallel(wait=False)``,
one task per run), so that its directory holds exactly what the engine writes:
``job.json`` (with the engine's handle), ``payload.pkl``, ``status.json``
and ``tasks/<k>.result.pkl`` / ``tasks/<k>.out`` (format 2: the empty
``driver.log`` is gone, and there is no ``engine.json``).  That
directory is then cloned under new job ids into identical share dirs, one per
contender, and each repetition measures, in an order that rotates:

* rxjobs: ``rx_cleanup_jobs(rx_get_jobs(cc, verbose=False), force=True)``,
  the whole user-visible cost (listing, status derivation, removal);
* rxjobs removal only: ``Store.remove_job`` of every id in 8 threads, the
  part of the above that deletes files (rename into ``.trash/``, walk, unlink);
* one single-threaded ``rm -rf <share dir>``, for information;
* the baseline, the floor: ``rm -rf`` in 8 processes at once, each given
  every 8th job directory: what parallel deletion of the same files costs
  on this machine with no bookkeeping at all.  What bounds a cleanup is the
  disk (how many deletions it serves at once, how long each waits), which
  differs from machine to machine and from minute to minute; this floor,
  timed in the same run, moves with it, where a single ``rm -rf`` does not.

``--jobs`` takes one size or several (``--jobs 2000,10000``); each size is a
run of its own with its own table; ``--contenders`` times only some of
them (``rxjobs,rm-parallel`` for a quicker judgment of the target).  Building the clones is not timed (the
first clone is written from memory, the others copied with ``cp -a``); the
page cache cannot be dropped, so every contender works on freshly written
(cached) directories, ``sync`` runs before each timing, and the medians of
the repetitions are reported.  A ratio is the median of the ratios of the
repetitions (both contenders timed on copies of one share dir within one
repetition), which a disk whose speed drifts between repetitions moves less
than a ratio of medians.  Nothing here asserts on time.

Run ``python -m bench.cleanup_bench --help`` from the repository root.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import rxjobs
from rxjobs import RxLocalParallel, RxRemoteJobStatus, rx_cleanup_jobs, rx_exec, rx_get_jobs, rx_wait_for_job
from rxjobs.contexts import RxComputeContext
from rxjobs.ids import job_id_time, new_job_id
from rxjobs.records import JobRecord
from rxjobs.store import open_store

TARGET_RATIO = 1.2  # rxjobs / 8 parallel rm -rf (issue 15): within 20 % of the floor
DEFAULT_SIZES = (2000, 10000)
PARALLEL_RM = 8  # processes of the reference contender, as many as cleanup's threads
RUNS_PER_JOB = 10  # one task per run: 3 job files + 2 per task = 23 files per job (25 in format 1)
DOCS_SECTION = "cleanup_bench"
DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def square(i: int) -> int:
    """The template job's function: a line of console output and a small result."""
    print(f"run {i}: {i} squared is {i * i}")
    return i * i


# -- building the share dirs (not timed) ---------------------------------------------------


def make_template(workdir: Path) -> Path:
    """Run one real job on the local engine and return its finished job directory."""
    share = workdir / "template"
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=str(share))
    job = rx_exec(square, args=[{"i": i} for i in range(RUNS_PER_JOB)], task_chunk_size=1,
                  compute_context=cc)
    status = rx_wait_for_job(job, timeout=300)
    if status is not RxRemoteJobStatus.FINISHED:
        raise RuntimeError(f"the template job {job.job_id} ended {status.value}, not finished; "
                           f"see {share / job.job_id / 'driver.log'}")
    return share / job.job_id


def unique_job_ids(n: int) -> list[str]:
    """``n`` distinct, time-ordered job ids from :func:`rxjobs.store.new_job_id`."""
    ids: set[str] = set()
    while len(ids) < n:
        ids.add(new_job_id())
    return sorted(ids)


def clone_jobs(template: Path, share: Path, job_ids: list[str]) -> None:
    """Write the template job under each id, with ``job.json`` saying that id and share dir.

    The template's files are read once and written from memory (same names,
    sizes and 0600 mode): much faster than copying trees file by file.
    """
    store = open_store(str(share))
    store.ensure_root()
    record = JobRecord.from_json(json.loads((template / "job.json").read_bytes()))
    # The context names the share dir: rx_get_jobs lists only jobs of the asked context.
    submitted_with = RxComputeContext.from_dict(record.context)
    context = dataclasses.replace(submitted_with, share_dir=store.url).to_dict()
    dirs = sorted(str(p.relative_to(template)) for p in template.rglob("*") if p.is_dir())
    files = {str(p.relative_to(template)): p.read_bytes() for p in template.rglob("*")
             if p.is_file() and p.name != "job.json"}
    for job_id in job_ids:
        root = share / job_id
        root.mkdir(mode=0o700)
        for name in dirs:
            (root / name).mkdir(mode=0o700)
        for name, data in files.items():
            fd = os.open(root / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        created = job_id_time(job_id)
        clone = dataclasses.replace(record, job_id=job_id, context=context,
                                    created=created.isoformat() if created else record.created)
        store.write_json(store.paths(job_id).job_json, clone.to_json())


def copy_tree(source: Path, target: Path) -> None:
    """``cp -a``: an identical copy, made by one C process rather than file by file in Python."""
    subprocess.run(["cp", "-a", "--", str(source), str(target)], check=True)


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


# -- the contenders (timed) ------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    seconds: float
    listing: float | None = None  # rx_get_jobs part of the rxjobs figure


def time_rxjobs(share: Path, n_jobs: int) -> Timing:
    """What a user pays: list the share dir's jobs, then clean them all up with force."""
    cc = RxLocalParallel(share_dir=str(share))
    t0 = time.perf_counter()
    found = rx_get_jobs(cc, verbose=False)
    t1 = time.perf_counter()
    report = rx_cleanup_jobs(found, force=True, verbose=False)
    t2 = time.perf_counter()
    if len(found) != n_jobs or len(report.removed) != n_jobs:
        raise RuntimeError(f"rxjobs listed {len(found)} and removed {len(report.removed)} "
                           f"of {n_jobs} jobs in {share}; the figure would be meaningless")
    return Timing(t2 - t0, listing=t1 - t0)


def time_remove_only(share: Path, n_jobs: int) -> Timing:
    """Only the deletion: ``Store.remove_job`` of every id, in 8 threads like cleanup."""
    store = open_store(str(share))
    t0 = time.perf_counter()
    ids = store.list_job_ids()
    with ThreadPoolExecutor(max_workers=8) as pool:
        removed = sum(1 for _ in pool.map(store.remove_job, ids))
    t1 = time.perf_counter()
    if removed != n_jobs:
        raise RuntimeError(f"removed {removed} of {n_jobs} jobs in {share}")
    return Timing(t1 - t0)


def time_rm(share: Path, n_jobs: int) -> Timing:
    """The baseline: one single-threaded ``rm -rf`` of the whole share dir."""
    t0 = time.perf_counter()
    subprocess.run(["rm", "-rf", "--", str(share)], check=True)
    t1 = time.perf_counter()
    if share.exists():
        raise RuntimeError(f"rm -rf left {share} behind")
    return Timing(t1 - t0)


def time_parallel_rm(share: Path, n_jobs: int) -> Timing:
    """Reference: ``rm -rf`` in ``PARALLEL_RM`` processes, each given every N-th job directory."""
    names = sorted(os.listdir(share))
    groups = [names[i::PARALLEL_RM] for i in range(PARALLEL_RM)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["rm", "-rf", "--", *(str(share / name) for name in group)])
             for group in groups if group]
    codes = [proc.wait() for proc in procs]
    os.rmdir(share)
    t1 = time.perf_counter()
    if any(codes) or share.exists():
        raise RuntimeError(f"parallel rm -rf failed ({codes}) or left {share} behind")
    return Timing(t1 - t0)


BASELINE = "rm-parallel"
CONTENDERS: dict[str, Callable[[Path, int], Timing]] = {
    "rxjobs": time_rxjobs,
    "remove-only": time_remove_only,
    "rm": time_rm,
    "rm-parallel": time_parallel_rm,
}


# -- the run ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    n_jobs: int
    files_per_job: int
    repeat: int
    seconds: dict[str, list[float]]
    listing: list[float]

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    @property
    def files(self) -> int:
        return self.n_jobs * self.files_per_job

    def has(self, name: str) -> bool:
        return bool(self.seconds.get(name))

    def ratio_to(self, name: str, of: str = "rxjobs") -> float | None:
        """The median over the repetitions of ``of`` / ``name`` timed in the same repetition
        (None when either was not timed).

        Paired by repetition, not a ratio of medians: each repetition times both on
        copies of one share dir within a few seconds, while the disk's speed drifts
        between repetitions on a shared machine (8 parallel ``rm -rf`` took 7.6 to
        22.4 s across the repetitions of one run).
        """
        if not (self.has(name) and self.has(of)):
            return None
        return statistics.median(a / b for a, b in zip(self.seconds[of], self.seconds[name], strict=True))

    @property
    def ratio(self) -> float | None:
        """The target's ratio: rxjobs over the floor, 8 parallel ``rm -rf``."""
        return self.ratio_to(BASELINE)

    @property
    def verdict(self) -> str:
        ratio = self.ratio
        if ratio is None:
            return "not judged"
        return "PASS" if ratio <= TARGET_RATIO else "MISS"


def run(n_jobs: int, repeat: int, tmpdir: str | None = None, echo: Callable[[str], None] = print,
        contenders: tuple[str, ...] = tuple(CONTENDERS)) -> Result:
    """Build, time and tear down ``repeat`` times; return every timing."""
    workdir = Path(tempfile.mkdtemp(prefix="rxjobs-cleanup-bench-", dir=tmpdir))
    try:
        template = make_template(workdir)
        files_per_job = count_files(template)
        names = [name for name in CONTENDERS if name in contenders]
        seconds: dict[str, list[float]] = {name: [] for name in names}
        listing: list[float] = []
        for rep in range(repeat):
            echo(f"repetition {rep + 1}/{repeat}: building {len(names)} share dirs of "
                 f"{n_jobs} jobs x {files_per_job} files ...")
            shares = {name: workdir / f"rep{rep}-{name}" for name in names}
            # Clone once for rxjobs (job.json must name that share dir, or rx_get_jobs
            # would not list the jobs), then copy that tree for the other contenders.
            first = workdir / f"rep{rep}-rxjobs"
            clone_jobs(template, first, unique_job_ids(n_jobs))
            for name in names:
                if shares[name] != first:
                    copy_tree(first, shares[name])
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                os.sync()
                timing = CONTENDERS[name](shares[name], n_jobs)
                seconds[name].append(timing.seconds)
                if timing.listing is not None:
                    listing.append(timing.listing)
                echo(f"  {name:<12} {timing.seconds:8.3f} s")
            for share in [*shares.values(), first]:
                shutil.rmtree(share, ignore_errors=True)
        return Result(n_jobs, files_per_job, repeat, seconds, listing)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def format_table(result: Result) -> str:
    rows = [
        ("rxjobs: rx_get_jobs + rx_cleanup_jobs(force=True)", result.seconds.get("rxjobs")),
        ("  of which rx_get_jobs (listing)", result.listing),
        ("rxjobs: Store.remove_job only, 8 threads", result.seconds.get("remove-only")),
        (f"baseline: {PARALLEL_RM} x rm -rf in parallel", result.seconds.get("rm-parallel")),
        ("information: rm -rf (1 process)", result.seconds.get("rm")),
    ]
    lines = [
        f"cleanup of {result.n_jobs} finished jobs x {result.files_per_job} files "
        f"= {result.files} files per run, {result.repeat} repetition(s)",
        f"{'':52} {'median s':>9} {'min s':>8} {'max s':>8}",
    ]
    for label, values in rows:
        if values:
            lines.append(f"{label:52} {statistics.median(values):9.3f} {min(values):8.3f} "
                         f"{max(values):8.3f}")
    for name, label in ((BASELINE, f"{PARALLEL_RM} parallel rm -rf"), ("rm", "rm -rf")):
        if result.has(name) and result.has("rxjobs"):
            pairs = zip(result.seconds["rxjobs"], result.seconds[name], strict=True)
            lines.append(f"ratio rxjobs / {label} in each repetition: "
                         + " ".join(f"{a / b:.2f}x" for a, b in pairs))
    ratio = result.ratio
    if ratio is not None:
        removal = result.ratio_to(BASELINE, of="remove-only")
        lines.append(
            f"ratio rxjobs / {PARALLEL_RM} parallel rm -rf (median of the repetitions): {ratio:.2f}x"
            + (f"   (removal only: {removal:.2f}x)" if removal is not None else "")
            + f"   target <= {TARGET_RATIO}x: {result.verdict}")
    to_rm = result.ratio_to("rm")
    if to_rm is not None:
        lines.append(f"information: rxjobs / rm -rf (median of the repetitions): {to_rm:.2f}x   "
                     "(the 0.5x target of before, which depends on the disk)")
    floor = result.ratio_to("rm", of=BASELINE)
    if floor is not None:
        lines.append(f"information: {PARALLEL_RM} parallel rm -rf / rm -rf: {floor:.2f}x")
    return "\n".join(lines)


# -- docs/benchmarks.md ----------------------------------------------------------------------


def machine_summary(engine: str = "") -> str:
    """The machine line of every benchmark's docs section; ``engine``: e.g. ``"PySpark 4.0"``."""
    engine = f", {engine}" if engine else ""
    return (f"{os.cpu_count()} CPUs (nproc {_nproc()}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}{engine}, rxjobs {rxjobs.__version__}{_revision()}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _revision() -> str:
    """`` (git <commit>)``, noting uncommitted changes under src/; empty outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f" (git {head}{' + uncommitted changes in src/' if dirty else ''})"


def _nproc() -> str:
    try:
        return str(len(os.sched_getaffinity(0)))
    except AttributeError:
        return str(os.cpu_count())


def _seconds(r: Result, name: str) -> str:
    return f"{r.median(name):.3f} s" if r.has(name) else "not timed"


def _times(ratio: float | None) -> str:
    return f"{ratio:.2f}×" if ratio is not None else "not timed"


def docs_section(results: list[Result], tables: list[str], contenders: tuple[str, ...] = ()) -> str:
    today = dt.date.today().isoformat()
    sizes = ",".join(str(r.n_jobs) for r in results)
    first = results[0]
    chosen = f" --contenders {','.join(contenders)}" if contenders else ""
    summary = "\n".join(
        f"- {r.n_jobs} jobs: rxjobs median {_seconds(r, 'rxjobs')} (of which listing "
        f"{statistics.median(r.listing):.3f} s), removal only {_seconds(r, 'remove-only')}, "
        f"{PARALLEL_RM} parallel `rm -rf` {_seconds(r, BASELINE)}, `rm -rf` {_seconds(r, 'rm')}; "
        f"**ratio rxjobs / {PARALLEL_RM} parallel `rm -rf`: {_times(r.ratio)} — {r.verdict}** "
        f"(target ≤ {TARGET_RATIO}×); rxjobs / `rm -rf`: {_times(r.ratio_to('rm'))}"
        for r in results)
    body = "\n\n".join(f"```\n{table}\n```" for table in tables)
    return f"""## Cleanup of finished jobs vs parallel `rm -rf`

`python -m bench.cleanup_bench --jobs {sizes} --repeat {first.repeat}{chosen}` —
finished local-engine jobs of {first.files_per_job} files each, removed with
`rx_cleanup_jobs(rx_get_jobs(cc, verbose=False), force=True, verbose=False)`
(listing and status derivation included: what a user pays), against the same
directories removed by {PARALLEL_RM} `rm -rf` processes in parallel, measured in the
same run: the floor of deletion on the machine's disk at that moment.  One
single-threaded `rm -rf` is timed too, for information (its ratio depends on
how many deletions the disk serves at once: 0.48× on one machine, 0.59–0.66×
on another, for the same code).
Medians of {first.repeat} repetitions; a ratio is the median of the ratios of the
repetitions. The order of the contenders rotates, every tree is
freshly written (page cache warm for all) and `sync`ed before its timing.
Target (issue 15): rxjobs ≤ {TARGET_RATIO}× {PARALLEL_RM} parallel `rm -rf`, with fsync on.

- Date: {today}
- Machine: {machine_summary()}
{summary}

{body}
"""


def write_docs(section: str, path: Path = DOCS_PATH, name: str = DOCS_SECTION) -> None:
    """Replace the section ``name`` of ``docs/benchmarks.md``, keeping the others.

    A section sits between ``<!-- bench:<name> begin -->`` and
    ``<!-- bench:<name> end -->``; a new one is appended at the end.
    """
    begin, end = f"<!-- bench:{name} begin -->", f"<!-- bench:{name} end -->"
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else (
        "# Benchmarks\n\nFigures written by `python -m bench --write-docs` (or `make bench`); each "
        "section is replaced when its benchmark runs again.\n\n"
    )
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cleanup_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=_sizes, default=DEFAULT_SIZES, metavar="N[,N...]",
                        help="finished jobs to clean up, one run per size "
                             f"(default {','.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions, medians reported (default 3)")
    parser.add_argument("--tmpdir", default=None, help="where to build the share dirs (default: system tmp)")
    parser.add_argument("--contenders", type=_contenders, default=tuple(CONTENDERS),
                        metavar="NAME[,NAME...]",
                        help=f"which to time (default all: {','.join(CONTENDERS)})")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS_PATH.name}")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if "rxjobs" not in args.contenders:
        parser.error("--contenders must include rxjobs")
    print(machine_summary())
    results, tables = [], []
    for n_jobs in args.jobs:
        results.append(run(n_jobs, args.repeat, args.tmpdir, contenders=args.contenders))
        tables.append(format_table(results[-1]))
        print(tables[-1], flush=True)
    if args.write_docs:
        chosen = () if args.contenders == tuple(CONTENDERS) else args.contenders
        write_docs(docs_section(results, tables, chosen))
        print(f"wrote {DOCS_PATH}")
    return 0


def _sizes(text: str) -> tuple[int, ...]:
    """``"2000,10000"`` -> (2000, 10000); every size at least 1."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 2000 or 2000,10000, not {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("every size must be at least 1")
    return sizes


def _contenders(text: str) -> tuple[str, ...]:
    """``"rxjobs,rm-parallel"`` -> those names, each one of :data:`CONTENDERS`."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in CONTENDERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"contenders are among {', '.join(CONTENDERS)}; "
                                         f"not {', '.join(unknown) or text!r}")
    return names


if __name__ == "__main__":
    sys.exit(main())
