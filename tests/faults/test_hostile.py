"""Guarantee 4: hostile input never escapes the share dir and never crashes.

Canary files are planted outside the share dir and checked after every
cleanup, with and without force.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxjobs import (
    RxLocalParallel,
    RxRemoteJob,
    RxRemoteJobStatus,
    get_job,
    rx_cleanup_jobs,
    rx_get_job_status,
    rx_get_jobs,
)
from rxjobs.records import FORMAT_VERSION, JobRecord
from rxjobs.store import MAX_RECORD_BYTES, open_store

from factory import make_job
from trials import trial_count

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]
S = RxRemoteJobStatus

HOSTILE_IDS = ["..", "../outside", "../../etc/passwd", "/etc/passwd", "a/b", "a\\b", "x\x00y",
               "x" * 129, "", " ", "-rf", ".trash", ".locks",
               "rxJob\u2024x",  # one dot leader, looks like '.'
               "rxJob\uff0fx",  # fullwidth solidus, looks like '/'
               "\u2025\u2215x",  # two dot leader + division slash: looks like '../x'
               "rxJob_\u0661\u0662"]  # Arabic-Indic digits


class Canaries:
    """Files outside the share dir that no cleanup may touch."""

    def __init__(self, root) -> None:
        self.dir = root / "outside"
        self.dir.mkdir()
        self.file = self.dir / "canary.txt"
        self.file.write_text("do not touch")
        (self.dir / "sub").mkdir()
        (self.dir / "sub" / "deep.txt").write_text("nor this")

    def check(self) -> None:
        assert self.file.read_text() == "do not touch"
        assert (self.dir / "sub" / "deep.txt").read_text() == "nor this"
        assert sorted(os.listdir(self.dir)) == ["canary.txt", "sub"]


@pytest.fixture
def canaries(tmp_path):
    return Canaries(tmp_path)


def _cleanup(share: str, force: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rx_cleanup_jobs(rx_get_jobs(RxLocalParallel(share_dir=share), verbose=False),
                               force=force, verbose=False)


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_hostile_job_ids_are_refused_and_touch_nothing(tmp_path, canaries, bad):
    share = str(tmp_path / "share")
    store = open_store(share)
    make_job(store, "failed")
    cc = RxLocalParallel(share_dir=share)
    for attempt in (lambda: RxRemoteJob(cc, bad), lambda: get_job(bad, share),
                    lambda: RxRemoteJob.deserialize_job(bad, cc), lambda: store.remove_job(bad)):
        with pytest.raises(ValueError, match="invalid job id"):
            attempt()
    canaries.check()
    assert len(store.list_job_ids()) == 1


@pytest.mark.parametrize("force", [False, True])
def test_job_dir_that_is_a_symlink_outside_is_never_followed(tmp_path, canaries, force):
    share = str(tmp_path / "share")
    store = open_store(share)
    make_job(store, "failed")
    os.symlink(canaries.dir, f"{store.root}/rxJob_20260101000000000000_beef")
    assert len(store.list_job_ids()) == 1  # the link is not a job
    report = _cleanup(share, force)
    assert [e.outcome for e in report] == ["removed"]
    job = RxRemoteJob(RxLocalParallel(share_dir=share), "rxJob_20260101000000000000_beef")
    assert rx_get_job_status(job) is S.MISSING
    assert [e.outcome for e in rx_cleanup_jobs(job, force=True, verbose=False)] == ["missing"]
    canaries.check()


@pytest.mark.parametrize("force", [False, True])
def test_links_fifos_and_unreadable_files_inside_a_job_are_removed_cleanly(tmp_path, canaries,
                                                                            force):
    share = str(tmp_path / "share")
    store = open_store(share)
    job = make_job(store, "failed")
    paths = store.paths(job.job_id)
    os.symlink(canaries.dir, f"{paths.dir}/dir-link")
    os.symlink(canaries.file, f"{paths.tasks}/file-link")
    os.link(canaries.file, f"{paths.tasks}/hard-link")
    os.mkfifo(f"{paths.tasks}/a-fifo")
    locked = f"{paths.dir}/locked"
    os.mkdir(locked)
    with open(f"{locked}/secret", "w") as f:
        f.write("x")
    os.chmod(f"{locked}/secret", 0)
    os.chmod(locked, 0)
    report = _cleanup(share, force)
    assert [e.outcome for e in report] == ["removed"]
    assert store.list_job_ids() == [] and store.listdir(store.trash) == []
    canaries.check()
    assert os.stat(canaries.file).st_nlink == 1


def test_share_dir_given_as_a_symlink(tmp_path, canaries):
    real = tmp_path / "real-share"
    real.mkdir(mode=0o700)
    link = tmp_path / "share-link"
    os.symlink(real, link)
    store = open_store(str(link))
    made = [make_job(store, kind) for kind in ("failed", "unretrieved")]
    report = _cleanup(str(link), force=False)
    assert [e.outcome for e in report] == ["removed", "kept"]
    assert os.listdir(real) != [] and os.path.islink(link)
    report = _cleanup(str(link), force=True)
    assert [e.job_id for e in report] == [made[1].job_id]
    assert store.list_job_ids() == []
    canaries.check()


# -- corrupt records, fuzzed ----------------------------------------------------------------

def _valid_json_record(name: str, data: bytes) -> bool:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return False
    if len(data) > MAX_RECORD_BYTES or not isinstance(obj, dict):
        return False
    if name == "job.json":
        try:
            JobRecord.from_json(obj)
            return True
        except ValueError:
            return False
    if name == "status.json":
        return obj.get("state") in ("running", "finished", "failed")
    return isinstance(obj.get("engine"), str) and isinstance(obj.get("handle"), dict)


def _job_format(name: str) -> int:
    """engine.json is read only in jobs of format 1 (format 2 keeps the handle in job.json)."""
    return 1 if name == "engine.json" else FORMAT_VERSION


def _truncations(name: str):
    def strategy():
        store = open_store(tempfile.mkdtemp(prefix="rx-trunc-"))
        job = make_job(store, "unretrieved", job_format=_job_format(name))
        data = store.read_bytes(f"{store.paths(job.job_id).dir}/{name}")
        shutil.rmtree(store.root)
        return st.integers(0, max(0, len(data) - 1)).map(lambda n: data[:n])
    return strategy()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                        max_size=4),
    max_leaves=12,
)
shaped = st.fixed_dictionaries({}, optional={
    "state": st.sampled_from(["running", "finished", "failed", "absent", "corrupt", 1, None]),
    "engine": st.sampled_from(["local", "dask", "spark", "nope", 3]),
    "handle": json_values, "job_id": json_values, "n_tasks": json_values, "n_runs": json_values,
    "context": json_values, "created": json_values, "format": st.integers(-2, 5)})


def _contents(name: str):
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        shaped.map(lambda v: json.dumps(v).encode()),
        _truncations(name),
        st.just(b""),
        st.just(b"{" + b" " * (MAX_RECORD_BYTES + 10) + b"}"),
    )


def _fuzz_one(name: str, content: bytes) -> None:
    store = open_store(tempfile.mkdtemp(prefix="rx-fuzz-"))
    try:
        job = make_job(store, "unretrieved", job_format=_job_format(name))
        paths = store.paths(job.job_id)
        if name == "engine.json":
            store.remove_file(paths.status_json)  # let the engine record decide
        store.write_atomic(f"{paths.dir}/{name}", content)
        remote = RxRemoteJob(RxLocalParallel(share_dir=store.url), job.job_id)
        status = rx_get_job_status(remote)  # never raises
        assert isinstance(status, S)
        if not _valid_json_record(name, content):
            assert status is S.UNDETERMINED, (name, content[:80], status)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                report = rx_cleanup_jobs(remote, verbose=False)
            assert [e.outcome for e in report] == ["kept"]
            assert store.list_job_ids() == [job.job_id]
    finally:
        shutil.rmtree(store.root, ignore_errors=True)


FUZZ = settings(max_examples=trial_count("RXJOBS_FUZZ_EXAMPLES", full=150, reduced=30), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(content=_contents("job.json"))
def test_fuzzed_job_json(content):
    _fuzz_one("job.json", content)


@FUZZ
@given(content=_contents("status.json"))
def test_fuzzed_status_json(content):
    _fuzz_one("status.json", content)


@FUZZ
@given(content=_contents("engine.json"))
def test_fuzzed_engine_json(content):
    _fuzz_one("engine.json", content)
