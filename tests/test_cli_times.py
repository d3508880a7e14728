"""Times and sizes on the command line: local time without a zone, and one-line errors out of range."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner, Result

from rxjobs.cli import cli
from rxjobs.store import open_store

from factory import make_job

pytestmark = pytest.mark.timeout(120)
UTC = timezone.utc


def rxjobs(share: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--share-dir", share, *args])


@pytest.mark.parametrize(("args", "says"), [
    (["cleanup", "--older-than", "99999999d"], "before year 1"),
    (["cleanup", "--older-than", "99999999999d"], "out of range"),
    (["du", "--older-than", "99999999d"], "before year 1"),
    (["list", "--until", "99999999d"], "before year 1"),
    (["list", "--since", "9" * 400 + "s"], "out of range"),
    (["list", "--since", "9999-12-31T23:59:59-05:00"], "out of the range of dates"),
    (["cleanup", "--all", "--max-total-size", "9" * 400 + "G"], "out of range"),
])
def test_out_of_range_is_a_one_line_usage_error(tmp_path, args, says):
    share = str(tmp_path / "share")
    make_job(open_store(share), "failed")
    result = rxjobs(share, *args)
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rxjobs: error: ") and says in lines[0], result.output
    assert "Traceback" not in result.output and "OverflowError" not in result.output


def test_a_policy_file_out_of_range_is_a_one_line_error(tmp_path):
    share = str(tmp_path / "share")
    make_job(open_store(share), "failed")
    policy = tmp_path / "policy.toml"
    policy.write_text('older_than = "99999999d"\n')
    result = rxjobs(share, "cleanup", "--policy", str(policy))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"rxjobs: error: {policy}: 99999999d ago is before year 1: give a shorter duration"]


def test_since_and_until_without_a_zone_are_local_time(tmp_path, new_york):
    share = str(tmp_path / "share")
    store = open_store(share)
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # 07:00 in New York
    jobs = [make_job(store, "failed", at=at + timedelta(hours=h)).job_id for h in (0, 1, 2)]

    def listed(*args: str) -> list[str]:
        result = rxjobs(share, "list", "--json", *args)
        assert result.exit_code == 0, result.output
        return [row["job_id"] for row in json.loads(result.stdout)]

    assert listed("--since", "2026-11-28T08:00", "--until", "2026-11-28 08:00:00") == jobs[1:2]
    assert listed("--since", "2026-11-28T13:00Z") == jobs[1:]
    assert listed("--until", "2026-11-28T07:59:59") == jobs[:1]
    # Read as UTC, 08:00 would be before every job.
    assert listed("--until", "2026-11-28T08:00+00:00") == []
