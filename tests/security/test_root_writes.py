"""Issue 23, item 3: root creates nothing in a directory it does not own, and a squatted
reserved entry of a team share dir is reported with its fix and repaired by the owner.

Real Unix users (tests/unix_users.py), made once for the module; root runs the
``rxjobs`` command with the users' interpreter.
"""

from __future__ import annotations

import os
import stat

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

KINDS = ["unretrieved", "retrieved", "failed", "canceled"]
READ_ONLY = [["cleanup", "--all", "--dry-run"], ["cleanup", "--all", "--force", "--dry-run"],
             ["cleanup", "--older-than", "0s", "--dry-run", "--json"], ["doctor"], ["doctor", "--json"],
             ["list"], ["list", "--json"], ["du"], ["du", "--json"], ["status"], ["status", "--json"]]


@pytest.fixture(scope="module")
def u(module_unix_users):
    return module_unix_users


def test_roots_read_only_commands_create_nothing_in_a_users_share_dir(u):
    share = u.homes / u.alice.name / "ro-share"
    jobs = u.make_jobs(u.alice, share, KINDS)
    assert not os.path.lexists(share / ".locks")
    before = u.snapshot(share)
    for args in [*READ_ONLY, ["status", jobs[0]], ["output", jobs[1]]]:
        ran = u.rxjobs(u.ROOT, "--share-dir", share, *args)
        ran.no_traceback()
        before.check()  # nothing added, nothing changed: no root-owned .locks/ either
    # Her own cleanup still works (nothing of root's is in her way).
    u.rxjobs(u.alice, "--share-dir", share, "cleanup", "--all").ok()
    assert os.stat(share / ".locks").st_uid == u.alice.uid


def test_root_refuses_to_write_in_a_users_share_dir_and_adopt_leaves_no_marker(u):
    share = u.homes / u.alice.name / "rw-share"
    u.make_jobs(u.alice, share, ["retrieved", "failed"])
    before = u.snapshot(share)
    ran = u.rxjobs(u.ROOT, "--share-dir", share, "cleanup", "--all", "--force")
    assert ran.returncode != 0
    ran.no_traceback()
    assert "root creates nothing" in ran.stdout + ran.stderr and "runuser -u" in ran.stdout + ran.stderr
    before.check()
    # A share dir of an older rxjobs (no marker): root's adopt refuses and writes nothing.
    old = u.homes / u.alice.name / "old-share"
    u.make_jobs(u.alice, old, ["retrieved"])
    u.python(u.alice, "import os, sys; os.remove(sys.argv[1])", old / ".rxjobs-share").ok()
    unmarked = u.snapshot(old)
    line = u.rxjobs(u.ROOT, "--share-dir", old, "adopt").one_line_error()
    assert "root creates nothing" in line and f"uid {u.alice.uid}" in line, line
    unmarked.check()
    u.rxjobs(u.alice, "--share-dir", old, "adopt").ok()
    assert os.stat(old / ".rxjobs-share").st_uid == u.alice.uid


def test_a_new_team_share_dir_gets_its_reserved_entries_at_once(u):
    team = u.team_dir("fresh-team")
    u.make_jobs(u.alice, team, ["retrieved"])
    for name in (".locks", ".trash"):
        st = os.lstat(team / name)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o3770, name
        assert st.st_gid == u.team_gid
    squat = u.python(u.bob, """
        import os, sys
        for name in (".locks", ".trash"):
            try:
                os.rename(os.path.join(sys.argv[1], name), os.path.join(sys.argv[1], name + ".mine"))
                print("renamed")
            except PermissionError:
                print("refused")
    """, team).ok()
    assert squat.stdout.split() == ["refused", "refused"]
    u.make_jobs(u.bob, team, ["retrieved"])
    u.rxjobs(u.bob, "--share-dir", team, "cleanup", "--all").ok()


def test_a_squatted_locks_is_reported_with_its_fix_and_set_aside_by_the_owner(u):
    team = u.team_dir("squatted-team")
    u.python(u.bob, "import os, sys; os.mkdir(sys.argv[1], 0o755)", team / ".locks").ok()
    blocked = u.rxjobs(u.alice, "--share-dir", team, "list")  # reads work, writes are refused
    blocked.no_traceback()
    refused = u.python(u.alice, """
        import sys
        from factory import make_job
        from rxjobs.store import open_store
        try:
            make_job(open_store(sys.argv[1]), "retrieved")
        except Exception as exc:
            print(type(exc).__name__, exc)
    """, team).ok()
    assert refused.stdout.startswith("UnsafeShareDirError"), refused.stdout
    assert f"--share-dir {team} doctor --fix" in refused.stdout and "uid 0" in refused.stdout
    # alice's doctor says so too, and leaves it (she is not the team dir's owner).
    said = u.rxjobs(u.alice, "--share-dir", team, "doctor")
    assert "reserved entry: .locks" in said.stdout and "[left alone]" in said.stdout, said.stdout
    # The team dir's owner (root) sets it aside; then everyone works again.
    fixed = u.rxjobs(u.ROOT, "--share-dir", team, "doctor", "--fix")
    assert "reserved entry: .locks" in fixed.stdout and "[set aside]" in fixed.stdout, fixed.stdout
    aside = [n for n in os.listdir(team) if n.startswith(".locks.squatted-")]
    assert len(aside) == 1 and os.stat(team / aside[0]).st_uid == u.bob.uid
    job = u.make_job(u.alice, team, "retrieved")
    u.rxjobs(u.alice, "--share-dir", team, "cleanup", job).ok()
    st = os.lstat(team / ".locks")
    assert st.st_uid == u.alice.uid and stat.S_IMODE(st.st_mode) == 0o3770
    # What was set aside is bob's to remove, and doctor says so.
    assert "only its owner can remove it" in u.rxjobs(u.alice, "--share-dir", team, "doctor").stdout
