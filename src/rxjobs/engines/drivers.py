"""Detached driver processes, shared by the engines that run one (local, Spark).

The submitting side starts ``python -m <engine module> <job_id> ...``, which
double-forks into its own session with stdio on the job's ``driver.log`` and
reports ``pid create_time`` back through a pipe: that pair is the handle, so
a reused pid is never mistaken for the driver.  The helpers here probe such a
handle and stop a driver together with every process below it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psutil

from ..runtime import driver_log_file, open_held
from ..status import Probe
from .base import Handle

_START_TIMEOUT_S = 120.0
# The share dir's storage options reach a driver (and the processes below it)
# through this environment variable: never on a command line, which `ps` shows.
OPTIONS_ENV = "RXJOBS_SHARE_DIR_OPTIONS"
def share_dir_options_from_env() -> dict[str, Any] | None:
    """The storage options a driver was started with (None if none were given)."""
    text = os.environ.get(OPTIONS_ENV)
    if not text:
        return None
    options = json.loads(text)
    if not isinstance(options, dict):
        raise ValueError(f"${OPTIONS_ENV} must hold a JSON object of fsspec storage options")
    return options


def driver_log_path(store: Any, job_id: str) -> tuple[str, bool]:
    """Where a driver's stdout/stderr go, and whether that is a local copy to publish.

    On a local share dir it is the job's ``driver.log``.  A process cannot
    append to an object, so on other stores the driver writes
    ``job-<job_id>.driver.log`` in the rxjobs runtime dir (:mod:`rxjobs.runtime`),
    held by ``flock`` for as long as the driver or a process below it lives, and
    copies it into ``driver.log`` before it records how the job ended
    (:func:`publish_driver_log`).  Cancel and cleanup of the job remove a copy
    its dead driver left (:func:`rxjobs.runtime.take_driver_log`).
    """
    in_place = store.os_path(store.paths(job_id).driver_log)
    if in_place is not None:
        return in_place, False
    return driver_log_file(job_id), True


def open_driver_log(path: str, local_copy: bool) -> int:
    """Open a driver's log for appending: a runtime-dir copy is created held (see
    :func:`rxjobs.runtime.open_held`), the job's own ``driver.log`` plainly."""
    if local_copy:
        return open_held(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def publish_driver_log(store: Any, job_id: str, local_log: str | None) -> None:
    """Copy a driver's local log into the job's ``driver.log`` (if it says anything), then
    delete it, whatever happens.  Called before the final status is written, so that the
    copy never lands in a job that a reader has already collected and removed; a job
    that is gone or being removed gets no copy.

    A driver that appends to the job's own ``driver.log`` (local share dirs) removes
    it here when it is empty, as it usually is: the driver, its one writer, has nothing
    left to say, and an empty file would only cost every listing, survey and cleanup.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if not local_log:
        _drop_if_empty(store, store.paths(job_id).driver_log)
        return
    try:
        with open(local_log, "rb") as f:
            data = f.read()
        entries = store.job_entries(job_id)
        if data.strip() and entries is not None and "deleting" not in entries:
            store.write_atomic(store.paths(job_id).driver_log, data)
    except (OSError, ValueError):
        pass  # the log is a convenience; the job's state does not depend on it
    finally:
        try:
            os.unlink(local_log)
        except OSError:
            pass


def _drop_if_empty(store: Any, path: str) -> None:
    try:
        if store.read_bytes(path, limit=0) == b"":
            store.remove_file(path)
    except (OSError, ValueError):
        pass  # not empty (ValueError beyond the limit), or already gone: left as it is


def start_driver(module: str, store: Any, job_id: str, args: list[str], engine: str,
                 options: dict[str, Any] | None = None) -> Handle:
    """Start ``module``'s driver for ``job_id`` detached (through ``_launch``); return its handle.

    As :func:`start_detached`, with the job id on the command line and the
    driver's stderr on the job's ``driver.log`` (or on a local copy, passed as
    ``--local-log``, when the log must be published: :func:`driver_log_path`).
    """
    log_path, local_copy = driver_log_path(store, job_id)
    if local_copy:
        args = [*args, "--local-log", log_path]
    return start_detached(module, [job_id, "--share-dir", store.url, *args], log_path,
                          what=f"{engine} driver of job {job_id}", options=options, hold=local_copy)


def can_fork_driver() -> bool:
    """Whether a driver may be forked from this process rather than started afresh.

    Only a single-threaded process is forked: a lock held by another thread
    at the instant of the fork would stay locked forever in the child.
    """
    return hasattr(os, "fork") and threading.active_count() == 1


def fork_driver(run: Callable[[str | None], int], module: str, store: Any, job_id: str,
                args: list[str]) -> Handle:
    """Start a job's driver by forking this process; return its handle.

    The same detached driver as :func:`start_driver` gives (own session,
    stdio on the job's driver log, pid + start time as handle, the job id on
    its command line, set with ``setproctitle``), without an interpreter
    start and its imports: what a waiting job's caller would otherwise wait
    for.  The child calls ``run(local_log)`` and exits with its return value,
    running no exit handler of the caller's.  Call it only when
    :func:`can_fork_driver` says so.
    """
    log_path, local_copy = driver_log_path(store, job_id)
    title = " ".join([sys.executable, "-m", module, job_id, "--share-dir", store.url, *args])
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the caller's child: fork the driver, then exit at once
        code = 1
        try:
            os.close(read_end)
            if os.fork() == 0:
                code = _forked_driver(run, title, log_path if local_copy else None, log_path,
                                      write_end)
            else:
                code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reply:
        out = reply.read()
    os.waitpid(child, 0)
    try:
        pid_text, create_time_text = out.decode().split()
        return {"host": socket.gethostname(), "pid": int(pid_text),
                "create_time": float(create_time_text)}
    except ValueError:
        raise RuntimeError(f"the driver of job {job_id} did not start; see {log_path}") from None


def _forked_driver(run: Callable[[str | None], int], title: str, local_log: str | None,
                   log_path: str, reply_fd: int) -> int:
    from setproctitle import setproctitle

    os.setsid()  # own session and process group, as a started driver has
    take_stdio(open_driver_log(log_path, local_log is not None), reply_fd)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    # As in a fresh interpreter: a write to a closed pipe (a killed pool worker's)
    # raises BrokenPipeError instead of killing the driver silently.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setproctitle(title)
    me = psutil.Process()
    os.write(reply_fd, f"{me.pid} {me.create_time()!r}\n".encode())
    os.close(reply_fd)
    try:
        code = run(local_log)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def take_stdio(log_fd: int, keep_fd: int) -> None:
    """Make a forked process a driver of its own: stdin from /dev/null, stdout and stderr
    on ``log_fd`` (closed here), every other descriptor closed but ``keep_fd``.

    Nothing of the process it was forked from stays open (its sockets, pipes,
    listening ports), and the ``sys`` streams are plain ones on the new fds:
    the forking process's stream objects (a notebook's, pytest's) may not
    write to fds 1 and 2 at all.
    """
    close_all_but(keep_fd, log_fd)
    redirect_stdio(log_fd)


def close_all_but(*keep: int) -> None:
    """Close every descriptor above 2 but those in ``keep``."""
    low = 3
    for fd in sorted(set(keep)):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, max_fd())


def redirect_stdio(log_fd: int) -> None:
    """stdin from /dev/null, stdout and stderr on ``log_fd`` (closed here), and plain ``sys``
    streams on them (see :func:`take_stdio`)."""
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null_fd)
    os.close(log_fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def max_fd() -> int:
    """The highest file descriptor number a process may have (to close all above some)."""
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 65536


# -- a driver's start-up, the same for every engine's driver -----------------------------


def driver_arguments(prog: str, description: str, argv: Sequence[str] | None,
                     extra: Callable[[argparse.ArgumentParser], object] | None = None) -> argparse.Namespace:
    """A driver's command line: ``<job_id> --share-dir DIR [--local-log PATH]`` and the
    engine's own options (added by ``extra``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("job_id")
    parser.add_argument("--share-dir", required=True)
    if extra is not None:
        extra(parser)
    parser.add_argument("--local-log", help="a local copy of the driver log, published at the end")
    return parser.parse_args(argv)


def become_driver(detached: bool) -> None:
    """Detach unless already detached (stderr is then already the driver's log), and ignore
    SIGINT: a driver is stopped by SIGTERM (cancel), never by the submitter's Ctrl-C."""
    if not detached:
        detach(log_fd=2)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def open_driven_job(share_dir: str, job_id: str, options: dict[str, Any] | None,
                    local_log: str | None) -> Any:
    """The store of the job a driver starts to run, or None for a job canceled before its
    driver started (its log is then published, and the driver exits 0)."""
    from ..store import open_store

    store = open_store(share_dir, options)
    if store.exists(store.paths(job_id).canceled):
        publish_driver_log(store, job_id, local_log)
        return None
    return store


def detach(log_fd: int) -> None:
    """Double fork: the submitter's child exits at once, the grandchild runs on its own.

    The grandchild reports ``pid create_time`` on stdout (the submitter's pipe),
    then points its stdout at the driver log.
    """
    if os.fork() > 0:
        os._exit(0)
    os.setsid()  # own session and process group: cancel signals the whole group
    me = psutil.Process()
    sys.stdout.write(f"{me.pid} {me.create_time()!r}\n")
    sys.stdout.flush()
    os.dup2(log_fd, 1)


def find_driver(handle: Handle) -> psutil.Process | None:
    """The driver process if it is still the one in the handle, else None."""
    try:
        proc = psutil.Process(int(handle["pid"]))
        if abs(proc.create_time() - float(handle["create_time"])) > 0.05:
            return None  # the pid now belongs to another process
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, KeyError, TypeError, ValueError):
        return None


def owned_by_caller(proc: psutil.Process) -> bool:
    """Whether ``proc`` runs as the caller (its real uid): the only processes a cancel
    may signal, whatever a job's ``engine.json`` names (docs/security.md)."""
    try:
        return bool(proc.uids().real == os.geteuid())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def on_this_host(handle: Handle) -> bool:
    return handle.get("host") == socket.gethostname()


def probe_driver(handle: Handle) -> Probe:
    """ALIVE while the driver runs, GONE once it exited, UNREACHABLE from another host."""
    if not on_this_host(handle):
        return Probe.UNREACHABLE
    return Probe.ALIVE if find_driver(handle) is not None else Probe.GONE


class ExitSleeper:
    """``sleep(seconds)`` that returns as soon as a driver process exits (a Linux pidfd).

    A waiting caller uses it between status polls, so that a job whose driver
    has written its final status and exited is seen at once.
    """

    def __init__(self, pidfd: int) -> None:
        self._fd: int | None = pidfd

    def __call__(self, seconds: float) -> None:
        if self._fd is None:
            time.sleep(seconds)
            return
        readable, _, _ = select.select([self._fd], [], [], seconds)
        if readable:  # the driver is gone: later sleeps are plain ones
            self.close()

    def fileno(self) -> int | None:
        """The pidfd (readable once the driver exits); None once it woke."""
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def exit_sleeper(handle: Handle) -> ExitSleeper | None:
    """An :class:`ExitSleeper` on the handle's driver, or None where none can be had
    (another host, no ``pidfd_open``, the driver already gone)."""
    if not on_this_host(handle) or not hasattr(os, "pidfd_open"):
        return None
    try:
        fd = os.pidfd_open(int(handle["pid"]))
    except (OSError, KeyError, TypeError, ValueError):
        return None
    if find_driver(handle) is None:  # checked after the open: the fd is surely this driver's
        os.close(fd)
        return None
    return ExitSleeper(fd)


def stop_driver(handle: Handle, ask: Callable[[psutil.Process, list[psutil.Process]], None],
                grace: float) -> bool:
    """Stop a detached driver and every process below it; True if it was running.

    ``ask(driver, tree)`` asks them to stop (each engine knows how its
    driver takes that); whatever is still alive ``grace`` seconds later is
    killed.  A driver on another host, or already gone, is left alone.
    """
    if not on_this_host(handle):
        return False
    driver = find_driver(handle)
    if driver is None or not owned_by_caller(driver):
        return False  # a handle is untrusted input: never signal another user's process
    tree = [proc for proc in descendants([driver]) if owned_by_caller(proc)]
    ask(driver, tree)
    alive = wait_gone(tree, timeout=grace)
    if alive:
        kill_now(alive, timeout=grace)
    return True


def descendants(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """``procs`` and every live process below them (children of children included)."""
    found: dict[int, psutil.Process] = {}
    for proc in procs:
        try:
            family = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for member in family:
            found.setdefault(member.pid, member)
    return list(found.values())


def kill_now(procs: Iterable[psutil.Process], timeout: float) -> None:
    """SIGKILL ``procs`` and whatever they forked, without letting any of them fork more.

    Processes are stopped first and their children collected again, so a
    process forked while we look is caught too (a killed parent's children
    would be reparented and escape a second look).
    """
    procs = list(procs)
    for _ in range(3):  # stopped processes cannot fork: a few rounds reach a fixed point
        for proc in procs:
            send_signal(proc, signal.SIGSTOP)
        wider = descendants(procs)
        if {p.pid for p in wider} == {p.pid for p in procs}:
            break
        procs = wider
    for proc in procs:
        send_signal(proc, signal.SIGKILL)  # SIGKILL ends a stopped process too
    psutil.wait_procs(procs, timeout=timeout)


def send_signal(proc: psutil.Process, sig: int) -> None:
    """Signal ``proc`` if it is still the same process; a gone process is fine."""
    try:
        proc.send_signal(sig)  # psutil checks the pid still names the same process
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass


def wait_gone(procs: list[psutil.Process], timeout: float,
              track_children: bool = True) -> list[psutil.Process]:
    """Wait until ``procs`` (and, if asked, the children they fork meanwhile) exit.

    Returns every process still alive at the deadline.
    """
    deadline = time.monotonic() + timeout
    tracked = {p.pid: p for p in procs}
    while True:
        if track_children:
            for proc in descendants([p for p in tracked.values() if _alive(p)]):
                tracked.setdefault(proc.pid, proc)
        alive = [p for p in tracked.values() if _alive(p)]
        left = deadline - time.monotonic()
        if not alive or left <= 0:
            return alive
        psutil.wait_procs(alive, timeout=min(0.2, left))


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
        except (OSError, AttributeError):
            pass


def start_detached(module: str, args: list[str], log_path: str, what: str,
                   options: dict[str, Any] | None = None,
                   env: dict[str, str] | None = None, hold: bool = False) -> Handle:
    """Start ``python -m <module> <args>`` detached (through ``_launch``); return its handle.

    The process imports what the caller could import (functions pickled by
    reference), so it gets the caller's ``sys.path`` as ``PYTHONPATH``; it
    gets the share dir's storage options in ``$RXJOBS_SHARE_DIR_OPTIONS``
    (never on a command line, which ``ps`` shows), its own session, and
    stderr on ``log_path``; ``env`` adds variables.  With ``hold``, ``log_path`` is
    a runtime-dir file made under ``flock`` (:func:`rxjobs.runtime.open_held`),
    which the process and those below it hold while they live.  Used for job drivers
    (:func:`start_driver`) and for the persistent Spark server, which
    serves many jobs.
    """
    cmd = [sys.executable, "-m", "rxjobs.engines._launch", module, *args]
    child_env = dict(os.environ)
    path = [p or os.getcwd() for p in sys.path]
    child_env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    child_env.pop(OPTIONS_ENV, None)
    if options:
        child_env[OPTIONS_ENV] = json.dumps(options)
    child_env.update(env or {})
    fd = open_driver_log(log_path, hold)
    with os.fdopen(fd, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            cwd=os.getcwd(), env=child_env, start_new_session=True, close_fds=True,
        )
    try:
        out, _ = proc.communicate(timeout=_START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the {what} did not start; see {log_path}") from None
    try:
        pid_text, create_time_text = out.decode().split()
        pid, create_time = int(pid_text), float(create_time_text)
    except ValueError:
        raise RuntimeError(f"the {what} did not start; see {log_path}") from None
    return {"host": socket.gethostname(), "pid": pid, "create_time": create_time}
