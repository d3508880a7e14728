"""Under load (many submitters, a cleaner, a reader at once) nothing is lost.

Eight processes submit non-waiting local jobs (tiny runs, ``RXJOBS_LOAD_JOBS``
in all: 80 by default, 400 with ``RXJOBS_FULL_TRIALS=1`` (``make test-full``), which fits
in about 4 minutes on a loaded 2-core machine; the 1,000 of the original load target take 6 to
10 there) to one share dir while a cleaner applies a retention
policy (``--older-than 1s --max-total-size 64k``, through
:func:`rxjobs.retention.apply_policy`, the service ``rxjobs cleanup`` calls)
every second, and a reader collects each job's results as soon as it ends.
Then:

- 0 exceptions but the documented ones (``JobNotFoundError``, ``JobFailedError``);
- 0 jobs lost: every submitted job was collected whole, except the one in ten
  that fails on purpose (ended FAILED; the cleaner may remove it first);
- 0 partial result lists;
- every collected job removed exactly once (by its collection: never by the
  cleaner, which never removes an un-retrieved job), and no job dir or trash
  entry left at the end;
- the cleaner's memory flat: its peak RSS over the second half of its rounds
  at most 16 MiB above the first half's.

The figures are printed (``-s``) and recorded in docs/reliability.md.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import time
import warnings
from datetime import timedelta

import psutil
import pytest

from rxjobs import (
    JobFailedError,
    JobNotFoundError,
    RxLocalParallel,
    RxRemoteJob,
    RxRemoteJobStatus,
    rx_exec,
    rx_get_job_results,
    rx_get_job_status,
)
from rxjobs.engines import forkserver
from rxjobs.retention import RetentionPolicy, apply_policy
from rxjobs.runtime import RUNTIME_DIR_ENV
from rxjobs.store import open_store

from trials import trial_count

N_JOBS = trial_count("RXJOBS_LOAD_JOBS", full=400, reduced=80)
# A deadline for the race, far above what it takes (about 2 jobs/s on a loaded 2-core machine).
MAX_SECONDS = int(os.environ.get("RXJOBS_LOAD_SECONDS", str(max(420, N_JOBS))))

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(MAX_SECONDS + 180)]

SUBMITTERS = 8
DOCUMENTED = (JobNotFoundError, JobFailedError)


FAIL_EVERY = 10  # every 10th job fails on purpose: the cleaner has failed jobs to remove


def tiny(x, fail=False):
    if fail:
        raise ValueError(f"job of {x} fails on purpose")
    return 2 * x


def _submitter(share, first, count, ids):
    cc = RxLocalParallel(num_workers=1, wait=False, share_dir=share)
    errors = []
    for i in range(first, first + count):
        try:
            job = rx_exec(tiny, args=[{"x": i}, {"x": i + 1, "fail": i % FAIL_EVERY == FAIL_EVERY - 1}],
                          compute_context=cc, continue_on_failure=False)
            ids.put((job.job_id, i))
        except Exception as exc:  # counted: none is expected
            errors.append(f"{type(exc).__name__}: {exc}")
    return errors


def _reader(share, ids, n_jobs, deadline):
    cc = RxLocalParallel(share_dir=share)
    pending: dict[str, int] = {}
    firsts: dict[str, int] = {}
    collected, partial, failed, missing, errors = {}, [], [], [], []
    seen = 0
    while time.monotonic() < deadline and (seen < n_jobs or pending):
        while True:
            try:
                job_id, first = ids.get_nowait()
            except queue.Empty:
                break
            pending[job_id] = firsts[job_id] = first
            seen += 1
        for job_id, first in list(pending.items()):
            job = RxRemoteJob(cc, job_id)
            try:
                state = rx_get_job_status(job)
                if state is RxRemoteJobStatus.FINISHED:
                    values = rx_get_job_results(job)  # auto_cleanup: removes the job
                    collected[job_id] = values
                    if values != [2 * first, 2 * (first + 1)]:
                        partial.append(job_id)
                elif state is RxRemoteJobStatus.MISSING:
                    missing.append(job_id)
                elif state.is_terminal():
                    failed.append(job_id)
                else:
                    continue
            except DOCUMENTED as exc:
                (failed if isinstance(exc, JobFailedError) else missing).append(job_id)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            del pending[job_id]
        time.sleep(0.1)
    return {"collected": collected, "partial": partial, "failed": failed, "missing": missing,
            "errors": errors, "unfinished": list(pending), "seen": seen, "firsts": firsts}


def _cleaner(share, stop, policy):
    store = open_store(share)
    me = psutil.Process()
    rss, removed, errors, rounds = [], [], [], 0
    while True:
        last = stop.is_set()
        started = time.monotonic()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run = apply_policy(store, policy)
            for entry in run.report:
                if entry.outcome.value == "removed":
                    removed.append((entry.job_id, entry.status))
                elif entry.outcome.value == "error":
                    errors.append(f"{entry.job_id}: {entry.reason}")
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        rounds += 1
        rss.append(me.memory_info().rss)
        if last:
            break
        stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))
    return {"removed": removed, "errors": errors, "rounds": rounds, "rss": rss}


def _run(target, args, path):
    """Process body: run ``target`` and pickle its outcome (value or exception) to ``path``."""
    try:
        outcome = ("ok", target(*args))
    except BaseException as exc:  # reported, and fails the test
        outcome = ("error", f"{type(exc).__name__}: {exc}")
    with open(path, "wb") as f:
        pickle.dump(outcome, f)


def _outcome(path):
    with open(path, "rb") as f:
        kind, value = pickle.load(f)
    assert kind == "ok", value
    return value


def test_submitters_a_cleaner_and_a_reader_lose_nothing(tmp_path, capsys, monkeypatch):
    share = str(tmp_path / "share")
    # The submitters' drivers are forked by a fork server of the test's own, which exits
    # a few seconds after the last submit.
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(tmp_path / "runtime"))
    monkeypatch.setenv(forkserver.IDLE_ENV, "5")
    open_store(share).ensure_root()
    ctx = multiprocessing.get_context("fork")
    ids = ctx.Queue()
    stop = ctx.Event()
    policy = RetentionPolicy(older_than=timedelta(seconds=1), max_total_size=64 * 1024)
    started = time.monotonic()
    deadline = started + MAX_SECONDS
    per = [N_JOBS // SUBMITTERS + (1 if i < N_JOBS % SUBMITTERS else 0) for i in range(SUBMITTERS)]
    firsts = [sum(per[:i]) for i in range(SUBMITTERS)]  # the first run value of each one's jobs
    procs = {"cleaner": ctx.Process(target=_run, args=(_cleaner, (share, stop, policy),
                                                       tmp_path / "cleaner.pkl")),
             "reader": ctx.Process(target=_run, args=(_reader, (share, ids, N_JOBS, deadline),
                                                      tmp_path / "reader.pkl"))}
    for i in range(SUBMITTERS):
        procs[f"submitter-{i}"] = ctx.Process(target=_run, args=(
            _submitter, (share, firsts[i], per[i], ids), tmp_path / f"submitter-{i}.pkl"))
    for proc in procs.values():
        proc.start()
    try:
        for name, proc in procs.items():
            if name != "cleaner":
                proc.join(timeout=max(1.0, deadline - time.monotonic() + 30))
        submitted_in = time.monotonic() - started
        stop.set()
        procs["cleaner"].join(timeout=120)
    finally:
        stop.set()
        for proc in procs.values():
            if proc.is_alive():
                proc.kill()
    seconds = time.monotonic() - started
    submit_errors = [e for i in range(SUBMITTERS) for e in _outcome(tmp_path / f"submitter-{i}.pkl")]
    reader = _outcome(tmp_path / "reader.pkl")
    cleaner = _outcome(tmp_path / "cleaner.pkl")

    assert submit_errors == [] and reader["errors"] == [] and cleaner["errors"] == []
    failing = {job_id for job_id, first in reader["firsts"].items() if first % FAIL_EVERY == FAIL_EVERY - 1}
    assert reader["seen"] == N_JOBS, "every submitted job reached the reader"
    assert reader["unfinished"] == [], f"{len(reader['unfinished'])} jobs never ended"
    assert reader["partial"] == []
    removed_by_cleaner = [job_id for job_id, _ in cleaner["removed"]]
    assert len(removed_by_cleaner) == len(set(removed_by_cleaner))
    assert not set(removed_by_cleaner) & set(reader["collected"]), "a collected job removed twice"
    assert [s for _, s in cleaner["removed"] if s == "finished"] == [], "un-retrieved results removed"
    lost = sorted(set(reader["firsts"]) - failing - set(reader["collected"]))
    assert lost == []
    assert set(reader["failed"]) | set(reader["missing"]) == failing
    assert set(reader["missing"]) <= set(removed_by_cleaner), "a job gone before it was read"
    assert {job_id for job_id, status in cleaner["removed"]} <= failing
    store = open_store(share)
    left = set(store.list_job_ids())
    assert not left & set(reader["collected"])
    assert not os.listdir(os.path.join(share, ".trash"))
    rss = cleaner["rss"]
    half = len(rss) // 2
    growth = max(rss[half:]) - max(rss[:half]) if half else 0
    assert growth <= 16 * 2**20, f"the cleaner's memory grew by {growth / 2**20:.1f} MiB"
    with capsys.disabled():
        print(f"\nload: {N_JOBS} jobs by {SUBMITTERS} submitters in {submitted_in:.0f} s "
              f"({N_JOBS / submitted_in:.1f} jobs/s; {seconds:.0f} s in all, {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.1f}); collected whole {len(reader['collected'])}, "
              f"failed on purpose {len(failing)}, partial {len(reader['partial'])}, lost {len(lost)}; "
              f"cleaner: {cleaner['rounds']} rounds, removed {len(removed_by_cleaner)} "
              f"(un-retrieved 0), RSS {min(rss) / 2**20:.1f}-{max(rss) / 2**20:.1f} MiB "
              f"(growth first half -> second half {growth / 2**20:+.1f} MiB); exceptions 0")
