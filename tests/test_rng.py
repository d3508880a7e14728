"""Parallel random numbers are reproducible (``rx_exec(..., rng_seed=42)``) on every engine.

Each run gets its own streams, derived from the seed and the run's index
alone: the same numbers whatever the engine (RxLocalSeq, RxLocalParallel,
RxDask, RxSpark), the chunk size and the number of workers.  The Dask and
Spark parts reuse those engines' fixtures (a real cluster, ``local[2]``).
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

import rxjobs
from rxjobs import RxDask, RxLocalParallel, RxLocalSeq, RxSpark, rx_exec
from rxjobs.runner import seeded_run
from rxjobs.seeds import generate_state, stream_seed, validate_rng_seed
from rxjobs.store import open_store

from test_dask_engine import cluster  # noqa: F401 - the module's Dask cluster fixture

pytestmark = pytest.mark.timeout(300)
N_RUNS = 6
SEED = 42


def draws(x):
    """What a run sees: Python's random, numpy's global generator, and its own Generator."""
    return (x, random.random(), random.randrange(10**9), float(np.random.random()),
            int(np.random.randint(0, 10**9)), float(rxjobs.run_rng().random()),
            float(rxjobs.run_rng().normal()))


def reference() -> list:
    return rx_exec(draws, x=list(range(N_RUNS)), rng_seed=SEED, compute_context=RxLocalSeq())


# -- the derivation ------------------------------------------------------------------------


@pytest.mark.parametrize("seed, key", [
    (0, ()), (42, ()), (42, (3,)), (42, (3, 1)), (2**70 + 5, (7, 0)), (1, (2**40, 1)),
    (2**128 - 1, (0,)),
])
def test_pure_python_words_are_numpys_seed_sequence(seed, key):
    expected = np.random.SeedSequence(seed, spawn_key=key).generate_state(8)
    assert generate_state(seed, key, 8) == [int(w) for w in expected]


@pytest.mark.parametrize("given, expected", [
    (None, None), (0, 0), (42, 42), (np.int64(7), 7), (2**128 - 1, 2**128 - 1),
    (-1, ValueError), (2**128, ValueError), (1.5, TypeError), ("42", TypeError), (True, TypeError),
])
def test_rng_seed_is_an_integer_in_range(given, expected):
    if isinstance(expected, type) and issubclass(expected, Exception):
        with pytest.raises(expected, match="rng_seed"):
            validate_rng_seed(given)
    else:
        assert validate_rng_seed(given) == expected


def test_each_run_gets_the_documented_independent_streams():
    runs = reference()
    assert [r[0] for r in runs] == list(range(N_RUNS))
    children = np.random.SeedSequence(SEED).spawn(N_RUNS)
    for index, run in enumerate(runs):
        own = np.random.default_rng(children[index])
        assert run[5] == own.random() and run[6] == own.normal()  # run_rng(): one generator per run
        python = random.Random(stream_seed(SEED, index, 0))
        assert run[1] == python.random()
    assert len({r[1:] for r in runs}) == N_RUNS  # no two runs share a stream


def test_a_run_leaves_the_callers_random_state_alone():
    random.seed(5)
    np.random.seed(5)
    expected = (random.random(), float(np.random.random()))
    random.seed(5)
    np.random.seed(5)
    reference()
    assert (random.random(), float(np.random.random())) == expected


def test_without_a_seed_runs_are_not_seeded():
    first = rx_exec(draws, x=[0, 1], compute_context=RxLocalSeq())
    again = rx_exec(draws, x=[0, 1], compute_context=RxLocalSeq())
    assert first != again
    with seeded_run(None, 0):
        assert rxjobs.run_rng().random() != rxjobs.run_rng().random()  # fresh OS entropy


def test_seed_is_stored_in_job_json_and_the_payload(tmp_path):
    share = str(tmp_path / "share")
    job = rx_exec(draws, x=[0], rng_seed=SEED, compute_context=RxLocalParallel(
        num_workers=1, wait=False, share_dir=share))
    job.wait(timeout=120)
    store = open_store(share)
    options = json.loads(store.read_bytes(store.paths(job.job_id).job_json))["options"]
    assert options["rng_seed"] == SEED
    from rxjobs.runner import load_payload

    assert load_payload(store, job.job_id).rng_seed == SEED
    assert job.result() == reference()[:1]


# -- the matrix: engines x chunk sizes x workers ---------------------------------------------


@pytest.mark.parametrize("workers, chunk", [(1, 1), (2, 1), (3, 2), (2, 4), (4, 6)])
def test_local_parallel_gives_the_reference_whatever_the_chunks_and_workers(tmp_path, workers, chunk):
    cc = RxLocalParallel(num_workers=workers, share_dir=str(tmp_path / "share"))
    assert rx_exec(draws, x=list(range(N_RUNS)), rng_seed=SEED, task_chunk_size=chunk,
                   compute_context=cc) == reference()


@pytest.mark.parametrize("chunk", [1, 4])
def test_dask_gives_the_reference_whatever_the_chunks(cluster, tmp_path, chunk):  # noqa: F811
    # Two workers of two threads each: seeded runs that share a process take turns.
    cc = RxDask(cluster.address, share_dir=str(tmp_path / "share"))
    assert rx_exec(draws, x=list(range(N_RUNS)), rng_seed=SEED, task_chunk_size=chunk,
                   compute_context=cc) == reference()


def test_spark_gives_the_reference(tmp_path, monkeypatch):
    if not os.environ.get("CI"):  # in CI a missing install is a failure, never a skip
        pytest.importorskip("pyspark")
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    share = str(tmp_path / "spark share")
    cc = RxSpark(master="local[2]", share_dir=share, extra_spark_config={
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        "spark.driver.memory": "512m"})
    try:
        assert rx_exec(draws, x=list(range(N_RUNS)), rng_seed=SEED, task_chunk_size=4,
                       compute_context=cc) == reference()
    finally:
        from conftest import kill_processes_mentioning

        kill_processes_mentioning(share)


def test_python_random_is_seeded_without_numpy_the_same_way():
    # What seeds Python's random comes from rxjobs.seeds alone, not from numpy.
    assert stream_seed(SEED, 3, 0) == sum(
        int(w) << (32 * i)
        for i, w in enumerate(np.random.SeedSequence(SEED, spawn_key=(3, 0)).generate_state(8)))
