"""Issue 23, item 5: a cancel whose ``scancel`` was denied says so, never "canceled".

A real Slurm cluster (tests/slurm_cluster.py) and real users: root runs a Slurm
job named like one of alice's rxjobs jobs; alice's own ``job.json`` names
root's Slurm job (a forged handle).  Her ``rxjobs cancel`` runs ``scancel``,
which Slurm denies: she is told, the exit status is 1, and root's job runs on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, slurm_unavailable

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def slurm():
    """A cluster whose commands other users can run too (its config and munge socket readable)."""
    why = slurm_unavailable()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Slurm tests: {why}")
        pytest.skip(why)
    workdir = Path(tempfile.mkdtemp(prefix="rxjobs-slurm-users-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    cluster = SlurmCluster(workdir)
    try:
        cluster.start()
        os.chmod(workdir / "munge", 0o755)  # the socket; the key stays 0400 root's
        yield cluster
    finally:
        cluster.stop()
        from rxjobs.slurm_client import forget_unreachable

        forget_unreachable()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_denied_scancel_is_reported_not_called_canceled(unix_users, slurm):
    u = unix_users
    share = u.homes / u.alice.name / "share"
    job = u.make_job(u.alice, share, "unretrieved")
    roots = subprocess.run(["sbatch", "--parsable", f"--job-name={job}", "--output=/dev/null",
                            "--wrap", "sleep 300"], capture_output=True, text=True, env=slurm.env(),
                           check=True).stdout.strip().split(";")[0]
    try:
        now = datetime.now(timezone.utc).isoformat()
        u.put(share / job / "status.json", {"state": "running", "reason": "", "started": now,
                                           "updated": now}, u.alice)
        record = json.loads((share / job / "job.json").read_text())  # format 2: the handle is in it
        u.put(share / job / "job.json", {**record, "engine": "slurm", "handle": {
            "array": roots, "final": roots, "job_id": job, "n_tasks": 3}}, u.alice)
        ran = u.rxjobs(u.alice, "--share-dir", share, "cancel", job, env={"SLURM_CONF": str(slurm.conf)})
        said = ran.stdout + ran.stderr
        assert ran.returncode == 1, said
        ran.no_traceback()
        assert f"canceled {job}" not in said
        assert "Slurm refused to cancel" in said and "denied" in said.lower(), said
        state = subprocess.run(["squeue", "-h", "-j", roots, "-o", "%T"], capture_output=True, text=True,
                               env=slurm.env()).stdout.strip()
        assert state in ("RUNNING", "PENDING", "CONFIGURING"), state  # root's job runs on
    finally:
        subprocess.run(["scancel", roots], env=slurm.env(), capture_output=True)


@pytest.mark.parametrize(("returncode", "stderr", "refused"), [
    (0, "", False),
    (1, "scancel: error: Kill job error on job id 12: Access/permission denied\n", True),
    (1, "scancel: error: Kill job error on job id 12: Invalid job id specified\n", False),  # gone
    (1, "scancel: error: Kill job error on job id 12: Job/step already completing or completed\n", False),
    (1, "scancel: error: Invalid user name: mallory\n", True),
])
def test_scancel_refusal_table(returncode, stderr, refused):
    from rxjobs.engines.slurm import scancel_refusal

    said = scancel_refusal(returncode, stderr)
    assert (said is not None) is refused
    if refused:
        assert said in stderr
