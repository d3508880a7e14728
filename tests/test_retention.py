"""Retention: durations and sizes, the policy file, the pure job selection, and expiry."""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timedelta, timezone

import pytest

from rxjobs import (
    RxCleanupWarning,
    RxLocalParallel,
    RxRemoteJobStatus,
    rx_cleanup_jobs,
    rx_exec,
    rx_get_job_status,
    rx_wait_for_job,
)
from rxjobs.durations import format_duration, format_size, parse_duration, parse_size, to_timedelta
from rxjobs.records import read_job_record
from rxjobs.retention import RetentionPolicy, SurveyedJob, load_policy, select_jobs
from rxjobs.store import open_store

from conftest import wait_until
from engine_contract import sleep_then_return, square

S = RxRemoteJobStatus
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


# -- durations and sizes -----------------------------------------------------------------


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), (0, 0), ("500B", 500), ("500 b", 500), ("10k", 10_000), ("10kB", 10_000), ("1.5M", 1_500_000),
    ("50G", 50 * 10**9), ("50g", 50 * 10**9), ("2T", 2 * 10**12), ("200MiB", 200 * 2**20),
    ("1GiB", 2**30), (" 3 G ", 3 * 10**9),
])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "G", "-1G", "5X", "1.2.3G", "iB", "5 gigs", -3])
def test_parse_size_refuses(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("text", ["0s", "30m", "2h", "7d", "1h30m", "1d2h3m4s", "2.5s"])
def test_format_duration_reads_back(text):
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_to_timedelta():
    assert to_timedelta("7d") == timedelta(days=7)
    assert to_timedelta(timedelta(hours=1)) == timedelta(hours=1)
    assert to_timedelta(0) == timedelta(0)
    with pytest.raises(ValueError):
        to_timedelta("soon")
    with pytest.raises(ValueError):
        to_timedelta(timedelta(seconds=-1))
    with pytest.raises(TypeError):
        to_timedelta([7])


# A number without a unit is refused everywhere, with the unit forms: `older_than = 30` meant
# days to whoever wrote it, and read as seconds it removed every finished job.
@pytest.mark.parametrize(("call", "says"), [
    (lambda: parse_duration("30"), "a duration needs a unit: '30' (use e.g. 30s, 30m, 2h, 7d"),
    (lambda: parse_duration("1.5"), "a duration needs a unit"),
    (lambda: to_timedelta(5, "older_than"), "older_than needs a unit: 5 is no duration"),
    (lambda: to_timedelta(2.5, "expires_after"), "expires_after needs a unit"),
    (lambda: parse_size("500"), "a size needs a unit: '500' (use e.g. 500B, 10kB, 500M, 50G"),
    (lambda: parse_size(7), "a size needs a unit: 7"),
    (lambda: RetentionPolicy.from_mapping({"older_than": 5}, "p.toml"), "p.toml: older_than needs a unit"),
    (lambda: RetentionPolicy.from_mapping({"max_total_size": 50}, "p.toml"), "p.toml: a size needs a unit"),
    (lambda: RxLocalParallel(expires_after=3600), "expires_after needs a unit"),
])
def test_a_number_without_a_unit_is_refused(call, says):
    with pytest.raises(ValueError) as caught:
        call()
    assert says in str(caught.value)


def test_a_policy_read_back_from_its_json_keeps_its_size_in_bytes():
    """A sweep's child reports its policy as JSON, max_total_size in bytes: read back as such."""
    policy = RetentionPolicy(older_than=timedelta(days=30), max_total_size=50 * 10**9, keep_last=3,
                             states=frozenset({S.FAILED}), force=True)
    assert RetentionPolicy.from_json(policy.to_json()) == policy
    with pytest.raises(ValueError, match="number of bytes"):
        RetentionPolicy.from_json({"max_total_size": "50G"})


def test_zero_needs_no_unit():
    assert parse_duration("0") == to_timedelta(0) == timedelta(0)
    assert parse_size("0") == parse_size(0) == 0
    assert format_size(0) == "0" and parse_size(format_size(1234)) == 1234


# -- the policy file ---------------------------------------------------------------------


def test_load_policy(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('older_than = "30d"\nmax_total_size = "50G"\nkeep_last = 10\n'
                    'states = ["failed", "CANCELED"]\nforce = false\n')
    policy = load_policy(path)
    assert policy == RetentionPolicy(older_than=timedelta(days=30), max_total_size=50 * 10**9,
                                     keep_last=10, states=frozenset({S.FAILED, S.CANCELED}))
    assert policy.merged(keep_last=3, older_than=None).keep_last == 3
    assert policy.merged(older_than=None).older_than == timedelta(days=30)
    assert load_policy(_write(tmp_path, 'state = "failed"\n')).states == frozenset({S.FAILED})
    assert load_policy(_write(tmp_path, "")).is_empty()


@pytest.mark.parametrize(("text", "words"), [
    ('older_then = "7d"\n', "unknown key(s) older_then"),
    ('older_than = "soon"\n', "not a duration"),
    ('max_total_size = "lots"\n', "not a size"),
    ("older_than = 5\n", "older_than needs a unit: 5 is no duration"),
    ('older_than = "30"\n', "a duration needs a unit: '30'"),
    ("max_total_size = 50\n", "a size needs a unit: 50"),
    ("keep_last = -1\n", "keep_last"),
    ('keep_last = "3"\n', "keep_last"),
    ('states = ["done"]\n', "unknown job state"),
    ('force = "yes"\n', "force must be true or false"),
    ("this is = not toml\n", "not valid TOML"),
])
def test_bad_policies_are_refused_with_the_reason(tmp_path, text, words):
    with pytest.raises(ValueError, match="policy.toml") as raised:
        load_policy(_write(tmp_path, text))
    assert words in str(raised.value)


def _write(tmp_path, text: str):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


# -- the selection, as a table -----------------------------------------------------------


def job(name: str, days_ago: float, state: S = S.FAILED, size: int = 100, retrieved: bool = False,
        expired: bool = False) -> SurveyedJob:
    return SurveyedJob(name, NOW - timedelta(days=days_ago), state, retrieved=retrieved,
                       expired=expired, bytes=size, files=1)


# Oldest first: a..h.  Removable without force: failed, canceled, retrieved, expired.
SHARE = [
    job("a", 40, S.FAILED, 100),
    job("b", 35, S.FINISHED, 200),  # un-retrieved: kept by the rules
    job("c", 20, S.CANCELED, 300),
    job("d", 10, S.FINISHED, 400, retrieved=True),
    job("e", 8, S.RUNNING, 500),  # kept by the rules
    job("f", 5, S.FINISHED, 600, expired=True),  # un-retrieved but expired
    job("g", 2, S.FAILED, 700),
    job("h", 1, S.FINISHED, 800),
    job("gone", 0.5, S.MISSING, 0),
]
TOTAL = 3600

SELECTION_TABLE = [
    # policy -> picked (oldest first), bytes left once the removable picks are gone
    (RetentionPolicy(), "abcdefgh", 3600 - 100 - 300 - 400 - 600 - 700),
    (RetentionPolicy(force=True), "abcdefgh", 0),
    (RetentionPolicy(states=frozenset({S.FAILED})), "ag", 2800),
    (RetentionPolicy(older_than=timedelta(days=30)), "abf", 2900),  # f: expired
    (RetentionPolicy(older_than=timedelta(days=30), force=True), "abf", 2700),
    (RetentionPolicy(keep_last=3), "abcde", 2800),  # f g h protected (expired or not)
    (RetentionPolicy(keep_last=0), "abcdefgh", 1500),
    (RetentionPolicy(max_total_size=3000), "f", 3000),  # the expired job is enough
    (RetentionPolicy(max_total_size=2900), "af", 2900),  # then the oldest removable
    (RetentionPolicy(max_total_size=2500), "acdf", 2200),  # b (un-retrieved) skipped
    (RetentionPolicy(max_total_size=2100), "acdfg", 1500),  # e (running) skipped
    (RetentionPolicy(max_total_size=0), "acdfg", 1500),  # never b, e or h without force
    (RetentionPolicy(max_total_size=2500, force=True), "abcf", 2400),
    (RetentionPolicy(max_total_size=0, force=True), "abcdefgh", 0),
    (RetentionPolicy(max_total_size=10**9), "f", 3000),  # under the size: only the expired
    (RetentionPolicy(older_than=timedelta(days=15), max_total_size=2200), "abcdf", 2200),
    (RetentionPolicy(older_than=timedelta(days=15), max_total_size=1700), "abcdfg", 1500),
    (RetentionPolicy(states=frozenset({S.FAILED}), max_total_size=0), "ag", 2800),
    (RetentionPolicy(keep_last=2, max_total_size=0), "acdf", 2200),
    (RetentionPolicy(keep_last=2, older_than=timedelta(days=9)), "abcdf", 2200),
    (RetentionPolicy(keep_last=100), "", 3600),
]


@pytest.mark.parametrize(("policy", "picked", "after"), SELECTION_TABLE)
def test_select_jobs(policy, picked, after):
    selection = select_jobs(SHARE, policy, NOW)
    assert "".join(selection.job_ids) == picked
    assert selection.total_bytes == TOTAL
    assert selection.bytes_after == after
    if policy.max_total_size is not None:
        assert selection.still_over is (after > policy.max_total_size)


def test_select_jobs_says_why():
    selection = select_jobs(SHARE, RetentionPolicy(older_than=timedelta(days=30), max_total_size=2500),
                            NOW)
    assert {p.job_id: p.why for p in selection.picks} == {
        "a": "older than 30d", "b": "older than 30d", "c": "share dir over 2500 bytes",
        "d": "share dir over 2500 bytes", "f": "expired"}
    assert select_jobs(SHARE, RetentionPolicy(keep_last=2), NOW).protected == ["g", "h"]


@pytest.mark.parametrize(("policy", "picked", "after"), SELECTION_TABLE)
def test_the_size_rule_never_picks_a_job_the_rules_keep_without_force(policy, picked, after):
    by_id = {j.job_id: j for j in SHARE}
    for pick in select_jobs(SHARE, policy, NOW).picks:
        if pick.why.startswith("share dir over"):
            assert by_id[pick.job_id].removable(policy.force), pick
    if policy.max_total_size is not None and not policy.force:
        assert not {"b", "e", "h"} & set(picked) - set(
            select_jobs(SHARE, RetentionPolicy(older_than=policy.older_than), NOW).job_ids
            if policy.older_than else ())


# -- expires_after on contexts and rx_exec ------------------------------------------------


def test_expires_after_on_contexts_is_a_normalized_value(tmp_path):
    a = RxLocalParallel(share_dir=str(tmp_path), expires_after="7d")
    b = RxLocalParallel(share_dir=str(tmp_path), expires_after=timedelta(days=7))
    assert a == b and hash(a) == hash(b)
    assert a.settings()["expires_after"] == "7d"
    assert RxLocalParallel.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    with pytest.raises(ValueError, match="not a duration"):
        RxLocalParallel(share_dir=str(tmp_path), expires_after="a week")


def test_expired_jobs_are_removed_without_force_and_running_ones_never(local_share):
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=local_share, expires_after="0s")
    store = open_store(local_share)
    finished = rx_exec(square, x=[1, 2], compute_context=cc)
    kept = rx_exec(square, x=[3], compute_context=cc, expires_after="30d")  # rx_exec wins
    running = rx_exec(sleep_then_return, seconds=[300], compute_context=cc)
    assert read_job_record(store, finished.job_id).options["expires_after"] == "0s"
    assert read_job_record(store, kept.job_id).options["expires_after"] == "30d"
    assert rx_wait_for_job(finished, timeout=120) is S.FINISHED
    assert rx_wait_for_job(kept, timeout=120) is S.FINISHED
    wait_until(lambda: rx_get_job_status(running) is S.RUNNING, what="the job to run")
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = cleanup_verbose([finished, kept, running], lines)
    assert [(e.outcome, e.expired) for e in report] == [("removed", True), ("kept", False),
                                                         ("kept", False)]
    assert "expired" in report.entries[0].reason and "expired" in lines[0]
    assert {w.message.job_id for w in caught if isinstance(w.message, RxCleanupWarning)} == {
        kept.job_id, running.job_id}
    assert rx_get_job_status(running) is S.RUNNING
    assert [e.outcome for e in rx_cleanup_jobs([kept, running], force=True, verbose=False)] == [
        "removed", "removed"]


def cleanup_verbose(job_list, lines):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        report = rx_cleanup_jobs(job_list, verbose=True)
    lines.extend(out.getvalue().splitlines())
    return report
