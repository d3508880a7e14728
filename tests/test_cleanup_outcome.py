"""Cleanup outcomes are a string enum: typed in Python, the same strings in reports and JSON."""

from __future__ import annotations

import json

import pytest

from rxjobs.cleanup import CleanupEntry, CleanupOutcome, CleanupReport


@pytest.mark.parametrize(("outcome", "value"), [
    (CleanupOutcome.REMOVED, "removed"),
    (CleanupOutcome.KEPT, "kept"),
    (CleanupOutcome.MISSING, "missing"),
    (CleanupOutcome.ERROR, "error"),
    (CleanupOutcome.WOULD_REMOVE, "would remove"),
])
def test_an_outcome_is_its_string(outcome, value):
    assert outcome == value and str(outcome) == f"{outcome}" == value
    assert json.dumps(outcome) == json.dumps(value)
    entry = CleanupEntry("j", "/share", "failed", value, "why")
    assert entry.outcome is outcome  # given by its value, stored as the member
    entry.outcome = CleanupOutcome.KEPT
    entry.outcome = value
    assert entry.outcome is outcome


def test_report_json_is_unchanged():
    report = CleanupReport([CleanupEntry("a", "/s", "failed", "removed", "failed", files=2, bytes=10),
                            CleanupEntry("b", "/s", "finished", CleanupOutcome.KEPT, "un-retrieved"),
                            CleanupEntry("c", "/s", "undetermined", "error", "OSError: x")])
    assert [e.job_id for e in report.removed] == ["a"] and [e.job_id for e in report.kept] == ["b", "c"]
    assert json.dumps(report.to_json()) == (
        '{"removed": 1, "kept": 2, "files_freed": 2, "bytes_freed": 10, "jobs": ['
        '{"job_id": "a", "share_dir": "/s", "status": "failed", "outcome": "removed", "reason": "failed", '
        '"files": 2, "bytes": 10, "expired": false}, '
        '{"job_id": "b", "share_dir": "/s", "status": "finished", "outcome": "kept", '
        '"reason": "un-retrieved", "files": 0, "bytes": 0, "expired": false}, '
        '{"job_id": "c", "share_dir": "/s", "status": "undetermined", "outcome": "error", '
        '"reason": "OSError: x", "files": 0, "bytes": 0, "expired": false}]}')


def test_report_json_lazy_is_the_same_and_round_trips():
    report = CleanupReport([CleanupEntry("a", "/s", "failed", "removed", "failed", files=2, bytes=10,
                                         expired=True),
                            CleanupEntry("b", "/s", "finished", "would remove", "")])
    lazy = report.to_json(lazy=True)
    assert not isinstance(lazy["jobs"], list)
    assert {**lazy, "jobs": list(lazy["jobs"])} == report.to_json()
    assert CleanupReport.from_json(report.to_json()) == report
    # every field of an entry is in its JSON (a field added later must be too)
    assert set(report.entries[0].to_json()) == set(CleanupEntry.__dataclass_fields__)


def test_an_unknown_outcome_is_refused():
    with pytest.raises(ValueError, match="not a valid CleanupOutcome"):
        CleanupEntry("j", "/share", "failed", "deleted", "why")
