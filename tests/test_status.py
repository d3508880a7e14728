"""The status derivation of docs/design.md#job-states, every case, as a table."""

from __future__ import annotations

import pytest

from rxjobs.status import JobFacts, Probe, Record, RxRemoteJobStatus, derive_status

S = RxRemoteJobStatus

CASES = [
    # (facts, expected state, words the reason contains)
    (JobFacts(present=False), S.MISSING, "no job directory"),
    (JobFacts(present=False, canceled=True, record=Record.FINISHED), S.MISSING, "no job"),
    (JobFacts(present=True, canceled=True), S.CANCELED, "canceled"),
    (JobFacts(present=True, canceled=True, record=Record.FINISHED), S.CANCELED, "canceled"),
    (JobFacts(present=True, canceled=True, probe=Probe.STARTED), S.CANCELED, "canceled"),
    (JobFacts(present=True, record=Record.FINISHED, probe=Probe.STARTED), S.FINISHED, "finished"),
    (JobFacts(present=True, record=Record.FINISHED, probe=Probe.GONE), S.FINISHED, "finished"),
    (JobFacts(present=True, record=Record.FAILED, record_reason="run 3 raised"), S.FAILED, "run 3"),
    (JobFacts(present=True, record=Record.FAILED), S.FAILED, "failed"),
    (JobFacts(present=True, record=Record.CORRUPT, probe=Probe.STARTED), S.UNDETERMINED, "status.json"),
    (JobFacts(present=True, job_record_ok=False), S.UNDETERMINED, "job.json"),
    (JobFacts(present=True, job_record_ok=False, record=Record.FINISHED), S.UNDETERMINED, "job.json"),
    # A directory without a record naming it is no job, whatever markers it holds.
    (JobFacts(present=True, job_record_ok=False, canceled=True), S.UNDETERMINED, "not a job"),
    (JobFacts(present=True, record=Record.RUNNING, probe=Probe.STARTED, foreign_owner=1001),
     S.UNDETERMINED, "owned by uid 1001"),
    (JobFacts(present=True, foreign_owner=0), S.UNDETERMINED, "not asked"),
    (JobFacts(present=True, probe=Probe.STARTED), S.RUNNING, "running"),
    (JobFacts(present=True, record=Record.RUNNING, probe=Probe.STARTED), S.RUNNING, "running"),
    (JobFacts(present=True, record=Record.RUNNING, probe=Probe.ALIVE), S.RUNNING, "running"),
    # A running record may say why the job runs again (a Slurm requeue after a checkpoint).
    (JobFacts(present=True, record=Record.RUNNING, record_reason="requeued by Slurm after checkpoint "
              "(run 0, attempt 2)", probe=Probe.ALIVE), S.RUNNING, "requeued by Slurm after checkpoint"),
    (JobFacts(present=True, record=Record.RUNNING, record_reason="requeued by Slurm", probe=Probe.STARTED),
     S.RUNNING, "requeued by Slurm"),
    (JobFacts(present=True, record=Record.RUNNING, record_reason="requeued", probe=Probe.GONE),
     S.FAILED, "driver lost"),
    (JobFacts(present=True, record=Record.FINISHED, record_reason="requeued", probe=Probe.ALIVE),
     S.FINISHED, "finished"),
    (JobFacts(present=True, probe=Probe.ALIVE), S.QUEUED, "queued"),
    (JobFacts(present=True, probe=Probe.GONE), S.FAILED, "driver lost"),
    (JobFacts(present=True, record=Record.RUNNING, probe=Probe.GONE), S.FAILED, "driver lost"),
    (JobFacts(present=True, probe=Probe.UNREACHABLE), S.UNDETERMINED, "cannot be reached"),
    (JobFacts(present=True, record=Record.RUNNING, probe=Probe.UNREACHABLE), S.UNDETERMINED, "reached"),
    (JobFacts(present=True, submitter_alive=True), S.QUEUED, "being submitted"),
    (JobFacts(present=True, submitter_alive=False), S.FAILED, "submission did not complete"),
    (JobFacts(present=True, submitter_alive=None), S.UNDETERMINED, "submitter"),
]


@pytest.mark.parametrize(("facts", "expected", "words"), CASES)
def test_derive_status(facts, expected, words):
    derived = derive_status(facts)
    assert derived.status is expected
    assert words in derived.reason


def test_every_state_but_none_is_reachable():
    reached = {derive_status(facts).status for facts, _, _ in CASES}
    assert reached == set(S)


@pytest.mark.parametrize(
    ("state", "terminal"),
    [(S.QUEUED, False), (S.RUNNING, False), (S.FINISHED, True), (S.FAILED, True),
     (S.CANCELED, True), (S.UNDETERMINED, False), (S.MISSING, False)],
)
def test_is_terminal(state, terminal):
    assert state.is_terminal() is terminal


def test_values_are_revoscaler_strings():
    assert [s.value for s in S] == [
        "queued", "running", "finished", "failed", "canceled", "undetermined", "missing"]
    assert S.FINISHED == "finished"


@pytest.mark.parametrize("text", ["finished", "FINISHED", " Failed ", S.RUNNING])
def test_parse_accepts_names_and_values(text):
    assert isinstance(S.parse(text), S)


def test_parse_rejects_unknown_state_with_the_choices():
    with pytest.raises(ValueError, match="use one of: queued, running"):
        S.parse("done")
