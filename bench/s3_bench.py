"""Cleanup of many jobs on S3 against ``s3fs.rm(recursive=True)`` of the same prefixes.

A ``moto`` S3 server is started on loopback (``python -m moto.server``, killed
at the end whatever happens).  One real small job runs on the local engine
with its share dir on S3 (``RxLocalParallel(wait=False, share_dir="s3://...",
share_dir_options={"endpoint_url": ...})``), so that its prefix holds exactly
what the engine writes there.  Its objects are then cloned under new job ids
into identical share dirs, one per contender (one batched upload each, not
timed), and each repetition measures, in an order that rotates:

* rxjobs: ``rx_cleanup_jobs(rx_get_jobs(cc, verbose=False), force=True)``,
  the whole user-visible cost (listing, status derivation, crash-safe removal:
  ``deleting`` marker, one batched delete per job, the marker last);
* rxjobs removal only: ``Store.remove_job`` of every id in 8 threads;
* the baseline: one ``s3fs.rm(<every job prefix>, recursive=True)`` call,
  which lists the prefixes and deletes their keys 1000 per request.

Medians of the repetitions are reported, with the ratio rxjobs / baseline.
Every request goes to the same single moto process, so the figures measure
request counts more than S3 itself.  Nothing here asserts on time.

Run ``python -m bench.s3_bench --help`` from the repository root (needs
``pip install "rxjobs[s3]" "moto[server]"``).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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


def rxjobs_remove_only(share: str, options: dict, job_ids: list[str]) -> None:
    from rxjobs.store import open_store

    store = open_store(share, options)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(store.remove_job, job_ids))


def s3fs_rm(share: str, options: dict, job_ids: list[str]) -> None:
    from rxjobs.store import open_store

    store = open_store(share, options)
    store.fs.rm([f"{store.root}/{job_id}" for job_id in job_ids], recursive=True)


CONTENDERS: dict[str, Callable[[str, dict, list[str]], None]] = {
    "rxjobs": rxjobs_cleanup,
    "removal": rxjobs_remove_only,
    "baseline": s3fs_rm,
}
LABELS = {
    "rxjobs": "rxjobs: rx_cleanup_jobs(rx_get_jobs(cc), force=True)",
    "removal": "rxjobs removal only: Store.remove_job x 8 threads",
    "baseline": "baseline: s3fs.rm([job prefixes], recursive=True)",
}


@dataclass
class Results:
    jobs: int
    objects_per_job: int
    times: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in CONTENDERS})

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    @property
    def ratio(self) -> float:
        return self.median("rxjobs") / self.median("baseline")


def run(n_jobs: int, repeat: int, echo: Callable[[str], None] = print) -> Results:
    import fsspec

    from rxjobs.store import MARKER, open_store

    from .cleanup_bench import unique_job_ids

    os.environ.update(CREDENTIALS)
    with tempfile.TemporaryDirectory(prefix="rxjobs-s3-bench-") as tmp, MotoServer(Path(tmp)) as server:
        options = {"endpoint_url": server.endpoint}
        fs = fsspec.filesystem("s3", client_kwargs=options, skip_instance_cache=True)
        fs.mkdir(BUCKET)
        template = make_template(f"s3://{BUCKET}/template", options)
        results = Results(n_jobs, len(template))
        echo(f"template job: {len(template)} objects ({', '.join(sorted(template))})")
        names = list(CONTENDERS)
        for rep in range(repeat):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                share = f"s3://{BUCKET}/{name}-{uuid.uuid4().hex[:8]}"
                job_ids = unique_job_ids(n_jobs)
                build_share(share, options, template, job_ids)
                started = time.perf_counter()
                CONTENDERS[name](share, options, job_ids)
                elapsed = time.perf_counter() - started
                left = [k for k in open_store(share, options).fs.find(share.split("://", 1)[1])
                        if not k.endswith(f"/{MARKER}")]
                if left:
                    raise RuntimeError(f"{name} left objects behind in {share}")
                results.times[name].append(elapsed)
                echo(f"  repetition {rep + 1}/{repeat}: {name:<8} {elapsed:7.3f} s")
        return results


def report(r: Results) -> str:
    def row(name: str) -> str:
        t = r.times[name]
        return f"{LABELS[name]:<56} {statistics.median(t):8.3f} {min(t):8.3f} {max(t):8.3f}"

    per_job = {name: r.median(name) / r.jobs * 1000 for name in CONTENDERS}
    return "\n".join([
        f"{r.jobs} jobs of {r.objects_per_job} objects on a moto S3 server on loopback, "
        f"{len(r.times['rxjobs'])} repetition(s)",
        f"{'':<56} {'median s':>8} {'min s':>8} {'max s':>8}",
        row("rxjobs"),
        row("removal"),
        row("baseline"),
        f"per job: rxjobs {per_job['rxjobs']:.1f} ms, removal only {per_job['removal']:.1f} ms, "
        f"s3fs.rm {per_job['baseline']:.1f} ms",
        f"ratio rxjobs / s3fs.rm: {r.ratio:.2f}x   "
        f"(removal only / s3fs.rm: {r.median('removal') / r.median('baseline'):.2f}x)",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.s3_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs per share dir (default 500)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeat < 1:
        parser.error("--jobs and --repeat must be at least 1")
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
    results = run(args.jobs, args.repeat, echo=lambda line: print(line, flush=True))
    table = report(results)
    print(table)
    if args.write_docs:
        from .cleanup_bench import machine_summary, write_docs

        write_docs(f"""## Cleanup on S3 (moto) vs `s3fs.rm`

`python -m bench.s3_bench --jobs {args.jobs} --repeat {args.repeat}` — a full rxjobs cleanup
(list, derive each job's state, crash-safe removal: `deleting` marker, one batched delete,
re-list, marker last) against one `s3fs.rm([prefixes], recursive=True)` of the same jobs,
on a moto S3 server on loopback, in the same run. No target is set; the ratio is the
price of deciding per job and of crash safety (see docs/storage.md).

- Date: {__import__("datetime").date.today().isoformat()}
- Machine: {machine_summary()}
- **Ratio rxjobs / s3fs.rm: {results.ratio:.2f}×**

```
{table}
```
""", name="s3_bench")
        print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
