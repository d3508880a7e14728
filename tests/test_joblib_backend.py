"""The joblib backend ``rxjobs`` with real scikit-learn: the same results as loky, few jobs.

Local engine first; the Dask cluster of ``test_dask_engine`` and the real
single-node Slurm of ``slurm_cluster`` (conftest's ``slurm``) each get a module-scoped cluster,
and Spark runs ``local[2]``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from rxjobs import RxLocalParallel, RxLocalSeq, RxRemoteJobStatus, rx_cleanup_jobs, rx_get_jobs
from rxjobs.errors import EngineNotInstalledError
from rxjobs.joblib import (
    WAVE_WIDTH,
    check_context,
    joblib_problem,
    parallel_config,
    register_rxjobs,
    version_tuple,
)
from rxjobs.jobs import job_status
from rxjobs.store import open_store

from conftest import wait_until

if os.environ.get("CI"):  # in CI a missing scikit-learn is a failure, never a skip
    import joblib  # noqa: F401
    import sklearn  # noqa: F401
joblib = pytest.importorskip("joblib", reason='the backend needs: pip install "rxjobs[joblib]"')
pytest.importorskip("sklearn", reason="these tests need scikit-learn (the test extra)")

from sklearn.datasets import load_iris  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

pytestmark = pytest.mark.timeout(300)
S = RxRemoteJobStatus
GRID = {"C": [0.1, 1, 10], "gamma": [0.01, 0.1, 1]}


@pytest.fixture(scope="module", autouse=True)
def _registered():
    register_rxjobs()


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def loky_results(iris):
    """GridSearchCV and cross_val_score on loky: what every engine must reproduce."""
    X, y = iris
    with joblib.parallel_config(backend="loky"):
        search = GridSearchCV(SVC(), GRID, n_jobs=2, cv=3).fit(X, y)
        scores = cross_val_score(SVC(C=1.0), X, y, cv=5, n_jobs=2)
    return search, scores


def _jobs_of(share: str) -> list:
    return rx_get_jobs(RxLocalParallel(share_dir=share), verbose=False)


def search_on(compute_context, iris, n_jobs: int = 2):
    X, y = iris
    with joblib.parallel_config(backend="rxjobs", compute_context=compute_context):
        search = GridSearchCV(SVC(), GRID, n_jobs=n_jobs, cv=3).fit(X, y)
        backend, _ = joblib.parallel.get_active_backend()
        scores = cross_val_score(SVC(C=1.0), X, y, cv=5, n_jobs=n_jobs)
    return search, scores, backend


def assert_same_as_loky(search, scores, loky_results) -> None:
    loky_search, loky_scores = loky_results
    assert search.best_params_ == loky_search.best_params_
    assert search.best_score_ == loky_search.best_score_
    assert list(search.cv_results_["mean_test_score"]) == list(loky_search.cv_results_["mean_test_score"])
    assert list(scores) == list(loky_scores)


# -- pure parts ------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("1.4.2", (1, 4, 2)), ("1.3", (1, 3)), ("1.5.0rc1", (1, 5, 0)), ("1.6.dev0", (1, 6)), ("0.17", (0, 17)),
    ("", ()),
])
def test_version_tuple_reads_the_numbers_before_any_suffix(text, expected):
    assert version_tuple(text) == expected


@pytest.mark.parametrize("version, need_config, problem", [
    ("1.6.0", True, None),
    ("1.3.0", True, None),
    ("1.2.0", False, None),
    ("1.2.0", True, "has no parallel_config"),
    ("1.1.1", False, "too old"),
    ("0.17.0", True, "too old"),
])
def test_a_joblib_too_old_gets_a_clear_reason(version, need_config, problem):
    said = joblib_problem(version, need_config)
    if problem is None:
        assert said is None
    else:
        assert problem in said and "pip install 'rxjobs[joblib]'" in said


def test_parallel_config_on_a_joblib_without_it_says_how_to_upgrade(monkeypatch):
    monkeypatch.setattr(joblib, "__version__", "1.2.0")
    with pytest.raises(EngineNotInstalledError, match="parallel_config .added in joblib 1.3"):
        parallel_config(RxLocalParallel())


@pytest.mark.parametrize("bad, error, words", [
    ("local", TypeError, "must be a compute context"),
    (42, TypeError, "must be a compute context"),
    (RxLocalSeq(), ValueError, "RxLocalSeq has none"),
])
def test_an_unknown_compute_context_is_refused_when_the_backend_is_selected(bad, error, words):
    with pytest.raises(error, match=words):
        check_context(bad)
    with pytest.raises(error, match=words), joblib.parallel_config(backend="rxjobs", compute_context=bad):
        pass


def test_an_unknown_backend_argument_is_refused(tmp_path):
    with pytest.raises(TypeError, match="unknown argument.*workers"), joblib.parallel_config(
            backend="rxjobs", compute_context=RxLocalParallel(share_dir=str(tmp_path)), workers=3):
        pass


# -- the local engine --------------------------------------------------------------------


def test_grid_search_and_cross_val_score_equal_loky_in_few_jobs_that_are_cleaned_up(tmp_path, iris,
                                                                                     loky_results):
    share = str(tmp_path / "share")
    search, scores, backend = search_on(RxLocalParallel(share_dir=share), iris)
    assert_same_as_loky(search, scores, loky_results)
    # 27 fits and 5 folds: one job per call, not one per batch (and not thousands)
    assert 1 <= len(backend.jobs_submitted) <= 4, backend.jobs_submitted
    assert _jobs_of(share) == []  # collected, then removed by auto_cleanup


@pytest.mark.parametrize("return_as", ["list", "generator", "generator_unordered"])
def test_every_return_as_gives_every_result_and_leaves_no_file(tmp_path, return_as):
    """In order (joblib's thread waits on each wave's future) and unordered (joblib's
    callbacks); the jobs are gone from view when the call returns, and their files are
    deleted just after, by the removal thread."""
    share = str(tmp_path / "share")
    with joblib.parallel_config(backend="rxjobs", compute_context=RxLocalParallel(share_dir=share)):
        backend, _ = joblib.parallel.get_active_backend()
        out = joblib.Parallel(n_jobs=2, return_as=return_as)(joblib.delayed(abs)(-i) for i in range(40))
        got = list(out)
    assert (sorted(got) if return_as == "generator_unordered" else got) == list(range(40))
    assert backend.jobs_submitted and _jobs_of(share) == []
    store = open_store(share)
    wait_until(lambda: not store.trash_entries(), what="the removal thread to empty the trash")


def test_jobs_are_listed_retrieved_and_cleaned_up_by_the_usual_rules_when_kept(tmp_path, iris):
    share = str(tmp_path / "share")
    cc = RxLocalParallel(share_dir=share, auto_cleanup=False)
    X, y = iris
    with joblib.parallel_config(backend="rxjobs", compute_context=cc):
        scores = cross_val_score(SVC(), X, y, cv=4, n_jobs=3)
    assert len(scores) == 4
    listed = _jobs_of(share)
    assert listed and all(job.status() is S.FINISHED for job in listed)
    assert {job.compute_context.num_workers for job in listed} == {3}  # n_jobs is the pool's size
    report = rx_cleanup_jobs(listed, verbose=False)  # retrieved: removed without force
    assert len(report.removed) == len(listed) and _jobs_of(share) == []


def _nested_backend(_: int) -> str:
    backend, n_jobs = joblib.parallel.get_active_backend()
    inner = joblib.Parallel(n_jobs=4)(joblib.delayed(abs)(-i) for i in range(3))
    return f"{type(backend).__name__}:{inner}"


def test_nested_calls_run_sequentially_in_their_worker(tmp_path):
    with parallel_config(RxLocalParallel(share_dir=str(tmp_path / "share")), n_jobs=2):
        out = joblib.Parallel()(joblib.delayed(_nested_backend)(i) for i in range(4))
    assert out == ["SequentialBackend:[0, 1, 2]"] * 4


def test_effective_n_jobs_maps_minus_one_onto_the_engines_slots(tmp_path):
    cc = RxLocalParallel(share_dir=str(tmp_path), num_workers=3)
    with joblib.parallel_config(backend="rxjobs", compute_context=cc):
        backend, _ = joblib.parallel.get_active_backend()
        assert backend.workers(-1) == 3 and backend.workers(-2) == 2 and backend.workers(5) == 5
        assert backend.effective_n_jobs(2) == 2 * WAVE_WIDTH
        with pytest.raises(ValueError, match="n_jobs == 0"):
            backend.workers(0)


def _raise_on_three(i: int) -> int:
    if i == 3:
        raise ZeroDivisionError(f"bad input {i}")
    return i


def test_a_call_that_raises_raises_in_the_caller(tmp_path):
    with parallel_config(RxLocalParallel(share_dir=str(tmp_path / "share")), n_jobs=2), \
            pytest.raises(ZeroDivisionError, match="bad input 3"):
        joblib.Parallel()(joblib.delayed(_raise_on_three)(i) for i in range(6))


def _wait_for_gate(gate: str) -> int:
    deadline = time.monotonic() + 240
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    return 1


def test_keyboard_interrupt_cancels_the_searchs_jobs_and_leaves_nothing_running(tmp_path):
    share, gate = str(tmp_path / "share"), str(tmp_path / "gate")
    cc = RxLocalParallel(share_dir=share)

    def interrupt_once_running() -> None:
        wait_until(lambda: any(j.status() is S.RUNNING for j in _jobs_of(share)), timeout=120,
                   what="the search's job to run")
        # A real SIGINT, as Ctrl-C or a notebook's interrupt sends: it also interrupts the main
        # thread's wait on a wave's future (interrupt_main only sets a flag Python code polls).
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    try:
        with parallel_config(cc, n_jobs=2), pytest.raises(KeyboardInterrupt):
            backend, _ = joblib.parallel.get_active_backend()
            joblib.Parallel()(joblib.delayed(_wait_for_gate)(gate) for i in range(4))
        assert backend.jobs_submitted
        store = open_store(share)
        states = {job_id: job_status(store, job_id).status for job_id in backend.jobs_submitted}
        # canceled (a job whose submission the interrupt cut short is removed by the submit itself)
        assert set(states.values()) <= {S.CANCELED, S.MISSING}, states
        assert S.CANCELED in states.values() or not _jobs_of(share)
    finally:
        Path(gate).touch()  # never leave a worker waiting


# -- Dask and Slurm ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    from test_dask_engine import Cluster

    running = Cluster(tmp_path_factory.mktemp("dask-cluster")).start()
    try:
        yield running
    finally:
        running.stop()


def test_grid_search_on_dask_equals_loky(dask_cluster, tmp_path, iris, loky_results):
    from rxjobs import RxDask

    share = str(tmp_path / "share")
    search, scores, backend = search_on(RxDask(dask_cluster.address, share_dir=share), iris)
    assert_same_as_loky(search, scores, loky_results)
    assert 1 <= len(backend.jobs_submitted) <= 4
    assert rx_get_jobs(RxDask(dask_cluster.address, share_dir=share), verbose=False) == []


@pytest.mark.slurm
def test_grid_search_on_slurm_equals_loky_with_n_jobs_as_the_array_throttle(slurm, tmp_path, iris,
                                                                            loky_results):
    from rxjobs import RxSlurm

    share = str(tmp_path / "share")
    cc = RxSlurm(share_dir=share, auto_cleanup=False)
    search, scores, backend = search_on(cc, iris)
    assert_same_as_loky(search, scores, loky_results)
    listed = rx_get_jobs(RxSlurm(share_dir=share), verbose=False)
    assert 1 <= len(listed) <= 4 and {job.compute_context.max_parallel for job in listed} == {2}
    assert all(job.status() is S.FINISHED for job in listed)
    rx_cleanup_jobs(listed, verbose=False)


def test_cross_val_score_on_spark_equals_loky(tmp_path, iris, loky_results, monkeypatch):
    if os.environ.get("CI"):
        import pyspark  # noqa: F401
    pytest.importorskip("pyspark")
    from rxjobs import RxSpark

    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    share = str(tmp_path / "share")
    cc = RxSpark(master="local[2]", share_dir=share, extra_spark_config={
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        "spark.driver.memory": "512m"})
    X, y = iris
    with parallel_config(cc, n_jobs=2):
        scores = cross_val_score(SVC(C=1.0), X, y, cv=5)
    assert list(scores) == list(loky_results[1])
    assert rx_get_jobs(RxSpark(master="local[2]", share_dir=share), verbose=False) == []


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("n_batches", "chunk", "expected"), [
    (0, 1, []),
    (1, 1, [0]),
    (4, 2, [0, 2, 1, 3]),  # task 0 runs batches 0 and 2, task 1 batches 1 and 3
    (5, 3, [0, 2, 4, 1, 3]),  # the last task's chunk is short
    (7, 2, [0, 4, 1, 5, 2, 6, 3]),  # four tasks of two, the last of one
    (27, 14, [*range(0, 27, 2), *range(1, 27, 2)]),  # a 3x3 grid with cv=3 on two workers
    (3, 5, [0, 1, 2]),  # one task: the order is kept
])
def test_a_waves_batches_are_dealt_round_robin_to_its_tasks(n_batches, chunk, expected):
    from rxjobs.joblib import dealt_order

    order = dealt_order(n_batches, chunk)
    assert order == expected
    assert sorted(order) == list(range(n_batches))


def test_dealing_needs_a_positive_chunk():
    from rxjobs.joblib import dealt_order

    with pytest.raises(ValueError, match="chunk"):
        dealt_order(3, 0)
