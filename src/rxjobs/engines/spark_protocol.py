"""What the persistent Spark server and its clients share: where a server's files are,
its key, and how a message is framed.

The client (:mod:`rxjobs.engines.spark_client`) starts servers, sends them
jobs and asks them about those jobs; the server
(:mod:`rxjobs.engines.spark_server`) runs them.  Neither imports the other:
both build on this module.  One JSON line each way, at most
:data:`MAX_MESSAGE` bytes, over a Unix socket in the private runtime dir.
"""

from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import dataclass
from typing import Any

from ..runtime import RUNTIME_DIR_ENV as RUNTIME_DIR_ENV
from ..runtime import read_server_record, runtime_dir, server_file
from .spark_session import spark_conf

# The compute context reaches the server in this variable (JSON), never on its command line.
CONTEXT_ENV = "RXJOBS_SPARK_CONTEXT"

MAX_MESSAGE = 1 << 16
REQUEST_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 600.0  # rx_spark_connect waits for Spark to be up


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
        return server_file(self.key, suffix, self.base)

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


def read_record(paths: ServerPaths) -> dict[str, Any] | None:
    """The record of the server of ``paths.key`` (None if there is none, or it is unreadable)."""
    return read_server_record(paths.record)


def request(socket_path: str, message: dict[str, Any], timeout: float = REQUEST_TIMEOUT_S,
            ) -> dict[str, Any]:
    """Send one command, return the server's one-line JSON answer (OSError if none)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        with sock.makefile("rb") as stream:
            line = stream.readline(MAX_MESSAGE)
    if not line.endswith(b"\n"):
        raise ConnectionError("the persistent Spark server closed the connection without answering")
    try:
        reply = json.loads(line)
    except ValueError:
        raise ConnectionError("the persistent Spark server sent an unreadable answer") from None
    if not isinstance(reply, dict):
        raise ConnectionError("the persistent Spark server sent an unreadable answer")
    return reply


__all__ = ["CONTEXT_ENV", "MAX_MESSAGE", "READY_TIMEOUT_S", "REQUEST_TIMEOUT_S", "RUNTIME_DIR_ENV",
           "ServerPaths", "read_record", "request", "runtime_dir", "server_key", "server_spark_conf"]
