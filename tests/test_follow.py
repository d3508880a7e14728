"""``rxjobs output --follow JOB_ID`` prints output as it is produced.

The decision of what to print next (:func:`rxjobs.jobs.next_output`) is pure
and tested by a table; :class:`rxjobs.jobs.OutputFollower` and the command
are tested on real ``RxLocalParallel`` jobs whose second task waits for a
gate file the test opens, so the first task's output is seen before the job
ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rxjobs import RxLocalParallel, RxRemoteJobStatus, rx_exec, rx_get_job_output, rx_get_job_status
from rxjobs.cli import cli
from rxjobs.jobs import DRIVER_LOG_HEADER, FollowState, OutputFollower, next_output
from rxjobs.store import open_store

from conftest import kill_processes_mentioning

pytestmark = pytest.mark.timeout(120)
S = RxRemoteJobStatus
H = DRIVER_LOG_HEADER


def say_then_wait(x, gate):
    print(f"task {x} says hello", flush=True)
    if x == 1:
        deadline = time.monotonic() + 100
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        print("task 1 passed the gate")
    return x


def fail_at_once(x):
    print("about to fail")
    raise ValueError("no")


@pytest.fixture
def share(tmp_path):
    path = str(tmp_path / "share")
    yield path
    kill_processes_mentioning(path)


# -- what to print next: a table -----------------------------------------------------------

ST = FollowState


@pytest.mark.parametrize("state, tasks, log, final, finished, chunks, after", [
    # nothing yet
    (ST(), {}, "", False, set(), [], ST()),
    # tasks print in task order, whole lines while they run
    (ST(), {1: "b\n", 0: "a\n"}, "", False, set(), ["a\n", "b\n"], ST({0: 2, 1: 2})),
    (ST(), {0: "a\nb"}, "", False, set(), ["a\n"], ST({0: 2})),
    # a running task's output grows: only what is new is printed
    (ST({0: 2}), {0: "a\nb\nc\n"}, "", False, set(), ["b\nc\n"], ST({0: 6})),
    # a finished task: the rest, last partial line included, and it is done
    (ST({0: 2}), {0: "a\nb"}, "", False, {0}, ["b"], ST({0: 3}, frozenset({0}))),
    (ST({0: 2}, frozenset({0})), {0: "a\nb", 2: "c\n"}, "", False, {2}, ["c\n"],
     ST({0: 2, 2: 2}, frozenset({0, 2}))),
    # an empty task output prints nothing
    (ST(), {0: ""}, "", False, {0}, [], ST({0: 0}, frozenset({0}))),
    # an output rewritten shorter (a retried task): printed afresh
    (ST({0: 9}), {0: "new\n"}, "", False, set(), ["new\n"], ST({0: 4})),
    # the driver log: whole lines only while the job runs, with a header once
    (ST(), {}, "one\ntw", False, set(), [H, "one\n"], ST(driver_offset=4, in_driver_log=True)),
    (ST(driver_offset=4, in_driver_log=True), {}, "one\ntwo\n", False, set(), ["two\n"],
     ST(driver_offset=8, in_driver_log=True)),
    # ... the rest, partial lines included, when the job has ended
    (ST(driver_offset=4, in_driver_log=True), {0: "x"}, "one\ntw", True, set(), ["x", H, "tw"],
     ST({0: 1}, frozenset({0}), 6, True)),
    # task output between driver log lines: the header again before more log
    (ST(driver_offset=4, in_driver_log=True), {0: "a\n"}, "one\ntwo\n", False, set(),
     ["a\n", H, "two\n"], ST({0: 2}, frozenset(), 8, True)),
    # a log that shrank (replaced whole, e.g. published from a local copy): printed afresh
    (ST(driver_offset=50, in_driver_log=True), {}, "new\n", True, set(), ["new\n"],
     ST(driver_offset=4, in_driver_log=True)),
])
def test_next_output(state, tasks, log, final, finished, chunks, after):
    assert next_output(state, tasks, log, final, frozenset(finished)) == (chunks, after)


# -- following real jobs -------------------------------------------------------------------


def test_follower_shows_a_tasks_output_before_the_job_ends(share, tmp_path):
    gate = tmp_path / "gate"
    job = rx_exec(say_then_wait, x=[0, 1], gate=str(gate), task_chunk_size=1,
                  compute_context=RxLocalParallel(num_workers=2, wait=False, share_dir=share))
    follower = OutputFollower(open_store(share), job.job_id, max_delay=0.2)
    seen = []
    for text in follower:
        seen.append(text)
        if "task 0 says hello" in text:
            assert rx_get_job_status(job) is S.RUNNING  # printed while task 1 still waits
            gate.touch()
    assert follower.status is S.FINISHED
    assert "".join(seen).index("task 0 says hello") < "".join(seen).index("task 1 passed the gate")
    assert "".join(seen) == rx_get_job_output(job)  # the same text, as it came


def test_follow_command_exit_status_says_how_the_job_ended(share, tmp_path):
    runner = CliRunner()
    gate = tmp_path / "gate"
    gate.touch()
    ok = rx_exec(say_then_wait, x=[0, 1], gate=str(gate),
                 compute_context=RxLocalParallel(num_workers=2, wait=False, share_dir=share))
    result = runner.invoke(cli, ["--share-dir", share, "output", "--follow", ok.job_id])
    assert result.exit_code == 0, result.output
    assert "task 0 says hello" in result.output and "task 1 passed the gate" in result.output

    bad = rx_exec(fail_at_once, x=[0], continue_on_failure=False,
                  compute_context=RxLocalParallel(num_workers=1, wait=False, share_dir=share))
    result = runner.invoke(cli, ["--share-dir", share, "output", "-f", bad.job_id])
    assert result.exit_code == 1
    assert "about to fail" in result.output

    result = runner.invoke(cli, ["--share-dir", share, "output", "--follow",
                                 "rxJob_20000101000000000000_abcd"])
    assert result.exit_code == 1 and "not found" in result.output


def test_follow_as_a_real_command(share, tmp_path):
    gate = tmp_path / "gate"
    job = rx_exec(say_then_wait, x=[0, 1], gate=str(gate), task_chunk_size=1,
                  compute_context=RxLocalParallel(num_workers=2, wait=False, share_dir=share))
    rxjobs = Path(sys.executable).with_name("rxjobs")
    command = [str(rxjobs)] if rxjobs.exists() else [sys.executable, "-m", "rxjobs"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([*command, "--share-dir", share, "output", "--follow", job.job_id],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # arrives while the job still runs
        assert "task 0 says hello" in first
        gate.touch()
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "task 1 passed the gate" in rest
