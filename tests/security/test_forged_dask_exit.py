"""Issue 23, item 5: a forged Dask handle in a user's own job makes her ``status`` print no
ignored ``TimeoutError`` traceback at exit.

alice writes, in her own job's ``job.json``, the address of a "scheduler" that
answers with garbage (a listener of the test's); her ``rxjobs status`` says the
engine cannot be reached, and nothing else.
"""

from __future__ import annotations

import json
import socket
import threading
from datetime import datetime, timezone

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]
pytest.importorskip("distributed", reason="the forged Dask handle needs dask's client")


class GarbageListener:
    """A loopback listener that answers every connection with bytes no Dask scheduler sends."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nnot a scheduler" * 100)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def garbage():
    listener = GarbageListener()
    yield listener
    listener.close()


def test_her_own_forged_dask_handle_leaves_no_traceback_at_exit(unix_users, garbage):
    u = unix_users
    share = u.homes / u.alice.name / "share"
    job = u.make_job(u.alice, share, "unretrieved")
    now = datetime.now(timezone.utc).isoformat()
    u.put(share / job / "status.json", {"state": "running", "reason": "", "started": now, "updated": now},
          u.alice)
    record = json.loads((share / job / "job.json").read_text())  # format 2: the handle is in it
    u.put(share / job / "job.json", {**record, "engine": "dask", "handle": {
        "scheduler": f"tcp://127.0.0.1:{garbage.port}", "job_id": job, "n_tasks": 3}}, u.alice)
    for args in (["status", job], ["status", job, "--json"], ["list"]):
        ran = u.rxjobs(u.alice, "--share-dir", share, *args, timeout=120).ok()
        assert "Traceback" not in ran.stderr and "Exception ignored" not in ran.stderr, ran.stderr
    assert garbage.connections > 0  # her own job's engine was asked (and could not answer)
    said = u.rxjobs(u.alice, "--share-dir", share, "status", job, "--json").ok().json()[0]
    assert said["state"] == "undetermined" and "cannot be reached" in said["reason"]
