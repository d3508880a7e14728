"""The web page over a big share dir: its first response against ``rxjobs list --json``.

Two figures, each against a baseline or bound measured in the same run:

1. The jobs page's first response (``GET /jobs``, the first request a fresh
   ``rxjobs ui`` server answers) over ``--jobs`` jobs (default 20,000),
   against ``rxjobs list --json`` on the same share dir, both as the real
   commands in fresh processes.  Target ≤ 2×.
2. Peak RSS of the server after it served the first and the last page of
   ``--rss-jobs`` jobs (default 100,000).  Target ≤ 200 MB (the listing's bound).
3. The cleanup flow over ``--jobs`` jobs: the preview's first response
   (``GET /cleanup?all=1``, its redirect followed; target ≤ 1 s), the
   plan shown (ready, first page), and the confirm (``POST /cleanup``
   with the plan's id, until its result page), against ``rxjobs cleanup
   --all --dry-run --json`` and ``rxjobs cleanup --all --json`` on an
   identical share dir, timed in the same run.

The jobs are copies of small real jobs (see :mod:`bench.listing_bench`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta, timezone
from pathlib import Path

from rxjobs import RxComputeContext
from rxjobs.ids import job_id_time
from rxjobs.records import JobRecord
from rxjobs.store import open_store

from .cleanup_bench import machine_summary, verdict, write_docs
from .listing_bench import make_templates, spaced_job_ids

TARGET_RATIO = 2.0
TARGET_RSS_MB = 200.0


def clone_spread(templates: list[Path], share: Path, job_ids: list[str]) -> None:
    """Copy the template jobs round-robin under ``job_ids``, each with its own job.json.

    (``listing_bench.clone_spread`` reads the templates through a store of the
    new share dir, which the store now refuses: they lie outside it.)
    """
    import dataclasses
    import json
    import os
    import shutil

    store = open_store(str(share))
    store.ensure_root()
    records = [JobRecord.from_json(json.loads((t / "job.json").read_text())) for t in templates]
    context = dataclasses.replace(RxComputeContext.from_dict(records[0].context),
                                  share_dir=store.url).to_dict()
    for i, job_id in enumerate(job_ids):
        template, record = templates[i % len(templates)], records[i % len(templates)]
        # Hard links: the clones' files are never written (job.json is replaced by a rename).
        shutil.copytree(template, share / job_id, symlinks=True, copy_function=os.link)
        created = job_id_time(job_id)
        clone = dataclasses.replace(record, job_id=job_id, context=context,
                                    created=created.isoformat() if created else record.created)
        store.write_json(store.paths(job_id).job_json, clone.to_json())


def start_server(share: Path) -> tuple[subprocess.Popen, str, str]:
    """``rxjobs ui`` on a free loopback port; (process, base URL with the page's path, token)."""
    proc = subprocess.Popen([sys.executable, "-m", "rxjobs", "--share-dir", str(share), "ui", "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        # The page lives under a random path (ui/prefix.py): the base URL ends with it.
        match = re.search(r"(http://127\.0\.0\.1:\d+(?:/[A-Za-z0-9_-]+)?)/\?token=(\S+)", line)
        if match:
            return proc, match.group(1), match.group(2)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("rxjobs ui printed no URL")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def fetch(base: str, token: str, path: str) -> tuple[float, bytes]:
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        body = response.read()
    return time.perf_counter() - started, body


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def first_page(share: Path) -> float:
    """Seconds from the request to the whole first response of a fresh server's jobs page."""
    proc, base, token = start_server(share)
    try:
        seconds, body = fetch(base, token, "/jobs")
        assert b'data-job-id="' in body
        return seconds
    finally:
        stop(proc)


def cli_list(share: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rxjobs", "--share-dir", str(share), "list", "--json"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


TARGET_PREVIEW_SECONDS = 1.0


def post_form(base: str, token: str, path: str, fields: dict[str, str]) -> tuple[float, str]:
    """POST a form (let in by the token: no CSRF field needed); seconds and the final URL."""
    from urllib.parse import urlencode

    request = urllib.request.Request(base + path, data=urlencode(fields).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=3600) as response:  # follows the 303 to the result
        response.read()
        return time.perf_counter() - started, response.url


def cleanup_flow(share: Path) -> dict[str, float]:
    """The page's cleanup of every job of ``share``: preview, plan shown, confirm (seconds)."""
    proc, base, token = start_server(share)
    try:
        started = time.perf_counter()
        request = urllib.request.Request(base + "/cleanup?all=1",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            plan_url = response.url
        first = time.perf_counter() - started
        while True:
            with urllib.request.urlopen(urllib.request.Request(
                    plan_url, headers={"Authorization": f"Bearer {token}"}), timeout=600) as response:
                body = response.read().decode()
                if response.headers.get("Refresh") is None:
                    break
            time.sleep(0.2)
        shown = time.perf_counter() - started
        match = re.search(r'name="plan_id" value="([^"]+)"', body)
        if match is None:
            raise RuntimeError(f"no plan to confirm at {plan_url}")
        confirm, result_url = post_form(base, token, "/cleanup", {"plan_id": match.group(1)})
        if "/cleanup/results/" not in result_url:
            raise RuntimeError(f"the confirm ended at {result_url}")
        return {"first": first, "shown": shown, "confirm": confirm}
    finally:
        stop(proc)


def cli_cleanup(share: Path, dry_run: bool) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rxjobs", "--share-dir", str(share), "cleanup", "--all", "--json",
                    *(["--dry-run"] if dry_run else [])], stdout=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def cleanup_figures(templates: list[Path], work: Path, n_jobs: int, repeat: int,
                    end: dt.datetime) -> tuple[dict[str, float], str, bool]:
    """Medians of the page's cleanup flow and of the CLI's, each on a fresh identical share dir."""
    ids = spaced_job_ids(n_jobs, end)
    page: dict[str, list[float]] = {"first": [], "shown": [], "confirm": []}
    dry, real = [], []
    for i in range(repeat):
        ours, theirs = work / f"cleanup-page-{i}", work / f"cleanup-cli-{i}"
        clone_spread(templates, ours, ids)
        clone_spread(templates, theirs, ids)
        dry.append(cli_cleanup(theirs, dry_run=True))
        for name, seconds in cleanup_flow(ours).items():
            page[name].append(seconds)
        real.append(cli_cleanup(theirs, dry_run=False))
    m = {name: statistics.median(times) for name, times in page.items()}
    m["dry"], m["real"] = statistics.median(dry), statistics.median(real)
    ok = m["first"] <= TARGET_PREVIEW_SECONDS
    table = "\n".join([
        f"{n_jobs} jobs, {repeat} repetition(s): the cleanup of every job       median s",
        f"GET /cleanup?all=1, first response (redirect followed)     {m['first']:8.3f}"
        f"   target <= {TARGET_PREVIEW_SECONDS:g} s: {verdict(ok)}",
        f"plan shown (ready, first page)                             {m['shown']:8.3f}"
        f"   {m['shown'] / m['dry']:.2f}x dry run",
        f"`rxjobs cleanup --all --dry-run --json`                    {m['dry']:8.3f}",
        f"POST /cleanup (plan id) until the result page             {m['confirm']:8.3f}"
        f"   {m['confirm'] / m['real']:.2f}x cleanup",
        f"`rxjobs cleanup --all --json`                              {m['real']:8.3f}",
        f"preview first response / dry run: {m['first'] / m['dry']:.3f}x",
    ])
    return m, table, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20000, help="jobs for the timing (default 20000)")
    parser.add_argument("--rss-jobs", type=int, default=100000,
                        help="jobs for the RSS bound (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--only", choices=("all", "list", "cleanup"), default="all",
                        help="only the jobs page's figures, or only the cleanup's (default: all)")
    args = parser.parse_args(argv)
    if args.only == "cleanup":
        return cleanup_main(args)
    print(machine_summary())
    with tempfile.TemporaryDirectory(prefix="rxjobs-ui-bench-", dir=args.tmpdir) as work:
        work_path = Path(work)
        templates = make_templates(work_path)
        end = dt.datetime.now(timezone.utc) - timedelta(hours=1)
        share = work_path / "share"
        clone_spread(templates, share, spaced_job_ids(args.jobs, end))
        cli_list(share)  # warm-up: imports, the page cache
        first_page(share)
        page_times, list_times = [], []
        for i in range(args.repeat):
            for fn, times in ([(first_page, page_times), (cli_list, list_times)][::1 if i % 2 == 0 else -1]):
                times.append(fn(share))
        page, listed = statistics.median(page_times), statistics.median(list_times)
        print(f"{args.jobs} jobs: first page {page:.3f} s, rxjobs list --json {listed:.3f} s, "
              f"ratio {page / listed:.3f}", flush=True)
        cleanup_ok, cleanup_table = True, ""
        if args.only == "all":
            _, cleanup_table, cleanup_ok = cleanup_figures(templates, work_path, args.jobs, args.repeat, end)
            print(cleanup_table, flush=True)
        big = work_path / "big"
        clone_spread(templates, big, spaced_job_ids(args.rss_jobs, end))
        proc, base, token = start_server(big)
        try:
            big_first, _ = fetch(base, token, "/jobs")
            big_last, _ = fetch(base, token, f"/jobs?page={args.rss_jobs // 50}")
            rss = peak_rss_mb(proc.pid)
        finally:
            stop(proc)
    page, listed = statistics.median(page_times), statistics.median(list_times)
    ratio = page / listed
    table = "\n".join([
        f"{args.jobs} jobs, {args.repeat} repetition(s)                          median s",
        f"GET /jobs, first response of a fresh `rxjobs ui`            {page:8.3f}",
        f"`rxjobs list --json` (a fresh process)                     {listed:8.3f}",
        f"ratio page / list: {ratio:.3f}x   target <= {TARGET_RATIO}x: {verdict(ratio <= TARGET_RATIO)}",
        f"{args.rss_jobs} jobs: first page {big_first:.3f} s, last page {big_last:.3f} s, "
        f"server peak RSS {rss:.0f} MB   target <= {TARGET_RSS_MB:.0f} MB: {verdict(rss <= TARGET_RSS_MB)}",
    ])
    print(table)
    if args.write_docs:
        section = f"""## The web page over a big share dir

`python -m bench.ui_bench --jobs {args.jobs} --rss-jobs {args.rss_jobs} --repeat {args.repeat}` —
the first response of `GET /jobs` from a fresh `rxjobs ui` server (50 jobs a page: ids listed by
name, only the page's jobs read and their states derived) against `rxjobs list --json` (every
job's state) on the same share dir of copied real jobs, both fresh processes, medians in the same
run; then the server's peak RSS (VmHWM) after the first and last page of {args.rss_jobs} jobs.

- Date: {dt.date.today().isoformat()}
- Machine: {machine_summary()}
- **First page: {ratio:.3f}× `rxjobs list --json` — {verdict(ratio <= TARGET_RATIO)}**
  (target ≤ {TARGET_RATIO}×)
- **Peak RSS over {args.rss_jobs} jobs: {rss:.0f} MB — {verdict(rss <= TARGET_RSS_MB)}**
  (target ≤ {TARGET_RSS_MB:.0f} MB)

```
{table}
```
"""
        write_docs(section, name="ui_bench")
        if cleanup_table:
            write_docs(cleanup_section(args, cleanup_table, cleanup_ok), name="ui_cleanup_bench")
        print("wrote docs/benchmarks.md")
    return 0 if ratio <= TARGET_RATIO and rss <= TARGET_RSS_MB and cleanup_ok else 1


def cleanup_section(args: argparse.Namespace, table: str, ok: bool) -> str:
    return f"""## The page's cleanup of a big share dir

`python -m bench.ui_bench --only cleanup --jobs {args.jobs} --repeat {args.repeat}` — the page's
cleanup of every job (`GET /cleanup?all=1`: a plan made in the background; its page; `POST /cleanup`
with the plan's id) against `rxjobs cleanup --all --dry-run --json` and `rxjobs cleanup --all --json`
on an identical share dir of copied real jobs (a third of them finished and never retrieved, so kept),
medians in the same run. The page's times are a running server's; the CLI's are fresh processes,
start-up included.

- Date: {dt.date.today().isoformat()}
- Machine: {machine_summary()}
- **Preview's first response: {verdict(ok)}** (target ≤ {TARGET_PREVIEW_SECONDS:g} s)

```
{table}
```
"""


def cleanup_main(args: argparse.Namespace) -> int:
    """Only the cleanup's figures (``--only cleanup``)."""
    print(machine_summary())
    with tempfile.TemporaryDirectory(prefix="rxjobs-ui-bench-", dir=args.tmpdir) as work:
        work_path = Path(work)
        templates = make_templates(work_path)
        end = dt.datetime.now(timezone.utc) - timedelta(hours=1)
        _, table, ok = cleanup_figures(templates, work_path, args.jobs, args.repeat, end)
    print(table)
    if args.write_docs:
        write_docs(cleanup_section(args, table, ok), name="ui_cleanup_bench")
        print("wrote docs/benchmarks.md")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
