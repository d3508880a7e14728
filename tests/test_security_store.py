"""The share dir as an attack surface (docs/security.md), at the store and CLI level.

Each test plants what an attacker could, runs what a victim would, and
checks a canary outside the share dir.  Attacks that need two real Unix
users are in tests/security/.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings

import psutil
import pytest
from click.testing import CliRunner

from rxjobs import RxRemoteJobStatus, get_job, rx_cancel_job, rx_cleanup_jobs, rx_get_job_output
from rxjobs.cli import cli
from rxjobs.errors import NotAShareDirError, UnsafeShareDirError, UntrustedShareDirError
from rxjobs.jobs import cancel_job, job_status
from rxjobs.records import EngineRecord, read_job_record, write_engine_record
from rxjobs.runner import load_task_result
from rxjobs.store import MARKER, open_store

from factory import make_job

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]
S = RxRemoteJobStatus
NOBODY = 65534


@pytest.fixture
def canary(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    (outside / "sub").mkdir()
    (outside / "sub" / "deep.txt").write_text("also")

    def check() -> None:
        assert (outside / "keep.txt").read_text() == "precious"
        assert (outside / "sub" / "deep.txt").read_text() == "also"
        assert sorted(os.listdir(outside)) == ["keep.txt", "sub"]
    check.dir = outside  # type: ignore[attr-defined]
    yield check
    check()


def _cli(share: str, *args: str):
    return CliRunner().invoke(cli, ["--share-dir", share, *args])


def test_an_ordinary_directory_is_no_share_dir(tmp_path, canary):
    home = tmp_path / "home"
    for name in ("Documents", "projects", "etc"):
        (home / name).mkdir(parents=True)
    (home / "projects" / "canceled").write_text("not a marker")
    (home / "notes.txt").write_text("mine")
    for args in (["cleanup", "--all", "--force"], ["cleanup", "--all"], ["list"], ["du"]):
        result = _cli(str(home), *args)
        assert result.exit_code == 1, result.output
        assert "not an rxjobs share dir" in result.stderr and "adopt" in result.stderr
        assert "Traceback" not in result.output
    assert sorted(os.listdir(home)) == ["Documents", "etc", "notes.txt", "projects"]
    with pytest.raises(NotAShareDirError):
        open_store(str(home)).list_job_ids()
    result = _cli(str(home), "adopt")
    assert result.exit_code == 1 and "not rxjobs jobs" in result.stderr
    assert not (home / MARKER).exists()


def test_an_old_share_dir_is_adopted_once_checked(tmp_path):
    share = str(tmp_path / "old")
    store = open_store(share)
    made = make_job(store, "unretrieved")
    os.unlink(os.path.join(share, MARKER))  # as an rxjobs before the marker left it
    with pytest.raises(NotAShareDirError):
        open_store(share).list_job_ids()
    result = _cli(share, "adopt")
    assert result.exit_code == 0, result.output
    assert "1 job" in result.stdout
    assert open_store(share).list_job_ids() == [made.job_id]


def test_an_empty_directory_becomes_a_share_dir_on_first_use(tmp_path):
    share = tmp_path / "empty"
    share.mkdir()
    assert open_store(str(share)).list_job_ids() == []
    make_job(open_store(str(share)), "failed")
    assert (share / MARKER).is_file()


def test_debris_is_never_removed_even_with_force(tmp_path):
    store = open_store(str(tmp_path / "share"))
    store.ensure_root()
    job = make_job(store, "failed")
    for name in ("rxJob_20260101000000000000_dead", "Documents"):
        os.makedirs(os.path.join(store.root, name))
        with open(os.path.join(store.root, name, "canceled"), "w") as f:
            f.write("{}")
    planted = os.path.join(store.root, "rxJob_20260101000000000001_beef")
    os.makedirs(planted)
    with open(os.path.join(planted, "job.json"), "w") as f:
        json.dump({**json.load(open(store.paths(job.job_id).job_json)), "job_id": "someone-else"}, f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = rx_cleanup_jobs([get_job(j, store.url) for j in
                                  ("rxJob_20260101000000000000_dead", "Documents",
                                   "rxJob_20260101000000000001_beef", job.job_id)], force=True,
                                 verbose=False)
    outcomes = {e.job_id: e.outcome for e in report}
    assert outcomes[job.job_id] == "removed"
    for debris in ("rxJob_20260101000000000000_dead", "Documents", "rxJob_20260101000000000001_beef"):
        assert outcomes[debris] == "kept" and os.path.isdir(os.path.join(store.root, debris))
    assert store.list_job_ids() == sorted(["Documents", "rxJob_20260101000000000000_dead",
                                           "rxJob_20260101000000000001_beef"])
    result = _cli(store.url, "list", "--json")
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("force", [False, True])
def test_a_trash_symlink_is_refused_and_never_followed(tmp_path, canary, force):
    store = open_store(str(tmp_path / "share"))
    make_job(store, "failed")
    os.symlink(canary.dir, store.trash)
    result = _cli(store.url, "cleanup", "--all", *(["--force"] if force else []))
    assert result.exit_code == 1
    assert ".trash" in result.output and "Traceback" not in result.output


def test_a_locks_symlink_is_refused_even_by_a_dry_run(tmp_path, canary):
    store = open_store(str(tmp_path / "share"))
    made = make_job(store, "failed")
    os.symlink(canary.dir, os.path.join(store.root, ".locks"))
    result = _cli(store.url, "cleanup", made.job_id, "--dry-run")
    assert result.exit_code == 1 and ".locks" in result.output
    with pytest.raises(UnsafeShareDirError), store.lock(made.job_id):
        pass


def test_a_trash_owned_by_someone_else_is_refused(tmp_path):
    store = open_store(str(tmp_path / "share"))
    made = make_job(store, "failed")
    os.mkdir(store.trash, 0o777)
    os.chmod(store.trash, 0o777)  # anybody could plant entries in it
    with pytest.raises(UnsafeShareDirError, match="not what rxjobs made"):
        store.remove_job(made.job_id)
    assert store.list_job_ids() == [made.job_id]


def test_deeply_nested_records_and_huge_counts_give_no_traceback(tmp_path):
    store = open_store(str(tmp_path / "share"))
    made = make_job(store, "unretrieved")
    deep = b"[" * 400_000 + b"]" * 400_000
    for name in ("status.json", "engine.json"):
        store.write_atomic(f"{store.paths(made.job_id).dir}/{name}", deep)
    assert job_status(store, made.job_id).status is S.UNDETERMINED  # status.json unreadable
    nested = make_job(store, "unretrieved")
    store.write_atomic(store.paths(nested.job_id).job_json, deep)
    with pytest.raises(ValueError, match="nests"):
        read_job_record(store, nested.job_id)
    huge = make_job(store, "unretrieved")
    record = json.loads(store.read_bytes(store.paths(huge.job_id).job_json))
    store.write_json(store.paths(huge.job_id).job_json, {**record, "n_tasks": 10**12, "n_runs": 10**12})
    assert rx_get_job_output(get_job(huge.job_id, store.url)).startswith("task 0")
    for args in (["list"], ["status", made.job_id], ["output", huge.job_id], ["du"]):
        result = _cli(store.url, *args)
        assert "Traceback" not in result.output and result.exception is None or \
            isinstance(result.exception, SystemExit), (args, result.output)


def test_others_jobs_are_never_probed_canceled_or_removed(tmp_path):
    store = open_store(str(tmp_path / "share"))
    made = make_job(store, "canceled")
    os.unlink(store.paths(made.job_id).canceled)  # a running job, as far as the files say
    victim = subprocess.Popen(["sleep", "60"],
                              preexec_fn=lambda: os.setuid(NOBODY))
    try:
        proc = psutil.Process(victim.pid)
        write_engine_record(store, read_job_record(store, made.job_id), EngineRecord("local", {
            "host": os.uname().nodename, "pid": victim.pid, "create_time": proc.create_time()}))
        os.chown(store.paths(made.job_id).dir, NOBODY, NOBODY)  # the job is someone else's
        derived = job_status(store, made.job_id)
        assert derived.status is S.UNDETERMINED and derived.reason.startswith("owned by uid")
        with pytest.raises(PermissionError, match="only its owner"):
            cancel_job(store, made.job_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = rx_cleanup_jobs(get_job(made.job_id, store.url), force=True, verbose=False)
        assert [e.outcome for e in report] == ["kept"]
        assert victim.poll() is None, "a process named by another user's job was signalled"
        assert os.path.isdir(store.paths(made.job_id).dir)
    finally:
        victim.kill()
        victim.wait()


def test_a_forged_handle_in_ones_own_job_signals_nobody_elses_process(tmp_path):
    store = open_store(str(tmp_path / "share"))
    made = make_job(store, "canceled")
    os.unlink(store.paths(made.job_id).canceled)
    os.unlink(store.paths(made.job_id).status_json)
    victim = subprocess.Popen(["sleep", "60"],
                              preexec_fn=lambda: os.setuid(NOBODY))
    try:
        write_engine_record(store, read_job_record(store, made.job_id), EngineRecord("local", {
            "host": os.uname().nodename, "pid": victim.pid,
            "create_time": psutil.Process(victim.pid).create_time()}))
        rx_cancel_job(get_job(made.job_id, store.url))
        assert victim.poll() is None, "the forged handle's process was signalled"
    finally:
        victim.kill()
        victim.wait()


def test_pickles_from_files_others_could_write_are_refused(tmp_path):
    store = open_store(str(tmp_path / "share"))
    made = make_job(store, "unretrieved")
    tasks = store.paths(made.job_id).tasks
    os.chmod(tasks, 0o777)
    with pytest.raises(UntrustedShareDirError, match="writable by group or others"):
        load_task_result(store, made.job_id, 0)
    os.chmod(tasks, 0o700)
    os.chown(store.paths(made.job_id).result(0), NOBODY, NOBODY)
    with pytest.raises(UntrustedShareDirError, match="owned by uid"):
        load_task_result(store, made.job_id, 0)
    os.chown(store.paths(made.job_id).result(0), os.geteuid(), os.getegid())
    assert load_task_result(store, made.job_id, 0).values == made.values[:2]
    os.chmod(store.root, 0o777)
    with pytest.raises(UntrustedShareDirError, match="rename its entries"):
        load_task_result(store, made.job_id, 0)


def test_writes_go_only_into_the_callers_own_jobs(tmp_path):
    store = open_store(str(tmp_path / "share"))
    made = make_job(store, "unretrieved")
    os.chown(store.paths(made.job_id).dir, NOBODY, NOBODY)
    with pytest.raises(UnsafeShareDirError, match="your own jobs"):
        store.write_json(store.paths(made.job_id).retrieved, {})
    with pytest.raises(UnsafeShareDirError):
        store.remove_file(store.paths(made.job_id).payload)
    assert os.path.exists(store.paths(made.job_id).payload)


def test_a_share_dir_whose_marker_is_being_written_is_not_refused(tmp_path):
    """Another process making the share dir publishes its marker from a temporary name."""
    share = tmp_path / "new"
    share.mkdir()
    (share / f"{MARKER}.tmp-4242-0badcafe").write_text("{}")
    assert open_store(str(share)).list_job_ids() == []
    (share / "Documents").mkdir()
    with pytest.raises(NotAShareDirError):
        open_store(str(share)).list_job_ids()
