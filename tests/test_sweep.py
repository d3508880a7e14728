"""The operator's sweep: its pure decisions, by tables, and a walk.

The sweep as real users (root acting as each share dir's owner) is in
tests/security/test_operator_sweep.py.
"""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta, timezone

import pytest

from rxjobs.cleanup import CleanupEntry
from rxjobs.privileges import Credentials, Target, drop_problems
from rxjobs.retention import PolicyRun, RetentionPolicy, SurveyedJob, apply_policy
from rxjobs.status import RxRemoteJobStatus
from rxjobs.store import open_store
from rxjobs.sweep import (
    Verdict,
    caller_refusal,
    classify_entry,
    exposure,
    find_share_dirs,
    kept_because,
    marker_counts,
    select_in_total,
    swappable_by_others,
)

from factory import make_job

S = RxRemoteJobStatus
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
DIR, LINK, FILE = stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777, stat.S_IFREG | 0o644


# -- which entries under ROOT are share dirs ---------------------------------------------------


@pytest.mark.parametrize(("mode", "swappable"), [
    (0o755, False), (0o700, False),
    (0o2770, True),    # a group directory: every member renames in it
    (0o3770, False),   # sticky: each entry stays its owner's
    (0o777, True), (0o1777, False), (0o757, True), (0o775, True),
])
def test_swappable_by_others(mode, swappable):
    assert swappable_by_others(stat.S_IFDIR | mode) is swappable


ALICE, BOB, OPERATOR = 1001, 1002, 1003


@pytest.mark.parametrize(("parents", "owner", "caller", "refused_by"), [
    ([("/r", DIR, 0)], BOB, 0, None),
    ([("/r", DIR, 0), ("/r/g", stat.S_IFDIR | 0o3770, 0)], BOB, 0, None),
    ([("/r", DIR, 0), ("/r/g", stat.S_IFDIR | 0o2770, 0)], BOB, 0, "/r/g"),   # issue 23's layout
    ([("/r", stat.S_IFDIR | 0o777, 0), ("/r/g", DIR, 0)], BOB, 0, "/r"),
    ([("/r", DIR, 0), ("/r/alice", stat.S_IFDIR | 0o1777, ALICE)], BOB, 0, "/r/alice"),  # her dir
    ([("/r", DIR, 0), ("/r/bob", DIR, BOB)], BOB, 0, None),                 # his own
    ([("/r", DIR, OPERATOR)], BOB, OPERATOR, None),                         # the caller's own root
    ([], BOB, 0, None),                                                     # ROOT is the share dir
])
def test_exposure_names_the_first_directory_others_could_swap_in(parents, owner, caller, refused_by):
    why = exposure(parents, owner, caller)
    if refused_by is None:
        assert why is None
    else:
        assert why is not None and why.startswith(f"{refused_by} ")


@pytest.mark.parametrize(("depth", "marker_uid", "dir_uid", "counts"), [
    (0, 0, 0, True), (0, ALICE, ALICE, True),
    (0, ALICE, 0, False),   # planted in ROOT by a user
    (1, ALICE, 0, True),    # a team share dir: a member wrote the marker
    (2, BOB, ALICE, True),
])
def test_a_marker_in_root_counts_only_if_roots_owner_wrote_it(depth, marker_uid, dir_uid, counts):
    assert marker_counts(depth, marker_uid, dir_uid) is counts


def test_find_share_dirs_leaves_alone_a_share_dir_others_could_swap(tmp_path):
    root = tmp_path / "root"
    (root / "open" / "bob").mkdir(parents=True)
    (root / "shut" / "carol").mkdir(parents=True)
    for where in ("open/bob", "shut/carol"):
        (root / where / ".rxjobs-share").write_text('{"format": 1}')
    os.chmod(root, 0o755)
    os.chmod(root / "open", 0o2770)
    os.chmod(root / "shut", 0o3770)
    found = find_share_dirs(str(root))
    assert [d.path for d in found.found] == [str(root / "shut" / "carol")]
    assert found.found[0].names == ("shut", "carol")
    (skipped,) = found.skipped
    assert skipped.path == str(root / "open" / "bob") and "chmod +t" in skipped.reason


@pytest.mark.parametrize(("mode", "marked", "depth", "verdict"), [
    (DIR, True, 0, Verdict.SHARE_DIR),          # ROOT itself is a share dir
    (DIR, False, 0, Verdict.LOOK_INSIDE),
    (DIR, True, 1, Verdict.SHARE_DIR),          # ROOT/<user>
    (DIR, False, 1, Verdict.LOOK_INSIDE),       # ROOT/<group>
    (DIR, True, 2, Verdict.SHARE_DIR),          # ROOT/<group>/<user>
    (DIR, False, 2, Verdict.IGNORED),           # no deeper
    (DIR, True, 3, Verdict.IGNORED),
    (DIR, None, 1, Verdict.UNREADABLE),
    (LINK, True, 1, Verdict.NOT_FOLLOWED),      # a symlink, whatever it points to
    (LINK, None, 0, Verdict.NOT_FOLLOWED),
    (FILE, False, 1, Verdict.IGNORED),
])
def test_classify_entry(mode, marked, depth, verdict):
    assert classify_entry(mode, marked, depth, max_depth=2) is verdict


# -- who may sweep ------------------------------------------------------------------------------


@pytest.mark.parametrize(("euid", "found", "unreadable", "refused"), [
    (0, [("/r/a", 1001, False)], ["/r/x"], None),                  # root: always
    (1001, [("/r/a", 1001, True)], [], None),                      # all the caller's own
    (1001, [("/r/a", 1001, True), ("/r/t", 0, True)], [], None),   # writable team dir
    (1001, [("/r/a", 1001, True), ("/r/b", 1002, False)], [], "/r/b belongs to uid 1002"),
    (1001, [("/r/a", 1001, True)], ["/r/b"], "cannot read /r/b"),  # a share dir could hide there
    (1001, [], ["/r/b"], "cannot read /r/b"),
])
def test_caller_refusal(euid, found, unreadable, refused):
    said = caller_refusal(euid, found, unreadable)
    if refused is None:
        assert said is None
    else:
        assert refused in said and "root" in said and "\n" not in said


# -- the privilege drop, checked ----------------------------------------------------------------

ALICE = Target(1001, "alice", 1001, frozenset({1001, 2000}))


@pytest.mark.parametrize(("uids", "gids", "groups", "regained", "problems"), [
    ((1001,) * 3, (1001,) * 3, {1001, 2000}, False, []),
    ((1001,) * 3, (1001,) * 3, {1001}, False, []),                 # fewer groups: harmless
    ((1001,) * 3, (1001,) * 3, set(), False, []),
    ((1001, 1001, 0), (1001,) * 3, {1001}, False, ["uids"]),       # saved uid still root
    ((0, 1001, 1001), (1001,) * 3, {1001}, False, ["uids"]),
    ((1001,) * 3, (1001, 1001, 0), {1001}, False, ["gids"]),       # saved gid still root's
    ((1001,) * 3, (0,) * 3, {1001}, False, ["gids"]),
    ((1001,) * 3, (1001,) * 3, {0, 1001}, False, ["groups [0]"]),  # root's groups kept
    ((1001,) * 3, (1001,) * 3, {1001}, True, ["setuid(0)"]),       # root taken back
    ((0, 0, 0), (0, 0, 0), {0}, True, ["uids", "gids", "groups", "setuid(0)"]),
])
def test_drop_problems(uids, gids, groups, regained, problems):
    found = drop_problems(Credentials(uids, gids, frozenset(groups)), ALICE, regained)
    assert len(found) == len(problems), found
    for said, word in zip(found, problems, strict=True):
        assert word in said


def test_dropping_to_root_itself_is_no_problem():
    root = Target(0, "root", 0, frozenset({0}))
    assert drop_problems(Credentials((0, 0, 0), (0, 0, 0), frozenset({0})), root, True) == []


# -- why cleanup kept a job ---------------------------------------------------------------------


@pytest.mark.parametrize(("status", "outcome", "reason", "why"), [
    ("finished", "kept", "finished but its results were never retrieved: ...", "un-retrieved results"),
    ("running", "kept", "still running: cancel it first", "running"),
    ("queued", "kept", "still queued: cancel it first", "running"),
    ("undetermined", "kept", "owned by another user (uid 7): never removed", "other user"),
    ("undetermined", "kept", "state cannot be determined (x)", "undetermined"),
    ("undetermined", "error", "PermissionError: /s/j cannot be read", "error"),
    ("undetermined", "kept", "not a job: no job.json; debris is never removed", "not a job"),
])
def test_kept_because(status, outcome, reason, why):
    assert kept_because(CleanupEntry("j", "/s", status, outcome, reason)) == why


# -- one size bound over all share dirs -----------------------------------------------------------


def job(job_id, days_ago, status=S.FAILED, size=100, retrieved=False):
    return SurveyedJob(job_id, NOW - timedelta(days=days_ago), status, retrieved=retrieved, bytes=size)


SURVEYS = {
    "/r/alice": [job("a1", 9), job("a2", 5, S.FINISHED), job("a3", 1)],
    "/r/bob": [job("b1", 8), job("b2", 4, S.FINISHED, retrieved=True), job("b3", 2, S.RUNNING)],
}


@pytest.mark.parametrize(("policy", "picked"), [
    (RetentionPolicy(max_total_size=600), {"/r/alice": [], "/r/bob": []}),
    # Oldest removable first, whoever owns it: a1 (9 days), then b1 (8).
    (RetentionPolicy(max_total_size=400), {"/r/alice": ["a1"], "/r/bob": ["b1"]}),
    (RetentionPolicy(max_total_size=300), {"/r/alice": ["a1"], "/r/bob": ["b1", "b2"]}),
    # Never an un-retrieved or running job without force, however far over.
    (RetentionPolicy(max_total_size=0), {"/r/alice": ["a1", "a3"], "/r/bob": ["b1", "b2"]}),
    (RetentionPolicy(max_total_size=0, force=True),
     {"/r/alice": ["a1", "a2", "a3"], "/r/bob": ["b1", "b2", "b3"]}),
    # keep_last protects each share dir's newest jobs.
    (RetentionPolicy(max_total_size=0, keep_last=1), {"/r/alice": ["a1"], "/r/bob": ["b1", "b2"]}),
    # older_than picks per job first; the bound then adds the oldest.
    (RetentionPolicy(older_than=timedelta(days=6), max_total_size=300),
     {"/r/alice": ["a1"], "/r/bob": ["b1", "b2"]}),
    (RetentionPolicy(older_than=timedelta(days=6)), {"/r/alice": ["a1"], "/r/bob": ["b1"]}),
])
def test_select_in_total(policy, picked):
    selections = select_in_total(SURVEYS, policy, NOW)
    assert {key: s.job_ids for key, s in selections.items()} == picked


def test_select_in_total_counts_bytes_after_per_share_dir():
    selections = select_in_total(SURVEYS, RetentionPolicy(max_total_size=300), NOW)
    assert selections["/r/alice"].bytes_after == 200 and selections["/r/bob"].bytes_after == 100


# -- the walk, and a policy run read back -----------------------------------------------------------


def test_find_share_dirs_looks_two_levels_down_and_follows_no_symlink(tmp_path):
    root = tmp_path / "root"
    for where in ("alice", "team/bob", "team/carol/deeper", "junk/not-marked"):
        (root / where).mkdir(parents=True)
    for where in ("alice", "team/bob", "team/carol/deeper"):
        (root / where / ".rxjobs-share").write_text('{"format": 1}')
    (root / "alice" / "inner").mkdir()
    (root / "alice" / "inner" / ".rxjobs-share").write_text('{"format": 1}')  # inside a share dir
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".rxjobs-share").write_text('{"format": 1}')
    os.symlink(outside, root / "link")
    os.symlink(outside, root / "team" / "link")
    found = find_share_dirs(str(root))
    assert [d.path for d in found.found] == [str(root / "alice"), str(root / "team" / "bob")]
    assert {s.path for s in found.skipped} == {str(root / "link"), str(root / "team" / "link")}
    assert find_share_dirs(str(root / "alice")).found[0].path == str(root / "alice")


def test_find_share_dirs_refuses_an_object_store():
    with pytest.raises(ValueError, match="local directory"):
        find_share_dirs("memory://somewhere")


def test_a_policy_run_reads_back_from_its_json(tmp_path):
    store = open_store(tmp_path / "share")
    made = [make_job(store, kind) for kind in ("unretrieved", "failed", "retrieved")]
    run = apply_policy(store, RetentionPolicy(max_total_size=0), dry_run=True, now=None)
    again = PolicyRun.from_json(run.to_json())
    assert again.to_json() == run.to_json()
    # The size bound picks only what the rules remove: the un-retrieved job is not even picked.
    assert [e.outcome.value for e in again.report] == ["would remove", "would remove"]
    assert again.still_over  # the un-retrieved job stays
    assert again.bytes_after == again.total_bytes - sum(e.bytes for e in run.report) > 0
    done = apply_policy(store, RetentionPolicy(max_total_size=0))
    assert [e.outcome.value for e in done.report] == ["removed", "removed"]
    assert store.list_job_ids() == [made[0].job_id]
