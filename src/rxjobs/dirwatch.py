"""Waking when a record lands in a local directory (Linux inotify), for waiters.

A waiting caller sleeps between status polls; an engine may wake it early
(the local engine when its driver exits: :class:`rxjobs.engines.drivers.ExitSleeper`).
A driver records a job's end in ``status.json`` before it exits, and the exit
of a process holding scikit-learn takes milliseconds (its memory is torn
down first), so :class:`NameWatch` wakes on the record itself: the rename
that lands ``status.json`` (or the ``canceled`` marker) in the job's
directory, on a local filesystem.  Elsewhere (no inotify, an object store)
there is no watch and the engine's sleep serves alone.

Closing an inotify descriptor waits for the kernel's grace period (10–30 ms
measured here), longer than what the watch saves: a closed watch's
descriptor is kept for the next one (its watch removed), a few per process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

_IN_CREATE = 0x00000100
_IN_MOVED_TO = 0x00000080
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_LANDED = _IN_CREATE | _IN_MOVED_TO
_GONE = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_Q_OVERFLOW | _IN_IGNORED
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name
_KEPT_MAX = 8  # inotify descriptors kept for reuse per process
_kept: list[int] = []
_kept_lock = threading.Lock()


def landed(events: bytes, names: frozenset[str], wd: int) -> bool:
    """Whether a read of inotify ``events`` says one of ``names`` landed (created or renamed
    in) in the directory watched as ``wd``, or that directory went (then nothing more will
    come).  Events of other (earlier) watches are ignored."""
    offset = 0
    while offset + _EVENT.size <= len(events):
        event_wd, mask, _cookie, size = _EVENT.unpack_from(events, offset)
        name = events[offset + _EVENT.size:offset + _EVENT.size + size].split(b"\0", 1)[0]
        offset += _EVENT.size + size
        if event_wd == wd and (mask & _GONE or (mask & _LANDED
                                                and name.decode(errors="replace") in names)):
            return True
    return False


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


class NameWatch:
    """An inotify watch on a directory for the landing of some names in it."""

    def __init__(self, libc: ctypes.CDLL, fd: int, wd: int, names: frozenset[str]) -> None:
        self._libc = libc
        self._fd: int | None = fd
        self._wd = wd
        self._names = names

    @classmethod
    def open(cls, directory: str, names: Iterable[str]) -> NameWatch | None:
        """Watch ``directory`` for ``names``; None where no watch can be had (not Linux,
        no such directory, no inotify left)."""
        libc = _libc()
        if libc is None:
            return None
        with _kept_lock:
            fd = _kept.pop() if _kept else int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
        if fd < 0:
            return None
        wd = int(libc.inotify_add_watch(fd, os.fsencode(directory),
                                        _LANDED | _IN_DELETE_SELF | _IN_MOVE_SELF))
        if wd < 0:
            _keep(fd)
            return None
        return cls(libc, fd, wd, frozenset(names))

    def fileno(self) -> int | None:
        """The descriptor to wait on (readable when events are queued); None once closed."""
        return self._fd

    def take(self) -> bool:
        """Read the queued events (without blocking); True if a watched name landed or the
        directory went."""
        if self._fd is None:
            return False
        seen = False
        while True:
            try:
                events = os.read(self._fd, 65536)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return seen
                raise
            seen = landed(events, self._names, self._wd) or seen

    def close(self) -> None:
        """Remove the watch; the descriptor is kept for the next watch (see the module docstring)."""
        if self._fd is not None:
            self._libc.inotify_rm_watch(self._fd, self._wd)  # fails harmlessly if the dir went
            _keep(self._fd)
            self._fd = None


def _keep(fd: int) -> None:
    """Keep an inotify descriptor with no watch for reuse, or close it if enough are kept."""
    with _kept_lock:
        if len(_kept) < _KEPT_MAX:
            _kept.append(fd)
            return
    os.close(fd)


class FdSleeper(Protocol):
    """A sleep(seconds) that may return early, whose wake-up is a readable descriptor
    (None once it wakes no more), such as the local engine's :class:`ExitSleeper`."""

    def __call__(self, seconds: float) -> None: ...

    def fileno(self) -> int | None: ...


class WatchingSleeper:
    """``sleep(seconds)`` that returns when ``sleeper`` would, or when ``watch`` sees its
    record land, whichever is first."""

    def __init__(self, sleeper: FdSleeper, watch: NameWatch,
                 now: Callable[[], float] = time.monotonic) -> None:
        self._sleeper, self._watch, self._now = sleeper, watch, now

    def __call__(self, seconds: float) -> None:
        deadline = self._now() + max(0.0, seconds)
        while True:
            theirs = self._sleeper.fileno()
            fds = [fd for fd in (self._watch.fileno(), theirs) if fd is not None]
            if not fds:
                self._sleeper(max(0.0, deadline - self._now()))
                return
            readable, _, _ = select.select(fds, [], [], max(0.0, deadline - self._now()))
            if theirs is not None and theirs in readable:
                self._sleeper(0)  # it takes its wake-up (the local one closes its pidfd)
                return
            if self._watch.fileno() in readable and self._watch.take():
                return
            if not readable or self._now() >= deadline:
                return

    def close(self) -> None:
        self._watch.close()
        close = getattr(self._sleeper, "close", None)
        if close is not None:
            close()
