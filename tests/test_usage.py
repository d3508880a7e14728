"""Disk use as a service: the report of a survey (pure, tested by tables) and its JSON."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from rxjobs.retention import RetentionPolicy, SurveyedJob
from rxjobs.status import RxRemoteJobStatus as S
from rxjobs.store import open_store
from rxjobs.usage import (
    JobUsage,
    PolicyEstimate,
    StateUsage,
    disk_usage,
    estimate,
    kept_because,
    usage_report,
)

from factory import make_job

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def job(name: str, days_ago: float, state: S, size: int, files: int = 1, retrieved: bool = False,
        expired: bool = False, foreign: bool = False) -> SurveyedJob:
    return SurveyedJob(name, NOW - timedelta(days=days_ago), state, retrieved=retrieved,
                       expired=expired, foreign=foreign, bytes=size, files=files)


SHARE = [
    job("a", 40, S.FAILED, 100),
    job("b", 35, S.FINISHED, 200, files=2),  # un-retrieved: kept
    job("c", 20, S.CANCELED, 300),
    job("d", 10, S.FINISHED, 400, retrieved=True),
    job("e", 8, S.RUNNING, 500, files=3),
    job("f", 5, S.FINISHED, 600, expired=True),  # un-retrieved but expired: removed
    job("g", 2, S.QUEUED, 700),
    job("h", 1, S.FAILED, 800, foreign=True),
    job("gone", 0.5, S.MISSING, 0),  # removed while surveyed: not reported
]


@pytest.mark.parametrize(("surveyed", "word"), [
    (job("x", 1, S.FINISHED, 1), "un-retrieved"),
    (job("x", 1, S.RUNNING, 1), "running"),
    (job("x", 1, S.QUEUED, 1), "running"),
    (job("x", 1, S.UNDETERMINED, 1), "undetermined"),
    (job("x", 1, S.FAILED, 1, foreign=True), "other user"),
])
def test_kept_because(surveyed, word):
    assert kept_because(surveyed) == word


POLICY_TABLE = [
    # name, jobs, policy -> (jobs, bytes, files) it would remove now
    ("every job, the rules", SHARE, RetentionPolicy(), (4, 1400, 4)),
    ("every job, forced", SHARE, RetentionPolicy(force=True), (7, 2800, 10)),  # never h (foreign)
    ("older than 9d", SHARE, RetentionPolicy(older_than=timedelta(days=9)), (4, 1400, 4)),
    ("failed only", SHARE, RetentionPolicy(states=frozenset({S.FAILED})), (1, 100, 1)),
    ("keep the last 3", SHARE, RetentionPolicy(keep_last=3, force=True), (5, 1500, 8)),
    ("nothing", [], RetentionPolicy(force=True), (0, 0, 0)),
]


@pytest.mark.parametrize(("name", "surveyed", "policy", "expected"), POLICY_TABLE,
                         ids=[row[0] for row in POLICY_TABLE])
def test_estimate(name, surveyed, policy, expected):
    assert estimate(name, surveyed, policy, NOW) == PolicyEstimate(name, *expected)


def test_report_of_a_survey():
    report = usage_report("/share", SHARE, RetentionPolicy(older_than=timedelta(days=9)), top=2, now=NOW)
    assert [j.job_id for j in report.jobs] == list("abcdefgh")
    assert report.jobs[1] == JobUsage("b", "finished", 2, 200, False, "un-retrieved",
                                      SHARE[1].decision(False).reason, False)
    assert [j.job_id for j in report.largest] == ["h", "g"]
    assert (report.files, report.bytes, report.freeable_bytes, report.kept_bytes) == (11, 3600, 1400, 2200)
    # In the order first met: the JSON keeps it.
    assert report.kept_bytes_by_reason == {"un-retrieved": 200, "running": 1200, "other user": 800}
    assert report.by_state == {"failed": StateUsage(2, 2, 900), "finished": StateUsage(3, 4, 1200),
                               "canceled": StateUsage(1, 1, 300), "running": StateUsage(1, 3, 500),
                               "queued": StateUsage(1, 1, 700)}
    assert [p.policy for p in report.policies] == [
        "cleanup --all", "cleanup --all --force", "expired jobs", "cleanup --older-than 9d"]
    assert report.policies[2] == PolicyEstimate("expired jobs", 1, 600, 1)
    assert [p.policy for p in usage_report("/share", SHARE, RetentionPolicy(), now=NOW).policies] == [
        "cleanup --all", "cleanup --all --force", "expired jobs"]


def test_the_json_of_rxjobs_du_keeps_its_shape():
    data = usage_report("/share", SHARE[:2], top=1, now=NOW).to_json()
    # Keys and their order, as `rxjobs du --json` printed them before the report was typed.
    assert json.dumps(data) == json.dumps({
        "share_dir": "/share",
        "jobs": [
            {"job_id": "a", "state": "failed", "files": 1, "bytes": 100, "cleanup": "remove",
             "kept_because": "", "reason": "failed", "expired": False},
            {"job_id": "b", "state": "finished", "files": 2, "bytes": 200, "cleanup": "keep",
             "kept_because": "un-retrieved", "reason": SHARE[1].decision(False).reason,
             "expired": False},
        ],
        "totals": {"jobs": 2, "files": 3, "bytes": 300, "freeable_bytes": 100, "kept_bytes": 200,
                   "kept_bytes_by_reason": {"un-retrieved": 200}},
        "by_state": {"failed": {"jobs": 1, "files": 1, "bytes": 100},
                     "finished": {"jobs": 1, "files": 2, "bytes": 200}},
        "largest": [{"job_id": "b", "state": "finished", "files": 2, "bytes": 200, "cleanup": "keep",
                     "kept_because": "un-retrieved", "reason": SHARE[1].decision(False).reason,
                     "expired": False}],
        "policies": [
            {"policy": "cleanup --all", "jobs": 1, "bytes": 100, "files": 1},
            {"policy": "cleanup --all --force", "jobs": 2, "bytes": 300, "files": 3},
            {"policy": "expired jobs", "jobs": 0, "bytes": 0, "files": 0},
        ],
    })


@pytest.mark.timeout(60)
def test_disk_usage_surveys_a_share_dir_and_removes_nothing(tmp_path):
    store = open_store(str(tmp_path / "share"))
    made = [make_job(store, kind) for kind in ("unretrieved", "retrieved", "failed", "canceled")]
    report = disk_usage(store)
    assert report.share_dir == store.url
    assert [j.job_id for j in report.jobs] == [m.job_id for m in made]
    assert [j.removable for j in report.jobs] == [False, True, True, True]
    assert [(j.files, j.bytes) for j in report.jobs] == [
        (store.usage(m.job_id).files, store.usage(m.job_id).bytes) for m in made]
    assert store.list_job_ids() == [m.job_id for m in made]
