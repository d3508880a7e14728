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
sends such jobs here through its client
(:class:`~rxjobs.engines.spark_client.PersistentServerBackend`); this module
never imports the engine nor the client: what both sides share is in
:mod:`rxjobs.engines.spark_protocol`.

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
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..runtime import RuntimeKind, remove_runtime_file, scan_runtime_dir
from ..status import Record
from .drivers import share_dir_options_from_env
from .spark_protocol import (
    CONTEXT_ENV,
    MAX_MESSAGE,
    READY_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    ServerPaths,
    read_record,
    server_spark_conf,
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
    spark_error,
    start_spark,
    stop_spark,
)

_JOB_CANCEL_WAIT_S = 15.0
_TICK_S = 0.25  # how often the server looks at its idle time and stop requests


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
        record = read_record(self.paths)
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
                conn.settimeout(REQUEST_TIMEOUT_S)
                if not _peer_is_me(conn):
                    return
                with conn.makefile("rb") as stream:
                    message = json.loads(stream.readline(MAX_MESSAGE))
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
            self._ready.wait(READY_TIMEOUT_S)
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
