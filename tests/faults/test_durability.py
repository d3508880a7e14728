"""Every commit point is durable, in the order a power loss needs.

The system calls of a real job's whole life (the share dir made, a submit, the
driver's run, a collect with ``auto_cleanup=False``, a cleanup) are recorded
with ``strace -ff -y`` (each process in its own file, every descriptor shown
with its path), and each commit point is checked in the process that made it:

- a file published by a rename (``job.json``, ``payload.pkl``, ``engine.json``,
  ``status.json``, each task's output and result, the ``retrieved`` marker): ``fsync`` of the temporary
  file before the rename, ``fsync`` of its directory after;
- a file created in place (the share-dir marker; ``canceled`` is made the same way):
  ``fsync`` of the file, then of its directory;
- a directory created (the job's, its ``tasks/``): ``fsync`` of the parent after;
- the rename into ``.trash/``: ``fsync`` of the trash and of the share dir after it,
  before the first file of the job is deleted.

``RXJOBS_FSYNC=0`` turns every one of them off.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

from rxjobs.engines import forkserver
from rxjobs.runtime import RUNTIME_DIR_ENV
from rxjobs.store import open_store
from rxjobs.store.durability import FSYNC_ENV

from factory import make_job

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

SRC = Path(__file__).resolve().parents[2] / "src"

LIFE = """
import sys
from rxjobs import (RxLocalParallel, rx_cleanup_jobs, rx_exec, rx_get_job_results,
                    rx_wait_for_job)

def double(x):
    print("doubling", x)  # so that each task writes its output file too
    return 2 * x

cc = RxLocalParallel(num_workers=1, wait=False, share_dir=sys.argv[1])
job = rx_exec(double, x=[1, 2, 3], compute_context=cc, task_chunk_size=2)
rx_wait_for_job(job, timeout=120)
assert rx_get_job_results(job, auto_cleanup=False) == [2, 4, 6]
report = rx_cleanup_jobs([job], verbose=False)
assert [e.outcome.value for e in report] == ["removed"], report
print(job.job_id)
"""

# `123  renameat(3</a/b>, "x.tmp-1", 3</a/b>, "x") = 0` (strace -y; one file per process)
CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+|0x[0-9a-f]+)(?:<(?P<retpath>[^>]*)>)?")
FD = re.compile(r"(\d+)<([^>]*)>")
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _strace() -> str:
    found = shutil.which("strace")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("strace is missing (bash .ci/install-system-deps installs it)")
        pytest.skip("strace is missing (apt-get install strace, or bash .ci/install-system-deps)")
    return found


class Call:
    """One system call of one process: its name, the paths of its descriptors, its strings."""

    def __init__(self, index: int, name: str, args: str, ret: str, retpath: str | None) -> None:
        self.index, self.name, self.args, self.ret, self.retpath = index, name, args, ret, retpath
        self.fds = FD.findall(args)
        self.strings = STRING.findall(args)

    @property
    def ok(self) -> bool:
        return not self.ret.startswith("-")

    def fd_path(self, i: int = 0) -> str:
        return self.fds[i][1]


def record(tmp_path: Path, share: Path, env_extra: dict[str, str] | None = None) -> dict[int, list[Call]]:
    """Run LIFE under strace; each process's calls in order, by pid."""
    prefix = tmp_path / "trace"
    env = {key: value for key, value in os.environ.items() if key != FSYNC_ENV}
    # A fork server of the run's own (a non-waiting job's driver is forked by one), traced with
    # it, that exits a second after its last request so that strace ends.
    env.update({"PYTHONPATH": str(SRC), RUNTIME_DIR_ENV: str(tmp_path / "runtime"),
                forkserver.IDLE_ENV: "1", **(env_extra or {})})
    done = subprocess.run([_strace(), "-ff", "-y", "-s", "256", "-e", "trace=file,desc,fsync",
                           "-o", str(prefix), sys.executable, "-c", textwrap.dedent(LIFE), str(share)],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    calls: dict[int, list[Call]] = defaultdict(list)
    for trace in tmp_path.glob("trace.*"):
        pid = int(trace.suffix[1:])
        for line in trace.read_text(errors="replace").splitlines():
            m = CALL.match(line)
            if m:
                calls[pid].append(Call(len(calls[pid]), m["name"], m["args"], m["ret"], m["retpath"]))
    return calls


def _fsynced_after(calls: list[Call], start: int, path: str, before: int | None = None) -> bool:
    return any(c.name == "fsync" and c.ok and c.fds and c.fd_path() == path
               for c in calls[start + 1:before])


def _fsynced_before(calls: list[Call], end: int, path: str) -> bool:
    return any(c.name == "fsync" and c.ok and c.fds and c.fd_path() == path for c in calls[:end])


def commit_points(calls_by_pid: dict[int, list[Call]], share: str) -> dict[str, list[str]]:
    """Each commit point found in the trace, by kind, with what is wrong with it ('' if nothing)."""
    found: dict[str, list[str]] = defaultdict(list)
    for calls in calls_by_pid.values():
        for c in calls:
            if not c.ok:
                continue
            # A file is published by a rename (atomic write) or a hard link (exclusive write:
            # the share-dir marker, the first status record, deleting markers).
            if c.name in ("rename", "renameat", "renameat2", "link", "linkat") and len(c.fds) >= 2 \
                    and len(c.strings) >= 2:
                src_dir, dst_dir = c.fd_path(0), c.fd_path(1)
                old, new = c.strings[0], c.strings[1]
                if not src_dir.startswith(share):
                    continue
                if dst_dir.endswith("/.trash"):
                    first_delete = next((d.index for d in calls[c.index + 1:]
                                         if d.name in ("unlink", "unlinkat", "rmdir")), None)
                    problems = [f"no fsync of {where} between the rename into the trash and the first "
                                "deletion" for where in (dst_dir, src_dir)
                                if not _fsynced_after(calls, c.index, where, first_delete)]
                    found["into .trash/"].append("; ".join(problems))
                elif ".tmp-" in old:
                    problems = []
                    if not _fsynced_before(calls, c.index, f"{src_dir}/{old}"):
                        problems.append(f"{new}: its data is not fsynced before it is published")
                    if not _fsynced_after(calls, c.index, dst_dir):
                        problems.append(f"{new}: its directory is not fsynced after the rename")
                    kind = "tasks/*" if dst_dir.endswith("/tasks") else new
                    found[kind].append("; ".join(problems))
        for c in calls:
            if not c.ok:
                continue
            if c.name == "mkdirat" and c.fds and c.fd_path().startswith(share) and c.strings:
                name = c.strings[0]
                if name in (".trash", ".locks"):
                    continue
                problems = [] if _fsynced_after(calls, c.index, c.fd_path()) else [
                    f"mkdir {name}: its parent is not fsynced after"]
                found["mkdir tasks" if name == "tasks" else "mkdir job"].append("; ".join(problems))
    return found


def _renamed_to(calls_by_pid: dict[int, list[Call]], name: str) -> bool:
    return any(c.name.startswith("rename") and c.ok and c.strings[1:2] == [name]
               for calls in calls_by_pid.values() for c in calls)


def test_every_commit_point_is_fsynced_in_order(tmp_path):
    share = tmp_path / "share"
    calls = record(tmp_path, share)
    found = commit_points(calls, str(share))
    expected = ["job.json", "payload.pkl", "status.json", "tasks/*", "retrieved",
                ".rxjobs-share", "mkdir job", "mkdir tasks", "into .trash/"]
    missing = [kind for kind in expected if not found.get(kind)]
    assert not missing, f"commit points not seen in the trace: {missing}; seen: {dict(found)}"
    assert len(found["job.json"]) == 2  # at submit, then with the engine's handle
    # two tasks, an output and a result each (and, under strace's slowness, maybe an
    # output published while its task still ran)
    assert len(found["tasks/*"]) >= 4
    wrong = {kind: [p for p in problems if p] for kind, problems in found.items()}
    wrong = {kind: problems for kind, problems in wrong.items() if problems}
    assert not wrong, wrong
    print("\ncommit points checked:", {kind: len(v) for kind, v in sorted(found.items())})


def test_rxjobs_fsync_0_turns_fsync_off(tmp_path):
    share = tmp_path / "share"
    calls = record(tmp_path, share, {FSYNC_ENV: "0"})
    synced = [c for pid_calls in calls.values() for c in pid_calls
              if c.name == "fsync" and c.fds and c.fd_path().startswith(str(share))]
    assert synced == []
    assert _renamed_to(calls, "retrieved") and _renamed_to(calls, "job.json")  # the life was traced


@pytest.mark.parametrize(("value", "fsyncs"), [(None, True), ("1", True), ("0", False), (" 0 ", False)])
def test_the_switch(tmp_path, monkeypatch, value, fsyncs):
    if value is None:
        monkeypatch.delenv(FSYNC_ENV, raising=False)
    else:
        monkeypatch.setenv(FSYNC_ENV, value)
    store = open_store(tmp_path / "share")
    seen = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (seen.append(fd), real(fd))[1])
    make_job(store, "retrieved")
    assert bool(seen) is fsyncs


BIG_CLEANUP = """
import os, sys
from rxjobs import cleanup
from rxjobs.store import open_store

from rxjobs.store import bulk_delete

bulk_delete.FIND_FROM_ENTRIES = 1  # delete in find processes, as a big cleanup does
store = open_store(sys.argv[1])
ids = store.list_job_ids()
report = cleanup.cleanup_jobs([(store, job_id) for job_id in ids], verbose=False, threads=8)
assert [e.outcome.value for e in report] == ["removed"] * len(ids), report
"""

# `1764612345.123456 renameat(...) = 0 <0.000021>` (strace -ttt -T)
TIMED = re.compile(r"^(?P<at>\d+\.\d+) (?P<call>.*) <(?P<took>\d+\.\d+)>$")


def test_a_jobs_files_are_deleted_only_after_its_rename_into_the_trash_is_durable(tmp_path):
    """Many jobs cleaned up in one batch and deleted by find processes: the batch's renames
    share their fsyncs, so the check is by time across every process: for each job, an
    fsync of ``.trash/`` and one of the share dir that began after its rename ended, and
    ended before the first deletion of one of its files."""
    share = tmp_path / "share"
    store = open_store(str(share))
    jobs = [make_job(store, "failed").job_id for _ in range(40)]
    prefix = tmp_path / "trace"
    env = {key: value for key, value in os.environ.items() if key != FSYNC_ENV}
    env["PYTHONPATH"] = str(SRC)
    done = subprocess.run([_strace(), "-ff", "-ttt", "-T", "-y", "-s", "256",
                           "-e", "trace=file,desc,fsync", "-o", str(prefix), sys.executable, "-c",
                           textwrap.dedent(BIG_CLEANUP), str(share)],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    renamed: dict[str, tuple[str, float]] = {}  # job -> (trash entry, when the rename ended)
    syncs: dict[str, list[tuple[float, float]]] = defaultdict(list)  # dir -> (began, ended)
    deletions: dict[str, float] = {}  # trash entry -> first deletion in it began
    pids = set()
    deleters = set()
    trash = f"{share}/.trash"
    for trace in tmp_path.glob("trace.*"):
        for line in trace.read_text(errors="replace").splitlines():
            timed = TIMED.match(line)
            m = CALL.match(timed["call"]) if timed else None
            if not (timed and m) or m["ret"].startswith("-"):
                continue
            began, ended = float(timed["at"]), float(timed["at"]) + float(timed["took"])
            call = Call(0, m["name"], m["args"], m["ret"], m["retpath"])
            if call.name.startswith("rename") and len(call.fds) >= 2 and call.fd_path(1) == trash:
                renamed[call.strings[0]] = (call.strings[1], ended)
                pids.add(trace.suffix)
            elif call.name == "fsync" and call.fds:
                syncs[call.fd_path()].append((began, ended))
            elif call.name in ("unlink", "unlinkat", "rmdir") and call.fds:
                where = call.fd_path()
                if where.startswith(f"{trash}/"):
                    entry = where[len(trash) + 1:].split("/")[0]
                    deletions[entry] = min(began, deletions.get(entry, began))
                    deleters.add(trace.suffix)
    assert sorted(renamed) == sorted(jobs)
    assert deleters - pids, "no file was deleted by a process of its own"
    problems = []
    for job_id, (entry, rename_ended) in renamed.items():
        first_delete = deletions.get(entry)
        assert first_delete is not None, f"no deletion seen in {entry}"
        for where in (trash, str(share)):
            if not any(rename_ended <= began and ended <= first_delete for began, ended in syncs[where]):
                problems.append(f"{job_id}: no fsync of {where} between its rename and its first deletion")
    assert not problems, problems
    print(f"\n{len(jobs)} jobs deleted by {len(deleters - pids)} processes, "
          f"{len(syncs[trash])} fsyncs of .trash/ and {len(syncs[str(share)])} of the share dir")
