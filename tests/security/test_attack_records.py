"""Hostile records never crash or mislead a command, and credentials are never written by value.

Users do not matter here: the records are made by whoever owns the share dir,
and the ``rxjobs`` command runs in a subprocess (its time bounded, its stderr
checked for tracebacks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rxjobs import RxLocalParallel, rx_exec
from rxjobs.store import MAX_RECORD_BYTES, open_store

from conftest import kill_processes_mentioning
from factory import make_job

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]
SRC = str(Path(__file__).resolve().parents[2] / "src")


def rxjobs_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200"}
    try:
        done = subprocess.run([sys.executable, "-m", "rxjobs", *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`rxjobs {' '.join(map(str, args))}` did not end within {timeout} s")
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


@pytest.fixture
def share(tmp_path):
    path = tmp_path / "share"
    yield path
    kill_processes_mentioning(str(path))


def _nested(depth: int = 200_000) -> str:
    text = "[" * depth + "]" * depth
    assert len(text) < MAX_RECORD_BYTES
    return text


@pytest.mark.parametrize("record", ["job.json", "status.json", "engine.json"])
def test_deeply_nested_records_give_no_traceback(share, record):
    store = open_store(share)
    hostile = make_job(store, "unretrieved").job_id
    fine = make_job(store, "failed").job_id
    if record != "status.json":  # a running job, so that engine.json is read
        (share / hostile / "status.json").write_text(json.dumps({"state": "running", "reason": ""}))
    if record == "job.json":
        (share / hostile / record).write_text(_nested())
    else:
        (share / hostile / record).write_text(f'{{"nested": {_nested()}}}')
    listed = rxjobs_cli("--share-dir", share, "list", "--json")
    assert listed.returncode == 0
    assert fine in listed.stdout
    for args in (["status", hostile], ["output", hostile], ["results", hostile, "--keep"],
                 ["wait", hostile, "--timeout", "1"], ["cleanup", "--all", "--dry-run"], ["du"]):
        rxjobs_cli("--share-dir", share, *args)
    rxjobs_cli("--share-dir", share, "cleanup", "--all", "--force")
    assert not (share / fine).exists()
    if record != "job.json":  # a job whose job.json parses: removable with force
        assert not (share / hostile).exists()


def test_a_job_claiming_a_trillion_tasks_neither_hangs_nor_crashes(share):
    store = open_store(share)
    job = make_job(store, "unretrieved").job_id
    record = json.loads((share / job / "job.json").read_text())
    record.update(n_tasks=10**12, n_runs=10**12)
    (share / job / "job.json").write_text(json.dumps(record))
    for args in (["status", job], ["output", job], ["results", job, "--keep"], ["list"], ["du"],
                 ["wait", job, "--timeout", "2", "--progress"], ["wait", job, "--timeout", "2"]):
        rxjobs_cli("--share-dir", share, *args, timeout=60)
    (share / job / "status.json").write_text(json.dumps({"state": "running", "reason": ""}))
    rxjobs_cli("--share-dir", share, "wait", job, "--timeout", "2", "--progress", timeout=60)


@pytest.mark.parametrize("args", [["cleanup", "--all", "--older-than", "99999999d"],
                                  ["cleanup", "--all", "--dry-run", "--older-than", "99999999d"],
                                  ["list", "--until", "99999999d"], ["list", "--since", "99999999d"],
                                  ["du", "--older-than", "99999999d"]])
def test_out_of_range_durations_are_usage_errors(share, args):
    make_job(open_store(share), "failed")
    done = rxjobs_cli("--share-dir", share, *args)
    assert done.returncode in (1, 2), done.stdout
    assert "99999999d" in done.stderr or "range" in done.stderr.lower(), done.stderr


SECRETS = ("hunter2", "s3cr3t-in-url", "my-passphrase", "pwd-value", "login-value", "cookie-value",
           "bearer-token-value", "basic-credential", "proxy-password")


def _options():
    return {
        "config_kwargs": {"proxies": {"https": "http://proxyuser:proxy-password@proxy.example:3128"}},
        "endpoint_url": "https://AKIAEXAMPLE:s3cr3t-in-url@minio.example:9000",
        "passphrase": "my-passphrase",
        "pwd": "pwd-value",
        "login": "login-value",
        "client_kwargs": {"headers": {"Cookie": "session=cookie-value",
                                      "Authorization": "Bearer bearer-token-value",
                                      "Proxy-Authorization": "Basic basic-credential"},
                          "proxy": "socks5://user:hunter2@socks.example:1080"},
    }


def test_credentials_by_value_never_reach_job_json(share):
    """A real submit on a local share dir with storage options holding credentials under
    innocent names and inside URLs: no file of the job holds one of them."""
    url = f"file://{share}"
    cc = RxLocalParallel(num_workers=1, share_dir=url, share_dir_options=_options())
    assert rx_exec(pow, args=[{"base": 2, "exp": 3}], compute_context=cc, auto_cleanup=False) == [8]
    (job_dir,) = [p for p in share.iterdir() if p.name.startswith("rxJob_")]
    record = (job_dir / "job.json").read_text()
    assert "minio.example" in record  # the options are recorded, credentials left out
    for path in job_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in data, f"{secret} written to {path.relative_to(share)}"
