"""The ``rxjobs`` command, through click's CliRunner and as a real installed command.

Jobs are real: ``RxLocalParallel(wait=False)`` drivers in a share dir under
``tmp_path``.  The functions they run are defined at module level, since the
driver imports this module by reference.  Nothing sleeps to wait: conditions
are polled with generous deadlines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner, Result

from rxjobs import (
    RxLocalParallel,
    RxRemoteJob,
    RxRemoteJobStatus,
    list_jobs,
    rx_cleanup_jobs,
    rx_exec,
    rx_get_job_status,
    rx_wait_for_job,
)
from rxjobs.cli import cli
from rxjobs.durations import parse_duration
from rxjobs.store import open_store
from rxjobs.times import parse_time

from conftest import wait_until

pytestmark = pytest.mark.timeout(120)

S = RxRemoteJobStatus
UNKNOWN_ID = "rxJob_20000101000000000000_abcd"


# -- functions the jobs run (module level: the driver imports them by reference) ---------


def square(x: int) -> int:
    print(f"square of {x}")
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def sleep_long(x: int) -> int:
    for _ in range(6000):  # five minutes, far beyond any test; canceled or cleaned up before
        time.sleep(0.05)
    return x


# -- helpers -----------------------------------------------------------------------------


@pytest.fixture
def share(tmp_path: Path):
    path = str(tmp_path / "share")
    yield path
    # Leave no driver behind: force-remove whatever a test left (running jobs are canceled),
    # and kill any process still naming this share dir on its command line.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            left = [job for job, _, _ in list_jobs(path)]
            if left:
                rx_cleanup_jobs(left, force=True, verbose=False)
    finally:
        leaked = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if proc.pid != os.getpid() and path in " ".join(proc.info["cmdline"] or []):
                    leaked.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        for proc in leaked:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(leaked, timeout=10)


def submit(share: str, function=square, xs=(0, 1, 2), **kwargs) -> RxRemoteJob:
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=share)
    job = rx_exec(function, x=list(xs), compute_context=cc, **kwargs)
    assert isinstance(job, RxRemoteJob)
    return job


def ended(share: str, function=square, xs=(0, 1, 2), expect=S.FINISHED, **kwargs) -> RxRemoteJob:
    job = submit(share, function, xs, **kwargs)
    assert rx_wait_for_job(job, timeout=60) is expect
    return job


def running(share: str) -> RxRemoteJob:
    job = submit(share, sleep_long, xs=(0, 1))
    state = wait_until(lambda: S.RUNNING if rx_get_job_status(job) is S.RUNNING else None, timeout=60,
                       what="the job to run")
    assert state is S.RUNNING, rx_get_job_status(job)
    return job


def rxjobs(share: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--share-dir", share, *args])


def exists(share: str, job: RxRemoteJob) -> bool:
    return os.path.isdir(os.path.join(share, job.job_id))


def assert_clean_error(result: Result, *fragments: str) -> None:
    """Exit 1, one ``rxjobs: error:`` line on stderr naming the fragments, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rxjobs: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# -- argument parsing --------------------------------------------------------------------


def test_parse_duration():
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("1w") == timedelta(days=7)
    for bad in ("", "7", "d", "7x", "-1d", "yesterday"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_parse_time():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    assert parse_time("2h", now=now) == now - timedelta(hours=2)
    assert parse_time("2026-01-02T03:04:05Z") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    local = parse_time("2026-01-02")
    assert local.tzinfo is timezone.utc  # naive input is local time, given in UTC
    assert local == datetime(2026, 1, 2).astimezone()
    with pytest.raises(ValueError, match="not a date/time"):
        parse_time("yesterday")


# -- list --------------------------------------------------------------------------------


def test_list_table_and_json(share):
    done = ended(share)
    failed = ended(share, fail_on_three, xs=(3,), continue_on_failure=False, expect=S.FAILED)

    table = rxjobs(share, "list")
    assert table.exit_code == 0, table.output
    assert done.job_id in table.stdout and failed.job_id in table.stdout
    assert "finished" in table.stdout and "failed" in table.stdout
    assert "square" in table.stdout

    listed = rxjobs(share, "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = {row["job_id"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {done.job_id, failed.job_id}
    assert rows[done.job_id]["state"] == "finished"
    assert rows[done.job_id]["function"].endswith("square")
    assert rows[done.job_id]["n_runs"] == 3
    assert rows[done.job_id]["bytes"] > 0
    assert rows[failed.job_id]["state"] == "failed"
    submitted = datetime.fromisoformat(rows[done.job_id]["submitted"])
    assert abs(submitted - datetime.now(timezone.utc)) < timedelta(minutes=10)


def test_list_filters(share):
    done = ended(share)
    failed = ended(share, fail_on_three, xs=(3,), continue_on_failure=False, expect=S.FAILED)

    def ids(*args: str) -> set[str]:
        result = rxjobs(share, "list", "--json", *args)
        assert result.exit_code == 0, result.output
        return {row["job_id"] for row in json.loads(result.stdout)}

    assert ids("--state", "failed") == {failed.job_id}
    assert ids("--state", "finished", "--state", "FAILED") == {done.job_id, failed.job_id}
    assert ids("--state", "running") == set()
    assert ids("--since", "1h") == {done.job_id, failed.job_id}
    assert ids("--since", "2999-01-01") == set()
    assert ids("--until", "1d") == set()
    assert ids("--since", "2000-01-01T00:00:00Z", "--until", "2999-01-01") == {done.job_id, failed.job_id}
    bad = rxjobs(share, "list", "--since", "yesterday")
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_list_empty_share_dir(share):
    assert rxjobs(share, "list", "--json").stdout.strip() == "[]"
    result = rxjobs(share, "list")
    assert result.exit_code == 0 and "no jobs" in result.stdout


# -- status, output, results -------------------------------------------------------------


def test_status(share):
    done = ended(share)
    failed = ended(share, fail_on_three, xs=(3,), continue_on_failure=False, expect=S.FAILED)

    result = rxjobs(share, "status", done.job_id, failed.job_id)
    assert result.exit_code == 0, result.output
    assert "finished" in result.stdout and "failed" in result.stdout
    assert "three is not allowed" in result.stdout  # the reason of the failure

    data = json.loads(rxjobs(share, "status", "--json", done.job_id).stdout)
    assert data == [{"job_id": done.job_id, "state": "finished", "reason": "finished"}]

    missing = rxjobs(share, "status", "--json", done.job_id, UNKNOWN_ID)
    assert missing.exit_code == 1
    assert [row["state"] for row in json.loads(missing.stdout)] == ["finished", "missing"]
    assert UNKNOWN_ID in missing.stderr and "Traceback" not in missing.output


def test_output(share):
    job = ended(share)
    result = rxjobs(share, "output", job.job_id)
    assert result.exit_code == 0, result.output
    assert [line for line in result.stdout.splitlines() if line.startswith("square")] == [
        "square of 0", "square of 1", "square of 2"]
    assert exists(share, job)  # output never deletes anything


def test_results_remove_the_job(share):
    job = ended(share)
    result = rxjobs(share, "results", job.job_id)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["0: 0", "1: 1", "2: 4"]
    assert rx_get_job_status(job) is S.MISSING
    again = rxjobs(share, "results", job.job_id)
    assert_clean_error(again, job.job_id, "not found")


def test_results_keep_then_cleanup_without_force(share):
    job = ended(share)
    result = rxjobs(share, "results", "--keep", "--json", job.job_id)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [0, 1, 4]
    assert rx_get_job_status(job) is S.FINISHED

    cleaned = rxjobs(share, "cleanup", job.job_id)
    assert cleaned.exit_code == 0, cleaned.output
    assert f"removed {job.job_id}" in cleaned.stdout
    assert "1 job removed" in cleaned.stdout
    assert not exists(share, job)


def test_results_with_failed_runs(share):
    job = ended(share, fail_on_three, xs=(2, 3), continue_on_failure=True)
    result = rxjobs(share, "results", "--keep", job.job_id)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "0: 2"
    assert lines[1].startswith("1: ") and "three is not allowed" in lines[1]
    assert "rxjobs: warning:" in result.stderr and "1 of 2 runs raised" in result.stderr

    data = json.loads(rxjobs(share, "results", "--json", job.job_id).stdout)
    assert data[0] == 2 and "three is not allowed" in data[1]  # the exception, as its repr


def test_results_of_failed_job_is_an_error(share):
    job = ended(share, fail_on_three, xs=(3,), continue_on_failure=False, expect=S.FAILED)
    result = rxjobs(share, "results", job.job_id)
    assert_clean_error(result, job.job_id, "failed")
    assert exists(share, job)  # nothing is deleted on an error


# -- wait and cancel ---------------------------------------------------------------------


def test_wait_exit_codes(share):
    job = submit(share)
    result = rxjobs(share, "wait", "--timeout", "60", job.job_id)
    assert result.exit_code == 0, result.output
    assert f"{job.job_id}: finished" in result.stdout

    failing = submit(share, fail_on_three, xs=(1, 3), continue_on_failure=False)
    result = rxjobs(share, "wait", "--timeout", "60", failing.job_id)
    assert result.exit_code == 1, result.output
    assert f"{failing.job_id}: failed" in result.stdout

    both = rxjobs(share, "wait", job.job_id, failing.job_id)
    assert both.exit_code == 1


def test_wait_with_progress_bar(share):
    job = submit(share, xs=range(8))
    result = rxjobs(share, "wait", "--progress", "--timeout", "60", job.job_id)
    assert result.exit_code == 0, result.output
    assert f"{job.job_id}: finished" in result.stdout


def test_wait_timeout_cancel_and_cleanup(share):
    job = running(share)

    timed_out = rxjobs(share, "wait", "--timeout", "0.5", job.job_id)
    assert timed_out.exit_code == 1
    assert "still running" in timed_out.stdout

    not_yet = rxjobs(share, "results", job.job_id)
    assert_clean_error(not_yet, job.job_id, "still running")

    kept = rxjobs(share, "cleanup", job.job_id)  # running jobs need --force
    assert kept.exit_code == 1 and "kept" in kept.stdout and "cancel" in kept.stdout
    assert rx_get_job_status(job) is S.RUNNING

    start = time.monotonic()
    canceled = rxjobs(share, "cancel", job.job_id)
    assert canceled.exit_code == 0, canceled.output
    assert time.monotonic() - start < 30  # the job sleeps for minutes; cancel does not wait for it
    assert f"canceled {job.job_id}" in canceled.stdout

    status = rxjobs(share, "status", job.job_id)
    assert status.exit_code == 0 and "canceled" in status.stdout

    again = rxjobs(share, "cancel", job.job_id)
    assert_clean_error(again, job.job_id, "already ended", "canceled")
    assert rxjobs(share, "wait", job.job_id).exit_code == 1  # canceled is not finished

    cleaned = rxjobs(share, "cleanup", job.job_id)  # canceled jobs go without force
    assert cleaned.exit_code == 0, cleaned.output
    assert not exists(share, job)


# -- cleanup -----------------------------------------------------------------------------


def test_cleanup_keeps_unretrieved_results_unless_forced(share):
    job = ended(share)

    kept = rxjobs(share, "cleanup", job.job_id)
    assert kept.exit_code == 1, kept.output
    assert f"kept {job.job_id}" in kept.stdout and "never retrieved" in kept.stdout
    assert "RxCleanupWarning" not in kept.output and "warnings.warn" not in kept.output
    assert exists(share, job)

    dry = rxjobs(share, "cleanup", "--force", "--dry-run", job.job_id)
    assert dry.exit_code == 0, dry.output
    assert f"would remove {job.job_id}" in dry.stdout and "dry run" in dry.stdout
    assert exists(share, job)

    forced = rxjobs(share, "cleanup", "--force", "--json", job.job_id)
    assert forced.exit_code == 0, forced.output
    report = json.loads(forced.stdout)
    assert report["removed"] == 1 and report["bytes_freed"] > 0
    assert report["jobs"][0]["job_id"] == job.job_id
    assert not exists(share, job)


def test_cleanup_all_and_filters(share):
    done = ended(share)
    failed = ended(share, fail_on_three, xs=(3,), continue_on_failure=False, expect=S.FAILED)

    dry = rxjobs(share, "cleanup", "--all", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would remove {failed.job_id}" in dry.stdout and f"kept {done.job_id}" in dry.stdout
    assert exists(share, done) and exists(share, failed)

    too_young = rxjobs(share, "cleanup", "--all", "--force", "--older-than", "1d")
    assert too_young.exit_code == 0, too_young.output
    assert "0 jobs removed" in too_young.stdout
    assert exists(share, done) and exists(share, failed)

    # --all: kept-by-rule jobs are the rules working, not a failure.
    by_rule = rxjobs(share, "cleanup", "--all")
    assert by_rule.exit_code == 0, by_rule.output
    assert f"removed {failed.job_id}" in by_rule.stdout and f"kept {done.job_id}" in by_rule.stdout
    assert exists(share, done) and not exists(share, failed)

    other = ended(share)
    by_state = rxjobs(share, "cleanup", "--all", "--force", "--state", "failed")
    assert "0 jobs removed" in by_state.stdout and exists(share, other)

    old = rxjobs(share, "cleanup", "--all", "--force", "--state", "finished", "--older-than", "0s")
    assert old.exit_code == 0, old.output
    assert "2 jobs removed" in old.stdout
    assert not exists(share, done) and not exists(share, other)


def test_cleanup_filters_with_ids(share):
    done = ended(share)
    result = rxjobs(share, "cleanup", "--force", "--state", "failed", done.job_id)
    assert result.exit_code == 0, result.output
    assert f"skipped {done.job_id}" in result.stdout
    assert exists(share, done)


def test_cleanup_usage_errors(share):
    neither = rxjobs(share, "cleanup")
    assert neither.exit_code == 2 and "--all" in neither.output
    both = rxjobs(share, "cleanup", "--all", UNKNOWN_ID)
    assert both.exit_code == 2
    bad_duration = rxjobs(share, "cleanup", "--all", "--older-than", "soon")
    assert bad_duration.exit_code == 2 and "Traceback" not in bad_duration.output


def test_cleanup_unknown_id(share):
    result = rxjobs(share, "cleanup", UNKNOWN_ID)
    assert result.exit_code == 1
    assert f"not found {UNKNOWN_ID}" in result.stdout


# -- du ----------------------------------------------------------------------------------


def test_du(share):
    done = ended(share)
    failed = ended(share, fail_on_three, xs=(3,), continue_on_failure=False, expect=S.FAILED)
    store = open_store(share)

    data = json.loads(rxjobs(share, "du", "--json").stdout)
    rows = {row["job_id"]: row for row in data["jobs"]}
    assert rows[done.job_id]["cleanup"] == "keep"
    assert rows[done.job_id]["kept_because"] == "un-retrieved"
    assert rows[failed.job_id]["cleanup"] == "remove"
    assert rows[done.job_id]["bytes"] == store.usage(done.job_id).bytes
    totals = data["totals"]
    assert totals["jobs"] == 2
    assert totals["bytes"] == store.usage(done.job_id).bytes + store.usage(failed.job_id).bytes
    assert totals["freeable_bytes"] == store.usage(failed.job_id).bytes
    assert totals["kept_bytes_by_reason"] == {"un-retrieved": store.usage(done.job_id).bytes}

    table = rxjobs(share, "du")
    assert table.exit_code == 0, table.output
    assert done.job_id in table.stdout and "keep (un-retrieved)" in table.stdout
    assert "cleanup would free now" in table.stdout
    assert exists(share, done) and exists(share, failed)  # du removes nothing


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["status", "output", "results", "wait", "cancel", "cleanup"])
def test_invalid_job_id(share, command):
    result = rxjobs(share, command, "../x")
    assert_clean_error(result, "invalid job id")


@pytest.mark.parametrize("command", ["output", "results", "wait", "cancel"])
def test_unknown_job_id(share, command):
    result = rxjobs(share, command, UNKNOWN_ID)
    assert_clean_error(result, UNKNOWN_ID, "not found")


# -- the installed command ---------------------------------------------------------------


def command() -> list[str]:
    installed = Path(sys.executable).with_name("rxjobs")
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "rxjobs"]


def run(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RXJOBS_SHARE_DIR"}
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)


def test_installed_command_lists_json(share):
    assert json.loads(run(*command(), "--share-dir", share, "list", "--json").stdout) == []
    job = ended(share)
    result = run(*command(), "--share-dir", share, "list", "--json")
    assert result.returncode == 0, result.stderr
    assert [row["job_id"] for row in json.loads(result.stdout)] == [job.job_id]


def test_python_m_rxjobs_demo(share):
    result = run(sys.executable, "-m", "rxjobs", "--share-dir", share, "demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in result.stdout
    assert "finished" in result.stdout and "missing" in result.stdout
    assert "rng_seed=42" in result.stdout and "draws the same numbers: True" in result.stdout
    kept = result.stdout.index("0 removed, 1 kept")  # kept, with the warning, then retrieved
    assert "warning: job" in result.stdout[:kept] and "never retrieved" in result.stdout
    assert kept < result.stdout.index("6. rx_get_job_results") < result.stdout.index("1 removed")
    assert open_store(share).list_job_ids() == []  # the demo cleans up after itself


def test_installed_command_error(share):
    result = run(*command(), "--share-dir", share, "output", "../x")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("rxjobs: error: invalid job id")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    unknown = run(*command(), "--share-dir", share, "status", UNKNOWN_ID)
    assert unknown.returncode == 1 and UNKNOWN_ID in unknown.stderr


@pytest.mark.parametrize("args", [
    ["cleanup", "--older-than", "99999999d"],  # once usage, hint, blank line and error
    ["cleanup", "--older-than", "30"],  # a number without a unit
    ["cleanup", "--all", "--max-total-size", "500"],
    ["list", "--state", "done"],
    ["no-such-command"],
    ["--no-such-option", "list"],
])
def test_every_usage_error_is_one_line(share, args):
    result = run(*command(), "--share-dir", share, *args)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.startswith("rxjobs: error: "), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_a_number_without_a_unit_names_the_unit_forms(share):
    said = run(*command(), "--share-dir", share, "cleanup", "--older-than", "30").stderr
    assert "a duration needs a unit: '30'" in said and "7d" in said
    said = run(*command(), "--share-dir", share, "cleanup", "--all", "--max-total-size", "500").stderr
    assert "a size needs a unit: '500'" in said and "500M" in said


def test_an_object_store_error_is_one_line(tmp_path):
    """`rxjobs -o endpoint_url=... --share-dir s3://... list` without credentials once printed a traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RXJOBS_"))}
    env.update(HOME=str(tmp_path), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
    done = subprocess.run([*command(), "-o", "endpoint_url=http://127.0.0.1:9", "--share-dir",
                           "s3://bucket/jobs", "list"], capture_output=True, text=True, timeout=100, env=env)
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("rxjobs: error: "), done.stderr


def test_a_closed_pipe_ends_the_command_quietly(share):
    """`rxjobs list | head` once ended with `rxjobs: error: [Errno 32] Broken pipe`."""
    ended(share)
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before rxjobs writes a byte: every write fails
    try:
        env = {k: v for k, v in os.environ.items() if k != "RXJOBS_SHARE_DIR"}
        for args in (["list"], ["list", "--json"], ["du"]):
            done = subprocess.run([*command(), "--share-dir", share, *args], stdout=writer,
                                  stderr=subprocess.PIPE, text=True, timeout=100, env=env)
            assert done.stderr == "", (args, done.stderr)
            assert done.returncode in (0, 1), (args, done.returncode)
    finally:
        os.close(writer)


@pytest.mark.parametrize("option", ["secret=<redacted>", "client_kwargs={\"key\": \"<redacted>\"}",
                                    "endpoint_url=http://<redacted>@minio:9000"])
def test_a_redacted_placeholder_given_as_an_option_is_a_clear_error(share, option):
    """`rxjobs -o secret=<redacted> list` once died with an AttributeError traceback."""
    result = CliRunner().invoke(cli, ["--share-dir", share, "-o", option, "list"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or \
        isinstance(result.exception, SystemExit)
    assert "<redacted>" in result.stderr and "give the real value" in result.stderr
