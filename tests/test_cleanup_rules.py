"""The cleanup decision of docs/design.md#cleanup-rules, the whole table."""

from __future__ import annotations

import itertools

import pytest

from rxjobs.cleanup import Action, decide_cleanup
from rxjobs.status import RxRemoteJobStatus

S = RxRemoteJobStatus
A = Action

TABLE = [
    # state, retrieved, force -> action, warn, words in the reason
    (S.FINISHED, False, False, A.KEEP, True, "rx_get_job_results"),
    (S.FINISHED, False, True, A.REMOVE, False, "forced"),
    (S.FINISHED, True, False, A.REMOVE, False, "retrieved"),
    (S.FINISHED, True, True, A.REMOVE, False, "retrieved"),
    (S.FAILED, False, False, A.REMOVE, False, "failed"),
    (S.FAILED, False, True, A.REMOVE, False, "failed"),
    (S.CANCELED, False, False, A.REMOVE, False, "canceled"),
    (S.CANCELED, False, True, A.REMOVE, False, "canceled"),
    (S.RUNNING, False, False, A.KEEP, True, "cancel it first"),
    (S.RUNNING, False, True, A.CANCEL_AND_REMOVE, False, "forced"),
    (S.QUEUED, False, False, A.KEEP, True, "cancel it first"),
    (S.QUEUED, False, True, A.CANCEL_AND_REMOVE, False, "forced"),
    (S.UNDETERMINED, False, False, A.KEEP, True, "force=True"),
    (S.UNDETERMINED, False, True, A.CANCEL_AND_REMOVE, False, "forced"),
    (S.MISSING, False, False, A.NOTHING, False, "nothing to remove"),
    (S.MISSING, False, True, A.NOTHING, False, "nothing to remove"),
]


@pytest.mark.parametrize(("state", "retrieved", "force", "action", "warn", "words"), TABLE)
def test_decide_cleanup(state, retrieved, force, action, warn, words):
    decision = decide_cleanup(state, retrieved, force)
    assert decision.action is action
    assert decision.warn is warn
    assert words in decision.reason


def test_table_covers_every_state_and_force():
    covered = {(state, force) for state, _, force, *_ in TABLE}
    assert covered == set(itertools.product(S, [False, True]))


@pytest.mark.parametrize(("state", "retrieved", "force"),
                         list(itertools.product(S, [False, True], [False, True])))
def test_unretrieved_results_are_never_removed_without_force(state, retrieved, force):
    decision = decide_cleanup(state, retrieved, force)
    if state is S.FINISHED and not retrieved and not force:
        assert decision.action is A.KEEP
    if state in (S.RUNNING, S.QUEUED, S.UNDETERMINED) and not force:
        assert decision.action is A.KEEP


def test_undetermined_reason_is_quoted():
    decision = decide_cleanup(S.UNDETERMINED, False, False, why="the engine cannot be reached")
    assert "the engine cannot be reached" in decision.reason


# -- retention: a job whose expires_after has passed ---------------------------------------

EXPIRY_TABLE = [
    # state, retrieved, force -> action (the job has expired)
    (S.FINISHED, False, False, A.REMOVE),  # un-retrieved results go: the submitter opted in
    (S.FINISHED, True, False, A.REMOVE),
    (S.FAILED, False, False, A.REMOVE),
    (S.CANCELED, False, False, A.REMOVE),
    (S.RUNNING, False, False, A.KEEP),  # never removed for expiry before it ends
    (S.QUEUED, False, False, A.KEEP),
    (S.UNDETERMINED, False, False, A.KEEP),
    (S.RUNNING, False, True, A.CANCEL_AND_REMOVE),
    (S.UNDETERMINED, False, True, A.CANCEL_AND_REMOVE),
    (S.MISSING, False, False, A.NOTHING),
]


@pytest.mark.parametrize(("state", "retrieved", "force", "action"), EXPIRY_TABLE)
def test_decide_cleanup_of_an_expired_job(state, retrieved, force, action):
    decision = decide_cleanup(state, retrieved, force, expired=True)
    assert decision.action is action
    if state.is_terminal():
        assert "expired" in decision.reason and not decision.warn
    else:
        assert "expired" not in decision.reason
        assert decision == decide_cleanup(state, retrieved, force)  # expiry changes nothing


def test_expiry_table_covers_every_state():
    assert {state for state, *_ in EXPIRY_TABLE} == set(S)
