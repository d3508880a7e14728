"""The persistent Spark server: one Spark application on this machine that runs many jobs.

RevoScaleR's ``RxSpark(persistentRun=TRUE)`` and revoscalepy's
``rx_spark_connect()`` kept one Spark application alive across jobs, so that
a job did not pay for a JVM start.  ``RxSpark(persistent_run=True)`` does the
same: ``python -m rxjobs.engines.spark_server <key> --share-dir ... --master ...``
is a detached process (own session, like a per-job driver) holding one
SparkContext, with the configuration a per-job driver would use
(:func:`~rxjobs.engines.spark_session.spark_conf`).  It runs each job submitted
to it in a thread of its own, as a Spark job of job group = the rxjobs job id,
and writes the job's ``status.json`` as a per-job driver does (the code is
shared, in :mod:`rxjobs.engines.spark_session`: :func:`run_tasks`,
:func:`record_outcome`).  The Spark engine (:mod:`rxjobs.engines.spark`)
sends such jobs here through :class:`PersistentServerBackend`; this module
never imports the engine.

There is one server per key: the share dir, the master and every Spark
setting.  It lives in the private rxjobs runtime directory (mode 0700, see
:mod:`rxjobs.runtime`, which names its files),
holding for each key ``spark-<key>.json`` (the
server's pid, start time and socket: the one record of where it is, written
atomically), ``spark-<key>.sock`` (a Unix socket; only the user's processes
may connect, which the server checks again by the peer's uid),
``spark-<key>.lock`` (so that one server starts per key) and
``spark-<key>.log`` (its stdout and stderr, held by ``flock`` while the server
or a process below it lives).  A server that stops in order removes them all
but the log of a Spark that could not start; those of a killed server go with
``rx_spark_disconnect``, the next start of that key, or ``rxjobs doctor --fix``.
The socket carries job ids and commands only, one JSON line each way; the payload is read from the share dir
by the executors, with the store's trust checks, as for every job.

A job's handle (``engine.json``) names the server (host, pid, start time, key,
socket) and the job, so status, cancel and waiting work from any process of
the user on this machine.  The server exits after ``idle_timeout`` seconds
without a running job, on ``rx_spark_disconnect`` or on SIGTERM; jobs still
running then end ``failed`` with the reason.  A server killed outright takes
Spark with it (its JVM exits when its stdin pipe closes, the Python workers
follow) and its jobs end ``failed`` ("driver lost").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from ..runtime import RUNTIME_DIR_ENV as RUNTIME_DIR_ENV
from ..runtime import (
    RuntimeKind,
    locked,
    read_server_record,
    remove_runtime_file,
    scan_runtime_dir,
)
from ..runtime import runtime_dir as runtime_dir
from ..runtime import server_file as _server_file
from ..status import Probe, Record
from .base import Handle, SubmittedJob
from .drivers import (
    descendants,
    find_driver,
    kill_now,
    on_this_host,
    share_dir_options_from_env,
    start_detached,
    wait_gone,
)
from .spark_session import (
    DriverState,
    Outcome,
    Terminated,
    parallelism,
    prepare_environment,
    record_outcome,
    run_spark_process,
    run_tasks,
    spark_conf,
    spark_error,
    start_spark,
    stop_spark,
)

# The compute context reaches the server in this variable (JSON), never on its command line.
CONTEXT_ENV = "RXJOBS_SPARK_CONTEXT"

_MAX_MESSAGE = 1 << 16
_REQUEST_TIMEOUT_S = 10.0
_PROBE_TIMEOUT_S = 5.0
_CANCEL_TIMEOUT_S = 30.0  # the server waits up to 15 s for a canceled job's thread
_JOB_CANCEL_WAIT_S = 15.0
_ANSWER_TIMEOUT_S = 120.0  # a started server answers once Python and rxjobs are imported
_READY_TIMEOUT_S = 600.0  # rx_spark_connect waits for Spark to be up
_STOP_TIMEOUT_S = 60.0  # a stopping server stops its jobs and Spark (bounded waits inside)
_TICK_S = 0.25  # how often the server looks at its idle time and stop requests
_SUBMIT_ATTEMPTS = 3


class ServerError(RuntimeError):
    """The persistent Spark server could not be started or refused a request."""


# -- where a server is ------------------------------------------------------------------


def server_key(context: Any) -> str:
    """One server per share dir, master and Spark settings (what its SparkContext is made of)."""
    conf = spark_conf(context, "")
    conf.pop("spark.rxjobs.jobId", None)
    if not context.app_name:
        conf.pop("spark.app.name", None)
    text = json.dumps([context.job_share_dir(), sorted(conf.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def server_spark_conf(context: Any, key: str) -> dict[str, str]:
    """The server's Spark configuration: a per-job driver's, naming the server, not a job."""
    conf = spark_conf(context, f"rxjobs-spark-server-{key}")
    conf.pop("spark.rxjobs.jobId", None)
    conf["spark.rxjobs.server"] = key  # on the JVM's command line: `ps` shows whose JVM it is
    return conf


@dataclass(frozen=True)
class ServerPaths:
    """The files of one server in the runtime directory."""

    base: str
    key: str

    @classmethod
    def of(cls, context: Any) -> ServerPaths:
        return cls(runtime_dir(), server_key(context))

    def _name(self, suffix: str) -> str:
        return _server_file(self.key, suffix, self.base)

    @property
    def socket(self) -> str:
        return self._name("sock")

    @property
    def record(self) -> str:
        return self._name("json")

    @property
    def lock(self) -> str:
        return self._name("lock")

    @property
    def log(self) -> str:
        return self._name("log")


def _read_record(paths: ServerPaths) -> dict[str, Any] | None:
    return read_server_record(paths.record)


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


def request(socket_path: str, message: dict[str, Any], timeout: float = _REQUEST_TIMEOUT_S,
            ) -> dict[str, Any]:
    """Send one command, return the server's one-line JSON answer (OSError if none)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        with sock.makefile("rb") as stream:
            line = stream.readline(_MAX_MESSAGE)
    if not line.endswith(b"\n"):
        raise ConnectionError("the persistent Spark server closed the connection without answering")
    try:
        reply = json.loads(line)
    except ValueError:
        raise ConnectionError("the persistent Spark server sent an unreadable answer") from None
    if not isinstance(reply, dict):
        raise ConnectionError("the persistent Spark server sent an unreadable answer")
    return reply


def _find_or_start(context: Any, options: dict[str, Any] | None) -> dict[str, Any]:
    """The record of the live server of ``context``, started first if there is none."""
    paths = ServerPaths.of(context)
    record = _read_record(paths)
    if _live(record):
        return record
    with _locked(paths):
        record = _read_record(paths)
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
         timeout: float = _REQUEST_TIMEOUT_S) -> tuple[dict[str, Any], dict[str, Any]]:
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
        record, reply = _ask(cc, cc.job_share_dir_options(), {"cmd": "ready"}, timeout=_READY_TIMEOUT_S)
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
            record = _read_record(paths)
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
            if _read_record(paths) == record:
                os.unlink(paths.record)
            return True


# -- the server process -----------------------------------------------------------------


@dataclass
class _ServerJob:
    job_id: str
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""


_STOP_REASONS = {
    "idle": "the persistent Spark server reached its idle timeout",
    "rx_spark_disconnect": "the persistent Spark server was stopped (rx_spark_disconnect) "
                           "before the job ended",
    "SIGTERM": "the persistent Spark server was stopped (SIGTERM) before the job ended",
}


class SparkServer:
    """One SparkContext running the jobs submitted over a Unix socket, each in a thread."""

    def __init__(self, key: str, store: Any, context: Any, idle_timeout: int,
                 paths: ServerPaths) -> None:
        self.key = key
        self.store = store
        self.context = context
        self.idle_timeout = idle_timeout
        self.paths = paths
        self.sc = None
        self.app_id = ""
        self.spark_error = ""
        self._lock = threading.Lock()
        self._jobs: dict[str, _ServerJob] = {}
        self._stopping = False
        self._stop_request: str | None = None  # set by SIGTERM and the stop command
        self._idle_since = time.monotonic()
        self._ready = threading.Event()
        self._socket_ino = 0
        self.slots = parallelism(context)

    # -- life ----------------------------------------------------------------------------

    def serve(self) -> int:
        listener = self._listen()
        state = DriverState()

        def on_sigterm(signum: int, frame: Any) -> None:
            self._stop_request = self._stop_request or "SIGTERM"
            state.on_sigterm(signum, frame)  # interrupts Spark while it starts

        signal.signal(signal.SIGTERM, on_sigterm)
        threading.Thread(target=self._accept, args=(listener,), name="rxjobs-accept",
                         daemon=True).start()
        try:
            conf = server_spark_conf(self.context, self.key)
            prepare_environment(self.context, conf)
            print(f"rxjobs: persistent Spark server {self.key} (pid {os.getpid()}) starting Spark "
                  f"on {self.context.master}", file=sys.stderr, flush=True)
            sc = start_spark(conf)
            state.interruptible = False
            self.app_id = sc.applicationId
            print(f"rxjobs: Spark application {self.app_id} is up", file=sys.stderr, flush=True)
            _warm_up(sc, self.slots)
            self.sc = sc
        except Terminated:
            pass
        except Exception as exc:
            traceback.print_exc()
            self.spark_error = f"{type(exc).__name__}: {spark_error(exc)}"
            self._stop_request = self._stop_request or "Spark could not start"
        finally:
            state.interruptible = False
            with self._lock:
                self._idle_since = time.monotonic()
            self._ready.set()
        while True:
            reason = self._should_stop()
            if reason:
                break
            time.sleep(_TICK_S)
        self._shutdown(listener, reason)
        return 0

    def _should_stop(self) -> str | None:
        with self._lock:
            reason = self._stop_request
            if reason is None and self.idle_timeout > 0 and not self._jobs and (
                time.monotonic() - self._idle_since >= self.idle_timeout
            ):
                reason = "idle"
            if reason is not None:
                self._stopping = True  # no job is accepted from now on
            return reason

    def _listen(self) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.paths.socket)  # a dead server's (the starter holds the lock)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.paths.socket)
        os.chmod(self.paths.socket, 0o600)
        self._socket_ino = os.stat(self.paths.socket).st_ino
        listener.listen(64)
        listener.settimeout(_TICK_S)  # the accept loop notices the stop
        return listener

    def _shutdown(self, listener: socket.socket, reason: str) -> None:
        print(f"rxjobs: persistent Spark server {self.key} stopping: {reason}", file=sys.stderr,
              flush=True)
        listener.close()
        self._forget_files()
        with self._lock:
            running = list(self._jobs.values())
        for job in running:
            job.stop_reason = _STOP_REASONS.get(reason, f"the persistent Spark server stopped: {reason}")
            job.stop.set()
        for job in running:
            job.done.wait(_JOB_CANCEL_WAIT_S)
        stop_spark(self.sc)
        for job in running:  # a job thread that did not end in time: never left "running"
            if not job.done.is_set():
                with contextlib.suppress(Exception):
                    record_outcome(self.store, job.job_id, Outcome("terminated"), job.stop_reason)
        if not self.spark_error:  # a log that says why Spark could not start is kept
            self._forget_log_and_lock()

    def _forget_files(self) -> None:
        """Remove the socket and the record if they are still this server's."""
        with contextlib.suppress(OSError):
            if os.stat(self.paths.socket).st_ino == self._socket_ino:
                os.unlink(self.paths.socket)
        record = _read_record(self.paths)
        if record is not None and record.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(self.paths.record)

    def _forget_log_and_lock(self) -> None:
        """Remove this server's log (if it is still the one on its stderr) and its start lock
        (unless a starter holds it): nothing of a server that stopped in order is left."""
        with contextlib.suppress(OSError):
            if os.stat(self.paths.log, follow_symlinks=False).st_ino == os.fstat(2).st_ino:
                os.unlink(self.paths.log)
        for entry in scan_runtime_dir(self.paths.base):
            if entry.owner == self.key and entry.kind is RuntimeKind.SERVER_LOCK:
                with contextlib.suppress(OSError):
                    remove_runtime_file(entry)

    # -- requests ------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopping:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed at shutdown
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(_REQUEST_TIMEOUT_S)
                if not _peer_is_me(conn):
                    return
                with conn.makefile("rb") as stream:
                    message = json.loads(stream.readline(_MAX_MESSAGE))
                conn.settimeout(None)
                reply = self._dispatch(message)
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except (OSError, ValueError, TypeError):
                pass  # the client went away or sent garbage: nothing to answer

    def _dispatch(self, message: Any) -> dict[str, Any]:
        command = message.get("cmd") if isinstance(message, dict) else None
        job_id = message.get("job_id") if isinstance(message, dict) else None
        if command == "ping":
            return self._info()
        if command == "ready":
            self._ready.wait(_READY_TIMEOUT_S)
            return self._info()
        if command == "stop":
            self._stop_request = self._stop_request or str(message.get("reason") or "stop")
            return {"ok": True}
        if not isinstance(job_id, str):
            return {"ok": False, "error": f"unknown command {command!r}"}
        try:
            self.store.paths(job_id)  # validates the id
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        if command == "submit":
            return self._submit(job_id)
        with self._lock:
            job = self._jobs.get(job_id)
        if command == "probe":
            return {"ok": True, "known": job is not None}
        if command == "wait":
            if job is not None:
                job.done.wait()
            return {"ok": True, "ended": True}
        if command == "cancel":
            if job is None:
                return {"ok": True, "known": False}
            job.stop_reason = "the job was canceled on its persistent Spark server"
            job.stop.set()
            if self.sc is not None:
                self.sc.cancelJobGroup(job_id)
            return {"ok": True, "known": True, "ended": job.done.wait(_JOB_CANCEL_WAIT_S)}
        return {"ok": False, "error": f"unknown command {command!r}"}

    def _info(self) -> dict[str, Any]:
        spark = "up" if self.sc is not None else ("failed" if self.spark_error else "starting")
        with self._lock:
            running = sorted(self._jobs)
        return {"ok": not self._stopping, "stopping": self._stopping, "pid": os.getpid(),
                "key": self.key, "spark": spark, "error": self.spark_error,
                "spark_application_id": self.app_id, "jobs": running}

    def _submit(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            if self._stopping:
                return {"ok": False, "stopping": True, "error": "the server is stopping"}
            if job_id not in self._jobs:
                job = self._jobs[job_id] = _ServerJob(job_id)
                threading.Thread(target=self._run_job, args=(job,), name=f"rxjobs-job-{job_id}",
                                 daemon=True).start()
        return {"ok": True}

    # -- jobs ----------------------------------------------------------------------------

    def _run_job(self, job: _ServerJob) -> None:
        log = ""
        try:
            outcome = self._run(job)
            log = outcome.log
        except BaseException as exc:
            log = traceback.format_exc()
            outcome = Outcome("failed", f"the persistent Spark server could not run the job: "
                                        f"{type(exc).__name__}: {exc}")
        if log:
            print(f"rxjobs: job {job.job_id}:\n{log}", file=sys.stderr, flush=True)
        try:
            record_outcome(self.store, job.job_id, outcome, job.stop_reason or _STOP_REASONS["SIGTERM"],
                           log=log)
        except Exception:
            traceback.print_exc()  # e.g. the job was removed meanwhile
        finally:
            with self._lock:
                self._jobs.pop(job.job_id, None)
                if not self._jobs:
                    self._idle_since = time.monotonic()
            job.done.set()

    def _run(self, job: _ServerJob) -> Outcome:
        from .. import records

        # The server never unpickles the user's function: executors do.
        record = records.read_job_record(self.store, job.job_id)
        stop_on_failure = not bool(record.options.get("continue_on_failure", True))
        if self.store.exists(self.store.paths(job.job_id).canceled):
            return Outcome("canceled")
        while not self._ready.wait(0.2):
            if job.stop.is_set():
                return Outcome("terminated")
        if job.stop.is_set():
            return Outcome("terminated")
        sc = self.sc
        if sc is None:
            return Outcome("failed", f"the persistent Spark server could not start Spark: "
                                     f"{self.spark_error} (see {self.paths.log})")
        records.write_status(self.store, job.job_id, Record.RUNNING, details={
            "spark_application_id": self.app_id, "spark_master": sc.master,
            "spark_server": self.key, "spark_server_pid": os.getpid()})
        # As many Spark tasks as slots: in a warm application a Spark task's own cost
        # (tens of ms) is what a job of small tasks would otherwise pay per task.
        return run_tasks(sc, self.store, job.job_id, record.n_tasks, stop_on_failure, job.stop,
                         partitions=self.slots)


def _nothing(_: Any) -> None:
    """A Spark task that does nothing: running it loads rxjobs into a Python worker (see :func:`_warm_up`)."""


def _warm_up(sc: Any, slots: int) -> None:
    """Start the executors' Python workers, with rxjobs imported, before the first job comes.

    Otherwise the first job waits for them (seconds); a failure here is only logged:
    the jobs will report it.
    """
    try:
        sc.setJobGroup("rxjobs-warm-up", "start the Python workers", interruptOnCancel=True)
        sc.parallelize(range(slots), slots).foreach(_nothing)
    except Exception:
        traceback.print_exc()


def _peer_is_me(conn: socket.socket) -> bool:
    """Only this user's processes may talk to the server (the directory is 0700 too)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return uid == os.geteuid()


def main(argv: Sequence[str] | None = None, detached: bool = False) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rxjobs.engines.spark_server",
        description="rxjobs persistent Spark server (started by rx_spark_connect, or by a job "
                    "of RxSpark(persistent_run=True))")
    parser.add_argument("key")
    parser.add_argument("--share-dir", required=True)
    parser.add_argument("--master", required=True)
    parser.add_argument("--idle-timeout", type=int, default=3600)
    parser.add_argument("--runtime-dir", required=True)
    args = parser.parse_args(argv)

    def serve() -> int:
        from ..contexts import RxComputeContext
        from ..store import open_store

        context = RxComputeContext.from_dict(json.loads(os.environ.pop(CONTEXT_ENV)))
        store = open_store(args.share_dir, share_dir_options_from_env())
        return SparkServer(args.key, store, context, args.idle_timeout,
                           ServerPaths(args.runtime_dir, args.key)).serve()

    return run_spark_process(serve, detached)


if __name__ == "__main__":
    sys.exit(main())
