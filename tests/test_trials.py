"""The trial counts of the fault, load and fuzz tests: reduced by default, full when asked,
and a count's own variable wins over both."""

from __future__ import annotations

import pytest

from trials import FULL_ENV, SEED_ENV, run_seed, trial_count


@pytest.mark.parametrize("full_env, own, expected", [
    (None, None, 5),      # make test: the reduced count
    ("1", None, 100),     # make test-full
    ("true", None, 100),
    ("0", None, 5),
    (None, "7", 7),       # RXJOBS_..._TRIALS=7 wins over both
    ("1", "7", 7),
])
def test_trial_count_is_reduced_unless_full_counts_are_asked_for(monkeypatch, full_env, own, expected):
    monkeypatch.delenv(FULL_ENV, raising=False)
    monkeypatch.delenv("RXJOBS_SOME_TRIALS", raising=False)
    if full_env is not None:
        monkeypatch.setenv(FULL_ENV, full_env)
    if own is not None:
        monkeypatch.setenv("RXJOBS_SOME_TRIALS", own)
    assert trial_count("RXJOBS_SOME_TRIALS", full=100, reduced=5) == expected


@pytest.mark.parametrize("bad", ["many", "0", "-3"])
def test_a_count_that_is_no_positive_whole_number_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv("RXJOBS_SOME_TRIALS", bad)
    with pytest.raises(ValueError, match="RXJOBS_SOME_TRIALS"):
        trial_count("RXJOBS_SOME_TRIALS", full=100, reduced=5)


@pytest.mark.timeout(10)
def test_the_run_seed_is_given_or_the_same_in_every_worker_of_a_run(monkeypatch):
    """The random seed of the crash trials is in their test ids: every worker of a parallel run
    draws the same one from the run's id, another run another one, and RXJOBS_TRIAL_SEED wins."""
    monkeypatch.delenv(SEED_ENV, raising=False)
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "a" * 32)
    first = run_seed()
    assert run_seed() == first and 0 <= first < 2**32
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "b" * 32)
    assert run_seed() != first
    monkeypatch.setenv(SEED_ENV, "12345")
    assert run_seed() == 12345
    monkeypatch.setenv(SEED_ENV, "twelve")
    with pytest.raises(ValueError, match=SEED_ENV):
        run_seed()
