"""The client of the persistent Spark server: start it, send it jobs, ask about them, stop it.

``RxSpark(persistent_run=True)`` jobs go through :class:`PersistentServerBackend`
(the Spark engine, :mod:`rxjobs.engines.spark`, picks it by the handle):
it finds the live server of the job's settings or starts one
(``python -m rxjobs.engines.spark_server``, detached, see
:mod:`rxjobs.engines.spark_server`), and speaks to it over its Unix socket
(:mod:`rxjobs.engines.spark_protocol`).  A job's handle names the server
(host, pid, start time, key, socket) and the job, so status, cancel and
waiting work from any process of the user on this machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import socket
import time
from collections.abc import Iterator
from typing import Any, TypeGuard

from ..runtime import locked, remove_runtime_file, scan_runtime_dir
from ..status import Probe
from .base import Handle, SubmittedJob
from .drivers import descendants, find_driver, kill_now, on_this_host, start_detached, wait_gone
from .spark_protocol import (
    CONTEXT_ENV,
    READY_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    ServerPaths,
    read_record,
    request,
)

_PROBE_TIMEOUT_S = 5.0
_CANCEL_TIMEOUT_S = 30.0  # the server waits up to 15 s for a canceled job's thread
_ANSWER_TIMEOUT_S = 120.0  # a started server answers once Python and rxjobs are imported
_STOP_TIMEOUT_S = 60.0  # a stopping server stops its jobs and Spark (bounded waits inside)
_SUBMIT_ATTEMPTS = 3


class ServerError(RuntimeError):
    """The persistent Spark server could not be started or refused a request."""


# -- where a server is ------------------------------------------------------------------


def _write_record(paths: ServerPaths, record: dict[str, Any]) -> None:
    tmp = f"{paths.record}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, paths.record)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _live(record: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    return record is not None and on_this_host(record) and find_driver(record) is not None


@contextlib.contextmanager
def _locked(paths: ServerPaths) -> Iterator[None]:
    """Held while a server of ``paths.key`` is looked for and started, or stopped."""
    with locked(paths.lock):
        yield


def _forget_dead_server(paths: ServerPaths) -> None:
    """Remove the files a dead server of ``paths.key`` left (the caller holds the lock)."""
    for entry in scan_runtime_dir(paths.base):
        if entry.owner == paths.key and entry.path != paths.lock:
            remove_runtime_file(entry)


# -- talking to a server ----------------------------------------------------------------


def _find_or_start(context: Any, options: dict[str, Any] | None) -> dict[str, Any]:
    """The record of the live server of ``context``, started first if there is none."""
    paths = ServerPaths.of(context)
    record = read_record(paths)
    if _live(record):
        return record
    with _locked(paths):
        record = read_record(paths)
        if _live(record):
            return record
        return _start(context, options, paths)


def _start(context: Any, options: dict[str, Any] | None, paths: ServerPaths) -> dict[str, Any]:
    """Start a server (the caller holds the lock) and return its record once it answers."""
    _forget_dead_server(paths)  # the record, socket and log of a server that is gone
    args = [paths.key, "--share-dir", context.job_share_dir(), "--master", context.master,
            "--idle-timeout", str(int(context.idle_timeout)), "--runtime-dir", paths.base]
    handle = start_detached("rxjobs.engines.spark_server", args, paths.log,
                            what="persistent Spark server", options=options,
                            env={CONTEXT_ENV: json.dumps(context.to_dict())}, hold=True)
    record = {**handle, "key": paths.key, "socket": paths.socket, "log": paths.log,
              "share_dir": context.job_share_dir(), "master": context.master,
              "idle_timeout": int(context.idle_timeout)}
    deadline = time.monotonic() + _ANSWER_TIMEOUT_S
    while True:
        try:
            if request(paths.socket, {"cmd": "ping"}, timeout=5.0).get("pid") == handle["pid"]:
                break
        except OSError:
            pass
        server = find_driver(handle)
        if server is None:
            raise ServerError(f"the persistent Spark server did not start; see {paths.log}")
        if time.monotonic() > deadline:
            kill_now(descendants([server]), timeout=10)
            raise ServerError(f"the persistent Spark server did not answer; see {paths.log}")
        time.sleep(0.02)
    _write_record(paths, record)
    return record


def _wait_exit(record: dict[str, Any], timeout: float) -> None:
    server = find_driver(record)
    if server is not None and wait_gone([server], timeout=timeout, track_children=False):
        raise ServerError(f"the persistent Spark server (pid {record.get('pid')}) is stopping "
                          f"but did not exit; see {record.get('log')}")


def _ask(context: Any, options: dict[str, Any] | None, message: dict[str, Any],
         timeout: float = REQUEST_TIMEOUT_S) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send ``message`` to the server of ``context`` (started if needed): (record, answer).

    A server that is stopping (idle timeout, disconnect) refuses; then its exit
    is awaited and a new one started.
    """
    for _ in range(_SUBMIT_ATTEMPTS):
        record = _find_or_start(context, options)
        try:
            reply = request(record["socket"], message, timeout=timeout)
        except (ConnectionError, FileNotFoundError):
            reply = {"ok": False, "stopping": True}  # its socket is closed: it is on its way out
        except OSError as exc:  # a timeout: it may have taken the request, so do not retry
            raise ServerError(f"the persistent Spark server (pid {record.get('pid')}) did not "
                              f"answer: {exc}; see {record.get('log')}") from exc
        if reply.get("ok"):
            return record, reply
        if not reply.get("stopping"):
            raise ServerError(f"the persistent Spark server refused: {reply.get('error')}; "
                              f"see {record.get('log')}")
        _wait_exit(record, _STOP_TIMEOUT_S)
    raise ServerError("the persistent Spark server kept stopping; try rx_spark_connect(reset=True)")


class JobEndSleeper:
    """``sleep(seconds)`` that returns as soon as the server says the job ended.

    One connection per wait: the server answers the ``wait`` command when the
    job's final status is written (at once if it no longer runs the job).
    """

    def __init__(self, socket_path: str, job_id: str) -> None:
        self._path = socket_path
        self._job_id = job_id
        self._sock: socket.socket | None = None
        self._ended = False

    def __call__(self, seconds: float) -> None:
        if self._ended:
            time.sleep(seconds)
            return
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(1.0)
                sock.connect(self._path)
                sock.sendall(json.dumps({"cmd": "wait", "job_id": self._job_id}).encode() + b"\n")
            except OSError:
                sock.close()
                self._ended = True  # no server to ask: plain sleeps
                time.sleep(seconds)
                return
            self._sock = sock
        readable, _, _ = select.select([self._sock], [], [], seconds)
        if readable:  # the answer, or the server is gone: either way look at the job now
            self.close()
            self._ended = True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def is_server_handle(handle: Handle) -> bool:
    """Whether ``handle`` (a job's ``engine.json``) names a persistent server, not a driver."""
    return "server" in handle


class PersistentServerBackend:
    """Jobs of ``RxSpark(persistent_run=True)``: run on the persistent server of their settings.

    A job's handle names the server (host, pid, start time, key, socket) and
    the job (:func:`is_server_handle` tells it from a per-job driver's).
    """

    def submit(self, job: SubmittedJob) -> Handle:
        """Run a job on the persistent server of its context (started if none runs)."""
        record, _ = _ask(job.context, job.share_dir_options, {"cmd": "submit", "job_id": job.job_id})
        return {"host": record["host"], "pid": record["pid"], "create_time": record["create_time"],
                "server": record["key"], "socket": record["socket"], "job_id": job.job_id}

    def probe(self, handle: Handle) -> Probe:
        """GONE when the server exited or no longer runs the job; ALIVE while it does."""
        if not on_this_host(handle):
            return Probe.UNREACHABLE
        if find_driver(handle) is None:
            return Probe.GONE
        try:
            reply = request(handle["socket"], {"cmd": "probe", "job_id": handle["job_id"]},
                            timeout=_PROBE_TIMEOUT_S)
        except OSError:
            return Probe.ALIVE  # busy or stopping: a stopping server records how its jobs ended
        return Probe.ALIVE if reply.get("known") else Probe.GONE

    def cancel(self, handle: Handle) -> bool:
        """Ask the server to cancel the job's group; True if it ran the job (best effort)."""
        if not on_this_host(handle) or find_driver(handle) is None:
            return False
        try:
            reply = request(handle["socket"], {"cmd": "cancel", "job_id": handle["job_id"]},
                            timeout=_CANCEL_TIMEOUT_S)
        except OSError:
            return True  # it runs, unreachable: it sees the job's canceled marker within a second
        return bool(reply.get("known"))

    def sleeper(self, handle: Handle) -> JobEndSleeper | None:
        """A :class:`JobEndSleeper` for a job on a server of this machine (None elsewhere)."""
        if not on_this_host(handle) or "socket" not in handle or "job_id" not in handle:
            return None
        return JobEndSleeper(handle["socket"], handle["job_id"])

    def connect(self, context: Any, reset: bool = False) -> Any:
        """Start (or reuse) the server of ``context`` and wait until its Spark is up.

        Returns the context with ``persistent_run=True``; ``reset`` stops a running
        server first (its running jobs end failed).
        """
        cc = dataclasses.replace(context, persistent_run=True)
        if reset:
            self.disconnect(cc)
        record, reply = _ask(cc, cc.job_share_dir_options(), {"cmd": "ready"}, timeout=READY_TIMEOUT_S)
        if reply.get("spark") != "up":
            raise ServerError(f"the persistent Spark server could not start Spark: {reply.get('error')}; "
                              f"see {record.get('log')}")
        return cc

    def disconnect(self, context: Any) -> bool:
        """Stop the server of ``context``: its running jobs end failed, Spark stops, it exits.

        Returns False when no server of ``context`` was running.
        """
        paths = ServerPaths.of(context)
        with _locked(paths):  # no server of this key starts meanwhile
            record = read_record(paths)
            server = find_driver(record) if record is not None and on_this_host(record) else None
            if server is None or record is None:
                _forget_dead_server(paths)
                return False
            tree = descendants([server])
            try:
                request(record["socket"], {"cmd": "stop", "reason": "rx_spark_disconnect"})
            except OSError:
                server.terminate()  # not answering: SIGTERM asks for the same orderly stop
            alive = wait_gone(tree, timeout=_STOP_TIMEOUT_S)
            if alive:
                kill_now(alive, timeout=_STOP_TIMEOUT_S)
            if read_record(paths) == record:
                os.unlink(paths.record)
            return True


__all__ = ["JobEndSleeper", "PersistentServerBackend", "ServerError", "is_server_handle"]
