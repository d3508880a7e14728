"""Retention from the command line: every option of ``rxjobs cleanup`` and ``rxjobs du``.

Jobs are made by ``factory`` (backdated, of chosen sizes, in every terminal
state) next to real jobs run by ``rx_exec`` (a running one and one whose
results were never collected), in one local share dir per test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rxjobs import RxLocalParallel, RxRemoteJobStatus, rx_exec, rx_get_job_status, rx_wait_for_job
from rxjobs.cli import cli
from rxjobs.store import Store, open_store

from conftest import processes_mentioning, wait_until
from engine_contract import sleep_then_return, square
from factory import make_job

pytestmark = pytest.mark.timeout(180)
S = RxRemoteJobStatus
NOW = datetime.now(timezone.utc)


def rxjobs(share: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--share-dir", share, *args])


def json_of(result: Result) -> dict:
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


@pytest.fixture
def share(local_share) -> str:
    return local_share


@pytest.fixture
def store(share) -> Store:
    return open_store(share)


def old(store: Store, kind: str, days: float, size: int = 0, **kwargs):
    return make_job(store, kind, at=NOW - timedelta(days=days), extra_bytes=size, **kwargs)


def ids(store: Store) -> set[str]:
    return set(store.list_job_ids())


def removed_ids(result: Result) -> list[str]:
    return [e["job_id"] for e in json_of(result)["jobs"] if e["outcome"] == "removed"]


@pytest.fixture
def real_jobs(share):
    """A running job and a finished job whose results were never collected, both new."""
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=share)
    unretrieved = rx_exec(square, x=[1, 2], compute_context=cc)
    running = rx_exec(sleep_then_return, seconds=[300], compute_context=cc)
    assert rx_wait_for_job(unretrieved, timeout=120) is S.FINISHED
    wait_until(lambda: rx_get_job_status(running) is S.RUNNING, what="the job to run")
    return unretrieved, running


# -- choosing by age, state and count --------------------------------------------------------


def test_older_than_and_state_choose_among_all_jobs(share, store):
    a = old(store, "failed", 40)
    b = old(store, "canceled", 20)
    c = old(store, "failed", 2)
    d = old(store, "unretrieved", 50)
    result = rxjobs(share, "cleanup", "--older-than", "30d", "--json")  # no --all needed
    data = json_of(result)
    assert result.exit_code == 0
    assert [(e["job_id"], e["outcome"]) for e in data["jobs"]] == [(d.job_id, "kept"),
                                                                   (a.job_id, "removed")]
    assert {p["job_id"]: p["why"] for p in data["picked"]} == {a.job_id: "older than 30d",
                                                               d.job_id: "older than 30d"}
    assert ids(store) == {b.job_id, c.job_id, d.job_id}
    result = rxjobs(share, "cleanup", "--state", "failed", "--state", "canceled", "--older-than", "10d")
    assert result.exit_code == 0, result.output
    assert f"removed {b.job_id}" in result.stdout and "older than 10d" in result.stdout
    assert ids(store) == {c.job_id, d.job_id}


def test_keep_last_never_removes_the_newest(share, store):
    made = [old(store, "failed", days) for days in (5, 4, 3, 2, 1)]
    result = rxjobs(share, "cleanup", "--keep-last", "2", "--json")
    assert result.exit_code == 0, result.output
    assert removed_ids(result) == [j.job_id for j in made[:3]]
    assert json_of(result)["protected"] == [j.job_id for j in made[3:]]
    assert ids(store) == {j.job_id for j in made[3:]}
    again = rxjobs(share, "cleanup", "--keep-last", "2", "--older-than", "0s", "--force")
    assert again.exit_code == 0 and "0 jobs removed" in again.stdout
    assert rxjobs(share, "cleanup", "--keep-last", "-1").exit_code == 2


# -- --max-total-size ---------------------------------------------------------------------


def test_max_total_size_removes_the_oldest_removable_jobs_until_under(share, store, real_jobs):
    unretrieved, running = real_jobs
    a = old(store, "failed", 9, 20_000)
    b = old(store, "unretrieved", 8, 40_000)  # kept by the rules: never removed without --force
    c = old(store, "retrieved", 7, 20_000)
    d = old(store, "canceled", 6, 20_000)
    e = old(store, "failed", 5, 20_000)
    size = {job_id: store.usage(job_id).bytes for job_id in store.list_job_ids()}
    total = sum(size.values())
    # Room for everything but about two of the 20 kB jobs: the two oldest removable ones go.
    limit = total - size[a.job_id] - size[c.job_id] + 1
    result = rxjobs(share, "cleanup", "--max-total-size", f"{limit}B", "--json")
    assert result.exit_code == 0, result.output
    data = json_of(result)
    assert removed_ids(result) == [a.job_id, c.job_id]
    assert data["bytes_freed"] == size[a.job_id] + size[c.job_id]
    assert data["total_bytes"] == total and data["bytes_after"] <= limit
    assert not data["over_max_total_size"]

    # Nothing the rules keep goes, however small the limit: exit 1, and it says why.
    result = rxjobs(share, "cleanup", "--max-total-size", "0")
    assert result.exit_code == 1, result.output
    assert f"removed {d.job_id}" in result.stdout and f"removed {e.job_id}" in result.stdout
    assert "over --max-total-size" in result.stderr and "--force" in result.stderr
    assert ids(store) == {b.job_id, unretrieved.job_id, running.job_id}
    assert rx_get_job_status(running) is S.RUNNING

    # With --force they go too, the running job canceled on its engine first.
    result = rxjobs(share, "cleanup", "--max-total-size", "0", "--force", "--json")
    assert result.exit_code == 0, result.output
    assert removed_ids(result) == sorted([b.job_id, unretrieved.job_id, running.job_id])
    assert ids(store) == set()
    assert not processes_mentioning(running.job_id)


def test_max_total_size_with_other_options(share, store):
    a = old(store, "failed", 9, 30_000)
    b = old(store, "canceled", 8, 30_000)
    c = old(store, "failed", 7, 30_000)
    newest = old(store, "failed", 1, 30_000)
    size = {job_id: store.usage(job_id).bytes for job_id in store.list_job_ids()}
    total = sum(size.values())
    # --state restricts what the size rule may take: b (canceled) is skipped.
    result = rxjobs(share, "cleanup", "--state", "failed", "--max-total-size",
                    f"{total - size[a.job_id] - 1}B", "--json")
    assert removed_ids(result) == [a.job_id, c.job_id]
    # --keep-last protects the newest even when the size is not reached.
    result = rxjobs(share, "cleanup", "--keep-last", "1", "--max-total-size", "0", "--json")
    assert result.exit_code == 1  # still over: the newest job is kept
    assert removed_ids(result) == [b.job_id]
    assert ids(store) == {newest.job_id}


def test_older_than_and_max_total_size_add_up(share, store):
    a = old(store, "failed", 40, 10_000)
    b = old(store, "failed", 5, 50_000)
    c = old(store, "failed", 4, 50_000)
    size = {job_id: store.usage(job_id).bytes for job_id in store.list_job_ids()}
    # a goes for its age; then the size rule still needs one more, the oldest: b.
    limit = size[c.job_id] + 1
    result = rxjobs(share, "cleanup", "--older-than", "30d", "--max-total-size", f"{limit}B", "--json")
    assert result.exit_code == 0, result.output
    assert {p["job_id"]: p["why"] for p in json_of(result)["picked"]} == {
        a.job_id: "older than 30d", b.job_id: f"share dir over {limit} bytes"}
    assert ids(store) == {c.job_id}


# -- dry runs, JSON, the policy file -------------------------------------------------------


def test_dry_run_shows_exactly_what_goes_and_the_bytes_it_frees(share, store, real_jobs):
    made = [old(store, kind, days, 5_000 * days) for kind, days in
            (("failed", 6), ("unretrieved", 5), ("retrieved", 4), ("canceled", 3))]
    before = {job_id: store.usage(job_id) for job_id in store.list_job_ids()}
    args = ["cleanup", "--older-than", "2d", "--max-total-size", "1B", "--json"]
    dry = json_of(rxjobs(share, *args, "--dry-run"))
    assert ids(store) == set(before)  # nothing removed
    would = [e["job_id"] for e in dry["jobs"] if e["outcome"] == "would remove"]
    assert would == [made[0].job_id, made[2].job_id, made[3].job_id]
    assert dry["bytes_would_free"] == sum(before[j].bytes for j in would)
    assert [e["files"] for e in dry["jobs"] if e["outcome"] == "would remove"] == [
        before[j].files for j in would]
    human = rxjobs(share, *args[:-1], "--dry-run")
    assert human.exit_code == 0, human.output
    for job_id in would:
        assert f"would remove {job_id}" in human.stdout
    assert f"kept {made[1].job_id}" in human.stdout
    assert "3 jobs would be removed" in human.stdout
    real = json_of(rxjobs(share, *args))
    assert removed_ids_of(real) == would
    assert real["bytes_freed"] == dry["bytes_would_free"]
    assert real["files_freed"] == sum(before[j].files for j in would)


def removed_ids_of(data: dict) -> list[str]:
    return [e["job_id"] for e in data["jobs"] if e["outcome"] == "removed"]


def test_policy_file(share, store, tmp_path):
    a = old(store, "failed", 40)
    b = old(store, "failed", 20)
    c = old(store, "unretrieved", 60)
    policy = tmp_path / "policy.toml"
    policy.write_text('# keep a month of jobs\nolder_than = "30d"\nkeep_last = 1\n')
    dry = rxjobs(share, "cleanup", "--policy", str(policy), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would remove {a.job_id}" in dry.stdout and f"kept {c.job_id}" in dry.stdout
    assert b.job_id not in dry.stdout
    # Options given on the command line win over the file's keys.
    result = rxjobs(share, "cleanup", "--policy", str(policy), "--older-than", "10d", "--json")
    assert result.exit_code == 0, result.output
    assert json_of(result)["policy"] == {"older_than": "10d", "max_total_size": None, "keep_last": 1,
                                         "states": None, "force": False}
    assert removed_ids(result) == [a.job_id]  # b is the newest: kept by keep_last
    policy.write_text("force = true\n")
    assert rxjobs(share, "cleanup", "--policy", str(policy)).exit_code == 0
    assert ids(store) == set()
    policy.write_text('older_then = "7d"\n')
    bad = rxjobs(share, "cleanup", "--policy", str(policy))
    assert bad.exit_code == 1 and "unknown key(s) older_then" in bad.stderr
    assert "Traceback" not in bad.output
    missing = rxjobs(share, "cleanup", "--policy", str(tmp_path / "nope.toml"))
    assert missing.exit_code == 1 and "nope.toml" in missing.stderr


def test_expired_jobs_go_with_any_retention_run_unless_protected(share, store):
    expired = old(store, "unretrieved", 3, expires_after=timedelta(days=1))
    fresh = old(store, "unretrieved", 3, expires_after=timedelta(days=30))
    protected = old(store, "unretrieved", 2, expires_after=timedelta(hours=1))
    result = rxjobs(share, "cleanup", "--older-than", "30d", "--keep-last", "1")
    assert result.exit_code == 0, result.output
    assert f"removed {expired.job_id}" in result.stdout and "expired" in result.stdout
    assert ids(store) == {fresh.job_id, protected.job_id}
    result = rxjobs(share, "cleanup", "--all", "--json")
    assert [(e["job_id"], e["outcome"], e["expired"]) for e in json_of(result)["jobs"]] == [
        (fresh.job_id, "kept", False), (protected.job_id, "removed", True)]


def test_usage_errors(share, store):
    job = old(store, "failed", 1)
    for args in (["--max-total-size", "1G"], ["--keep-last", "1"], ["--policy", "p.toml"]):
        result = rxjobs(share, "cleanup", job.job_id, *args)
        assert result.exit_code == 2 and "do not name jobs" in result.output
    bad = rxjobs(share, "cleanup", "--max-total-size", "lots")
    assert bad.exit_code == 2 and "not a size" in bad.output
    assert rxjobs(share, "cleanup").exit_code == 2
    assert ids(store) == {job.job_id}


# -- du ------------------------------------------------------------------------------------


def test_du_per_state_largest_jobs_and_what_each_policy_frees(share, store, real_jobs):
    unretrieved, running = real_jobs
    failed = old(store, "failed", 10, 30_000)
    canceled = old(store, "canceled", 9, 10_000)
    expired = old(store, "unretrieved", 8, 20_000, expires_after=timedelta(days=1))
    size = {job_id: store.usage(job_id).bytes for job_id in store.list_job_ids()}
    result = rxjobs(share, "du", "--top", "2", "--older-than", "9d12h", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["by_state"]["failed"] == {"jobs": 1, "files": store.usage(failed.job_id).files,
                                          "bytes": size[failed.job_id]}
    assert data["by_state"]["finished"]["jobs"] == 2
    assert data["by_state"]["running"]["jobs"] == 1
    assert [row["job_id"] for row in data["largest"]] == [failed.job_id, expired.job_id]
    freed = {p["policy"]: p["bytes"] for p in data["policies"]}
    removable = size[failed.job_id] + size[canceled.job_id] + size[expired.job_id]
    assert freed == {
        "cleanup --all": removable,
        "cleanup --all --force": sum(size.values()),
        "expired jobs": size[expired.job_id],
        "cleanup --older-than 9d12h": size[failed.job_id] + size[expired.job_id],
    }
    assert data["totals"]["freeable_bytes"] == removable
    rows = {row["job_id"]: row for row in data["jobs"]}
    assert rows[expired.job_id]["expired"] and rows[expired.job_id]["cleanup"] == "remove"
    assert rows[running.job_id]["kept_because"] == "running"
    assert rows[unretrieved.job_id]["kept_because"] == "un-retrieved"

    table = rxjobs(share, "du", "--max-total-size", "1B")
    assert table.exit_code == 0, table.output
    for words in ("cleanup would free now", "largest jobs", "cleanup --all --force",
                  "cleanup --max-total-size 1B", "expired jobs", "keep (un-retrieved)"):
        assert words in table.stdout
    assert ids(store) == set(size)  # du removes nothing
    # What du said the policy frees is what cleanup then frees.
    cleaned = json_of(rxjobs(share, "cleanup", "--older-than", "9d12h", "--json"))
    assert cleaned["bytes_freed"] == freed["cleanup --older-than 9d12h"]


# -- the way retention is run: a cron line or a systemd timer ------------------------------


def test_the_cron_line_of_docs_retention_md(share, store, tmp_path):
    """``rxjobs cleanup --policy FILE`` as the installed command, as a timer runs it."""
    a = old(store, "failed", 40)
    keep = old(store, "unretrieved", 40)
    policy = tmp_path / "policy.toml"
    policy.write_text('older_than = "30d"\nmax_total_size = "50G"\n')
    installed = Path(sys.executable).with_name("rxjobs")
    command = [str(installed)] if installed.exists() else [sys.executable, "-m", "rxjobs"]
    env = {**os.environ, "RXJOBS_SHARE_DIR": share}
    started = time.monotonic()
    done = subprocess.run([*command, "cleanup", "--policy", str(policy)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"removed {a.job_id}" in done.stdout and f"kept {keep.job_id}" in done.stdout
    assert time.monotonic() - started < 60
    assert ids(store) == {keep.job_id}
