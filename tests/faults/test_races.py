"""Guarantee 2: cleaners, a results reader and a lister racing over 500 jobs.

Four processes start together: two cleaners (no force), one reader collecting
every un-retrieved job with auto_cleanup, one lister deriving every state in
a loop.  Only documented errors may happen, no result list may be partial,
each job is removed exactly once, and the cleanup reports add up.
"""

from __future__ import annotations

import multiprocessing
import pickle
import warnings

import pytest

from rxjobs import (
    JobNotFoundError,
    RxLocalParallel,
    RxRemoteJob,
    rx_cleanup_jobs,
    rx_get_job_results,
    rx_get_job_status,
    rx_get_jobs,
)
from rxjobs.store import open_store

from factory import make_jobs

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(600)]

N_JOBS = 500


def _cleaner(share, go):
    go.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cc = RxLocalParallel(share_dir=share)
        report = rx_cleanup_jobs(rx_get_jobs(cc, verbose=False), verbose=False)
    return [(e.job_id, e.outcome, e.files) for e in report]


def _reader(share, go, ids):
    go.wait()
    cc = RxLocalParallel(share_dir=share)
    got = []
    for job_id in ids:
        try:
            got.append((job_id, rx_get_job_results(RxRemoteJob(cc, job_id))))
        except JobNotFoundError:
            got.append((job_id, None))
    return got


def _lister(share, go, rounds=5):
    go.wait()
    cc = RxLocalParallel(share_dir=share)
    seen = 0
    for _ in range(rounds):
        for job in rx_get_jobs(cc, verbose=False):
            rx_get_job_status(job)
            seen += 1
    return seen


def _run(target, args, path):
    """Process body: run ``target`` and pickle its outcome (value or exception) to ``path``."""
    try:
        outcome = ("ok", target(*args))
    except BaseException as exc:  # any exception is reported and fails the test
        outcome = ("error", f"{type(exc).__name__}: {exc}")
    with open(path, "wb") as f:
        pickle.dump(outcome, f)


def test_two_cleaners_a_reader_and_a_lister_race_safely(tmp_path, capsys):
    store = open_store(str(tmp_path / "share"))
    made = make_jobs(store, per_kind=N_JOBS // 4)
    by_id = {j.job_id: j for j in made}
    unretrieved = [j.job_id for j in made if j.kind == "unretrieved"]
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    roles = {
        "cleaner-1": (_cleaner, (store.url, go)),
        "cleaner-2": (_cleaner, (store.url, go)),
        "reader": (_reader, (store.url, go, unretrieved)),
        "lister": (_lister, (store.url, go)),
    }
    procs = {}
    for name, (target, args) in roles.items():
        procs[name] = ctx.Process(target=_run, args=(target, args, tmp_path / f"{name}.pkl"))
        procs[name].start()
    go.set()
    try:
        for proc in procs.values():
            proc.join(timeout=500)
    finally:
        for proc in procs.values():
            if proc.is_alive():
                proc.kill()
    outcomes = {}
    for name in roles:
        with open(tmp_path / f"{name}.pkl", "rb") as f:
            outcomes[name] = pickle.load(f)
    errors = {name: value for name, (kind, value) in outcomes.items() if kind == "error"}
    assert errors == {}

    # No partial result list: every read returned everything, or nothing (removed).
    reads = outcomes["reader"][1]
    assert {job_id for job_id, values in reads if values is not None} == set(unretrieved)
    for job_id, values in reads:
        assert values == by_id[job_id].values

    # Each removable job removed exactly once, by one cleaner; the reports add up.
    removed = [(job_id, files) for name in ("cleaner-1", "cleaner-2")
               for job_id, outcome, files in outcomes[name][1] if outcome == "removed"]
    removed_ids = [job_id for job_id, _ in removed]
    assert len(removed_ids) == len(set(removed_ids))
    removable = {j.job_id for j in made if j.kind != "unretrieved"}
    assert set(removed_ids) == removable
    assert sum(files for _, files in removed) == sum(by_id[j].files for j in removable)
    assert not set(removed_ids) & set(unretrieved)  # cleaners never took unread results
    assert store.list_job_ids() == []
    with capsys.disabled():
        print(f"\nraces: {len(made)} jobs, {len(removed_ids)} removed by cleaners "
              f"(once each), {len(unretrieved)} collected whole, lister saw "
              f"{outcomes['lister'][1]} job states, errors: 0")
