"""The Slurm engine on a real single-node Slurm: the engine contract plus what only Slurm shows.

One cluster (``munged``, ``slurmctld``, ``slurmd``; see ``slurm_cluster.py``)
serves the whole module and is always stopped at its end; the tests that stop
or reset ``slurmctld`` start it again before they return.  The share dir's
path has a space, ``&``, non-ASCII letters and a ``%`` (a replacement symbol
in ``sbatch --output``).  Array tasks import this module and
``engine_contract`` by reference: the engine passes the caller's ``sys.path``
to the nodes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from rxjobs import (
    RxCleanupWarning,
    RxLocalParallel,
    RxRemoteJobStatus,
    RxSlurm,
    rx_cleanup_jobs,
    rx_exec,
    rx_get_job_output,
    rx_get_job_results,
    rx_get_job_status,
    rx_get_jobs,
    rx_wait_for_job,
)
from rxjobs.cli import cli
from rxjobs.jobs import job_status
from rxjobs.records import read_engine_record
from rxjobs.store import open_store

from conftest import wait_until
from engine_contract import EngineContract, square
from slurm_cluster import slurm_unavailable

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(240)]
S = RxRemoteJobStatus
TESTS_DIR = str(Path(__file__).resolve().parent)


# -- functions the array tasks run (imported from this module by reference) --------------


def wait_for_file(path, value, limit=120.0):
    """Block until ``path`` exists (a gate the test opens), then say and return ``value``.

    ``<path>.started-<value>`` (with the pid) tells the test that the run is executing.
    """
    Path(f"{path}.started-{value}").write_text(str(os.getpid()))
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} was never opened")
        time.sleep(0.02)
    print(f"run {value}")
    return value


def _started(gate: str) -> dict[int, int]:
    """Run value -> pid of the runs of :func:`wait_for_file` executing at ``gate``."""
    folder, name = os.path.split(gate)
    found = {}
    for entry in os.listdir(folder):
        if entry.startswith(f"{name}.started-"):
            try:
                found[int(entry.rsplit("-", 1)[1])] = int(Path(folder, entry).read_text() or 0)
            except ValueError:
                continue
    return found


def _gone(pid: int) -> bool:
    """The process has exited (a zombie has: slurmstepd reaps it a moment later)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- the cluster ------------------------------------------------------------------------


@pytest.fixture
def share_path(tmp_path, slurm) -> str:
    path = str(tmp_path / "my share %a dir & ünïcode")
    yield path
    _cancel_jobs_of(path)


def _cancel_jobs_of(share: str) -> None:
    """Cancel whatever Slurm still runs for the jobs of ``share`` (a failed test's leftovers)."""
    store = open_store(share)
    if not os.path.isdir(share):
        return
    ids = []
    for job_id in store.list_job_ids():
        try:
            handle = read_engine_record(store, job_id).handle
            ids += [str(handle["array"]), str(handle["final"])]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


@pytest.fixture
def make_context(slurm, share_path):
    def make(wait: bool, **settings) -> RxSlurm:
        return RxSlurm(wait=wait, share_dir=share_path, **settings)

    return make


@pytest.fixture
def gate(tmp_path):
    """A file gated runs wait for; opened at the latest when the test ends."""
    path = tmp_path / "gate"
    try:
        yield str(path)
    finally:
        path.touch()


def _handle(share: str, job_id: str) -> dict:
    store = open_store(share)
    return read_engine_record(store, job_id).handle


def _squeue(*args: str) -> str:
    return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, timeout=30).stdout


# -- the contract -----------------------------------------------------------------------


class TestSlurmEngineContract(EngineContract):
    pass


# -- what only Slurm shows --------------------------------------------------------------


def test_a_job_is_an_array_named_after_it_plus_a_final_job(make_context, share_path, gate):
    job = rx_exec(wait_for_file, args=[{"path": gate, "value": i} for i in range(4)],
                  task_chunk_size=2, compute_context=make_context(wait=False, max_parallel=1))
    handle = _handle(share_path, job.job_id)
    assert handle["cluster"] == "rxtest" and handle["n_tasks"] == 2
    wait_until(lambda: _started(gate), what="a task to run")
    rows = _squeue("-t", "all", "-j", f"{handle['array']},{handle['final']}", "-o", "%i|%j|%T|%r|%E")
    assert f"{handle['array']}_0|{job.job_id}|RUNNING|None" in rows
    # max_parallel=1 is the array's %1 throttle
    assert f"{handle['array']}_1|{job.job_id}|PENDING|JobArrayTaskLimit" in rows
    assert f"{handle['final']}|{job.job_id}-end|PENDING|Dependency|afterany:{handle['array']}" in rows
    assert rx_get_job_status(job) is S.RUNNING
    Path(gate).touch()
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    assert rx_get_job_results(job) == [0, 1, 2, 3]


def test_job_survives_its_submitter_and_is_collected_from_another_process(slurm, share_path, gate):
    submit = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {TESTS_DIR!r})
        from test_slurm_engine import wait_for_file
        from rxjobs import RxSlurm, rx_exec
        cc = RxSlurm(wait=False, share_dir={share_path!r})
        job = rx_exec(wait_for_file, args=[{{"path": {gate!r}, "value": i}} for i in range(6)],
                      task_chunk_size=2, compute_context=cc)
        print(job.job_id)
    """)
    done = subprocess.run([sys.executable, "-c", submit], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    (job,) = rx_get_jobs(RxSlurm(share_dir=share_path), verbose=False)
    assert job.job_id == job_id
    assert rx_get_job_status(job) in (S.QUEUED, S.RUNNING)
    Path(gate).touch()
    collect = textwrap.dedent(f"""
        import json
        from rxjobs import RxSlurm, rx_get_jobs, rx_get_job_results, rx_wait_for_job
        (job,) = rx_get_jobs(RxSlurm(share_dir={share_path!r}), verbose=False)
        print(rx_wait_for_job(job, timeout=120).value)
        print(json.dumps(rx_get_job_results(job)))
    """)
    done = subprocess.run([sys.executable, "-c", collect], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    status, results = done.stdout.split("\n", 1)
    assert status == "finished"
    assert json.loads(results) == list(range(6))
    assert open_store(share_path).list_job_ids() == []


def test_an_array_task_cancelled_from_outside_fails_the_job_with_slurms_reason(make_context,
                                                                                share_path, gate):
    job = rx_exec(wait_for_file, args=[{"path": gate, "value": i} for i in range(3)],
                  task_chunk_size=1, compute_context=make_context(wait=False))
    started = wait_until(lambda: _started(gate) if len(_started(gate)) == 3 else None,
                         what="3 tasks to run")
    array = _handle(share_path, job.job_id)["array"]
    subprocess.run(["scancel", f"{array}_1"], check=True, timeout=30)  # an admin's scancel
    wait_until(lambda: _gone(started[1]), what="the cancelled task to stop")
    Path(gate).touch()
    assert rx_wait_for_job(job, timeout=120) is S.FAILED
    reason = job_status(job.store, job.job_id).reason
    assert "no result for 1 of 3 task(s)" in reason and "task 1 was cancelled on Slurm" in reason
    assert "failed: no result for 1 of 3" in rx_get_job_output(job)  # the final job's log
    assert [e.outcome for e in rx_cleanup_jobs(job, verbose=False)] == ["removed"]


def test_a_task_killed_mid_run_fails_the_job_with_the_signal(make_context, share_path, gate):
    job = rx_exec(wait_for_file, args=[{"path": gate, "value": i} for i in range(2)],
                  task_chunk_size=1, compute_context=make_context(wait=False))
    started = wait_until(lambda: _started(gate) if len(_started(gate)) == 2 else None,
                         what="2 tasks to run")
    os.kill(started[0], signal.SIGKILL)
    Path(gate).touch()
    assert rx_wait_for_job(job, timeout=120) is S.FAILED
    reason = job_status(job.store, job.job_id).reason
    assert "task 0 failed on Slurm (killed by signal 9)" in reason, reason
    assert [e.outcome for e in rx_cleanup_jobs(job, verbose=False)] == ["removed"]


def test_a_requeued_task_runs_again_without_duplicating_results(make_context, share_path, gate):
    job = rx_exec(wait_for_file, args=[{"path": gate, "value": i} for i in range(2)],
                  task_chunk_size=1, compute_context=make_context(wait=False))
    first = wait_until(lambda: _started(gate) if len(_started(gate)) == 2 else None,
                       what="2 tasks to run")
    array = _handle(share_path, job.job_id)["array"]
    subprocess.run(["scontrol", "requeue", f"{array}_0"], check=True, timeout=30)  # as preemption does
    requeued_at = time.time()
    wait_until(lambda: _gone(first[0]), what="the requeued task to stop")
    Path(f"{gate}.started-0").unlink()

    def rerun_started() -> bool:
        # Slurm holds a requeued task for two minutes (BeginTime): let it start sooner,
        # though not within the second of the requeue (slurmd would refuse the launch:
        # the old run's credential, revoked that second, and the task would fail).
        if 0 in _started(gate):
            return True
        if time.time() < requeued_at + 2.5:
            return False
        if _squeue("-t", "all", "-j", f"{array}_0", "-o", "%T|%r").strip() == "PENDING|BeginTime":
            subprocess.run(["scontrol", "update", f"jobid={array}_0", "StartTime=now"], timeout=30)
        return False

    wait_until(rerun_started, timeout=120, what="the requeued task to run again")
    assert rx_get_job_status(job) is S.RUNNING
    Path(gate).touch()
    assert rx_wait_for_job(job, timeout=180) is S.FINISHED
    store = open_store(share_path)
    names = sorted(n for n in store.listdir(store.paths(job.job_id).tasks) if not n.endswith(".log"))
    assert names == ["0.out", "0.result.pkl", "1.out", "1.result.pkl"]
    assert [line for line in rx_get_job_output(job).splitlines() if line.startswith("run ")] == [
        "run 0", "run 1"]
    assert rx_get_job_results(job) == [0, 1]


def test_slurmctld_down_is_undetermined_and_its_restart_finds_the_job_again(slurm, make_context,
                                                                             share_path, gate):
    cc = make_context(wait=False)
    kept, forced = (rx_exec(wait_for_file, args=[{"path": gate, "value": i} for i in range(2)],
                            task_chunk_size=2, compute_context=cc) for _ in range(2))
    wait_until(lambda: rx_get_job_status(kept) is S.RUNNING and rx_get_job_status(forced) is S.RUNNING,
               what="both jobs to run")
    slurm.stop_slurmctld()
    try:
        assert rx_get_job_status(kept) is S.UNDETERMINED
        assert rx_get_job_status(forced) is S.UNDETERMINED
        with pytest.warns(RxCleanupWarning, match="cannot be determined"):
            report = rx_cleanup_jobs([kept, forced], verbose=False)
        assert [e.outcome for e in report] == ["kept", "kept"]
        assert [e.outcome for e in rx_cleanup_jobs(forced, force=True, verbose=False)] == ["removed"]
        assert rx_get_job_status(forced) is S.MISSING
    finally:
        slurm.start_slurmctld()
        from rxjobs.slurm_client import forget_unreachable

        forget_unreachable()
    assert rx_get_job_status(kept) is S.RUNNING  # the controller's saved state knows it
    Path(gate).touch()
    assert rx_wait_for_job(kept, timeout=120) is S.FINISHED
    assert rx_get_job_results(kept) == [0, 1]


def test_a_job_slurm_forgot_with_no_recorded_end_is_failed_lost(slurm, make_context, share_path):
    job = rx_exec(square, x=[2], compute_context=make_context(wait=False))
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    store = open_store(share_path)
    handle = _handle(share_path, job.job_id)
    # The task that recorded the end cancelled the final job, pending behind it.
    wait_until(lambda: _squeue("-t", "all", "-j", handle["final"], "-o", "%T").strip()
               in ("CANCELLED", "COMPLETED", ""), what="the final job to end")
    store.remove_file(store.paths(job.job_id).status_json)  # as if nothing recorded the end
    slurm.stop_slurmctld()
    slurm.start_slurmctld(clear_state=True)  # a controller that lost its state
    from rxjobs.slurm_client import forget_unreachable

    forget_unreachable()
    reused = rx_exec(square, x=[3], compute_context=make_context(wait=False))  # ids start again
    derived = job_status(store, job.job_id)
    assert derived.status is S.FAILED, derived
    assert "lost" in derived.reason
    assert rx_wait_for_job(reused, timeout=120) is S.FINISHED
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [e.outcome for e in rx_cleanup_jobs(job, verbose=False)] == ["removed"]
    assert rx_get_job_results(reused) == [9]


def test_cleanup_removes_slurms_output_files_with_the_job(make_context, share_path):
    job = rx_exec(square, x=list(range(4)), task_chunk_size=2, compute_context=make_context(wait=False))
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    store = open_store(share_path)
    tasks = store.paths(job.job_id).tasks
    assert {"0.slurm.log", "1.slurm.log"} <= set(store.listdir(tasks))
    assert os.stat(f"{tasks}/0.slurm.log").st_mode & 0o777 == 0o600
    assert rx_get_job_results(job) == [0, 1, 4, 9]
    wait_until(lambda: not _squeue("-n", f"{job.job_id},{job.job_id}-end"), what="Slurm jobs to end")
    left = [os.path.join(root, name) for root, dirs, files in os.walk(share_path)
            for name in files + dirs]
    assert [p for p in left if job.job_id in p or "slurm" in os.path.basename(p)] == []
    assert not any(name.startswith("slurm-") for name in os.listdir(os.getcwd()))


def test_jobs_match_by_share_dir_and_cluster(slurm, make_context, share_path, tmp_path):
    cc = make_context(wait=False)
    job = rx_exec(square, x=[3], compute_context=cc)
    assert rx_get_jobs(RxSlurm(share_dir=share_path), verbose=False) == [job]
    assert rx_get_jobs(RxSlurm(share_dir=share_path, partition="debug"), verbose=False) == [job]
    assert rx_get_jobs(RxSlurm(share_dir=share_path, cluster="elsewhere"), verbose=False) == []
    assert rx_get_jobs(RxSlurm(share_dir=str(tmp_path / "other")), verbose=False) == []
    assert rx_get_jobs(RxLocalParallel(share_dir=share_path), verbose=False) == []
    assert rx_get_jobs(cc, exact_match=True, verbose=False) == [job]
    assert rx_get_jobs(make_context(wait=False, mem="100M"), exact_match=True, verbose=False) == []
    rx_wait_for_job(job, timeout=120)
    assert job.close().removed


def test_sbatch_options_reach_slurm(make_context, share_path, gate):
    job = rx_exec(wait_for_file, args=[{"path": gate, "value": 0}], compute_context=make_context(
        wait=False, time_limit="7:00", mem="100M", cpus_per_task=2, partition="debug",
        extra_sbatch_options=["--comment=from-rxjobs"]))
    array = _handle(share_path, job.job_id)["array"]
    row = _squeue("-t", "all", "-j", array, "-o", "%l|%m|%c|%P|%k").strip()
    assert row == "7:00|100M|2|debug|from-rxjobs"
    Path(gate).touch()
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    job.close()


def test_an_unknown_partition_is_refused_with_slurms_message(make_context, share_path):
    with pytest.raises(RuntimeError, match="(?i)invalid partition"):
        rx_exec(square, x=[1], compute_context=make_context(wait=False, partition="nope"))
    assert open_store(share_path).list_job_ids() == []


# -- the CLI on a Slurm share dir --------------------------------------------------------


def _cli(share: str, *args: str):
    return CliRunner().invoke(cli, ["--share-dir", share, *args])


def test_cli_list_status_wait_cancel_cleanup(make_context, share_path, gate):
    cc = make_context(wait=False)
    done = rx_exec(square, x=[1, 2], compute_context=cc)
    gated = rx_exec(wait_for_file, args=[{"path": gate, "value": 0}], compute_context=cc)

    waited = _cli(share_path, "wait", done.job_id, "--timeout", "120", "--no-progress")
    assert waited.exit_code == 0, waited.output
    wait_until(lambda: _started(gate), what="the gated job to run")
    rows = {row["job_id"]: row for row in json.loads(_cli(share_path, "list", "--json").stdout)}
    assert rows[done.job_id]["state"] == "finished" and rows[gated.job_id]["state"] == "running"
    status = _cli(share_path, "status", gated.job_id)
    assert status.exit_code == 0 and "running" in status.stdout

    kept = _cli(share_path, "cleanup", "--all")
    assert done.job_id in kept.output and gated.job_id in kept.output
    assert rx_get_job_status(done) is S.FINISHED and rx_get_job_status(gated) is S.RUNNING

    canceled = _cli(share_path, "cancel", gated.job_id)
    assert canceled.exit_code == 0, canceled.output
    assert rx_get_job_status(gated) is S.CANCELED
    array = _handle(share_path, gated.job_id)["array"]
    assert "RUNNING" not in _squeue("-t", "all", "-j", array, "-o", "%T")

    removed = _cli(share_path, "cleanup", "--all", "--force")
    assert removed.exit_code == 0, removed.output
    assert open_store(share_path).list_job_ids() == []


# -- the context, with no cluster needed --------------------------------------------------


def test_without_the_slurm_commands_the_context_says_so(monkeypatch, tmp_path):
    from rxjobs import EngineNotInstalledError

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineNotInstalledError, match="Slurm client commands on PATH.*sbatch"):
        RxSlurm(share_dir=str(tmp_path), cluster="any")


def test_share_dirs_nodes_cannot_mount_are_refused(tmp_path):
    if slurm_unavailable() and not os.environ.get("CI"):
        pytest.skip(slurm_unavailable())
    with pytest.raises(ValueError, match="every node mounts"):
        RxSlurm(share_dir="s3://bucket/share", cluster="any")
    with pytest.raises(ValueError, match="every worker can reach") as memory:
        RxSlurm(share_dir="memory://share", cluster="any")
    assert "object store" not in str(memory.value)  # RxSlurm refuses those too (issue 29)
    with pytest.raises(ValueError, match="max_parallel"):
        RxSlurm(share_dir=str(tmp_path), cluster="any", max_parallel=0)


# -- reproducible random numbers -----------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 4])
def test_rng_seed_gives_the_draws_of_every_other_engine(make_context, chunk):
    """The matrix of tests/test_rng.py, on Slurm: the same draws whatever the chunks."""
    from test_rng import N_RUNS, SEED, draws, reference

    assert rx_exec(draws, x=list(range(N_RUNS)), rng_seed=SEED, task_chunk_size=chunk,
                   compute_context=make_context(wait=True)) == reference()
