"""The Slurm engine's pure parts, by tables: Slurm's states read, and told to the user.

No cluster is needed: these are the decisions the probe and the final job
make from what ``squeue``, ``scontrol`` and ``sacct`` print.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from rxjobs.engines.slurm import _final_script, _pattern_path
from rxjobs.engines.slurm_states import (
    SlurmState,
    _exit_text,
    _expand_indexes,
    array_task_states,
    describe_missing,
    describe_task_end,
    normalize_state,
    parse_sacct,
    parse_scontrol_jobs,
    probe_from_states,
)

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("text, state", [
    ("COMPLETED", "COMPLETED"),
    ("CANCELLED by 0", "CANCELLED"),
    ("OOM", "OUT_OF_MEMORY"),
    ("OUT_OF_MEMORY", "OUT_OF_MEMORY"),
    ("TIMEOUT", "TIMEOUT"),
    ("NODE_FAIL", "NODE_FAIL"),
    ("FAILED+", "FAILED"),
    ("pending", "PENDING"),
    ("CA", "CANCELLED"),
])
def test_normalize_state(text, state):
    assert normalize_state(text) == state


@pytest.mark.parametrize("code, words", [
    ("0:0", "exit code 0"), ("1:0", "exit code 1"), ("0:9", "killed by signal 9"),
    ("137:9", "killed by signal 9"), ("", "exit code 0"),
])
def test_exit_text(code, words):
    assert _exit_text(code) == words


@pytest.mark.parametrize("state, fragment", [
    (SlurmState("TIMEOUT"), "hit its Slurm time limit (TIMEOUT); give RxSlurm(time_limit=...) more"),
    (SlurmState("OUT_OF_MEMORY", exit_code="0:125"), "ran out of memory (OUT_OF_MEMORY)"),
    (SlurmState("NODE_FAIL"), "lost with its node (NODE_FAIL)"),
    (SlurmState("BOOT_FAIL"), "BOOT_FAIL"),
    (SlurmState("CANCELLED"), "cancelled on Slurm (scancel from outside rxjobs, or an admin)"),
    (SlurmState("PREEMPTED"), "preempted and not requeued"),
    (SlurmState("DEADLINE"), "DEADLINE"),
    (SlurmState("FAILED", exit_code="1:0"), "failed on Slurm (exit code 1); see tasks/2.slurm.log"),
    (SlurmState("FAILED", exit_code="0:9"), "failed on Slurm (killed by signal 9)"),
    (SlurmState("COMPLETED", exit_code="0:0"), "ended (exit code 0) without writing its result"),
    (SlurmState("REVOKED", "Sibling"), "Slurm state REVOKED, Sibling"),
    (None, "Slurm no longer knows how it ended"),
])
def test_describe_task_end(state, fragment):
    text = describe_task_end(2, state)
    assert text.startswith("task 2 ") and fragment in text


def test_describe_missing_names_a_few_tasks_and_counts_the_rest():
    states = {k: SlurmState("TIMEOUT") for k in range(8)}
    text = describe_missing(list(range(8)), states, 10, {0: "slurmstepd: error: *** CANCELLED ***"})
    assert text.startswith("no result for 8 of 10 task(s): task 0 hit its Slurm time limit")
    assert "(its Slurm log ends: slurmstepd: error: *** CANCELLED ***)" in text
    assert text.count("TIMEOUT") == 5 and text.endswith("; and 3 more")


@pytest.mark.parametrize("text, indexes", [
    ("3", [3]), ("0-3", [0, 1, 2, 3]), ("0-2,7", [0, 1, 2, 7]), ("[4-6]%2", [4, 5, 6]),
    ("N/A", []), ("", []),
])
def test_expand_indexes(text, indexes):
    assert _expand_indexes(text) == indexes


SCONTROL = (
    "JobId=12 JobName=rxJob_1 ArrayJobId=10 ArrayTaskId=2 UserId=me(1) JobState=TIMEOUT "
    "Reason=TimeLimit Dependency=(null) ExitCode=0:15 WorkDir=/my share/JobState=COMPLETED\n"
    "JobId=10 JobName=rxJob_1 ArrayJobId=10 ArrayTaskId=3-5 JobState=PENDING Reason=Resources "
    "ExitCode=0:0\n"
    "JobId=11 JobName=rxJob_1 ArrayJobId=10 ArrayTaskId=0 JobState=COMPLETED Reason=None ExitCode=0:0\n"
    "JobId=13 JobName=someone-else ArrayJobId=10 ArrayTaskId=1 JobState=FAILED Reason=x ExitCode=1:0\n"
)


def test_scontrol_lines_give_each_tasks_state_and_ignore_paths_and_other_jobs():
    records = parse_scontrol_jobs(SCONTROL)
    assert records[0]["JobState"] == "TIMEOUT"  # not the JobState= inside WorkDir
    states = array_task_states(records, "rxJob_1")
    assert states == {
        2: SlurmState("TIMEOUT", "TimeLimit", "0:15"),
        3: SlurmState("PENDING", "Resources", "0:0"),
        4: SlurmState("PENDING", "Resources", "0:0"),
        5: SlurmState("PENDING", "Resources", "0:0"),
        0: SlurmState("COMPLETED", "None", "0:0"),
    }


def test_sacct_lines_give_each_tasks_state():
    text = ("10_0|COMPLETED|0:0|None|rxJob_1\n10_1|CANCELLED by 0|0:15|None|rxJob_1\n"
            "10_2|OUT_OF_MEMORY|0:125|None|rxJob_1\n11|COMPLETED|0:0|None|rxJob_1-end\n"
            "10_[3-4]|PENDING|0:0|Resources|rxJob_1\n10_5|FAILED|1:0|None|other\n")
    states = parse_sacct(text, "10", "rxJob_1")
    assert {k: s.state for k, s in states.items()} == {
        0: "COMPLETED", 1: "CANCELLED", 2: "OUT_OF_MEMORY", 3: "PENDING", 4: "PENDING"}


P, R, CD, CA, TO = (SlurmState(s) for s in ("PENDING", "RUNNING", "COMPLETED", "CANCELLED", "TIMEOUT"))


@pytest.mark.parametrize("array, final, view", [
    ([P], P, "queued"),                     # nothing started yet
    ([R, P], P, "started"),                 # a task runs
    ([CD, CD], P, "started"),               # tasks done, the final job about to run
    ([CD], R, "started"),                   # the final job records the end
    ([CD], CD, "recorded"),                 # it did
    ([CD, CA], CA, "ended"),                # cancelled from outside, final job too
    ([TO], TO, "ended"),                    # the final job timed out
    ([], SlurmState("PENDING", "DependencyNeverSatisfied"), "ended"),
    ([CD, CD], None, "ended"),              # the final job vanished
    ([], None, "unknown"),                  # Slurm forgot both
    ([], P, "queued"),
])
def test_probe_from_states(array, final, view):
    assert probe_from_states(array, final) == view


def test_output_paths_escape_percent_and_the_final_script_quotes_the_job_dir():
    assert _pattern_path("/a/100%/tasks") == "/a/100%%/tasks"
    script = _final_script("/my share/it's/rxJob_1", ["/py thon", "-m", "rxjobs.engines.slurm_task"])
    assert "[ -d '/my share/it'\"'\"'s/rxJob_1' ] || exit 0" in script
    assert "exec '/py thon' -m rxjobs.engines.slurm_task >>" in script


def test_the_engine_module_still_runs_the_array_task_entry_point_of_arrays_queued_before_the_split():
    done = subprocess.run([sys.executable, "-m", "rxjobs.engines.slurm"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "python -m rxjobs.engines.slurm_task task JOB_ID" in done.stderr
