"""A job of a newer format, and a directory that is no job, as every command meets them.

A job whose ``job.json`` has a newer ``format`` (written by a newer rxjobs that
shares the share dir) is listed, ``undetermined``, and every action on it says
which rxjobs it needs; cleanup keeps it.  A directory named like a job without a
``job.json`` is debris: never listed, never removed, and a dry run says so as the
run does, because both ask the one decision (issue 29).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rxjobs import (
    RxLocalParallel,
    RxRemoteJob,
    RxRemoteJobStatus,
    rx_get_job_status,
    rx_get_jobs,
    rx_wait_for_job,
)
from rxjobs.errors import NewerFormatError
from rxjobs.ids import new_job_id
from rxjobs.records import FORMAT_VERSION
from rxjobs.store import open_store

from factory import make_job

pytestmark = pytest.mark.timeout(120)
NEEDS = "rxjobs 9.1.0 or newer"


def command() -> list[str]:
    installed = Path(sys.executable).with_name("rxjobs")
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "rxjobs"]


def rxjobs(share: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RXJOBS_SHARE_DIR"}
    return subprocess.run([*command(), "--share-dir", share, *args], capture_output=True, text=True,
                          timeout=100, env=env)


@pytest.fixture
def share(tmp_path: Path) -> str:
    return str(tmp_path / "share")


def make_newer(share: str, kind: str = "unretrieved") -> str:
    """A job as rxjobs 9.1.0 would write it: the format after ours, and fields this rxjobs never saw."""
    store = open_store(share)
    job = make_job(store, kind)
    path = store.paths(job.job_id).job_json
    data = store.read_json(path)
    data.update(format=FORMAT_VERSION + 1, rxjobs="9.1.0", n_runs="many", placement={"new": "field"})
    os.chmod(path, 0o600)
    Path(path).write_text(json.dumps(data))
    return job.job_id


def make_debris(share: str) -> str:
    store = open_store(share)
    store.ensure_root()
    job_id = new_job_id()
    store.makedir(store.paths(job_id).dir)
    return job_id


def test_a_newer_job_is_listed_undetermined_with_the_rxjobs_it_needs(share):
    newer = make_newer(share)
    ours = make_job(open_store(share), "failed").job_id
    listed = rx_get_jobs(RxLocalParallel(share_dir=share), verbose=False)
    assert sorted(job.job_id for job in listed) == sorted([newer, ours])
    job = RxRemoteJob(RxLocalParallel(share_dir=share), newer)
    assert rx_get_job_status(job) is RxRemoteJobStatus.UNDETERMINED
    # exact_match compares settings this rxjobs cannot read: left out, as documented.
    exact = rx_get_jobs(RxLocalParallel(share_dir=share), exact_match=True, verbose=False)
    assert newer not in [job.job_id for job in exact]
    rows = json.loads(rxjobs(share, "list", "--json").stdout)
    assert {row["job_id"]: row["state"] for row in rows} == {newer: "undetermined", ours: "failed"}
    assert [row["job_id"] for row in json.loads(rxjobs(share, "list", "--json", "--state",
                                                       "undetermined").stdout)] == [newer]


def test_every_action_on_a_newer_job_names_the_rxjobs_it_needs(share):
    newer = make_newer(share)
    [row] = json.loads(rxjobs(share, "status", newer, "--json").stdout)
    assert row["state"] == "undetermined" and NEEDS in row["reason"], row
    for args in (["output", newer], ["results", newer], ["wait", newer, "--timeout", "1"],
                 ["cancel", newer]):
        done = rxjobs(share, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("rxjobs: error: ") and NEEDS in lines[0], args
    with pytest.raises(NewerFormatError, match=NEEDS):
        RxRemoteJob(RxLocalParallel(share_dir=share), newer).result()
    with pytest.raises(NewerFormatError, match=NEEDS):
        rx_wait_for_job(RxRemoteJob(RxLocalParallel(share_dir=share), newer), timeout=600)
    with pytest.raises(NewerFormatError, match=NEEDS):
        RxRemoteJob.deserialize_job(newer, RxLocalParallel(share_dir=share))
    assert open_store(share).is_job_dir(newer)  # nothing above removed it


def entries(data: dict) -> dict[str, tuple[str, str]]:
    """What a `cleanup --json` said of each job: its outcome and reason."""
    rows = data["report"]["jobs"] if "report" in data else data["jobs"]
    return {row["job_id"]: (row["outcome"], row["reason"]) for row in rows}


def test_cleanup_keeps_a_newer_job_even_forced_and_its_dry_run_says_so(share):
    newer = make_newer(share, "failed")
    for args in (["cleanup", newer, "--force"], ["cleanup", "--all", "--force"],
                 ["cleanup", "--older-than", "0s", "--force"]):
        dry = json.loads(rxjobs(share, *args, "--dry-run", "--json").stdout)
        done = json.loads(rxjobs(share, *args, "--json").stdout)
        said, did = entries(dry), entries(done)
        assert said == did == {newer: ("kept", said[newer][1])}, (args, said, did)
        assert NEEDS in said[newer][1]
    assert open_store(share).is_job_dir(newer)


def test_a_newer_record_naming_another_job_is_no_job(share):
    store = open_store(share)
    newer = make_newer(share)
    planted = new_job_id()
    store.makedir(store.paths(planted).dir)
    store.write_atomic(store.paths(planted).job_json, Path(store.paths(newer).job_json).read_bytes())
    listed = [job.job_id for job in rx_get_jobs(RxLocalParallel(share_dir=share), verbose=False)]
    assert listed == [newer]


@pytest.mark.parametrize(("args", "named"), [
    (["--older-than", "0s", "--force"], True), (["--older-than", "0s"], True),
    (["--all", "--force"], True), (["--all"], True),
    (["--max-total-size", "0", "--force"], False),  # the size rule picks only what cleanup removes
])
def test_a_dry_run_says_of_debris_what_the_run_does(share, args, named):
    """`cleanup --older-than 30d --force --dry-run` once said `would remove` of debris the run kept."""
    debris = make_debris(share)
    dry = rxjobs(share, "cleanup", *args, "--dry-run")
    done = rxjobs(share, "cleanup", *args)
    assert "would remove" not in dry.stdout + dry.stderr and "pass force=True" not in dry.stdout + dry.stderr
    said = [line for line in (dry.stdout + dry.stderr).splitlines() if debris in line]
    kept = [line for line in (done.stdout + done.stderr).splitlines() if debris in line]
    assert len(said) == len(kept) == int(named), (said, kept)
    assert all("debris is never removed" in line for line in said + kept), (said, kept)
    assert os.path.isdir(open_store(share).paths(debris).dir)
