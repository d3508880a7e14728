"""Cleanup cannot be steered outside the share dir (symlinks, a planted trash, swapped names).

Each attack is made by a real user (tests/unix_users.py); a canary outside the
share dir is checked after every attack.
"""

from __future__ import annotations

import os
import stat

import pytest

from unix_users import EXCHANGE

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


def _symlink(u, who, target, link):
    u.python(who, "import os, sys; os.symlink(sys.argv[1], sys.argv[2])", target, link).ok()


def _team_dir_of_an_older_rxjobs(u, who):
    """A team share dir marked by ``who`` with an rxjobs that did not yet make ``.locks``
    and ``.trash`` along with the marker (issue 23): a member can still plant them."""
    team = u.team_dir()
    u.put(team / ".rxjobs-share", {"rxjobs": "share dir", "format": 1}, who, 0o640)
    return team


# -- 1. .trash replaced by a symlink ------------------------------------------------------


@pytest.mark.parametrize("command", [["cleanup", "--all", "--force"], ["cleanup", "--all"]])
def test_the_owners_trash_symlink_never_leads_roots_cleanup_outside(unix_users, command):
    u = unix_users
    share = u.homes / u.alice.name / "share"
    u.make_jobs(u.alice, share, ["retrieved", "failed"])
    roots = u.canary(u.base / "root-only", u.ROOT)  # a root-owned 0700 tree
    _symlink(u, u.alice, roots.path, share / ".trash")
    u.rxjobs(u.ROOT, "--share-dir", share, *command).no_traceback()
    roots.check()
    assert os.path.islink(share / ".trash")  # refused, never followed


def test_a_group_members_trash_symlink_never_leads_the_victims_cleanup_into_her_home(unix_users):
    u = unix_users
    team = _team_dir_of_an_older_rxjobs(u, u.alice)
    job = u.make_job(u.alice, team, "retrieved")  # alice's job: removable without force
    hers = u.canary(u.alice.home / "thesis", u.alice)
    # bob plants .trash before anyone made it: a symlink to alice's folder
    _symlink(u, u.bob, hers.path, team / ".trash")
    ran = u.rxjobs(u.alice, "--share-dir", team, "cleanup", "--all").no_traceback()
    hers.check()
    if ran.returncode != 0:
        assert "trash" in ran.stdout + ran.stderr  # the refusal names what is wrong
    assert (team / job).exists() or not os.path.lexists(hers.path / job)


# -- 2. an ordinary directory taken for a share dir ---------------------------------------


def _ordinary_home(u):
    home = u.alice.home
    for rel, text in {"Documents/cv.txt": "cv", "projects/main.py": "print()", "etc/config": "x=1",
                      "notes/canceled": "a file named like a marker", "data/job.json": "{}"}.items():
        path = home / rel
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    for dirpath, dirnames, filenames in os.walk(home):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), u.alice.uid, u.alice.gid)
    return u.snapshot(home)


@pytest.mark.parametrize("force", [True, False])
def test_cleanup_of_an_ordinary_directory_is_refused(unix_users, force):
    u = unix_users
    home = _ordinary_home(u)
    ran = u.rxjobs(u.alice, "--share-dir", "~", "cleanup", "--all", *(["--force"] if force else []))
    assert ran.returncode == 1
    line = ran.one_line_error()
    assert "rxjobs adopt" in line
    home.check()


def test_the_api_refuses_an_unmarked_non_empty_directory(unix_users):
    u = unix_users
    home = _ordinary_home(u)
    ran = u.python(u.alice, """
        import os, sys
        from rxjobs import RxLocalParallel, rx_cleanup_jobs, rx_get_jobs
        from rxjobs.errors import NotAShareDirError
        try:
            rx_cleanup_jobs(rx_get_jobs(RxLocalParallel(share_dir=os.path.expanduser("~"))), force=True)
        except NotAShareDirError as exc:
            print("refused:", exc)
    """).ok()
    assert ran.stdout.startswith("refused:"), ran.stdout
    home.check()


def test_a_share_dir_rxjobs_makes_is_used_without_adoption(unix_users):
    u = unix_users
    share = u.homes / u.alice.name / "fresh"
    job = u.submit(u.alice, share)
    assert u.rxjobs(u.alice, "--share-dir", share, "results", job, "--json").ok().json() == [2, 4]
    assert u.rxjobs(u.alice, "--share-dir", share, "list").ok()


# -- 7. chmod through a symlink; a dry run creating a lock file through a .locks symlink --


@pytest.mark.parametrize("victim", ["root", "bob"])
def test_a_dry_run_never_creates_a_lock_file_through_a_planted_locks_symlink(unix_users, victim):
    u = unix_users
    if victim == "root":
        actor, share = u.ROOT, u.homes / u.alice.name / "share"
        u.make_jobs(u.alice, share, ["retrieved", "unretrieved"])
        target = u.canary(u.base / "root-only", u.ROOT)
    else:  # a team share dir: alice plants .locks before bob's first cleanup
        actor, share = u.bob, _team_dir_of_an_older_rxjobs(u, u.bob)
        u.make_jobs(u.bob, share, ["retrieved", "unretrieved"])
        target = u.canary(u.bob.home / "reports", u.bob)
    if os.path.lexists(share / ".locks"):
        u.python(u.alice, "import shutil, sys; shutil.rmtree(sys.argv[1])", share / ".locks")
    _symlink(u, u.alice, target.path, share / ".locks")
    u.rxjobs(actor, "--share-dir", share, "cleanup", "--all", "--dry-run").no_traceback()
    u.rxjobs(actor, "--share-dir", share, "cleanup", "--all", "--force", "--dry-run").no_traceback()
    target.check()


def test_deletion_never_chmods_through_a_swapped_entry(unix_users):
    """bob cleans a team share dir whose .trash alice made (group-writable, full of entries
    with an unreadable subdirectory that she keeps swapping with a symlink to bob's file):
    bob's file keeps its mode."""
    u = unix_users
    team = _team_dir_of_an_older_rxjobs(u, u.bob)
    bobs_file = u.bob.home / "public.html"
    bobs_file.write_text("<p>hello</p>")
    os.chown(bobs_file, u.bob.uid, u.bob.gid)
    os.chmod(bobs_file, 0o644)
    hers = u.snapshot(u.bob.home)
    entries, attempts = 20, 300
    u.python(u.alice, """
        import os, sys
        trash, target, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
        os.mkdir(trash, 0o777); os.chmod(trash, 0o2777)
        for i in range(n):
            entry = f"{trash}/rxJob_{i:06d}.1-1-abcd"
            os.mkdir(entry); os.chmod(entry, 0o777)
            os.mkdir(f"{entry}/sub", 0)
            os.symlink(target, f"{entry}/link")
    """, team / ".trash", bobs_file, entries).ok()
    swapper = u.spawn(u.alice, EXCHANGE + """
import os, sys, time
trash, target, stop = sys.argv[1], sys.argv[2], sys.argv[3]
swaps, deadline = 0, time.monotonic() + 200
while not os.path.exists(stop) and time.monotonic() < deadline:
    # The cleaner meets the entries in directory order: swap in the first ones.
    for name in sorted(os.listdir(trash), key=os.listdir(trash).index)[:2]:
        entry = f"{trash}/{name}"
        for _ in range(200):
            try:
                if not os.path.lexists(f"{entry}/sub"):
                    os.mkdir(f"{entry}/sub", 0)
                if not os.path.lexists(f"{entry}/link"):
                    os.symlink(target, f"{entry}/link")
                exchange(f"{entry}/sub", f"{entry}/link")
                swaps += 1
            except OSError:
                break
print(swaps)
""", team / ".trash", bobs_file, u.base / "stop")
    stop = u.base / "stop"
    try:
        job_ids = u.make_jobs(u.bob, team, ["retrieved"] * 5)
        u.python(u.bob, """
            import sys, warnings
            from rxjobs import RxLocalParallel, RxRemoteJob, rx_cleanup_jobs
            warnings.simplefilter("ignore")
            cc = RxLocalParallel(share_dir=sys.argv[1])
            for attempt in range(int(sys.argv[2])):
                try:
                    rx_cleanup_jobs([RxRemoteJob(cc, j) for j in sys.argv[3:]], verbose=False)
                except Exception:
                    pass
        """, team, attempts, *job_ids, timeout=240).no_traceback()
    finally:
        stop.touch()
        out, _ = swapper.communicate(timeout=60)
    assert stat.S_IMODE(os.stat(bobs_file).st_mode) == 0o644
    hers.check()
    assert int(out.split()[-1]) >= 200
