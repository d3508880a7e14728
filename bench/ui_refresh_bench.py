"""The jobs table's refresh: what a filtered, sorted view costs the server against the default view.

The page refreshes its table every 3 s (``GET /api/rows`` with the version it
shows).  A view filtered by state and sorted by size used to re-read every job
at each refresh; with the server's catalog of ended jobs it should cost what
the default view costs.  One fresh ``rxjobs ui`` over ``--jobs`` copied real
jobs (default 20,000); each view is asked once to warm up (the filtered view
reads every job then), then ``--refreshes`` times in turn, as a page would.
The figure is the server's CPU time (utime + stime from ``/proc/PID/stat``)
per refresh of each view, and their ratio.  Target ≤ 1.5×.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import timedelta, timezone
from pathlib import Path

from .cleanup_bench import machine_summary, verdict, write_docs
from .listing_bench import make_templates, spaced_job_ids
from .ui_bench import clone_spread, peak_rss_mb, start_server, stop

TARGET_RATIO = 1.5
DEFAULT_VIEW = "/api/rows"
FILTERED_VIEW = "/api/rows?state=failed&state=canceled&sort=-size"


def cpu_seconds(pid: int) -> float:
    """The process's user and system CPU time so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def refresh(base: str, token: str, path: str, version: str) -> str:
    """One refresh as the page makes it; the version the server answered."""
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}",
                                                           "If-None-Match": version})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            return response.headers["ETag"]
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return version
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui_refresh_bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20000, help="jobs in the share dir (default 20000)")
    parser.add_argument("--refreshes", type=int, default=30, help="refreshes of each view (default 30)")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    print(machine_summary())
    with tempfile.TemporaryDirectory(prefix="rxjobs-ui-refresh-bench-", dir=args.tmpdir) as work:
        work_path = Path(work)
        templates = make_templates(work_path)
        share = work_path / "share"
        end = dt.datetime.now(timezone.utc) - timedelta(hours=1)
        clone_spread(templates, share, spaced_job_ids(args.jobs, end))
        proc, base, token = start_server(share)
        try:
            versions = {}
            warm = {}
            for path in (DEFAULT_VIEW, FILTERED_VIEW):
                started = time.perf_counter()
                versions[path] = refresh(base, token, path, "")
                warm[path] = time.perf_counter() - started
            costs: dict[str, list[float]] = {DEFAULT_VIEW: [], FILTERED_VIEW: []}
            for _ in range(args.refreshes):
                for path in (DEFAULT_VIEW, FILTERED_VIEW):
                    before = cpu_seconds(proc.pid)
                    versions[path] = refresh(base, token, path, versions[path])
                    costs[path].append(cpu_seconds(proc.pid) - before)
            rss = peak_rss_mb(proc.pid)
        finally:
            stop(proc)
    default, filtered = (statistics.mean(costs[p]) for p in (DEFAULT_VIEW, FILTERED_VIEW))
    ratio = filtered / default if default > 0 else float("inf")
    table = "\n".join([
        f"{args.jobs} jobs, {args.refreshes} refreshes of each view          server CPU ms per refresh",
        f"default view   {DEFAULT_VIEW:<52} {1000 * default:8.1f}   (first: {warm[DEFAULT_VIEW]:.2f} s)",
        f"filtered view  {FILTERED_VIEW:<52} {1000 * filtered:8.1f}   (first: {warm[FILTERED_VIEW]:.2f} s)",
        f"ratio filtered / default: {ratio:.2f}x   "
        f"target <= {TARGET_RATIO}x: {verdict(ratio <= TARGET_RATIO)}",
        f"server peak RSS {rss:.0f} MB",
    ])
    print(table)
    if args.write_docs:
        section = f"""## The jobs table's refresh

`python -m bench.ui_refresh_bench --jobs {args.jobs} --refreshes {args.refreshes}` — the server CPU
time of a refresh (`GET /api/rows` with the version the page shows) of a view filtered by state and
sorted by size, against the default view, on one `rxjobs ui` over copied real jobs, after one
warm-up request of each (the filtered view reads every job then).

- Date: {dt.date.today().isoformat()}
- Machine: {machine_summary()}
- **Filtered refresh: {ratio:.2f}× the default view's — {verdict(ratio <= TARGET_RATIO)}**
  (target ≤ {TARGET_RATIO}×)

```
{table}
```
"""
        write_docs(section, name="ui_refresh_bench")
        print("wrote docs/benchmarks.md")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
