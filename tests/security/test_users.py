"""rxjobs used by real Unix users who share a machine and a group: each keeps to their own.

Each test runs rxjobs as two unprivileged users (tests/unix_users.py):
private default share dirs, jobs their owner made unreadable, and a team share
dir of the users' group (setgid and sticky, 3770).
"""

from __future__ import annotations

import os
import stat

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


def test_default_share_dirs_are_private_and_another_user_gets_one_line_errors(unix_users):
    u = unix_users
    job = u.submit(u.alice)  # to her default share dir
    share = u.default_share_dir(u.alice)
    assert stat.S_IMODE(os.stat(share).st_mode) == 0o700
    assert os.stat(share).st_uid == u.alice.uid
    job_dir = share / job
    assert stat.S_IMODE(os.stat(job_dir).st_mode) == 0o700
    alices = u.snapshot(share)
    not_one_line = {}
    for args in (["list"], ["status", job], ["output", job], ["results", job], ["results", job, "--keep"],
                 ["cancel", job], ["wait", job, "--timeout", "1"], ["du"],
                 ["cleanup", job], ["cleanup", job, "--force"], ["cleanup", "--all", "--force"]):
        ran = u.rxjobs(u.bob, "--share-dir", share, *args)
        try:
            if args[0] == "cleanup":  # a report line per job may say it, on stdout or stderr
                ran.refused("permission denied", "another user", "not yours")
                lines = [line for line in (ran.stdout + ran.stderr).splitlines() if line.strip()]
                assert len(lines) <= 2, f"one line to say it (and a summary), got:\n{ran.stdout}{ran.stderr}"
            else:
                ran.one_line_error()
        except AssertionError as exc:
            not_one_line[" ".join(args)] = f"{exc}\n--- stdout:\n{ran.stdout}"
    alices.check()
    assert not not_one_line, "\n".join(f"{k}: {v}" for k, v in not_one_line.items())
    assert u.rxjobs(u.alice, "results", job, "--keep", "--json").ok().json() == [2, 4]


def test_another_users_api_calls_raise_permission_errors_not_crashes(unix_users):
    u = unix_users
    job = u.submit(u.alice)
    share = u.default_share_dir(u.alice)
    ran = u.python(u.bob, """
        import json, sys
        from rxjobs import (RxLocalParallel, RxRemoteJob, rx_cancel_job, rx_cleanup_jobs,
                            rx_get_job_output, rx_get_job_results, rx_get_jobs)
        cc = RxLocalParallel(share_dir=sys.argv[1])
        job = RxRemoteJob(cc, sys.argv[2])
        seen = {}
        for name, call in [("jobs", lambda: rx_get_jobs(cc)),
                           ("output", lambda: rx_get_job_output(job)),
                           ("results", lambda: rx_get_job_results(job, auto_cleanup=True)),
                           ("cancel", lambda: rx_cancel_job(job)),
                           ("cleanup", lambda: rx_cleanup_jobs([job], force=True, verbose=False))]:
            try:
                outcome = call()
                seen[name] = "returned " + str(outcome)[:200]
            except PermissionError as exc:
                seen[name] = "PermissionError"
        print(json.dumps(seen))
    """, share, job).ok()
    seen = ran.json()
    for name in ("jobs", "output", "results", "cancel"):
        assert seen[name] == "PermissionError", seen
    assert "PermissionError" in seen["cleanup"] or "kept" in seen["cleanup"] or "0 removed" in seen["cleanup"]
    assert u.rxjobs(u.alice, "results", job, "--keep", "--json").ok().json() == [2, 4]


@pytest.mark.parametrize("what", ["job dir", "job.json", "tasks dir"])
def test_a_job_its_owner_made_unreadable_is_skipped_by_listing_and_cleanup(unix_users, what):
    u = unix_users
    share = u.homes / u.alice.name / "share"
    hidden, failed, retrieved = u.make_jobs(u.alice, share, ["failed", "failed", "retrieved"])
    target = {"job dir": share / hidden, "job.json": share / hidden / "job.json",
              "tasks dir": share / hidden / "tasks"}[what]
    u.python(u.alice, "import os, sys; os.chmod(sys.argv[1], 0)", target).ok()
    listed = u.rxjobs(u.alice, "--share-dir", share, "list", "--json").no_traceback()
    assert listed.returncode == 0, listed.stderr
    ids = [j["job_id"] for j in listed.json()]
    assert failed in ids and retrieved in ids
    cleaned = u.rxjobs(u.alice, "--share-dir", share, "cleanup", "--all").no_traceback()
    assert "Traceback" not in cleaned.stderr
    assert not (share / failed).exists() and not (share / retrieved).exists(), cleaned.stdout + cleaned.stderr
    assert hidden in cleaned.stdout + cleaned.stderr  # reported, not silently dropped
    assert (share / hidden).exists()  # skipped: its owner made it unreadable on purpose
    assert stat.S_IMODE(os.lstat(target).st_mode) == 0  # and left as she made it


def _running_job(u, who, share):
    """A real job of ``who`` that runs for minutes (a task sleeping 300 s)."""
    return u.submit(who, share, xs=(1,), seconds=300, wait=False)


def _state(u, who, share, job):
    return u.rxjobs(who, "--share-dir", share, "status", job, "--json").ok().json()[0]["state"]


def test_a_team_share_dir_works_for_both_members(unix_users):
    u = unix_users
    team = u.team_dir()  # root:team, setgid + sticky (3770)
    alices = u.submit(u.alice, team)
    bobs = u.submit(u.bob, team)
    assert u.rxjobs(u.alice, "--share-dir", team, "results", alices, "--keep", "--json").ok().json() == [2, 4]
    assert u.rxjobs(u.bob, "--share-dir", team, "results", bobs, "--json").ok().json() == [2, 4]
    assert not (team / bobs).exists()  # collected and cleaned up by its owner
    listed = u.rxjobs(u.bob, "--share-dir", team, "list", "--json").ok().json()
    assert alices in [j["job_id"] for j in listed]  # bob sees that the job is there
    assert (team / alices / "tasks").exists()


def test_in_a_team_share_dir_each_member_cancels_and_removes_only_their_own_jobs(unix_users):
    u = unix_users
    team = u.team_dir()
    alices = _running_job(u, u.alice, team)
    bobs = _running_job(u, u.bob, team)
    done = u.submit(u.alice, team)  # finished, results never retrieved
    alice_done = u.snapshot(team / done)

    u.rxjobs(u.bob, "--share-dir", team, "cancel", alices).one_line_error()
    for job in (alices, done):
        u.rxjobs(u.bob, "--share-dir", team, "cleanup", job, "--force").refused(
            "another user", "owned by", "permission denied")
    assert _state(u, u.bob, team, bobs) == "running"
    swept = u.rxjobs(u.bob, "--share-dir", team, "cleanup", "--all", "--force").no_traceback()
    assert "another user" in swept.stdout + swept.stderr
    assert _state(u, u.alice, team, alices) == "running"
    alice_done.check()
    # ... while the same forced sweep canceled and removed bob's own running job.
    assert not (team / bobs).exists()

    # Each member can act on her own jobs, in the same directory.
    u.rxjobs(u.alice, "--share-dir", team, "cancel", alices).ok()
    assert _state(u, u.alice, team, alices) == "canceled"
    u.rxjobs(u.alice, "--share-dir", team, "cleanup", "--all").ok()
    assert not (team / alices).exists()  # canceled: removed without force
    assert (team / done).exists()  # never retrieved: kept without force
    assert u.rxjobs(u.alice, "--share-dir", team, "results", done, "--json").ok().json() == [2, 4]
