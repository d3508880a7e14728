"""Waking a waiter when a job's end record lands (rxjobs.dirwatch), before its driver exits."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

import psutil
import pytest

from rxjobs.dirwatch import NameWatch, WatchingSleeper, landed
from rxjobs.engines.drivers import exit_sleeper

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")]

CREATE, MOVED_TO, DELETE_SELF, IGNORED = 0x100, 0x80, 0x400, 0x8000


def event(mask: int, name: str = "", wd: int = 1) -> bytes:
    raw = name.encode()
    if raw:
        raw += b"\0" * (16 - len(raw) % 16)  # names come NUL-padded
    return struct.pack("iIII", wd, mask, 0, len(raw)) + raw


NAMES = frozenset({"status.json", "canceled"})


@pytest.mark.parametrize(("events", "expected"), [
    (b"", False),
    (event(MOVED_TO, "status.json"), True),
    (event(CREATE, "canceled"), True),
    (event(CREATE, "status.json.tmp-12"), False),  # an atomic write's temporary file
    (event(MOVED_TO, "job.json"), False),
    (event(CREATE, "x") + event(MOVED_TO, "job.json") + event(MOVED_TO, "status.json"), True),
    (event(DELETE_SELF), True),  # the job dir went: nothing more will land
    (event(IGNORED), True),
    (event(MOVED_TO, "status.json")[:10], False),  # a cut read names nothing
    (event(MOVED_TO, "status.json", wd=2), False),  # an earlier watch of a reused descriptor
    (event(IGNORED, wd=2) + event(MOVED_TO, "status.json"), True),
])
def test_landed_reads_the_events_for_the_watched_names(events, expected):
    assert landed(events, NAMES, wd=1) is expected


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def test_name_watch_takes_only_the_watched_names_and_closes(tmp_path):
    watch = NameWatch.open(str(tmp_path), ["status.json"])
    assert watch is not None
    try:
        assert watch.take() is False  # nothing queued
        _write_atomic(str(tmp_path / "job.json"), b"{}")
        assert watch.take() is False
        _write_atomic(str(tmp_path / "status.json"), b"{}")
        assert watch.take() is True
        assert watch.take() is False  # taken
    finally:
        watch.close()
        watch.close()  # twice is harmless
    assert watch.fileno() is None
    assert NameWatch.open(str(tmp_path / "missing"), ["status.json"]) is None


def test_watching_sleeper_wakes_on_the_record_before_the_process_exits(tmp_path):
    """The driver records the end, then takes its time to exit: the waiter wakes at the record."""
    script = ("import os, sys, time\n"
              "time.sleep(0.3)\n"
              "p = sys.argv[1]\n"
              "open(p + '.tmp', 'w').write('{}')\n"
              "os.rename(p + '.tmp', p)\n"
              "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "status.json")])
    try:
        handle = {"host": socket.gethostname(), "pid": proc.pid,
                  "create_time": psutil.Process(proc.pid).create_time()}
        sleeper = exit_sleeper(handle)
        watch = NameWatch.open(str(tmp_path), ["status.json", "canceled"])
        assert sleeper is not None and watch is not None
        waiting = WatchingSleeper(sleeper, watch)
        started = time.monotonic()
        while not (tmp_path / "status.json").exists():
            assert time.monotonic() - started < 25, "the record never landed"
            waiting(25.0)  # returns at the record, long before 25 s
        assert proc.poll() is None  # still running: woken by the record, not the exit
        proc.kill()
        proc.wait()
        waiting(25.0)  # the exit wakes it too
        assert time.monotonic() - started < 25
        waiting.close()
        assert watch.fileno() is None and sleeper.fileno() is None
    finally:
        proc.kill()
        proc.wait()


def test_a_closed_watchs_descriptor_serves_the_next_watch_without_its_events(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    watch = NameWatch.open(str(first), ["status.json"])
    assert watch is not None
    fd = watch.fileno()
    _write_atomic(str(first / "status.json"), b"{}")  # queued, never taken
    watch.close()
    again = NameWatch.open(str(second), ["status.json"])
    assert again is not None
    try:
        assert again.fileno() == fd  # kept, not closed (closing waits for the kernel)
        assert again.take() is False  # the first watch's event is not the second's
        _write_atomic(str(first / "status.json"), b"{}")
        assert again.take() is False
        _write_atomic(str(second / "status.json"), b"{}")
        assert again.take() is True
    finally:
        again.close()
