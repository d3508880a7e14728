"""The Dask engine on a real cluster: the engine contract plus what only Dask can show.

A real ``dask scheduler`` and two ``dask worker`` processes (2 threads each,
no nanny) run on loopback for the module; tests that kill a worker or the
scheduler get a cluster of their own.  Workers import this module and
``engine_contract`` (functions are pickled by reference), so they are started
with the tests directory on ``PYTHONPATH``.  Every process is started in a
session of its own and killed with its group when the fixture ends, passed
or failed.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from rxjobs import (
    RxCleanupWarning,
    RxDask,
    RxLocalParallel,
    RxRemoteJobStatus,
    rx_cancel_job,
    rx_cleanup_jobs,
    rx_exec,
    rx_get_job_output,
    rx_get_job_results,
    rx_get_job_status,
    rx_get_jobs,
    rx_wait_for_job,
)
from rxjobs.jobs import job_status
from rxjobs.records import read_engine_record
from rxjobs.store import open_store

from conftest import free_port, port_listening, wait_until
from engine_contract import EngineContract, odd_path_subset, sleep_then_return, square

pytestmark = pytest.mark.timeout(300)
S = RxRemoteJobStatus
TESTS_DIR = str(Path(__file__).resolve().parent)
DASK = str(Path(sys.executable).with_name("dask"))


# -- functions the workers run (imported from this module by reference) ----------------


def wait_for_file(path, value, limit=120.0):
    """Block until ``path`` exists (a gate the test opens), then say and return ``value``.

    ``<path>.started-<value>`` tells the test that the run is executing.
    """
    Path(f"{path}.started-{value}").touch()
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} was never opened")
        time.sleep(0.02)
    print(f"run {value}")
    return value


def fail_soon_or_sleep(x):
    """Run 0 fails after a moment; the others would run for 5 minutes."""
    if x == 0:
        time.sleep(0.5)
        raise ValueError("the first run fails")
    return sleep_then_return(300)


def chatty(x):
    """Many lines with pauses, so that runs in other threads of a worker interleave."""
    for i in range(40):
        print(f"{x}:{i}")
        time.sleep(0.001)
    return x


# -- the cluster ------------------------------------------------------------------------


class Cluster:
    """A scheduler and workers as real processes on loopback, each in its own session."""

    def __init__(self, workdir: Path, n_workers: int = 2) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.n_workers = n_workers
        self.procs: list[subprocess.Popen] = []
        self.scheduler: subprocess.Popen | None = None

    def _spawn(self, args: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
        with open(self.workdir / log, "ab") as out:
            proc = subprocess.Popen([DASK, *args], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=self.workdir, env=env,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self) -> Cluster:
        try:
            self.start_scheduler()
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS_DIR, env.get("PYTHONPATH")]))
            for i in range(self.n_workers):
                self._spawn(["worker", self.address, "--nthreads", "2", "--no-dashboard",
                             "--host", "127.0.0.1", "--no-nanny", "--name", f"w{i}",
                             "--local-directory", str(self.workdir / f"w{i}")], f"worker{i}.log", env)
            self.client().wait_for_workers(self.n_workers, timeout=120)
        except BaseException:
            self.stop()
            raise
        return self

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn(
            ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard",
             "--dashboard-address", "127.0.0.1:0"], "scheduler.log")
        scheduler = self.scheduler

        def up() -> bool:
            if scheduler.poll() is not None:
                pytest.fail(f"dask scheduler exited: {(self.workdir / 'scheduler.log').read_text()}")
            return port_listening(self.port)

        wait_until(up, timeout=120, what="the dask scheduler to listen")

    def kill_scheduler(self) -> None:
        _kill_group(self.scheduler)

    def client(self):
        from rxjobs.engines.dask import get_client

        return get_client(self.address)

    def worker_pids(self) -> dict[str, int]:
        return self.client().run(os.getpid)

    def stop(self) -> None:
        from rxjobs.engines.dask import close_clients

        close_clients()  # no client left reconnecting to a dead scheduler for the session
        for proc in self.procs:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = Cluster(tmp_path_factory.mktemp("dask-cluster")).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def own_cluster(tmp_path):
    """A cluster for one test that kills parts of it."""
    running = Cluster(tmp_path / "cluster").start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def gate(tmp_path):
    """A file that gated runs wait for; opened at the latest when the test ends."""
    path = tmp_path / "gate"
    try:
        yield str(path)
    finally:
        path.touch()  # never leave workers blocked for the next test


@pytest.fixture
def share_path(request) -> str:
    """The test's share dir: ``local_share``, or ``odd_local_share`` for a test parametrized
    indirectly with "odd chars" (``ODD_PATH``, ``BOTH_PATHS``)."""
    odd = getattr(request, "param", "plain") == "odd chars"
    return request.getfixturevalue("odd_local_share" if odd else "local_share")


ODD_PATH = pytest.mark.parametrize("share_path", ["odd chars"], indirect=True)
BOTH_PATHS = pytest.mark.parametrize("share_path", ["plain", "odd chars"], indirect=True)


@pytest.fixture
def make_context(cluster, share_path):
    def make(wait: bool, **settings) -> RxDask:
        return RxDask(cluster.address, wait=wait, share_dir=share_path, **settings)

    return make


def _job_keys_processing(cluster: Cluster, job_id: str) -> dict[str, list[str]]:
    """Worker address -> the run tasks of ``job_id`` the scheduler has it processing."""
    processing = cluster.client().processing()
    return {worker: [k for k in keys if str(k).startswith(f"{job_id}-task-")]
            for worker, keys in processing.items()}


def _n_processing(cluster: Cluster, job_id: str) -> int:
    return sum(len(keys) for keys in _job_keys_processing(cluster, job_id).values())


def _n_waiting_at(gate: str) -> int:
    """How many runs of :func:`wait_for_file` are executing at ``gate``."""
    folder, name = os.path.split(gate)
    return sum(1 for entry in os.listdir(folder) if entry.startswith(f"{name}.started-"))


# -- the contract -----------------------------------------------------------------------


class TestDaskEngineContract(EngineContract):
    pass


@ODD_PATH
@odd_path_subset
class TestDaskEngineContractOnOddPath(EngineContract):
    pass


# -- what only Dask shows ---------------------------------------------------------------


@BOTH_PATHS
def test_job_survives_its_submitter_and_is_collected_from_another_process(cluster, share_path, gate):
    submit = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {TESTS_DIR!r})
        from test_dask_engine import wait_for_file
        from rxjobs import RxDask, rx_exec
        cc = RxDask({cluster.address!r}, wait=False, share_dir={share_path!r})
        job = rx_exec(wait_for_file, args=[{{"path": {gate!r}, "value": i}} for i in range(6)],
                      task_chunk_size=2, compute_context=cc)
        print(job.job_id)
    """)
    done = subprocess.run([sys.executable, "-c", submit], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    # The submitter has exited and its client is gone; the job waits at the gate.
    (job,) = rx_get_jobs(RxDask(cluster.address, share_dir=share_path), verbose=False)
    assert job.job_id == job_id
    assert rx_get_job_status(job) in (S.QUEUED, S.RUNNING)
    Path(gate).touch()
    collect = textwrap.dedent(f"""
        import json
        from rxjobs import RxDask, rx_get_jobs, rx_get_job_results, rx_wait_for_job
        (job,) = rx_get_jobs(RxDask({cluster.address!r}, share_dir={share_path!r}), verbose=False)
        print(rx_wait_for_job(job, timeout=120).value)
        print(json.dumps(rx_get_job_results(job)))
    """)
    done = subprocess.run([sys.executable, "-c", collect], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    status, results = done.stdout.split("\n", 1)
    assert status == "finished"
    assert json.loads(results) == list(range(6))
    assert open_store(share_path).list_job_ids() == []


def test_a_job_behind_a_busy_cluster_is_queued_then_runs(cluster, make_context, gate):
    busy = rx_exec(wait_for_file, args=[{"path": gate, "value": i} for i in range(8)],
                   task_chunk_size=1, compute_context=make_context(wait=False))
    # >= rather than ==: under load Dask may start a stolen task twice (harmless: idempotent).
    wait_until(lambda: _n_waiting_at(gate) >= 4, timeout=120, what="every worker thread busy")
    assert rx_get_job_status(busy) is S.RUNNING
    later = rx_exec(square, x=[5], compute_context=make_context(wait=False))
    assert rx_get_job_status(later) is S.QUEUED
    Path(gate).touch()
    assert rx_wait_for_job(later, timeout=120) is S.FINISHED
    assert rx_wait_for_job(busy, timeout=120) is S.FINISHED
    assert rx_get_job_results(later) == [25]
    assert rx_get_job_results(busy) == list(range(8))


def test_cancel_interrupts_running_tasks_and_frees_the_workers(cluster, make_context, share_path):
    from rxjobs.engines.dask import _task_states, final_key, task_key

    # Two tasks end at once (their results are held for the final task), four run for 5 minutes.
    job = rx_exec(sleep_then_return, seconds=[0, 0, 300, 300, 300, 300], task_chunk_size=1,
                  compute_context=make_context(wait=False))
    store = open_store(share_path)
    paths = store.paths(job.job_id)
    wait_until(lambda: _n_processing(cluster, job.job_id) == 4 and store.exists(paths.result(1)),
               what="2 tasks to end and 4 to run")
    assert rx_cancel_job(job) is True
    keys = [task_key(job.job_id, k) for k in range(6)] + [final_key(job.job_id)]
    assert set(_task_states(cluster.client(), keys).values()) <= {None, "forgotten"}
    # Every thread was busy for 5 minutes: a new job finishes only if they were freed.
    started = time.monotonic()
    assert rx_exec(square, x=list(range(8)), compute_context=make_context(wait=True)) == [
        x * x for x in range(8)]
    assert time.monotonic() - started < 60
    assert not [n for n in store.listdir(paths.tasks) if n.endswith(".result.pkl")]
    assert rx_get_job_status(job) is S.CANCELED
    assert rx_cancel_job(job) is False


def test_first_failure_stops_the_jobs_other_tasks(make_context):
    started = time.monotonic()
    with pytest.raises(ValueError, match="the first run fails"):
        rx_exec(fail_soon_or_sleep, x=list(range(4)), task_chunk_size=1, continue_on_failure=False,
                compute_context=make_context(wait=True))
    # The three 5-minute runs held every other worker thread: they were stopped.
    assert rx_exec(square, x=list(range(8)), compute_context=make_context(wait=True)) == [
        x * x for x in range(8)]
    assert time.monotonic() - started < 90


def test_output_of_concurrent_tasks_is_not_mixed(make_context):
    job = rx_exec(chatty, x=list(range(8)), task_chunk_size=1, compute_context=make_context(wait=False))
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    expected = "".join(f"{x}:{i}\n" for x in range(8) for i in range(40))
    assert rx_get_job_output(job) == expected
    assert rx_get_job_results(job) == list(range(8))


def test_a_task_the_workers_cannot_run_fails_the_job_with_the_reason(make_context, tmp_path,
                                                                    monkeypatch):
    module_dir = tmp_path / "only_here"
    module_dir.mkdir()
    (module_dir / "rxjobs_test_private.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(module_dir))  # importable here, not on the workers
    from rxjobs_test_private import double

    job = rx_exec(double, x=[1, 2], compute_context=make_context(wait=False))
    assert rx_wait_for_job(job, timeout=120) is S.FAILED
    reason = job_status(job.store, job.job_id).reason
    assert "could not be run" in reason and "rxjobs_test_private" in reason
    assert [e.outcome for e in rx_cleanup_jobs(job, verbose=False)] == ["removed"]


def test_job_whose_keys_the_scheduler_forgot_is_failed_lost(cluster, make_context, share_path):
    from rxjobs.engines.dask import _task_states, final_key

    job = rx_exec(square, x=[2], compute_context=make_context(wait=False))
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    last = final_key(job.job_id)
    # The final task wrote status.json just before it ended: wait for the scheduler to forget it.
    wait_until(lambda: _task_states(cluster.client(), [last])[last] is None, what="keys forgotten")
    store = open_store(share_path)
    store.remove_file(store.paths(job.job_id).status_json)  # as if the final task never ran
    derived = job_status(store, job.job_id)
    assert derived.status is S.FAILED, derived
    assert "lost" in derived.reason
    assert [e.outcome for e in rx_cleanup_jobs(job, verbose=False)] == ["removed"]


def test_worker_killed_mid_task_is_rescheduled_without_duplicates(own_cluster, tmp_path, gate):
    share = str(tmp_path / "share")
    cc = RxDask(own_cluster.address, wait=False, share_dir=share)
    job = rx_exec(wait_for_file, args=[{"path": gate, "value": i} for i in range(4)],
                  task_chunk_size=1, compute_context=cc)
    wait_until(lambda: _n_waiting_at(gate) == 4, what="4 tasks to run")
    victim = next(w for w, keys in _job_keys_processing(own_cluster, job.job_id).items() if keys)
    os.kill(own_cluster.worker_pids()[victim], signal.SIGKILL)
    wait_until(lambda: len(own_cluster.client().nthreads()) == 1, what="the scheduler to drop the worker")
    Path(gate).touch()
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    output = rx_get_job_output(job)
    assert sorted(line for line in output.splitlines() if line.startswith("run ")) == [
        f"run {i}" for i in range(4)]
    store = open_store(share)
    assert sorted(store.listdir(store.paths(job.job_id).tasks)) == sorted(
        [f"{k}.result.pkl" for k in range(4)] + [f"{k}.out" for k in range(4)])
    assert rx_get_job_results(job) == [0, 1, 2, 3]


def test_scheduler_down_means_undetermined_and_a_restart_means_lost(own_cluster, tmp_path, gate):
    share = str(tmp_path / "share")  # the gate stays closed: the jobs keep running
    cc = RxDask(own_cluster.address, wait=False, share_dir=share)
    kept, forced = (rx_exec(wait_for_file, args=[{"path": gate, "value": i} for i in range(2)],
                            task_chunk_size=1, compute_context=cc) for _ in range(2))
    wait_until(lambda: rx_get_job_status(kept) is S.RUNNING and rx_get_job_status(forced) is S.RUNNING,
               what="both jobs to run")
    own_cluster.kill_scheduler()
    assert rx_get_job_status(kept) is S.UNDETERMINED
    assert rx_get_job_status(forced) is S.UNDETERMINED
    with pytest.warns(RxCleanupWarning, match="cannot be determined"):
        report = rx_cleanup_jobs([kept, forced], verbose=False)
    assert [e.outcome for e in report] == ["kept", "kept"]
    assert [e.outcome for e in rx_cleanup_jobs(forced, force=True, verbose=False)] == ["removed"]
    assert rx_get_job_status(forced) is S.MISSING
    assert rx_get_job_status(kept) is S.UNDETERMINED

    own_cluster.start_scheduler()  # same address, knows nothing of the job
    wait_until(lambda: rx_get_job_status(kept) is S.FAILED, what="the job to be seen lost")
    assert "lost" in job_status(open_store(share), kept.job_id).reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [e.outcome for e in rx_cleanup_jobs(kept, verbose=False)] == ["removed"]


def test_an_invalid_address_is_refused_and_an_absent_scheduler_said_clearly(tmp_path):
    with pytest.raises(ValueError, match="invalid Dask scheduler address"):
        RxDask("localhost:not-a-port", share_dir=str(tmp_path))
    with pytest.raises(ValueError, match="scheduler address"):
        RxDask("", share_dir=str(tmp_path))
    with pytest.raises(ValueError, match="every worker can reach"):
        RxDask("tcp://127.0.0.1:8786", share_dir="memory://nope")
    share = str(tmp_path / "share")
    nobody = RxDask(f"tcp://127.0.0.1:{free_port()}", share_dir=share)
    with pytest.raises(ConnectionError, match="cannot reach the Dask scheduler at tcp://127.0.0.1"):
        rx_exec(square, x=[1], compute_context=nobody)
    assert not Path(share).exists() or open_store(share).list_job_ids() == []


def test_jobs_match_by_scheduler_address_and_share_dir(cluster, make_context, share_path, tmp_path):
    cc = make_context(wait=False)
    job = rx_exec(square, x=[3], compute_context=cc)
    assert rx_get_jobs(RxDask(cluster.address, share_dir=share_path), verbose=False) == [job]
    assert rx_get_jobs(RxDask(cluster.address.replace("tcp://", ""), share_dir=share_path),
                       verbose=False) == [job]
    other_scheduler = RxDask("tcp://127.0.0.1:1", wait=False, share_dir=share_path)
    assert rx_get_jobs(other_scheduler, verbose=False) == []
    assert rx_get_jobs(RxDask(cluster.address, share_dir=str(tmp_path / "elsewhere")),
                       verbose=False) == []
    assert rx_get_jobs(RxLocalParallel(share_dir=share_path), verbose=False) == []
    assert rx_get_jobs(cc, exact_match=True, verbose=False) == [job]
    assert rx_get_jobs(make_context(wait=False, console_output=True), exact_match=True,
                       verbose=False) == []
    out = io.StringIO()
    with redirect_stdout(out):
        rx_wait_for_job(job, timeout=120)
        rx_get_jobs(cc)
    assert "finished" in out.getvalue() and job.job_id in out.getvalue()
    assert job.close().removed


# -- the worker-side pieces, in this process ---------------------------------------------


def test_python_capture_keeps_each_threads_output_apart():
    from rxjobs.runner import _captured

    outputs: dict[int, bytes] = {}
    barrier = threading.Barrier(4)

    def work(n: int) -> None:
        with _captured("python") as output:
            barrier.wait()
            for i in range(200):
                print(f"{n}:{i}")
                if i % 50 == 0:
                    print(f"{n} err", file=sys.stderr)
        outputs[n] = output.getvalue()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(4):
        lines = outputs[n].decode().splitlines()
        assert [line for line in lines if "err" not in line] == [f"{n}:{i}" for i in range(200)]
        assert lines.count(f"{n} err") == 4


def test_interrupting_a_jobs_threads_stops_them_and_nothing_else():
    from rxjobs.engines import dask as engine

    coverage = sys.modules.get("coverage")
    if coverage is not None and coverage.Coverage.current() is not None:
        # The exception sent to a thread lands in coverage's tracer, and the thread never ends.
        pytest.skip("cannot run under coverage (make test-full); make test runs it")

    stop = threading.Event()
    outcome: dict[str, object] = {}

    def spin(name: str) -> str:
        while not stop.is_set():
            time.sleep(0.01)
        return name

    def run(job_id: str) -> None:
        outcome[job_id] = engine._run_interruptible(job_id, spin, job_id)

    threads = {j: threading.Thread(target=run, args=(j,)) for j in ("rxJob_a", "rxJob_b")}
    for t in threads.values():
        t.start()
    wait_until(lambda: len(engine._running) >= 2, what="both threads to register")
    assert engine._interrupt_job_threads("rxJob_a") == 1
    threads["rxJob_a"].join(timeout=30)
    assert outcome == {"rxJob_a": None}  # interrupted, and the exception did not escape
    assert engine._interrupt_job_threads("rxJob_a") == 0
    stop.set()
    threads["rxJob_b"].join(timeout=30)
    assert outcome["rxJob_b"] == "rxJob_b"
    assert engine._running == {}


# -- waking a waiter when the job ends --------------------------------------------------


def _sleeper_of(share_path: str, job_id: str):
    from rxjobs.engines.dask import ENGINE

    store = open_store(share_path)
    handle = read_engine_record(store, job_id).handle
    return ENGINE.sleeper(handle)


def _sleep_in_thread(sleeper, seconds: float) -> tuple[threading.Thread, dict[str, float]]:
    woke: dict[str, float] = {}

    def run() -> None:
        sleeper(seconds)
        woke["at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, woke


@pytest.mark.timeout(180)
def test_sleeper_wakes_when_the_job_ends_not_before(make_context, share_path, gate):
    job = rx_exec(wait_for_file, args=[{"path": gate, "value": i} for i in range(2)],
                  compute_context=make_context(wait=False))
    sleeper = _sleeper_of(share_path, job.job_id)
    assert sleeper is not None
    thread, woke = _sleep_in_thread(sleeper, 120)
    wait_until(lambda: _n_waiting_at(gate) >= 1, timeout=120, what="the job to run")
    assert thread.is_alive()  # the job has not ended: the sleeper has not woken
    opened = time.monotonic()
    Path(gate).touch()
    thread.join(timeout=60)
    assert not thread.is_alive() and opened <= woke["at"] < opened + 60
    assert rx_get_job_status(job) is S.FINISHED  # the end is recorded before it is announced
    started = time.monotonic()
    sleeper(0.05)  # woken once: later calls are plain sleeps
    assert time.monotonic() - started >= 0.05
    assert rx_get_job_results(job) == [0, 1]


@pytest.mark.timeout(180)
def test_sleeper_wakes_when_the_job_is_canceled(make_context, share_path, gate):
    job = rx_exec(wait_for_file, args=[{"path": gate, "value": 0}],
                  compute_context=make_context(wait=False))
    wait_until(lambda: _n_waiting_at(gate) >= 1, timeout=120, what="the job to run")
    thread, woke = _sleep_in_thread(_sleeper_of(share_path, job.job_id), 120)
    canceled = time.monotonic()
    assert rx_cancel_job(job) is True
    thread.join(timeout=60)
    assert not thread.is_alive() and woke["at"] < canceled + 60
    assert rx_get_job_status(job) is S.CANCELED


@pytest.mark.timeout(60)
def test_no_sleeper_when_the_scheduler_cannot_be_reached():
    from rxjobs.engines.dask import ENGINE

    handle = {"scheduler": f"tcp://127.0.0.1:{free_port()}", "job_id": "rxJob_x", "n_tasks": 1}
    assert ENGINE.sleeper(handle) is None
