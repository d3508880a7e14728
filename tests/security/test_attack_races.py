"""A check raced by another user's renames never leads to loading or removing the wrong thing.

The attacker swaps names with ``renameat2(RENAME_EXCHANGE)`` in a tight loop
(at least 200 swaps) while the victim reads results, cancels or cleans up; a
canary (a proof file the attacker's pickle would write, another user's job)
is checked afterwards.
"""

from __future__ import annotations

import os

import pytest

from unix_users import EVIL_PICKLE, EXCHANGE

pytestmark = [pytest.mark.faults, pytest.mark.timeout(400)]
ITERATIONS = 200


def _proofs(u):
    proofs = u.base / "proofs"
    proofs.mkdir()
    os.chmod(proofs, 0o1777)
    return proofs / "pwned"


def _collect(u, who, share, job, iterations=1):
    """``who`` collects the job's results (kept) ``iterations`` times; the outcomes by kind."""
    return u.python(who, """
        import collections, json, sys
        from rxjobs import RxLocalParallel, RxRemoteJob, rx_get_job_results
        job = RxRemoteJob(RxLocalParallel(share_dir=sys.argv[1]), sys.argv[2])
        seen = collections.Counter()
        for _ in range(int(sys.argv[3])):
            try:
                seen["values " + str(rx_get_job_results(job, auto_cleanup=False))] += 1
            except Exception as exc:
                seen[type(exc).__name__] += 1
        print(json.dumps(seen))
    """, share, job, iterations, timeout=300).no_traceback().json()


def test_results_never_unpickle_a_look_alike_swapped_in_by_a_group_member(unix_users):
    u = unix_users
    proof = _proofs(u)
    parent = u.team_dir("group", mode=0o2770)  # group-writable, no sticky bit: members rename in it
    share = parent / "alice"
    job = u.make_job(u.alice, share, "unretrieved", n_tasks=20)  # 20 checks and opens per collect
    # bob's look-alike: the same job id, readable by alice, results that run his code
    decoy = parent / "decoy"
    u.python(u.bob, EVIL_PICKLE + """
import json, os, sys
from factory import make_job
from rxjobs.store import open_store
decoy, job_id, proof = sys.argv[1:4]
made = make_job(open_store(decoy), "unretrieved", n_tasks=20).job_id
os.rename(f"{decoy}/{made}", f"{decoy}/{job_id}")
with open(f"{decoy}/{job_id}/job.json") as f:
    record = json.load(f)
record["job_id"] = job_id
with open(f"{decoy}/{job_id}/job.json", "w") as f:
    json.dump(record, f)
for name in os.listdir(f"{decoy}/{job_id}/tasks"):
    if name.endswith(".result.pkl"):
        with open(f"{decoy}/{job_id}/tasks/{name}", "wb") as f:
            f.write(evil_pickle(proof))
for dirpath, dirnames, filenames in os.walk(decoy):
    os.chmod(dirpath, 0o755)
    for name in filenames:
        os.chmod(os.path.join(dirpath, name), 0o644)
""", decoy, job, proof).ok()
    stop = u.base / "stop"
    swapper = u.spawn(u.bob, EXCHANGE + """
import os, sys, time
a, b, stop = sys.argv[1:4]
swaps, deadline = 0, time.monotonic() + 300
while not os.path.exists(stop) and time.monotonic() < deadline:
    for _ in range(100):
        exchange(a, b)
        swaps += 1
if swaps % 2:
    exchange(a, b)  # leave each where it was
print(swaps)
""", share, decoy, stop)
    try:
        seen = _collect(u, u.alice, share, job, 10 * ITERATIONS)  # most lose the race early
    finally:
        stop.touch()
        out, err = swapper.communicate(timeout=60)
    assert int(out.split()[-1]) >= ITERATIONS, err
    assert not proof.exists(), f"alice ran bob's pickle; outcomes: {seen}"


def test_a_tasks_dir_others_can_write_is_refused(unix_users):
    u = unix_users
    proof = _proofs(u)
    share = u.homes / u.alice.name / "share"
    job = u.make_job(u.alice, share, "unretrieved")
    # alice lets others in (x on the dirs, a tasks/ anyone can write), bob swaps in a result
    u.python(u.alice, "import os, sys; [os.chmod(p, m) for p, m in ((sys.argv[1], 0o711), "
                      "(sys.argv[2], 0o711), (sys.argv[3], 0o777))]",
             share, share / job, share / job / "tasks").ok()
    u.python(u.bob, EVIL_PICKLE + """
import os, sys
tasks, proof = sys.argv[1:3]
with open(f"{tasks}/.evil", "wb") as f:
    f.write(evil_pickle(proof))
os.replace(f"{tasks}/.evil", f"{tasks}/0.result.pkl")
""", share / job / "tasks", proof).ok()
    seen = _collect(u, u.alice, share, job)
    assert not proof.exists()
    assert seen == {"UntrustedShareDirError": 1}


def test_a_result_file_of_another_owner_is_refused(unix_users):
    u = unix_users
    proof = _proofs(u)
    share = u.homes / u.alice.name / "share"
    job = u.make_job(u.alice, share, "unretrieved")
    ns: dict = {}
    exec(EVIL_PICKLE, ns)
    u.put(share / job / "tasks" / "1.result.pkl", ns["evil_pickle"](str(proof)), u.bob, 0o644)
    seen = _collect(u, u.alice, share, job)
    assert not proof.exists()
    assert seen == {"UntrustedShareDirError": 1}


# -- 6. a job dir swapped for a symlink to another job while it is canceled or cleaned ----


_SWAP_IN_TURN = EXCHANGE + """
import os, sys, time
share, progress = sys.argv[1:3]
ids = sys.argv[3:]
swaps, deadline = 0, time.monotonic() + 300
for i, job in enumerate(ids):
    # swap the job dir with a symlink to the other user's job until the victim is done with it
    while not os.path.exists(f"{progress}/{i}") and time.monotonic() < deadline:
        for _ in range(50):
            try:
                exchange(f"{share}/{job}", f"{share}/link-{job}")
                swaps += 1
            except OSError:
                break
print(swaps)
"""

_ACT_IN_TURN = """
import os, sys, warnings
from rxjobs import RxLocalParallel, RxRemoteJob, rx_cancel_job, rx_cleanup_jobs, rx_get_job_results
warnings.simplefilter("ignore")
share, progress, operation = sys.argv[1:4]
cc = RxLocalParallel(share_dir=share)
for i, job_id in enumerate(sys.argv[4:]):
    job = RxRemoteJob(cc, job_id)
    try:
        if operation == "cancel":
            rx_cancel_job(job)
        elif operation == "cleanup":
            rx_cleanup_jobs([job], force=True, verbose=False)
        else:
            rx_get_job_results(job, auto_cleanup=True)
    except Exception:
        pass
    open(f"{progress}/{i}", "w").close()
"""


@pytest.mark.parametrize("operation", ["cancel", "cleanup", "results"])
@pytest.mark.parametrize("actor", ["root", "bob"])
def test_a_job_swapped_for_a_symlink_to_another_users_job_never_costs_that_job(unix_users, actor,
                                                                               operation):
    """root acts on alice's jobs (in her share dir), or bob on his own jobs in a group dir
    without the sticky bit; alice keeps swapping each job dir with a symlink to bob's
    finished, never-retrieved job.  Bob's job keeps its payload and results."""
    u = unix_users
    if actor == "root":
        who, share, owner = u.ROOT, u.homes / u.alice.name / "share", u.alice
    else:
        who, share, owner = u.bob, u.team_dir("group", mode=0o2770), u.bob
    bobs_share = u.homes / u.bob.name / "share"
    victim = u.make_job(u.bob, bobs_share, "unretrieved")
    bobs = u.snapshot(bobs_share / victim)
    kind = "unretrieved"
    ids = u.make_jobs(owner, share, [kind] * ITERATIONS, n_tasks=2)
    if operation != "results":  # make them look running (on another host: never probed)
        u.python(owner, """
            import json, sys
            from datetime import datetime, timezone
            when = datetime.now(timezone.utc).isoformat()
            for job in sys.argv[2:]:
                with open(f"{sys.argv[1]}/{job}/status.json", "w") as f:
                    json.dump({"state": "running", "reason": "", "started": when, "updated": when}, f)
                with open(f"{sys.argv[1]}/{job}/engine.json", "w") as f:
                    json.dump({"engine": "local", "handle": {"host": "elsewhere", "pid": 1,
                                                             "create_time": 0.0}}, f)
        """, share, *ids).ok()
    u.python(u.alice, "import os, sys\n"
                      "for j in sys.argv[3:]: os.symlink(sys.argv[2], f'{sys.argv[1]}/link-{j}')",
             share, bobs_share / victim, *ids).ok()
    progress = u.base / "progress"
    progress.mkdir()
    os.chmod(progress, 0o1777)
    swapper = u.spawn(u.alice, _SWAP_IN_TURN, share, progress, *ids)
    try:
        u.python(who, _ACT_IN_TURN, share, progress, operation, *ids, timeout=300).no_traceback()
    finally:
        for i in range(ITERATIONS):
            (progress / str(i)).touch()
        out, err = swapper.communicate(timeout=60)
    bobs.check()
    assert int(out.split()[-1]) >= ITERATIONS, err
    assert u.rxjobs(u.bob, "--share-dir", bobs_share, "results", victim, "--json").ok().json() == \
        [3 * x for x in range(6)]
