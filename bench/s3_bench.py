"""Cleanup and listing of many jobs on S3 against raw s3fs doing the same, on one moto server.

A ``moto`` S3 server is started on loopback (``python -m moto.server``, killed
at the end whatever happens).  One real small job runs on the local engine
with its share dir on S3 (``RxLocalParallel(wait=False, share_dir="s3://...",
share_dir_options={"endpoint_url": ...})``), so that its prefix holds exactly
what the engine writes there.  Its objects are then cloned under new job ids
into share dirs made by rxjobs (one batched upload each, not timed), and two
targets of issue 15 are measured, each against its baseline in the same run,
in an order that rotates:

* **cleanup** (``--jobs``, default 500): rxjobs'
  ``rx_cleanup_jobs(rx_get_jobs(cc, verbose=False), force=True)`` (listing,
  each job's state, the crash-safe removal: ``deleting`` markers written
  exclusively, keys deleted in batches, markers last) against one
  ``s3fs.rm([<every job prefix>], recursive=True)`` of the same jobs, which
  lists the prefixes and deletes their keys 1000 per request.  Target ≤ 1.5×.
* **listing** (``--list-jobs``, default 10 × ``--jobs``: 5000): ``rx_get_jobs(cc,
  verbose=False)`` against a raw ``s3fs`` ``find`` of the share dir plus a
  concurrent ``cat`` of every ``job.json`` (what any listing must at least
  read).  Target ≤ 1.5×.

Each contender's requests are counted from moto's log (LIST, GET, PUT,
batched DELETE): on one loopback server the figures measure requests more
than S3 itself.  Medians of the repetitions are reported.

Run ``python -m bench.s3_bench --help`` from the repository root (needs
``pip install "rxjobs[s3]" "moto[server]"``).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rxjobs-bench", "AWS_SECRET_ACCESS_KEY": "rxjobs-bench",
               "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "rxjobs-bench"


def square(x: int) -> int:
    """The template job's function."""
    print(f"{x} squared is {x * x}")
    return x * x


# -- the server ------------------------------------------------------------------------------


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1 and a free port, in its own session."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "moto.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> MotoServer:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, **CREDENTIALS})
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"moto server did not start; see {self.log}") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(timeout=30)


# -- building the share dirs (not timed) -------------------------------------------------------


def make_template(share: str, options: dict) -> dict[str, bytes]:
    """Run one real job with its share dir on S3; return its objects, by path inside the job."""
    from rxjobs import RxLocalParallel, RxRemoteJobStatus, rx_exec, rx_wait_for_job
    from rxjobs.store import open_store

    cc = RxLocalParallel(num_workers=1, wait=False, share_dir=share, share_dir_options=options)
    job = rx_exec(square, x=[1, 2], task_chunk_size=2, compute_context=cc)
    status = rx_wait_for_job(job, timeout=300)
    if status is not RxRemoteJobStatus.FINISHED:
        raise RuntimeError(f"the template job {job.job_id} ended {status.value}, not finished")
    store = open_store(share, options)
    prefix = f"{store.root}/{job.job_id}/"
    return {key[len(prefix):]: store.fs.cat_file(key) for key in store.fs.find(prefix)}


def build_share(share: str, options: dict, template: dict[str, bytes], job_ids: list[str]) -> None:
    """Clone the template job under every id, in one batched upload.

    Each clone's ``job.json`` names its own id and share dir, so that
    ``rx_get_jobs`` of the share dir's context lists it.
    """
    import json

    from rxjobs.store import open_store

    store = open_store(share, options)
    store.ensure_root()  # a share dir carries its marker; commands refuse a prefix without it
    record = json.loads(template["job.json"])
    files = {}
    for job_id in job_ids:
        record.update(job_id=job_id)
        record["context"]["settings"]["share_dir"] = store.url
        for rel, data in template.items():
            files[f"{store.root}/{job_id}/{rel}"] = (
                json.dumps(record, indent=1, sort_keys=True).encode() if rel == "job.json" else data)
    store.fs.pipe(files)


# -- the contenders ----------------------------------------------------------------------------


def rxjobs_cleanup(share: str, options: dict, job_ids: list[str]) -> None:
    from rxjobs import RxLocalParallel, rx_cleanup_jobs, rx_get_jobs

    cc = RxLocalParallel(share_dir=share, share_dir_options=options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = rx_cleanup_jobs(rx_get_jobs(cc, verbose=False), force=True, verbose=False)
    if len(report.removed) != len(job_ids):
        raise RuntimeError(f"rxjobs removed {len(report.removed)} of {len(job_ids)} jobs")


def s3fs_rm(share: str, options: dict, job_ids: list[str]) -> None:
    from rxjobs.store import open_store

    store = open_store(share, options)
    store.fs.rm([f"{store.root}/{job_id}" for job_id in job_ids], recursive=True)


def rxjobs_listing(share: str, options: dict, job_ids: list[str]) -> None:
    from rxjobs import RxLocalParallel, rx_get_jobs

    found = rx_get_jobs(RxLocalParallel(share_dir=share, share_dir_options=options), verbose=False)
    if len(found) != len(job_ids):
        raise RuntimeError(f"rx_get_jobs listed {len(found)} of {len(job_ids)} jobs")


def s3fs_listing(share: str, options: dict, job_ids: list[str]) -> None:
    """The least a listing must do: list the share dir, read every ``job.json`` (concurrently)."""
    from rxjobs.store import MAX_RECORD_BYTES, open_store

    store = open_store(share, options)
    depth = store.root.count("/") + 2
    records = [k for k in store.fs.find(store.root) if k.endswith("/job.json") and k.count("/") == depth]
    # Ranged, as rxjobs reads a record: s3fs' plain cat_file asks for the size first (a HEAD).
    read = store.fs.cat(records, on_error="return", start=0, end=MAX_RECORD_BYTES + 1)
    if sum(1 for data in read.values() if isinstance(data, bytes)) != len(job_ids):
        raise RuntimeError(f"s3fs read {len(read)} job.json of {len(job_ids)} jobs")


@dataclass(frozen=True)
class Target:
    """One figure of issue 15: rxjobs against its baseline, and the ratio it must reach."""

    name: str
    rxjobs: Callable[[str, dict, list[str]], None]
    baseline: Callable[[str, dict, list[str]], None]
    rxjobs_label: str
    baseline_label: str
    target: float
    destructive: bool  # each run needs a fresh share dir


TARGETS = {
    "cleanup": Target("cleanup", rxjobs_cleanup, s3fs_rm,
                      "rx_cleanup_jobs(rx_get_jobs(cc), force=True)",
                      "s3fs.rm([job prefixes], recursive=True)", 1.5, True),
    "listing": Target("listing", rxjobs_listing, s3fs_listing,
                      "rx_get_jobs(cc, verbose=False)",
                      "s3fs find + concurrent cat of each job.json", 1.5, False),
}


@dataclass
class Figure:
    """The timings and request counts of one target's two contenders."""

    target: Target
    jobs: int
    times: dict[str, list[float]] = field(default_factory=lambda: {"rxjobs": [], "baseline": []})
    requests: dict[str, Counter] = field(default_factory=lambda: {"rxjobs": Counter(), "baseline": Counter()})

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    @property
    def ratio(self) -> float:
        return self.median("rxjobs") / self.median("baseline")

    @property
    def verdict(self) -> str:
        from .cleanup_bench import verdict

        return verdict(self.ratio <= self.target.target)


@dataclass
class Results:
    objects_per_job: int
    figures: dict[str, Figure]


REQUEST_LINE = re.compile(r'"(?:\x1b\[[0-9;]*m)*(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/')


class RequestLog:
    """Counts the requests moto served, from its log: LIST, GET, PUT, HEAD, batched DELETE."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def since_mark(self) -> Counter:
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
        counts: Counter = Counter()
        for found in REQUEST_LINE.finditer(text):  # moto colours some lines (206, 404...)
            method, rest = found.group(1), found.group(2)
            if "list-type=" in rest:
                counts["LIST"] += 1
            elif method == "POST" and "?delete" in rest:
                counts["DELETE(batch)"] += 1
            elif method in ("GET", "PUT", "HEAD", "DELETE", "POST"):
                counts[method] += 1
        return counts


def timed(target: Target, name: str, share: str, options: dict, job_ids: list[str],
          requests: RequestLog) -> tuple[float, Counter]:
    from rxjobs.store.listing_cache import LISTINGS, RECORDS

    contender = target.rxjobs if name == "rxjobs" else target.baseline
    # Each run starts cold: no record or listing of an earlier run of this process is reused
    # (within one run, rx_cleanup_jobs does reuse what its rx_get_jobs listed and read).
    RECORDS.clear()
    LISTINGS.clear()
    time.sleep(0.5)  # let moto's log catch up with the setup's requests
    requests.mark()
    started = time.perf_counter()
    contender(share, options, job_ids)
    elapsed = time.perf_counter() - started
    time.sleep(0.5)
    return elapsed, requests.since_mark()


def run(n_jobs: int, list_jobs: int, repeat: int, only: list[str],
        echo: Callable[[str], None] = print) -> Results:
    import fsspec

    from rxjobs.store import MARKER, open_store

    from .cleanup_bench import unique_job_ids

    os.environ.update(CREDENTIALS)
    with tempfile.TemporaryDirectory(prefix="rxjobs-s3-bench-") as tmp, MotoServer(Path(tmp)) as server:
        options = {"endpoint_url": server.endpoint}
        requests = RequestLog(server.log)
        fs = fsspec.filesystem("s3", client_kwargs=options, skip_instance_cache=True)
        fs.mkdir(BUCKET)
        template = make_template(f"s3://{BUCKET}/template", options)
        echo(f"template job: {len(template)} objects ({', '.join(sorted(template))})")
        results = Results(len(template), {})
        for key in only:
            target = TARGETS[key]
            jobs = n_jobs if target.destructive else list_jobs
            figure = results.figures[key] = Figure(target, jobs)
            shared, shared_ids = None, []
            if not target.destructive:
                shared = f"s3://{BUCKET}/{key}-{uuid.uuid4().hex[:8]}"
                echo(f"{key}: building a share dir of {jobs} jobs ...")
                shared_ids = unique_job_ids(jobs)
                build_share(shared, options, template, shared_ids)
            for rep in range(repeat):
                for name in (["rxjobs", "baseline"] if rep % 2 == 0 else ["baseline", "rxjobs"]):
                    if shared is None:
                        share = f"s3://{BUCKET}/{key}-{name}-{uuid.uuid4().hex[:8]}"
                        job_ids = unique_job_ids(jobs)
                        build_share(share, options, template, job_ids)
                    else:
                        share, job_ids = shared, shared_ids
                    elapsed, counted = timed(target, name, share, options, job_ids, requests)
                    if target.destructive:
                        left = [k for k in open_store(share, options).fs.find(share.split("://", 1)[1])
                                if not k.endswith(f"/{MARKER}")]
                        if left:
                            raise RuntimeError(f"{key} {name} left {len(left)} objects behind in {share}")
                    figure.times[name].append(elapsed)
                    figure.requests[name] = counted  # the same every repetition, but for retries
                    echo(f"  {key} repetition {rep + 1}/{repeat}: {name:<8} {elapsed:7.3f} s  "
                         f"{_requests(counted)}")
        return results


def _requests(counts: Counter) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "no requests"


def report(r: Results) -> str:
    lines = []
    for figure in r.figures.values():
        t = figure.target
        lines.append(f"{t.name}: {figure.jobs} jobs of {r.objects_per_job} objects, "
                     f"{len(figure.times['rxjobs'])} repetition(s)")
        lines.append(f"  {'':<50} {'median s':>8} {'min s':>8} {'max s':>8}  requests")
        for name, label in (("rxjobs", t.rxjobs_label), ("baseline", t.baseline_label)):
            times = figure.times[name]
            lines.append(f"  {label:<50} {statistics.median(times):8.3f} {min(times):8.3f} "
                         f"{max(times):8.3f}  {_requests(figure.requests[name])}")
        lines.append(f"  ratio rxjobs / baseline: {figure.ratio:.2f}x   target <= {t.target}x: "
                     f"{figure.verdict}")
    return "\n".join(lines)


def docs_section(r: Results, args: argparse.Namespace, table: str) -> str:
    from .cleanup_bench import machine_summary

    bullets = "\n".join(
        f"- **{f.target.name.capitalize()}, {f.jobs} jobs: {f.ratio:.2f}× — {f.verdict}** "
        f"(target ≤ {f.target.target}×): `{f.target.rxjobs_label}` against {f.target.baseline_label}"
        for f in r.figures.values())
    return f"""## Cleanup and listing on S3 (moto) vs raw s3fs

`python -m bench.s3_bench --jobs {args.jobs} --list-jobs {args.list_jobs} --repeat {args.repeat}` —
on a moto S3 server on loopback, each rxjobs figure against raw s3fs doing the least
the same work needs, in the same run (issue 15, targets 2 and 3). Cleanup: a forced
`rx_cleanup_jobs(rx_get_jobs(cc))` (listing, each job's state, the crash-safe removal:
`deleting` markers written exclusively, keys deleted 1000 a request, markers last; see
docs/storage.md) against one `s3fs.rm([prefixes], recursive=True)`. Listing:
`rx_get_jobs(cc, verbose=False)` against `find` of the share dir plus a concurrent `cat`
of every `job.json`. Requests are counted from moto's log.

How to read them: moto answers every request from one process and closes
each connection, so every request costs a connection too. A GET or a PUT
costs about the same whatever the bucket holds; a LIST costs for the keys it
returns (moto renders them, s3fs parses each one's date): one listing of a
500-job share dir (3000 keys, 4 pages) takes about 2 s here, 500 concurrent
GETs about 4 s. rxjobs sends, per job removed, two GETs (`job.json` for the
listing, `status.json` for the state; `job.json` is not read again by the
cleanup, its listed ETag being unchanged) and one marker PUT; for the whole
batch, one listing of the share dir in `rx_get_jobs` (which the cleanup takes
instead of listing again: docs/storage.md, "A cleanup right after a
listing"), one after the markers and a short one after the deletes, and
batched DELETEs. `s3fs.rm` sends one LIST per job. On a real S3 endpoint,
where a LIST costs about what a GET costs, the request counts (about four
times s3fs') say more than this ratio. The listing sends what its baseline
sends: a few LISTs and one ranged GET per `job.json`.

- Date: {__import__("datetime").date.today().isoformat()}
- Machine: {machine_summary()}
{bullets}

```
{table}
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.s3_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs the cleanup removes (default 500)")
    parser.add_argument("--list-jobs", type=int, default=None,
                        help="jobs the listing lists (default 10 x --jobs: 5000; so that `python -m bench "
                        "--jobs 50` stays a quick pass)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--only", action="append", choices=list(TARGETS),
                        help="measure only this target (repeatable)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.list_jobs is None:
        args.list_jobs = 10 * args.jobs
    if args.jobs < 1 or args.list_jobs < 1 or args.repeat < 1:
        parser.error("--jobs, --list-jobs and --repeat must be at least 1")
    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as exc:
        print(f"bench.s3_bench needs s3fs and moto[server]: pip install \"rxjobs[s3]\" \"moto[server]\" "
              f"({exc})", file=sys.stderr)
        return 1
    import rxjobs

    print(f"Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
          f"Python {platform.python_version()}, rxjobs {rxjobs.__version__}, "
          f"s3fs {s3fs.__version__}, moto {moto.__version__}", flush=True)
    only = args.only or list(TARGETS)
    results = run(args.jobs, args.list_jobs, args.repeat, only, echo=lambda line: print(line, flush=True))
    table = report(results)
    print(table)
    if args.write_docs:
        from .cleanup_bench import write_docs

        write_docs(docs_section(results, args, table), name="s3_bench")
        print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
