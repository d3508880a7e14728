"""The rx_* facade: revoscalepy forms, defaults, and clear errors on bad input."""

from __future__ import annotations

import os
import threading
import warnings
from datetime import datetime, timedelta, timezone

import pytest

import rxjobs
from rxjobs import (
    JobNotFoundError,
    RxCleanupWarning,
    RxHadoopMR,
    RxInTeradata,
    RxLocalParallel,
    RxLocalSeq,
    RxRemoteJob,
    RxRemoteJobStatus,
    RxRunWarning,
    RxUnsupportedContextError,
    rx_cleanup_jobs,
    rx_exec,
    rx_get_compute_context,
    rx_get_job_info,
    rx_get_job_output,
    rx_get_job_results,
    rx_get_job_status,
    rx_get_jobs,
    rx_set_compute_context,
    rx_wait_for_job,
)
from rxjobs.ids import new_job_id
from rxjobs.store import open_store

from engine_contract import fail_on_three, square

pytestmark = pytest.mark.timeout(180)
S = RxRemoteJobStatus


def add(a, b=0):
    return a + b


def length(the_list):
    return len(the_list)


def test_public_api_has_revoscalepy_names():
    for name in ["rx_exec", "rx_get_jobs", "rx_get_job_status", "rx_get_job_output",
                 "rx_get_job_results", "rx_cancel_job", "rx_wait_for_job", "rx_cleanup_jobs",
                 "rx_get_job_info", "rx_set_compute_context", "rx_get_compute_context",
                 "RxRemoteJob", "RxRemoteJobStatus", "RxLocalSeq", "RxLocalParallel"]:
        assert hasattr(rxjobs, name), name


def test_every_documented_error_is_exported_as_the_class_that_is_raised():
    import rxjobs.errors

    for name in ["NotAShareDirError", "UnsafeShareDirError", "UntrustedShareDirError",
                 "JobNotFoundError", "EngineNotInstalledError"]:
        assert name in rxjobs.__all__, name
        assert getattr(rxjobs, name) is getattr(rxjobs.errors, name)
    assert issubclass(rxjobs.NotAShareDirError, FileNotFoundError)
    assert issubclass(rxjobs.UnsafeShareDirError, PermissionError)


def test_default_context_is_local_sequential_and_can_be_set(tmp_path):
    assert isinstance(rx_get_compute_context(), RxLocalSeq)
    cc = RxLocalParallel(share_dir=str(tmp_path))
    assert isinstance(rx_set_compute_context(cc), RxLocalSeq)
    assert rx_get_compute_context() is cc
    with pytest.raises(TypeError, match="compute context"):
        rx_set_compute_context("local")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"args": {"a": 1, "b": 2}}, [3]),
        ({"args": [{"a": 1}, {"a": 2, "b": 5}]}, [1, 7]),
        ({"args": {"a": 1}, "times_to_run": 3}, [1, 1, 1]),
        ({"a": [1, 2, 3], "b": 6}, [7, 8, 9]),
    ],
)
def test_local_sequential_runs_in_process(kwargs, expected):
    seen = []
    assert rx_exec(add, callback=seen.append, **kwargs) == expected
    assert seen == expected


def test_list_meant_as_one_value_is_wrapped():
    assert rx_exec(length, the_list=[[0, 1, 2]]) == [3]


def test_local_sequential_failures_follow_continue_on_failure():
    with pytest.warns(RxRunWarning, match="1 of 5 runs raised"):
        results = rx_exec(fail_on_three, x=list(range(5)))
    assert isinstance(results[3], ValueError)
    with pytest.raises(ValueError, match="no threes"):
        rx_exec(fail_on_three, x=list(range(5)), continue_on_failure=False)


def test_waiting_results_remember_their_job(tmp_path):
    cc = RxLocalParallel(num_workers=2, share_dir=str(tmp_path), auto_cleanup=False)
    results = rx_exec(square, x=[1, 2], compute_context=cc)
    job = rx_get_job_info(results)
    assert isinstance(job, RxRemoteJob) and rx_get_job_info(job) is job
    assert rx_get_job_info([1, 2]) is None
    rx_cleanup_jobs(job, verbose=False)


def test_console_output_is_printed_when_collected(tmp_path, capfd):
    cc = RxLocalParallel(num_workers=2, share_dir=str(tmp_path), console_output=True)
    assert rx_exec(square, x=[5, 6], compute_context=cc) == [25, 36]
    out = capfd.readouterr().out
    assert "squaring 5" in out and "squaring 6" in out


@pytest.mark.parametrize("ctor", [RxHadoopMR, RxInTeradata])
def test_retired_contexts_name_the_alternative(ctor):
    with pytest.raises(RxUnsupportedContextError, match="RxSpark"):
        ctor(nameNode="x")


def test_unpicklable_function_fails_at_submit_and_leaves_nothing(tmp_path):
    lock = threading.Lock()

    def uses_lock(x):
        with lock:
            return x

    share = tmp_path / "share"
    cc = RxLocalParallel(share_dir=str(share), wait=False)
    with pytest.raises(TypeError, match="cannot be pickled"):
        rx_exec(uses_lock, x=[1, 2], compute_context=cc)
    assert not share.exists() or open_store(str(share)).list_job_ids() == []


def test_unknown_job_names_the_id_and_share_dir(tmp_path):
    cc = RxLocalParallel(share_dir=str(tmp_path))
    job_id = new_job_id()
    job = RxRemoteJob(cc, job_id)
    assert rx_get_job_status(job) is S.MISSING
    with pytest.raises(JobNotFoundError, match=f"{job_id}.*{tmp_path}"):
        rx_get_job_results(job)
    with pytest.raises(JobNotFoundError, match=job_id):
        rx_get_job_output(job)
    with pytest.raises(JobNotFoundError, match=job_id):
        RxRemoteJob.deserialize_job(job_id, cc)
    report = rx_cleanup_jobs(job, verbose=False)
    assert [e.outcome for e in report] == ["missing"]


@pytest.mark.parametrize("bad", ["../x", "/abs", "a\x00b", "", "a/b"])
def test_invalid_job_id_is_a_value_error_before_any_disk_access(tmp_path, bad):
    share = tmp_path / "untouched"
    cc = RxLocalParallel(share_dir=str(share))
    with pytest.raises(ValueError, match="invalid job id"):
        RxRemoteJob(cc, bad)
    with pytest.raises(ValueError, match="invalid job id"):
        RxRemoteJob.deserialize_job(bad, cc)
    assert not share.exists()


def test_cleanup_refuses_a_list_with_a_non_job_before_removing_anything(tmp_path):
    cc = RxLocalParallel(num_workers=1, share_dir=str(tmp_path), wait=False)
    job = rx_exec(square, x=[1], compute_context=cc)
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    with pytest.raises(TypeError, match=r"element 1 .*'rxJob_oops'.*nothing was removed"):
        rx_cleanup_jobs([job, "rxJob_oops"], force=True)
    assert rx_get_job_status(job) is S.FINISHED
    with pytest.raises(TypeError, match="not str"):
        rx_cleanup_jobs("rxJob_oops")
    job.close()


def test_cleanup_goes_on_past_a_problem_job(tmp_path, capsys):
    cc = RxLocalParallel(num_workers=1, share_dir=str(tmp_path), wait=False)
    jobs_ = [rx_exec(fail_on_three, x=[3], compute_context=cc, continue_on_failure=False)
             for _ in range(3)]
    for job in jobs_:
        assert rx_wait_for_job(job, timeout=120) is S.FAILED
    broken = open_store(str(tmp_path)).paths(jobs_[1].job_id)
    os.unlink(broken.status_json)
    os.mkdir(broken.status_json)  # a status record that cannot be read
    with pytest.warns(RxCleanupWarning, match=jobs_[1].job_id):
        report = rx_cleanup_jobs(jobs_, verbose=True)
    assert [e.job_id for e in report] == [j.job_id for j in jobs_]
    assert [e.outcome for e in report] == ["removed", "kept", "removed"]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("removed ") and lines[1].startswith("kept ")
    rx_cleanup_jobs(jobs_, force=True, verbose=False)
    assert open_store(str(tmp_path)).list_job_ids() == []


def test_corrupt_job_record_is_undetermined_and_kept_without_force(tmp_path):
    cc = RxLocalParallel(num_workers=1, share_dir=str(tmp_path), wait=False)
    job = rx_exec(square, x=[1], compute_context=cc)
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    store = open_store(str(tmp_path))
    store.write_atomic(store.paths(job.job_id).status_json, b"\x00garbage")
    assert rx_get_job_status(job) is S.UNDETERMINED
    with pytest.warns(RxCleanupWarning, match="cannot be determined"):
        assert [e.outcome for e in rx_cleanup_jobs(job, verbose=False)] == ["kept"]
    assert [e.outcome for e in rx_cleanup_jobs(job, force=True, verbose=False)] == ["removed"]


def test_get_jobs_filters_by_time_window_and_prints_when_verbose(tmp_path, capsys):
    cc = RxLocalParallel(num_workers=1, share_dir=str(tmp_path), wait=False)
    before = datetime.now()  # naive: local time
    job = rx_exec(square, x=[1], compute_context=cc)
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    after = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert rx_get_jobs(cc, start_time=before - timedelta(seconds=1)) == [job]
    assert "finished" in capsys.readouterr().out
    assert rx_get_jobs(cc, start_time=after, verbose=False) == []
    assert rx_get_jobs(cc, end_time=before - timedelta(hours=1), verbose=False) == []
    assert rx_get_jobs(cc, start_time=before - timedelta(hours=1), end_time=after,
                       verbose=False) == [job]
    with pytest.raises(ValueError, match="unknown job state"):
        rx_get_jobs(cc, states=["done"], verbose=False)
    job.close()


def test_results_kept_then_collected_again_then_cleaned_without_warning(tmp_path):
    cc = RxLocalParallel(num_workers=2, share_dir=str(tmp_path), wait=False)
    job = rx_exec(square, x=[1, 2, 3], compute_context=cc)
    assert rx_wait_for_job(job, timeout=120) is S.FINISHED
    assert rx_get_job_results(job, auto_cleanup=False) == [1, 4, 9]
    assert rx_get_job_results(job, auto_cleanup=False) == [1, 4, 9]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [e.outcome for e in rx_cleanup_jobs(rx_get_jobs(cc, verbose=False),
                                                   verbose=False)] == ["removed"]
