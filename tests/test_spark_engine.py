"""The Spark engine on real Spark: the engine contract on ``local[2]``, what only a
Spark driver can show, and a job on a standalone cluster started here.

The contract runs on one persistent Spark server (``persistent_run=True``: one JVM for the
module's contract tests, on one share dir); a few contract tests, and every test of what
only a per-job driver shows, run each job as its own Spark application (a JVM per job).
Those jobs are made cheap: a small driver heap, C1-only JIT, serial GC, no UI.  Spark
binds to loopback only (``SPARK_LOCAL_IP=127.0.0.1``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import psutil
import pytest

from rxjobs import (
    EngineNotInstalledError,
    RxRemoteJobStatus,
    RxSpark,
    rx_cancel_job,
    rx_cleanup_jobs,
    rx_exec,
    rx_get_job_output,
    rx_get_job_results,
    rx_get_job_status,
    rx_get_jobs,
    rx_spark_disconnect,
    rx_wait_for_job,
)
from rxjobs.engines.spark import ENGINE, PerJobDriverBackend
from rxjobs.engines.spark_client import PersistentServerBackend
from rxjobs.engines.spark_session import parallelism, spark_conf
from rxjobs.jobs import job_status
from rxjobs.records import read_engine_record
from rxjobs.status import Probe
from rxjobs.store import open_store

from conftest import (
    free_port,
    kill_processes_mentioning,
    live,
    process_tree,
    processes_mentioning,
    wait_until,
)
from engine_contract import EngineContract, contract_subset, sleep_then_return, square

pyspark = pytest.importorskip("pyspark")

pytestmark = pytest.mark.timeout(600)
S = RxRemoteJobStatus

# Cheaper JVMs: each job starts one.  C1 only and the serial GC save seconds per job.
CHEAP_JVM = {
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    "spark.driver.memory": "512m",
}


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture
def share_path(tmp_path):
    """One share dir per test, with a space and non-ASCII in its path.

    Whatever a failed test left running (drivers, and the JVMs and Python
    workers below them) is killed at the end.
    """
    path = str(tmp_path / "spark share ü")
    yield path
    kill_processes_mentioning(path)


@pytest.fixture
def make_context(share_path):
    def make(wait: bool, **settings) -> RxSpark:
        settings.setdefault("extra_spark_config", CHEAP_JVM)
        return RxSpark(master="local[2]", wait=wait, share_dir=share_path, **settings)

    return make


@pytest.fixture(scope="module")
def module_share(tmp_path_factory):
    """The share dir of the contract tests on one persistent server (a server serves one share
    dir).  At the end the server is stopped and whatever ran for the share dir is killed."""
    path = str(tmp_path_factory.mktemp("spark-contract") / "spark share ü")
    try:
        yield path
    finally:
        try:
            rx_spark_disconnect(RxSpark(master="local[2]", share_dir=path, persistent_run=True,
                                        extra_spark_config=CHEAP_JVM))
        finally:
            kill_processes_mentioning(path)


class TestSparkEngineContract(EngineContract):
    """The contract on one persistent server: every job is a Spark job of the same JVM."""

    @pytest.fixture
    def share_path(self, module_share):
        """The module's share dir, emptied after each test (forced: a test that failed may
        have left jobs of any state), so each test starts from an empty share dir."""
        left = open_store(module_share).list_job_ids() if os.path.isdir(module_share) else []
        assert left == [], f"an earlier test's jobs were not cleaned up: {left}"
        yield module_share
        cc = RxSpark(master="local[2]", share_dir=module_share, persistent_run=True,
                     extra_spark_config=CHEAP_JVM)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rx_cleanup_jobs(rx_get_jobs(cc, verbose=False), force=True, verbose=False)

    @pytest.fixture
    def make_context(self, share_path):
        def make(wait: bool, **settings) -> RxSpark:
            settings.setdefault("extra_spark_config", CHEAP_JVM)
            settings.setdefault("idle_timeout", 900)
            return RxSpark(master="local[2]", wait=wait, share_dir=share_path, persistent_run=True,
                           **settings)

        return make


# A job per JVM: what a per-job driver does on its own for every contract test is shown by these.
PER_JOB_CONTRACT_TESTS = frozenset({
    "test_waiting_job_returns_results_in_run_order",
    "test_non_waiting_job_runs_to_finished_and_is_collected",
    "test_first_failure_fails_the_job_when_not_continuing",
})


@contract_subset(PER_JOB_CONTRACT_TESTS)
class TestSparkEngineContractPerJobDriver(EngineContract):
    """A few contract tests with a Spark application (a JVM) per job."""


# -- helpers -------------------------------------------------------------------------------


def fail_or_sleep(x):
    if x == 0:
        raise RuntimeError("run zero fails at once")
    return sleep_then_return(300)


def worker_python(x):
    import pyspark  # noqa: F401 - proves the run happens inside a PySpark worker

    return {"prefix": sys.prefix, "pid": os.getpid(), "x": x}


def _handle(share_path: str, job_id: str) -> dict:
    store = open_store(share_path)
    return read_engine_record(store, job_id).handle


def _status_record(share_path: str, job_id: str) -> dict:
    store = open_store(share_path)
    return store.read_json(store.paths(job_id).status_json)


def _job_tree_with_workers(share_path: str, job_id: str, workers: int) -> list[psutil.Process]:
    """The driver and everything below it, once ``workers`` PySpark workers run tasks."""
    driver = psutil.Process(_handle(share_path, job_id)["pid"])

    def tree():
        procs = [driver, *driver.children(recursive=True)]
        names = []
        for proc in live(procs):
            try:
                names.append(" ".join(proc.cmdline()))
            except psutil.NoSuchProcess:
                pass
        # The daemon and its forked workers share one command line.
        if sum("pyspark.daemon" in n for n in names) >= workers + 1:
            return procs
        return None

    return wait_until(tree, timeout=120, what=f"{workers} PySpark workers to run tasks")


# -- Spark-specific behaviour ----------------------------------------------------------------


@pytest.mark.slow
def test_detached_job_survives_its_caller_and_is_collected_elsewhere(share_path):
    """Submit in one process that exits at once; collect from another process."""
    here = os.path.dirname(__file__)
    submit = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {here!r})
        from engine_contract import square
        from rxjobs import RxSpark, rx_exec
        cc = RxSpark(master="local[2]", wait=False, share_dir={share_path!r},
                     extra_spark_config={CHEAP_JVM!r})
        print(rx_exec(square, x=list(range(10)), compute_context=cc).job_id)
    """)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", submit], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 60  # returns without waiting for Spark
    job_id = done.stdout.strip()
    collect = textwrap.dedent(f"""
        import json
        from rxjobs import RxSpark, rx_get_jobs, rx_get_job_results, rx_wait_for_job
        (job,) = rx_get_jobs(RxSpark(master="local[2]", share_dir={share_path!r}), verbose=False)
        assert job.job_id == {job_id!r}
        print(rx_wait_for_job(job, timeout=300).value)
        print(json.dumps(rx_get_job_results(job)))
    """)
    done = subprocess.run([sys.executable, "-c", collect], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    status, results = done.stdout.split("\n", 1)
    assert status == "finished"
    assert json.loads(results) == [x * x for x in range(10)]
    assert open_store(share_path).list_job_ids() == []


@pytest.mark.slow
def test_job_is_one_spark_application_run_by_this_python(make_context, share_path):
    cc = make_context(wait=False)
    job = rx_exec(worker_python, x=[1, 2, 3, 4], compute_context=cc, task_chunk_size=1)
    assert rx_wait_for_job(job, timeout=300) is S.FINISHED
    details = _status_record(share_path, job.job_id)["details"]
    assert details["spark_application_id"].startswith("local-")
    assert details["spark_master"] == "local[2]"
    # Matched by share dir and master: another master is another engine address.
    assert rx_get_jobs(RxSpark(master="local[1]", share_dir=share_path), verbose=False) == []
    assert rx_get_jobs(RxSpark(master="local[2]", share_dir=share_path), verbose=False) == [job]
    results = rx_get_job_results(job)
    assert [r["x"] for r in results] == [1, 2, 3, 4]
    assert {r["prefix"] for r in results} == {sys.prefix}  # executors run the caller's Python
    assert os.getpid() not in {r["pid"] for r in results}


@pytest.mark.slow
def test_cancel_of_sleeping_tasks_is_quick_and_leaves_no_process(make_context, share_path):
    job = rx_exec(sleep_then_return, seconds=[300] * 4, compute_context=make_context(wait=False),
                  task_chunk_size=1)
    wait_until(lambda: rx_get_job_status(job) is S.RUNNING, timeout=120, what="job to run")
    tree = _job_tree_with_workers(share_path, job.job_id, workers=2)
    # Every process of the job is the driver or below it, and the JVM names the job.
    named = {p.pid for p in processes_mentioning(job.job_id)}
    jvm = [p for p in live(tree) if p.name() == "java"]
    assert jvm and {p.pid for p in jvm} <= named
    started = time.monotonic()
    assert rx_cancel_job(job) is True
    assert time.monotonic() - started < 30  # about 2 s unloaded
    assert live(tree) == []  # cancel returns once the driver, JVM and workers are gone
    assert not processes_mentioning(job.job_id)
    assert rx_get_job_status(job) is S.CANCELED
    assert isinstance(rx_get_job_output(job), str)


def test_driver_killed_with_sigkill_fails_the_job_and_takes_spark_with_it(make_context, share_path):
    job = rx_exec(sleep_then_return, seconds=[300] * 4, compute_context=make_context(wait=False),
                  task_chunk_size=1)
    wait_until(lambda: rx_get_job_status(job) is S.RUNNING, timeout=120, what="job to run")
    tree = _job_tree_with_workers(share_path, job.job_id, workers=2)
    os.kill(tree[0].pid, signal.SIGKILL)
    wait_until(lambda: rx_get_job_status(job) is S.FAILED, timeout=30, what="FAILED")
    assert "driver lost" in job_status(open_store(share_path), job.job_id).reason
    # The JVM exits when its stdin pipe from the dead driver closes; its Python
    # daemon and workers follow it.
    wait_until(lambda: not live(tree), timeout=60, what="the JVM and Python workers to exit")
    assert not processes_mentioning(job.job_id)


def test_first_failure_stops_the_job_without_waiting_for_other_tasks(make_context):
    job = rx_exec(fail_or_sleep, x=[0, 1, 2, 3], compute_context=make_context(wait=False),
                  task_chunk_size=1, continue_on_failure=False)
    started = time.monotonic()
    assert rx_wait_for_job(job, timeout=200) is S.FAILED
    assert time.monotonic() - started < 150  # the sleeping runs take 300 s each
    with pytest.raises(Exception, match="run 0 raised RuntimeError: run zero fails at once"):
        rx_get_job_results(job)


def test_task_that_cannot_run_fails_the_job_with_the_reason(make_context, tmp_path, monkeypatch):
    """A function whose module executors cannot import: the Spark task fails, so does the job."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "vanishing_module.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(lib))
    import vanishing_module

    job = rx_exec(vanishing_module.double, x=[1, 2], compute_context=make_context(wait=False))
    shutil.rmtree(lib)  # gone before the executors (a JVM start away) unpickle the payload
    sys.modules.pop("vanishing_module", None)
    assert rx_wait_for_job(job, timeout=300) is S.FAILED
    with pytest.raises(Exception, match="a task could not be run: .*vanishing_module"):
        rx_get_job_results(job)


# -- settings, without a JVM -----------------------------------------------------------------


def test_context_settings_map_onto_spark_configuration(share_path):
    cc = RxSpark(master="spark://10.0.0.5:7077", share_dir=share_path, num_executors=3,
                 executor_cores=2, executor_mem="2g", driver_mem="1g", app_name="nightly",
                 extra_spark_config={"spark.executor.memory": "8g", "spark.foo": 1})
    conf = spark_conf(cc, "rxJob_1", environ={"PYTHONPATH": "/a:/b"}, python="/opt/py/bin/python")
    assert conf["spark.master"] == "spark://10.0.0.5:7077"
    assert conf["spark.app.name"] == "nightly"
    assert conf["spark.executor.instances"] == "3"
    assert conf["spark.executor.cores"] == "2"
    assert conf["spark.executor.memory"] == "2g"  # the named setting wins over the extra
    assert conf["spark.driver.memory"] == "1g"
    assert conf["spark.foo"] == "1"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.pyspark.python"] == "/opt/py/bin/python"
    assert conf["spark.executorEnv.PYTHONPATH"] == "/a:/b"
    assert conf["spark.rxjobs.jobId"] == "rxJob_1"
    assert conf["spark.driver.extraJavaOptions"] == "-XX:TieredStopAtLevel=1"


def test_spark_configuration_defaults_yield_to_the_user(share_path):
    local = RxSpark(master="local[2]", share_dir=share_path)
    conf = spark_conf(local, "rxJob_2", environ={"PYTHONPATH": "/a"}, python="/py")
    assert conf["spark.app.name"] == "rxJob_2"
    assert "spark.executor.instances" not in conf and "spark.driver.memory" not in conf
    assert "spark.executorEnv.PYTHONPATH" not in conf  # local executors inherit the env
    assert "spark.pyspark.python" not in spark_conf(local, "j", environ={"PYSPARK_PYTHON": "/x"})
    mine = RxSpark(master="yarn", share_dir=share_path, extra_spark_config={
        "spark.ui.enabled": "true", "spark.pyspark.python": "/mine",
        "spark.executorEnv.PYTHONPATH": "/p"})
    conf = spark_conf(mine, "j", environ={"PYTHONPATH": "/a"}, python="/py")
    assert (conf["spark.ui.enabled"], conf["spark.pyspark.python"]) == ("true", "/mine")
    assert conf["spark.executorEnv.PYTHONPATH"] == "/p"


@pytest.mark.parametrize("master, settings, expected", [
    ("local", {}, 1),
    ("local[3]", {}, 3),
    ("local[4, 2]", {}, 4),
    ("local[*]", {}, os.cpu_count()),
    ("local-cluster[2,3,1024]", {}, 6),
    ("yarn", {}, 2),
    ("yarn", {"num_executors": 5, "executor_cores": 4}, 20),
    ("yarn", {"num_executors": 5}, 5),
    ("spark://h:7077", {"extra_spark_config": {"spark.cores.max": "12"}}, 12),
    ("local[2]", {"extra_spark_config": {"spark.default.parallelism": "7"}}, 7),
])
def test_parallelism_comes_from_the_settings(share_path, master, settings, expected):
    assert parallelism(RxSpark(master=master, share_dir=share_path, **settings)) == expected


# Handles as engine.json holds them: a per-job driver's, and a persistent server's job.
DRIVER_HANDLE = {"host": "elsewhere.invalid", "pid": 4242, "create_time": 1700000000.25}
SERVER_HANDLE = {"host": "elsewhere.invalid", "pid": 4243, "create_time": 1700000001.5,
                 "server": "0123456789abcdef",
                 "socket": "/run/user/1000/rxjobs/spark-0123456789abcdef.sock", "job_id": "rxJob_1"}


@pytest.mark.parametrize("persistent_run, backend", [
    (False, PerJobDriverBackend), (True, PersistentServerBackend)])
def test_engine_chooses_the_backend_by_persistent_run(share_path, persistent_run, backend):
    cc = RxSpark(master="local[2]", share_dir=share_path, persistent_run=persistent_run)
    assert isinstance(ENGINE.backend(context=cc), backend)


@pytest.mark.parametrize("handle, backend", [
    (DRIVER_HANDLE, PerJobDriverBackend), (SERVER_HANDLE, PersistentServerBackend)])
def test_engine_chooses_the_backend_by_the_stored_handle(handle, backend):
    stored = json.loads(json.dumps(handle))  # as read back from engine.json
    assert isinstance(ENGINE.backend(handle=stored), backend)
    # From another host neither backend asks anything, nor stops anything.
    assert ENGINE.probe(stored) is Probe.UNREACHABLE
    assert ENGINE.sleeper(stored) is None
    assert ENGINE.cancel(stored) is False


def test_spark_modules_import_one_way():
    """The server and the shared modules never import the engine or its client (no cycle, lazy or not)."""
    code = textwrap.dedent("""
        import sys
        import rxjobs.engines.spark_session
        assert "rxjobs.engines.spark_server" not in sys.modules
        import rxjobs.engines.spark_server
        assert "rxjobs.engines.spark" not in sys.modules
        assert "rxjobs.engines.spark_client" not in sys.modules
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_missing_java_is_a_clear_error(monkeypatch, tmp_path, share_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no `java` here
    with pytest.raises(EngineNotInstalledError, match="Java 17"):
        RxSpark(master="local[2]", share_dir=share_path)


def test_missing_pyspark_is_a_clear_error(monkeypatch, share_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyspark" else real(name, *a))
    with pytest.raises(EngineNotInstalledError, match=r'pip install "rxjobs\[spark\]"'):
        RxSpark(master="local[2]", share_dir=share_path)


def test_share_dir_must_be_reachable_by_executors():
    with pytest.raises(ValueError, match="every worker can reach"):
        RxSpark(master="local[2]", share_dir="memory://only-here")


# -- a real standalone cluster ----------------------------------------------------------------


def _stop_tree(procs: list[subprocess.Popen]) -> None:
    roots = []
    for popen in procs:
        try:
            roots.append(psutil.Process(popen.pid))
        except psutil.NoSuchProcess:
            continue
    family = process_tree(roots)
    for proc in family:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=20)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    for popen in procs:
        popen.wait(timeout=10)


@pytest.fixture(scope="module")
def standalone_master(tmp_path_factory):
    """A Spark standalone master and one worker (2 cores, 1 GiB) on loopback, always stopped."""
    spark_home = os.path.dirname(pyspark.__file__)
    spark_class = os.path.join(spark_home, "bin", "spark-class")
    base = tmp_path_factory.mktemp("standalone")
    env = dict(os.environ, SPARK_HOME=spark_home, SPARK_LOCAL_IP="127.0.0.1",
               SPARK_WORKER_DIR=str(base / "work"), SPARK_LOG_DIR=str(base / "logs"),
               SPARK_DAEMON_MEMORY="256m",
               # No REST submission server on its fixed port 6066: only the ports chosen here.
               SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false")
    port = free_port()
    started: list[subprocess.Popen] = []
    master_log = base / "master.log"

    def start(args: list[str], log_path) -> subprocess.Popen:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([spark_class, *args], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        started.append(proc)
        return proc

    try:
        master = start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                        "--port", str(port), "--webui-port", str(free_port())], master_log)
        url = f"spark://127.0.0.1:{port}"

        def master_up():
            assert master.poll() is None, master_log.read_text(errors="replace")
            return "I have been elected leader" in master_log.read_text(errors="replace")

        wait_until(master_up, timeout=120, what="the Spark master")
        worker_log = base / "worker.log"
        worker = start(["org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                        "--cores", "2", "--memory", "1g", "--webui-port", str(free_port()),
                        "--work-dir", str(base / "work")], worker_log)

        def worker_registered():
            assert worker.poll() is None, worker_log.read_text(errors="replace")
            return "Successfully registered with master" in worker_log.read_text(errors="replace")

        wait_until(worker_registered, timeout=120, what="the Spark worker to register")
        yield url
    finally:
        _stop_tree(started)


def _executors_of(app_id: str) -> list[psutil.Process]:
    return [p for p in processes_mentioning(app_id)
            if "CoarseGrainedExecutorBackend" in " ".join(p.cmdline())]


@pytest.mark.slow
def test_jobs_run_on_a_standalone_cluster(standalone_master, share_path):
    cc = RxSpark(master=standalone_master, wait=False, share_dir=share_path, executor_mem="512m",
                 extra_spark_config=CHEAP_JVM)
    job = rx_exec(worker_python, x=list(range(6)), compute_context=cc)
    assert rx_wait_for_job(job, timeout=300) is S.FINISHED
    app_id = _status_record(share_path, job.job_id)["details"]["spark_application_id"]
    assert app_id.startswith("app-")
    results = rx_get_job_results(job)
    assert [r["x"] for r in results] == list(range(6))
    assert {r["prefix"] for r in results} == {sys.prefix}
    # The executors of the application are the worker's, and go when the application ends.
    wait_until(lambda: not _executors_of(app_id), timeout=120, what="the executors to exit")

    waiting = RxSpark(master=standalone_master, wait=True, share_dir=share_path,
                      executor_mem="512m", extra_spark_config=CHEAP_JVM)
    assert rx_exec(square, x=[1, 2, 3], compute_context=waiting) == [1, 4, 9]
    assert open_store(share_path).list_job_ids() == []


@pytest.mark.slow
def test_cancel_on_a_standalone_cluster_stops_the_executors(standalone_master, share_path):
    cc = RxSpark(master=standalone_master, wait=False, share_dir=share_path, executor_mem="512m",
                 extra_spark_config=CHEAP_JVM)
    job = rx_exec(sleep_then_return, seconds=[300] * 2, compute_context=cc, task_chunk_size=1)
    wait_until(lambda: rx_get_job_status(job) is S.RUNNING, timeout=120, what="job to run")
    app_id = _status_record(share_path, job.job_id)["details"]["spark_application_id"]
    wait_until(lambda: _executors_of(app_id), timeout=120, what="an executor to start")
    started = time.monotonic()
    assert rx_cancel_job(job) is True
    assert time.monotonic() - started < 30
    assert rx_get_job_status(job) is S.CANCELED
    wait_until(lambda: not _executors_of(app_id), timeout=120, what="the executors to exit")
