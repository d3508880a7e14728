"""A forked helper that counts the files and bytes of many jobs while its parent reads them.

A survey of a local share dir (``rxjobs list``, ``du``, a cleanup dry run)
visits every job once: its names and records, which the caller's state
derivation needs, and its sizes, one ``fstatat`` per file, which are most of
the system calls.  One Python thread does both at about the cost of ``du``
plus the Python between the calls; threads do not help (each of the many
short calls gives up and takes back the GIL).  So the sizes go to a second
process: a child forked with the share dir's descriptor walks the same jobs in
the same order (:func:`~.fdtree.usage_at`: fd-relative, ``O_NOFOLLOW``, no
symlink followed) and streams ``(files, bytes)`` per job through a pipe, while
the parent opens each job for its names and records and derives its state.

The child only makes system calls on descriptors it inherited and writes to
the pipe; it never returns into its parent's code (``os._exit``).  It is
started only from a process with one thread (a fork copies the calling thread
alone, and any lock another thread held would stay held in the child) and
with two CPUs or more to run on.  Whatever the child does not deliver (it
died, was killed, or the pipe broke) the parent counts itself, so the sizes
are the same either way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import threading
from collections.abc import Sequence

from .fdtree import usage_at

#: Fewer jobs than this are counted in the parent (a fork costs about as much
#: as counting a few dozen jobs).
MIN_JOBS = 256
#: Jobs per message of the child: (files, bytes) pairs of 64-bit integers.
CHUNK = 64
_PAIR = struct.Struct("=qq")


def may_fork() -> bool:
    """Whether a helper may be forked here: one thread, two CPUs or more, ``os.fork``."""
    if not hasattr(os, "fork") or threading.active_count() != 1:
        return False
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return cpus >= 2


class SizeHelper:
    """The files and bytes of ``names`` (entries of the directory ``dir_fd``), in that order,
    counted by a forked child; :meth:`next` gives them one by one.

    Use as a context manager: leaving it kills the child if it still runs
    (the parent stopped early) and reaps it.
    """

    def __init__(self, dir_fd: int, names: Sequence[str]) -> None:
        self._dir_fd = dir_fd
        self._names = names
        self._given = 0
        self._pending: list[tuple[int, int]] = []
        self._read_fd: int | None = None
        self._pid: int | None = None

    def __enter__(self) -> SizeHelper:
        read_fd, write_fd = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            return self  # no helper: the parent counts everything itself
        if pid == 0:  # the child: count, write, and never come back
            code = 1
            try:
                os.close(read_fd)
                _count_into(self._dir_fd, self._names, write_fd)
                code = 0
            except BaseException:  # noqa: BLE001 - a child must not unwind into its parent's code
                pass
            finally:
                os._exit(code)
        os.close(write_fd)
        self._read_fd, self._pid = read_fd, pid
        return self

    def __exit__(self, *exc: object) -> None:
        if self._read_fd is not None:
            os.close(self._read_fd)
            self._read_fd = None
        if self._pid is not None:
            pid, self._pid = self._pid, None
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # our own child, done or not: nothing of it is needed now
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def next(self) -> tuple[int, int]:
        """The files and bytes of the next name (counted here if the child cannot say)."""
        name = self._names[self._given]
        self._given += 1
        if not self._pending and self._read_fd is not None:
            self._pending = self._receive()
        if self._pending:
            return self._pending.pop()
        return usage_at(self._dir_fd, name)

    def _receive(self) -> list[tuple[int, int]]:
        """The child's next message, reversed (popped from the end); [] once it has no more."""
        assert self._read_fd is not None
        expected = min(CHUNK, len(self._names) - self._given + 1) * _PAIR.size
        data = b""
        while len(data) < expected:
            try:
                part = os.read(self._read_fd, expected - len(data))
            except InterruptedError:
                continue
            if not part:  # the child died: the rest is counted here
                os.close(self._read_fd)
                self._read_fd = None
                return []
            data += part
        pairs = [_PAIR.unpack_from(data, i) for i in range(0, len(data), _PAIR.size)]
        pairs.reverse()
        return pairs


def _count_into(dir_fd: int, names: Sequence[str], write_fd: int) -> None:
    """The child's work: (files, bytes) of each name, CHUNK names per write."""
    for start in range(0, len(names), CHUNK):
        data = b"".join(_PAIR.pack(*usage_at(dir_fd, name)) for name in names[start:start + CHUNK])
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]


__all__ = ["CHUNK", "MIN_JOBS", "SizeHelper", "may_fork"]
