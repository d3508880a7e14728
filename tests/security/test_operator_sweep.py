"""The operator's sweep over every user's share dir, as real Unix users, acts as each owner.

Two users (tests/unix_users.py) each have a share dir under a common root, as a
cluster lays them out (``ROOT/<user>/``).  Root runs ``rxjobs cleanup
--all-users ROOT`` and ``rxjobs du --all-users ROOT`` with its own interpreter
(under ``/root``, which the users cannot read: the children that act as the
users must have loaded what they need before dropping root).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

SRC = Path(__file__).resolve().parents[2] / "src"
KINDS = ["unretrieved", "retrieved", "failed", "canceled"]


def root_rxjobs(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``rxjobs ARGS`` as root, with the test's own interpreter and the source under test."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200", "TERM": "dumb"}
    env.pop("RXJOBS_SHARE_DIR", None)
    return subprocess.run([sys.executable, "-m", "rxjobs", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL)


@pytest.fixture
def cluster(unix_users):
    """ROOT/<alice>, ROOT/<bob> with a job of each kind; beside them, things never to touch."""
    u = unix_users
    root = u.mkdir(u.shared / "rxjobs", u.ROOT, 0o755)
    jobs = {}
    for who in (u.alice, u.bob):
        share = u.mkdir(root / who.name, who, 0o700)
        jobs[who.name] = dict(zip(KINDS, u.make_jobs(who, share, KINDS), strict=True))
    # A directory of alice's that is not a share dir (no marker), holding a job look-alike.
    junk = u.canary(root / "junk", u.alice, 0o755)
    # Another share dir of alice's, outside ROOT, reached from ROOT only through symlinks.
    private = u.mkdir(u.homes / u.alice.name / "private", u.alice, 0o700)
    private_jobs = u.make_jobs(u.alice, private, ["failed", "retrieved"])
    os.symlink(private, root / "link-to-private")
    os.symlink(private, root / u.bob.name / "link-to-alices")  # inside bob's share dir: debris
    return u, root, jobs, junk, private, private_jobs


def by_user(data, u):
    return {entry["user"]: entry for entry in data["users"]}


def outcomes(user_entry):
    return {job["job_id"]: job["outcome"] for job in user_entry["run"]["report"]["jobs"]}


def test_root_sweeps_each_users_share_dir_as_that_user(cluster):
    u, root, jobs, junk, private, private_jobs = cluster
    before_private = u.snapshot(private)

    dry = root_rxjobs("cleanup", "--all-users", str(root), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    data = json.loads(dry.stdout)
    assert data["would_remove"] == 6 and data["removed"] == 0
    for who in (u.alice, u.bob):
        assert sorted(os.listdir(root / who.name)) == sorted([".rxjobs-share", *jobs[who.name].values()]) \
            or set(jobs[who.name].values()) <= set(os.listdir(root / who.name))

    ran = root_rxjobs("cleanup", "--all-users", str(root), "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    data = json.loads(ran.stdout)
    users = by_user(data, u)
    assert set(users) == {u.alice.name, u.bob.name}
    for who in (u.alice, u.bob):
        entry = users[who.name]
        assert entry["error"] is None, entry
        assert entry["acted_as"] == {"uid": who.uid, "gid": who.gid}
        mine = jobs[who.name]
        seen = outcomes(entry)
        assert seen[mine["unretrieved"]] == "kept"
        assert {seen[mine[k]] for k in ("retrieved", "failed", "canceled")} == {"removed"}
        assert entry["kept_because"] == {"un-retrieved results": 1}
        share = root / who.name
        left = {n for n in os.listdir(share) if not n.startswith(".")}
        assert mine["unretrieved"] in left
        assert not left & {mine["retrieved"], mine["failed"], mine["canceled"]}
        # What the sweep made there was made by the user, not by root.
        for reserved in (".trash", ".locks"):
            st = os.stat(share / reserved)
            assert (st.st_uid, st.st_gid) == (who.uid, who.gid), reserved
        for name in os.listdir(share / ".locks"):
            assert os.stat(share / ".locks" / name).st_uid == who.uid
    # Never followed: the symlinks under ROOT; never touched: the unmarked directory.
    assert {s["path"] for s in data["skipped"]} >= {str(root / "link-to-private")}
    junk.check()
    before_private.check()
    assert set(private_jobs) <= set(os.listdir(private))
    assert os.path.islink(root / u.bob.name / "link-to-alices")

    # The un-retrieved results go only with --force, still as their owners.
    forced = root_rxjobs("cleanup", "--all-users", str(root), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    users = by_user(json.loads(forced.stdout), u)
    for who in (u.alice, u.bob):
        assert outcomes(users[who.name]) == {jobs[who.name]["unretrieved"]: "removed"}
    before_private.check()
    junk.check()


def test_the_human_report_says_per_user_what_was_kept_and_why(cluster):
    u, root, jobs, *_ = cluster
    ran = root_rxjobs("cleanup", "--all-users", str(root))
    assert ran.returncode == 0, ran.stderr
    for who in (u.alice, u.bob):
        assert f"== {who.name} (uid {who.uid}): {root / who.name}" in ran.stdout
        assert f"kept {jobs[who.name]['unretrieved']} (finished): finished but its results were never " \
               "retrieved" in ran.stdout
        assert f"{who.name}: 3 jobs removed" in ran.stdout and "1 kept (1 un-retrieved results)" in ran.stdout
    assert f"left alone {root / 'link-to-private'}: a symlink: never followed" in ran.stdout


def test_max_total_size_in_total_and_per_user(cluster):
    u, root, jobs, *_ = cluster
    # One byte for all: every job the rules allow goes, the un-retrieved stay; still over: exit 1.
    ran = root_rxjobs("cleanup", "--all-users", str(root), "--max-total-size", "1B", "--in-total",
                      "--json")
    assert ran.returncode == 1, ran.stderr
    data = json.loads(ran.stdout)
    assert data["removed"] == 6 and data["over_max_total_size"] is True
    assert data["bytes_after"] == sum(
        entry["run"]["total_bytes"] for entry in data["users"]) - data["bytes_freed"]
    for who in (u.alice, u.bob):
        assert jobs[who.name]["unretrieved"] in os.listdir(root / who.name)
    # Per user, with room for what is left: nothing more to do, exit 0.
    ran = root_rxjobs("cleanup", "--all-users", str(root), "--max-total-size", "1G", "--json")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr
    assert json.loads(ran.stdout)["removed"] == 0


def test_du_all_users_shows_who_uses_what(cluster):
    u, root, jobs, *_ = cluster
    ran = root_rxjobs("du", "--all-users", str(root), "--json")
    assert ran.returncode == 0, ran.stderr
    data = json.loads(ran.stdout)
    assert set(data["by_user"]) == {u.alice.name, u.bob.name}
    for who in (u.alice, u.bob):
        sums = data["by_user"][who.name]
        assert sums["jobs"] == 4 and sums["bytes"] > 0
        assert 0 < sums["kept_bytes"] < sums["bytes"]  # the un-retrieved job's
    assert data["totals"]["jobs"] == 8
    human = root_rxjobs("du", "--all-users", str(root))
    assert human.returncode == 0, human.stderr
    assert u.alice.name in human.stdout and "2 share dirs" in human.stdout
    for who in (u.alice, u.bob):  # a survey removes nothing
        assert set(jobs[who.name].values()) <= set(os.listdir(root / who.name))


def test_a_non_root_caller_is_refused_with_one_line(cluster):
    u, root, jobs, *_ = cluster
    for args in (["cleanup", "--all-users", str(root), "--force"], ["du", "--all-users", str(root)]):
        ran = u.rxjobs(u.bob, *args)
        line = ran.one_line_error()
        assert "root" in line, line
    for who in (u.alice, u.bob):
        assert set(jobs[who.name].values()) <= set(os.listdir(root / who.name))


def test_a_share_dir_of_a_deleted_user_is_reported_not_touched(cluster):
    u, root, jobs, *_ = cluster
    orphan = root / "gone"
    orphan.mkdir()
    (orphan / ".rxjobs-share").write_text('{"rxjobs": "share dir", "format": 1}')
    os.chown(orphan / ".rxjobs-share", 54321, 54321)
    os.chown(orphan, 54321, 54321)
    ran = root_rxjobs("cleanup", "--all-users", str(root), "--json")
    assert ran.returncode == 1  # one share dir could not be cleaned up
    users = {entry["share_dir"]: entry for entry in json.loads(ran.stdout)["users"]}
    assert "no account" in users[str(orphan)]["error"]
    assert users[str(root / u.alice.name)]["error"] is None
    assert os.listdir(orphan) == [".rxjobs-share"]
