"""Issue 23, item 1: the operator's sweep against neighbours who swap, plant or stop things.

Real Unix users (tests/unix_users.py), made once for the module.  Root sweeps;
alice, a member of bob's team, attacks bob's share dir:

- she keeps exchanging ``ROOT/g/bob`` (in a group directory without the
  sticky bit) with a symlink to bob's *private* share dir elsewhere, for at
  least 60 s, while root sweeps with ``--force``;
- she plants ``.rxjobs-share`` in a ROOT anyone may write;
- the process acting as a user is stopped (``SIGSTOP``, which its user may
  send) and the sweep must go on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rxjobs import sweep as sweep_module
from rxjobs.retention import RetentionPolicy
from rxjobs.sweep import find_share_dirs, open_root, run_as_owner, sweep_cleanup, sweep_usage

from trials import full_trials
from unix_users import EXCHANGE

pytestmark = [pytest.mark.faults, pytest.mark.timeout(400)]

SRC = Path(__file__).resolve().parents[2] / "src"
# How long the symlink-swap race runs: 60 s at full counts (RXJOBS_FULL_TRIALS=1), else 15 s, and
# on up to 60 s while no sweep has reached the swapped share dir yet (the race must have been run).
FULL_SWAP_SECONDS = 60
SWAP_SECONDS = FULL_SWAP_SECONDS if full_trials() else 15


def root_rxjobs(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``rxjobs ARGS`` as root, with the test's own interpreter and the source under test."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200", "TERM": "dumb"}
    env.pop("RXJOBS_SHARE_DIR", None)
    return subprocess.run([sys.executable, "-m", "rxjobs", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def u(module_unix_users):
    return module_unix_users


def test_a_share_dir_swapped_for_a_symlink_is_never_followed(u):
    """A share dir that another user swaps for a symlink to a private dir, thousands of times
    while root sweeps (``SWAP_SECONDS``), is refused as shipped, and without that refusal the
    sweep never follows the link: the private dir's jobs are untouched."""
    root = u.mkdir(u.shared / "race-root", u.ROOT, 0o755)
    group = u.mkdir(root / "g", u.ROOT, 0o2770, group=u.team_gid)  # members rename in it
    share = root / "g" / "bob"
    u.make_jobs(u.bob, share, ["retrieved", "failed"])
    private = u.mkdir(u.homes / u.bob.name / "race-private", u.bob, 0o700)
    u.make_jobs(u.bob, private, ["unretrieved"] * 20)
    before = u.snapshot(private)
    link = group / "link"
    u.python(u.alice, "import os, sys; os.symlink(sys.argv[1], sys.argv[2])", private, link).ok()
    stop = u.base / "stop-race"
    swapper = u.spawn(u.alice, EXCHANGE + """
import os, sys, time
a, b, stop, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
swaps, deadline = 0, time.monotonic() + seconds
while not os.path.exists(stop) and time.monotonic() < deadline:
    exchange(a, b)
    swaps += 1
if swaps % 2:
    exchange(a, b)  # leave each where it was
print(swaps)
""", share, link, stop, FULL_SWAP_SECONDS + 240)
    refused = swept = sweeps = 0
    started = time.monotonic()
    try:
        while (time.monotonic() - started < SWAP_SECONDS
               or (swept == 0 and time.monotonic() - started < FULL_SWAP_SECONDS)):
            # As shipped: bob's share dir sits in a directory alice can rename in: not swept.
            ran = root_rxjobs("cleanup", "--all-users", str(root), "--force", "--json")
            assert "Traceback" not in ran.stderr, ran.stderr
            data = json.loads(ran.stdout)
            assert data["users"] == [], data
            refused += any("not swept" in s["reason"] and "chmod +t" in s["reason"] for s in data["skipped"])
            # Without that refusal, the descriptor handed to the child must still hold.
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(sweep_module, "exposure", lambda *args: None)
                for _ in range(5):
                    report = sweep_cleanup(str(root), RetentionPolicy(force=True))
                    sweeps += 1
                    swept += sum(1 for user in report.users if user.error is None)
    finally:
        stop.touch()
        out, err = swapper.communicate(timeout=60)
    assert int(out.split()[-1]) > 1000, err
    assert refused > 0 and sweeps > 10
    assert swept > 0, "no sweep ever reached bob's share dir: the race was not run"
    before.check()  # bob's private share dir: all 20 jobs, untouched


def test_a_marker_planted_in_root_by_a_user_is_ignored(u):
    root = u.mkdir(u.shared / "open-root", u.ROOT, 0o1777)  # as /scratch: anyone makes a dir
    jobs = {}
    for who in (u.alice, u.bob):
        jobs[who.name] = u.make_job(who, u.mkdir(root / who.name, who, 0o700), "retrieved")
    marker = '{"rxjobs": "share dir", "format": 1}'
    u.python(u.alice, "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", root / ".rxjobs-share",
             marker).ok()
    ran = root_rxjobs("cleanup", "--all-users", str(root), "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    data = json.loads(ran.stdout)
    assert {entry["user"] for entry in data["users"]} == {u.alice.name, u.bob.name}
    assert data["removed"] == 2
    planted = [s for s in data["skipped"] if s["path"] == str(root / ".rxjobs-share")]
    assert planted and f"uid {u.alice.uid}" in planted[0]["reason"], data["skipped"]
    for who in (u.alice, u.bob):
        assert jobs[who.name] not in os.listdir(root / who.name)
    human = root_rxjobs("du", "--all-users", str(root))
    assert f"left alone {root / '.rxjobs-share'}: written by uid {u.alice.uid}" in human.stdout


def test_a_stopped_child_is_killed_and_the_sweep_goes_on(u):
    root = u.mkdir(u.shared / "stop-root", u.ROOT, 0o755)
    for who in (u.alice, u.bob):
        u.make_jobs(who, u.mkdir(root / who.name, who, 0o700), ["retrieved"])
    found = {d.user: d for d in find_share_dirs(str(root)).found}

    def stops_itself(path: str) -> list[str]:
        os.kill(os.getpid(), signal.SIGSTOP)  # what alice may do to a process of hers
        return os.listdir(path)

    fd = open_root(str(root))
    try:
        started = time.monotonic()
        stopped = run_as_owner(found[u.alice.name], stops_itself, fd, time_limit=3)
        took = time.monotonic() - started
        ran = run_as_owner(found[u.bob.name], os.listdir, fd, time_limit=60)
    finally:
        os.close(fd)
    assert stopped.error is not None and "did not finish within 3 s" in stopped.error, stopped
    assert took < 60
    assert ran.error is None and ".rxjobs-share" in ran.data
    assert not [p for p in psutil.Process().children(recursive=True)
                if p.uids().real == u.alice.uid and p.status() != psutil.STATUS_ZOMBIE]
    # Through the whole sweep (and its option), a stuck user is reported and the others done.
    with pytest.MonkeyPatch.context() as patch:
        real = sweep_module.disk_usage
        def stuck_for_alice(*args, **kwargs):  # noqa: E306
            if os.getuid() == u.alice.uid:
                os.kill(os.getpid(), signal.SIGSTOP)
            return real(*args, **kwargs)
        patch.setattr(sweep_module, "disk_usage", stuck_for_alice)
        usage = sweep_usage(str(root), time_limit=3)
    by_user = {entry.user: entry for entry in usage.users}
    assert "stopped or stuck" in (by_user[u.alice.name].error or "")
    assert by_user[u.bob.name].error is None and by_user[u.bob.name].report is not None
    assert by_user[u.bob.name].report.share_dir == str(root / u.bob.name)
    cli = root_rxjobs("du", "--all-users", str(root), "--time-limit", "0")
    assert cli.returncode == 2 and "--time-limit" in cli.stderr
