"""rxjobs.Executor on Spark: one persistent Spark application (one JVM) for the module.

The contract the local and Dask engines pass in tests/test_executor.py,
in its essentials, on ``RxSpark(persistent_run=True)``: submit, results and
errors, ``wait``, ``as_completed``, ``map`` as one job in chunks, and
nothing left in the share dir once every outcome was read.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import tempfile
import time
from pathlib import Path

import pytest

from rxjobs import list_jobs
from rxjobs.executor import Executor
from test_spark_persistent import Servers

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def spark():
    saved = os.environ.get("SPARK_LOCAL_IP")
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    with tempfile.TemporaryDirectory(prefix="rxsx-") as base:
        servers = Servers(base)
        try:
            yield servers
        finally:
            servers.close()
            if saved is None:
                os.environ.pop("SPARK_LOCAL_IP", None)
            else:
                os.environ["SPARK_LOCAL_IP"] = saved


@pytest.fixture
def gate(tmp_path):
    path = tmp_path / "gate"
    try:
        yield str(path)
    finally:
        path.touch()


def square(x):
    return x * x


class NotFound(LookupError):
    pass


def raise_not_found():
    raise NotFound("nothing here")


def gated(gate, value, limit=240.0):
    deadline = time.monotonic() + limit
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} was never opened")
        time.sleep(0.05)
    return value


def test_submit_results_errors_and_nothing_left(spark):
    with Executor(spark.context()) as ex:
        futures = [ex.submit(square, i) for i in range(4)]
        bad = ex.submit(raise_not_found)
        assert set(cf.as_completed([*futures, bad], timeout=300)) == {*futures, bad}
        assert [f.result() for f in futures] == [0, 1, 4, 9]
        with pytest.raises(NotFound) as caught:
            bad.result()
        assert "raise_not_found" in caught.value.remote_traceback
    assert list_jobs(spark.share) == []


def test_wait_first_completed(spark, gate):
    with Executor(spark.context()) as ex:
        slow = ex.submit(gated, gate, "slow")
        fast = ex.submit(square, 3)
        done, not_done = cf.wait([slow, fast], timeout=300, return_when=cf.FIRST_COMPLETED)
        assert done == {fast} and not_done == {slow}
        Path(gate).touch()
        assert slow.result(timeout=300) == "slow" and fast.result() == 9


def test_map_in_chunks(spark):
    with Executor(spark.context()) as ex:
        assert list(ex.map(square, range(12), chunksize=4)) == [i * i for i in range(12)]
    assert list_jobs(spark.share) == []
