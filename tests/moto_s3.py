"""A real S3-protocol server on loopback for the tests: ``moto`` in server mode.

The same approach as s3fs's own tests: ``python -m moto.server`` runs as a
separate process (its own session, killed with its group when the tests end,
passed or failed), on 127.0.0.1 and a free port, and everything talks to it
through s3fs over HTTP.  Credentials are fake (moto accepts any); they are
put in the environment so that every process the tests start (drivers, Dask
workers) has some, while the endpoint travels in ``share_dir_options``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from conftest import free_port, port_listening

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "rxjobs-testing",
    "AWS_SECRET_ACCESS_KEY": "rxjobs-testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_START_TIMEOUT_S = 60.0


class MotoS3:
    """``python -m moto.server`` on loopback, with a bucket for the tests."""

    def __init__(self, workdir: Path, bucket: str = "rxjobs-tests") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket
        self.proc: subprocess.Popen | None = None

    @property
    def options(self) -> dict[str, str]:
        """The storage options that point s3fs at this server."""
        return {"endpoint_url": self.endpoint}

    def start(self) -> MotoS3:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "moto.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, **FAKE_CREDENTIALS})
        try:
            deadline = time.monotonic() + _START_TIMEOUT_S
            while not port_listening(self.port):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"moto server exited: {(self.workdir / 'moto.log').read_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not listen within {_START_TIMEOUT_S:.0f} s")
                time.sleep(0.05)
            self.filesystem().mkdir(self.bucket)
        except BaseException:
            self.stop()
            raise
        return self

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.endpoint},
                                 key=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                 secret=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                                 use_listings_cache=False, skip_instance_cache=True)

    def new_prefix(self, name: str = "share") -> str:
        """A fresh ``s3://bucket/<name>-<hex>`` URL, unique per call."""
        return f"s3://{self.bucket}/{name}-{uuid.uuid4().hex[:12]}"

    def remove_prefix(self, url: str) -> None:
        fs = self.filesystem()
        path = url.split("://", 1)[1]
        keys = fs.find(path)
        if keys:
            fs.rm(keys)

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
