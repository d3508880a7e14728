"""``rxjobs doctor [--fix] [--json]`` finds (and fixes) debris in a share dir and never touches a job.

The decisions are pure and tested by tables; then each kind of debris is
planted next to real jobs, on a local share dir, ``memory://`` and S3:
doctor reports it and exits 1, ``--fix`` removes it (a second run finds
nothing: idempotent, exit 0), and no job is ever touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rxjobs.cli import cli
from rxjobs.doctor import (
    FindingKind,
    Remedy,
    decide_reserved_entry,
    decide_runtime_file,
    decide_temp_file,
    decide_top_entry,
    decide_trash_entry,
    doctor,
)
from rxjobs.jobs import job_status, read_results
from rxjobs.runtime import RUNTIME_DIR_ENV, RuntimeFile, RuntimeKind, open_held
from rxjobs.store import TempFile, TopEntry, TrashEntry, open_store

from factory import make_job
from factory import make_job as make_one

pytestmark = pytest.mark.timeout(120)
NOW = 1_000_000.0
GRACE = 3600.0
OLD = NOW - 2 * GRACE
YOUNG = NOW - 10
ME = 1000


# -- the decisions: tables -----------------------------------------------------------------


def _top(kind="directory", is_job=False, owner=ME, mtime=OLD, name="x"):
    return TopEntry(name, kind, is_job, owner, mtime)


@pytest.mark.parametrize("entry, me, remedy", [
    (_top(is_job=True), ME, None),                         # a job: never a finding
    (_top(is_job=True, owner=7), ME, None),                # another user's job: still a job
    (_top(is_job=None), ME, Remedy.LEAVE),                 # unreadable: may be a job, left alone
    (_top(), ME, Remedy.REMOVE),                           # an old dir without job.json
    (_top(mtime=YOUNG), ME, None),                         # a young one: a job being submitted
    (_top(mtime=None), None, Remedy.REMOVE),               # object store, no time known: old
    (_top(owner=7), ME, Remedy.LEAVE),                     # another user's debris
    (_top(kind="file", mtime=YOUNG), ME, Remedy.REMOVE),   # a file is never a job
    (_top(kind="symlink"), ME, Remedy.REMOVE),             # unlinked, never followed
    (_top(kind="file", owner=None), None, Remedy.REMOVE),  # object store key
])
def test_decide_top_entry(entry, me, remedy):
    finding = decide_top_entry(entry, me, NOW, GRACE)
    assert (finding.remedy if finding else None) is remedy
    if finding:
        assert finding.kind is FindingKind.DEBRIS


@pytest.mark.parametrize("alive, mine, mtime, remedy", [
    (True, True, OLD, None),            # a cleaner at work
    (False, True, YOUNG, Remedy.REMOVE),  # its cleaner is dead: at once
    (False, False, OLD, Remedy.LEAVE),  # another member's
    (None, True, YOUNG, None),          # remover unknown (another host): wait
    (None, True, OLD, Remedy.REMOVE),   # ... not for ever
])
def test_decide_trash_entry(alive, mine, mtime, remedy):
    finding = decide_trash_entry(TrashEntry("j.1-2-ab", alive, mine, mtime), NOW, GRACE)
    assert (finding.remedy if finding else None) is remedy


@pytest.mark.parametrize("alive, mtime, remedy", [
    (True, OLD, None), (False, YOUNG, None), (False, OLD, Remedy.REMOVE), (False, None, Remedy.REMOVE),
])
def test_decide_temp_file(alive, mtime, remedy):
    finding = decide_temp_file(TempFile("/s/j/job.json.tmp-5-ab", alive, mtime), NOW, GRACE)
    assert (finding.remedy if finding else None) is remedy


@pytest.mark.parametrize("kind, alive, remedy", [
    (RuntimeKind.DRIVER_LOG, True, None), (RuntimeKind.DRIVER_LOG, False, Remedy.REMOVE),
    (RuntimeKind.SERVER_RECORD, False, Remedy.REMOVE), (RuntimeKind.SERVER_SOCKET, True, None),
    (RuntimeKind.TEMP, False, Remedy.REMOVE), (RuntimeKind.OTHER, None, Remedy.LEAVE),
    (RuntimeKind.FORK_SERVER_SOCKET, True, None), (RuntimeKind.FORK_SERVER_RECORD, True, None),
    (RuntimeKind.FORK_SERVER_RECORD, False, Remedy.REMOVE),
])
def test_decide_runtime_file(kind, alive, remedy):
    finding = decide_runtime_file(RuntimeFile("/run/f", kind, "k", alive))
    assert (finding.remedy if finding else None) is remedy


# -- planted debris ------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def runtime(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(path))
    return path


def _backdate(path: Path) -> None:
    os.utime(path, (time.time() - 2 * GRACE,) * 2, follow_symlinks=False)


def _snapshot(store, job_id: str) -> dict[str, bytes]:
    """Every file of a job and its bytes (local share dirs)."""
    root = Path(store.paths(job_id).dir)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".tmp-" not in p.name}


def plant_runtime(runtime: Path) -> dict[str, Path]:
    pid = dead_pid()
    planted = {
        "dead driver log": runtime / "job-rxJob_20260101000000000000_dead.driver.log",
        "server record": runtime / "spark-00ff.json",
        "server socket": runtime / "spark-00ff.sock",
        "server log": runtime / "spark-00ff.log",
        "temp": runtime / f"spark-00ff.json.tmp-{pid}",
    }
    for path in planted.values():
        path.write_text("x")
    planted["server record"].write_text(json.dumps({"host": socket.gethostname(), "pid": pid,
                                                    "create_time": 1.0}))
    return planted


def test_each_kind_of_debris_on_a_local_share_dir(tmp_path, runtime):
    share = tmp_path / "share"
    store = open_store(str(share))
    jobs = [make_job(store, kind) for kind in ("unretrieved", "retrieved", "failed", "canceled")]
    before = {j.job_id: _snapshot(store, j.job_id) for j in jobs}
    states = {j.job_id: job_status(store, j.job_id).status for j in jobs}
    pid = dead_pid()

    (share / "no-record").mkdir()
    (share / "no-record" / "file").write_text("x")
    wrong = share / "rxJob_20250101000000000000_aaaa"
    wrong.mkdir()
    (wrong / "job.json").write_text(json.dumps({"job_id": "rxJob_20250101000000000000_bbbb"}))
    broken = share / "rxJob_20250101000000000000_cccc"
    broken.mkdir()
    (broken / "job.json").write_text("{not json")
    young = share / "rxJob_20250101000000000000_dddd"  # a job being submitted, say
    young.mkdir()
    (share / "notes.txt").write_text("stray")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    (share / "link").symlink_to(outside)
    trash = share / ".trash"
    trash.mkdir(mode=0o700, exist_ok=True)
    (trash / f"rxJob_20240101000000000000_eeee.{pid}-123-abcd").mkdir()
    (trash / f"rxJob_20240101000000000000_eeee.{pid}-123-abcd" / "f").write_text("x")
    temp = Path(store.paths(jobs[0].job_id).dir) / f"status.json.tmp-{pid}-abcd1234"
    temp.write_text("half")
    fresh_temp = Path(store.paths(jobs[1].job_id).tasks) / f"0.result.pkl.tmp-{pid}-abcd1234"
    fresh_temp.write_text("a write on another host, maybe")
    for path in (share / "no-record", wrong, broken, share / "notes.txt", share / "link", temp):
        _backdate(path)
    planted = plant_runtime(runtime)
    held = open_held(str(runtime / "job-rxJob_20260101000000000000_live.driver.log"))

    try:
        runner = CliRunner()
        result = runner.invoke(cli, ["--share-dir", str(share), "doctor", "--json"])
        assert result.exit_code == 1, result.output
        found = {(f["kind"], os.path.basename(f["where"])) for f in json.loads(result.output)["findings"]}
        assert found == {
            ("debris", "no-record"), ("debris", wrong.name), ("debris", broken.name),
            ("debris", "notes.txt"), ("debris", "link"),
            ("trash", f"rxJob_20240101000000000000_eeee.{pid}-123-abcd"),
            ("temp file", temp.name),
            *{("runtime file", p.name) for p in planted.values()},
        }
        assert all(f["remedy"] == "remove" for f in json.loads(result.output)["findings"])

        result = runner.invoke(cli, ["--share-dir", str(share), "doctor", "--fix"])
        assert result.exit_code == 0, result.output
        assert "left" in result.output
        again = runner.invoke(cli, ["--share-dir", str(share), "doctor", "--fix"])  # idempotent
        assert again.exit_code == 0 and "is clean" in again.output

        assert sorted(p.name for p in share.iterdir() if not p.name.startswith(".")) == sorted(
            [j.job_id for j in jobs] + [young.name])
        assert (outside / "precious").read_text() == "keep me"  # the symlink was not followed
        assert not list(trash.iterdir())
        assert fresh_temp.exists()  # young: a write that may be going on elsewhere
        assert not any(p.exists() for p in planted.values())
        assert (runtime / "job-rxJob_20260101000000000000_live.driver.log").exists()
        for job in jobs:  # never touched
            assert _snapshot(store, job.job_id) == before[job.job_id]
            assert job_status(store, job.job_id).status is states[job.job_id]
        assert read_results(store, jobs[0].job_id).values == jobs[0].values
    finally:
        os.close(held)


def test_debris_and_unfinished_removals_on_object_stores(store_url, runtime, tmp_path):
    if store_url.startswith("/"):
        pytest.skip("the local share dir has its own test above")
    store = open_store(store_url)
    recorded = str(tmp_path / "recorded")  # a share dir is a place: the record's spelling is moot

    def make_job(store, kind):
        return make_one(store, kind, share_url=recorded)

    job = make_job(store, "unretrieved")
    fs, root = store.fs, store.root
    fs.pipe_file(f"{root}/no-record/file", b"x")
    fs.pipe_file(f"{root}/stray-key", b"stray")
    half = make_job(store, "failed")  # a removal that died half way: marker, files left
    fs.pipe_file(f"{root}/{half.job_id}/deleting", json.dumps(
        {"host": socket.gethostname(), "pid": dead_pid(), "create_time": 1.0}).encode())
    elsewhere = make_job(store, "failed")  # one whose remover runs on another host, just now
    fs.pipe_file(f"{root}/{elsewhere.job_id}/deleting", json.dumps(
        {"host": "another-host", "pid": 1, "create_time": 1.0}).encode())

    report = doctor(store, runtime_base=str(runtime))
    found = {(f.kind.value, f.where) for f in report.findings}
    # The prefix without a record and the other host's removal are young: left for now.
    assert found == {("debris", "stray-key"), ("trash", half.job_id)}
    assert not report.clean
    assert doctor(store, fix=True, runtime_base=str(runtime)).clean
    assert not fs.exists(f"{root}/{half.job_id}") and not fs.exists(f"{root}/stray-key")

    later = time.time() + 2 * GRACE  # an hour on, nobody came back for them
    found = {(f.kind.value, f.where) for f in doctor(store, now=later, runtime_base=str(runtime)).findings}
    assert found == {("debris", "no-record"), ("trash", elsewhere.job_id)}
    assert doctor(store, fix=True, now=later, runtime_base=str(runtime)).clean
    assert doctor(store, fix=True, now=later, runtime_base=str(runtime)).findings == []  # idempotent
    assert store.list_job_ids() == [job.job_id]
    assert read_results(store, job.job_id).values == job.values


def test_a_job_is_never_debris_even_when_unreadable(tmp_path, runtime):
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    share = tmp_path / "share"
    store = open_store(str(share))
    job = make_job(store, "unretrieved")
    Path(store.paths(job.job_id).dir).chmod(0)
    try:
        (finding,) = doctor(store, fix=True, runtime_base=str(runtime)).findings
        assert finding.remedy is Remedy.LEAVE
    finally:
        Path(store.paths(job.job_id).dir).chmod(0o700)
    assert read_results(store, job.job_id).values == job.values


# -- a squatted reserved entry (issue 23) ---------------------------------------------------------


@pytest.mark.parametrize(("me", "share_owner", "remedy"), [
    (0, 0, Remedy.SET_ASIDE),        # root, in the team dir it owns
    (1001, 1001, Remedy.SET_ASIDE),  # a user, in the team dir she owns
    (1002, 0, Remedy.LEAVE),         # a member: the kernel would refuse the rename; told whom to ask
    (None, None, Remedy.LEAVE),      # storage without owners
])
def test_a_squatted_reserved_entry_is_set_aside_only_by_the_share_dirs_owner(me, share_owner, remedy):
    finding = decide_reserved_entry(".locks", "not what rxjobs made", me, share_owner)
    assert finding.kind is FindingKind.RESERVED and finding.remedy is remedy
    assert (finding.target == ".locks") is (remedy is Remedy.SET_ASIDE)


def test_root_creation_refusal_table():
    from rxjobs.store.local import root_creation_refusal

    assert root_creation_refusal(0, 0, "/s") is None          # root in its own directory
    assert root_creation_refusal(1001, 1002, "/s") is None    # a member of someone's team dir
    assert root_creation_refusal(1001, 1001, "/s") is None
    refusal = root_creation_refusal(0, 1001, "/s")
    assert refusal is not None and "root creates nothing" in refusal and "runuser -u" in refusal


# -- after ordinary use: the runtime files of live servers are not findings ------------------


@pytest.fixture
def short_runtime(monkeypatch):
    """A private runtime dir with a short path (a Unix socket's path has ~100 bytes), set for
    this test and the servers it starts; those servers are stopped, and killed, at the end."""
    import tempfile

    from conftest import kill_processes_mentioning

    with tempfile.TemporaryDirectory(prefix="rxd-") as base:
        path = Path(base) / "run"
        path.mkdir(mode=0o700)
        monkeypatch.setenv(RUNTIME_DIR_ENV, str(path))
        try:
            yield path
        finally:
            from rxjobs.engines.forkserver import stop_servers

            stop_servers()
            kill_processes_mentioning(str(path))


def _doctor_cli(share: str, *args: str, options: dict | None = None):
    extra = [arg for key, value in (options or {}).items() for arg in ("-o", f"{key}={value}")]
    return CliRunner().invoke(cli, ["--share-dir", share, *extra, "doctor", "--json", *args])


def _runtime_findings(result) -> set[str]:
    return {os.path.basename(f["where"]) for f in json.loads(result.stdout)["findings"]
            if f["kind"] == "runtime file"}


@pytest.mark.timeout(300)
def test_after_ordinary_use_with_the_fork_server_doctor_is_clean_until_the_server_is_killed(
        tmp_path, short_runtime, s3_server):
    import signal

    import psutil

    from rxjobs import RxLocalParallel, rx_exec, rx_get_job_results, rx_wait_for_job
    from rxjobs.engines import forkserver

    from conftest import wait_until
    from engine_contract import square

    local = str(tmp_path / "share")
    s3 = s3_server.new_prefix()
    options = dict(s3_server.options)
    try:
        for share, opts in ((local, None), (s3, options)):  # not waiting: the fork server forks them
            job = rx_exec(square, x=[1, 2, 3], compute_context=RxLocalParallel(
                num_workers=1, wait=False, share_dir=share, share_dir_options=opts))
            rx_wait_for_job(job, timeout=120)
            assert rx_get_job_results(job) == [1, 4, 9]
        (server,) = forkserver.list_servers()
        names = {p.name for p in short_runtime.iterdir()}
        assert {f"forkserver-{server['key']}.json", f"forkserver-{server['key']}.sock"} <= names

        for share, opts in ((local, None), (s3, options)):
            result = _doctor_cli(share, options=opts)
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["findings"] == []

        proc = psutil.Process(server["pid"])
        os.kill(proc.pid, signal.SIGKILL)  # no time to remove its files
        proc.wait(timeout=30)
        dead = {f"forkserver-{server['key']}.json", f"forkserver-{server['key']}.sock"}
        result = _doctor_cli(local)
        assert result.exit_code == 1, result.output
        assert _runtime_findings(result) == dead
        assert all(f["remedy"] == "remove" and "fork server that is gone" in f["reason"]
                   for f in json.loads(result.stdout)["findings"])
        fixed = _doctor_cli(local, "--fix")
        assert fixed.exit_code == 0, fixed.output
        assert not dead & {p.name for p in short_runtime.iterdir()}
        assert _doctor_cli(s3, options=options).exit_code == 0  # the runtime dir is clean for all
        # The next job starts a new server, whose files are its own again.
        job = rx_exec(square, x=[4], compute_context=RxLocalParallel(wait=False, share_dir=local))
        rx_wait_for_job(job, timeout=120)
        assert rx_get_job_results(job) == [16]
        wait_until(lambda: len(forkserver.list_servers()) == 1, what="a new fork server")
        assert _doctor_cli(local).exit_code == 0
    finally:
        s3_server.remove_prefix(s3)


@pytest.mark.timeout(300)
def test_a_live_driver_forked_by_the_fork_server_holds_its_runtime_log(tmp_path, short_runtime, s3_server):
    """An object-store job's driver logs to the runtime dir; forked by the fork server, it must
    hold that log as a freshly started driver does, or doctor --fix would take a live log."""
    from rxjobs import RxLocalParallel, RxRemoteJobStatus, rx_cancel_job, rx_exec, rx_get_job_status
    from rxjobs.engines import forkserver
    from rxjobs.runtime import driver_log_file, is_held

    from conftest import wait_until
    from engine_contract import sleep_then_return

    s3 = s3_server.new_prefix()
    options = dict(s3_server.options)
    try:
        job = rx_exec(sleep_then_return, seconds=[120], compute_context=RxLocalParallel(
            num_workers=1, wait=False, share_dir=s3, share_dir_options=options))
        assert forkserver.list_servers()  # the driver came from the fork server
        wait_until(lambda: rx_get_job_status(job) is RxRemoteJobStatus.RUNNING, timeout=120,
                   what="the job to run")
        log = driver_log_file(job.job_id)
        assert os.path.exists(log) and is_held(log)
        result = _doctor_cli(s3, "--fix", options=options)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["findings"] == []
        assert os.path.exists(log)
        assert rx_cancel_job(job)
        wait_until(lambda: not os.path.exists(log), timeout=120, what="the log to be salvaged")
    finally:
        s3_server.remove_prefix(s3)


def test_a_fork_server_being_started_is_not_a_finding(short_runtime):
    """Its socket comes a moment before its record; meanwhile its starter holds the runtime
    dir's lock, and the socket is left alone."""
    import fcntl

    from rxjobs.runtime import remove_runtime_file, scan_runtime_dir

    sock = short_runtime / "forkserver-00aa.sock"
    sock.write_text("")  # what doctor sees of it is its name
    fd = os.open(short_runtime, os.O_RDONLY | os.O_DIRECTORY)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE, pass_fds=(fd,))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # shared with the holder, who keeps it after we close ours
        os.close(fd)
        (entry,) = scan_runtime_dir(str(short_runtime))
        assert entry.kind is RuntimeKind.FORK_SERVER_SOCKET and entry.alive
        # A report made just before the start began is not acted on during it.
        assert not remove_runtime_file(RuntimeFile(str(sock), entry.kind, entry.owner, False))
        assert sock.exists()
    finally:
        holder.communicate(b"", timeout=30)
    (entry,) = scan_runtime_dir(str(short_runtime))
    assert entry.alive is False
    assert decide_runtime_file(entry).remedy is Remedy.REMOVE
    assert remove_runtime_file(entry) and not sock.exists()


@pytest.mark.timeout(600)
def test_a_live_persistent_spark_server_is_no_finding_and_a_killed_ones_files_are_fixed(
        tmp_path, short_runtime, monkeypatch):
    import signal

    import psutil

    if not os.environ.get("CI"):  # in CI a missing install is a failure, never a skip
        pytest.importorskip("pyspark")
    from rxjobs import RxSpark, rx_exec, rx_spark_disconnect
    from rxjobs.engines import spark_protocol

    from conftest import kill_processes_mentioning, live, process_tree, wait_until
    from engine_contract import square

    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    share = str(tmp_path / "spark share")
    cc = RxSpark(master="local[1]", wait=True, share_dir=share, persistent_run=True, idle_timeout=900,
                 extra_spark_config={"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 "
                                     "-XX:+UseSerialGC", "spark.driver.memory": "512m"})
    try:
        assert rx_exec(square, x=[2, 3], compute_context=cc) == [4, 9]
        paths = spark_protocol.ServerPaths.of(cc)
        record = spark_protocol.read_record(paths)
        assert record is not None and os.path.exists(paths.socket)
        result = _doctor_cli(share)
        assert result.exit_code == 0, result.output

        server = psutil.Process(record["pid"])
        tree = process_tree([server])
        os.kill(server.pid, signal.SIGKILL)
        # Its JVM exits when its stdin pipe closes; until then the log is held: the server lives.
        wait_until(lambda: not live(tree), timeout=120, what="the server's JVM to exit")
        # A process the snapshot above did not see may hold the log a moment longer; until it
        # exits too the files are a live server's, and doctor rightly reports nothing.
        expected = {os.path.basename(p) for p in (paths.record, paths.socket, paths.log)}
        wait_until(lambda: expected <= _runtime_findings(_doctor_cli(share)), timeout=60,
                   what="doctor to report the dead server's files")
        result = _doctor_cli(share)
        assert result.exit_code == 1, result.output
        found = _runtime_findings(result)
        assert expected <= found
        assert all(name.startswith(("spark-", "forkserver-")) for name in found)
        fixed = _doctor_cli(share, "--fix")
        assert fixed.exit_code == 0, fixed.output
        assert not [p for p in short_runtime.iterdir() if p.name.startswith("spark-")]
        assert _doctor_cli(share).exit_code == 0
    finally:
        with contextlib.suppress(Exception):
            rx_spark_disconnect(cc)
        kill_processes_mentioning(share)
