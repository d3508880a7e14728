"""A forked helper that counts the files and bytes of many jobs while its parent reads them.

A survey of a local share dir (``rxjobs list``, ``du``, a cleanup dry run)
visits every job once: its names and records, which the caller's state
derivation needs, and its sizes, one ``fstatat`` per file, which are most of
the system calls.  One Python thread does both at about the cost of ``du``
plus the Python between the calls; threads do not help (each of the many
short calls gives up and takes back the GIL).  So a child forked with the
share dir's descriptor counts sizes too (:func:`~.fdtree.usage_at`:
fd-relative, ``O_NOFOLLOW``, no symlink followed), from the last job down,
while the parent goes from the first job up, reading names and records,
deriving states and counting the sizes the child has not sent yet.  Neither
ever waits on the other (see :class:`SizeHelper`).

The child only makes system calls on descriptors it inherited and writes to
the pipe; it never returns into its parent's code (``os._exit``).  It is
started only from a process with one thread (a fork copies the calling thread
alone, and any lock another thread held would stay held in the child) and
with two CPUs or more to run on.  Whatever the child does not deliver (it
died, was killed, or had no CPU) the parent counts itself, so the sizes are
the same either way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
from array import array
from collections.abc import Sequence

from .fdtree import usage_at
from .forking import fork_is_safe, run_child

#: Fewer jobs than this are counted in the parent (a fork costs about as much
#: as counting a few dozen jobs).
MIN_JOBS = 256
#: Jobs per write of the child (16 of 24 bytes: under PIPE_BUF, so never split),
#: and how often the parent takes what has arrived.
CHUNK = 16
_TRIPLE = struct.Struct("=qqq")  # job index, files, bytes


def may_fork() -> bool:
    """Whether a helper may be forked here: one thread, two CPUs or more, ``os.fork``."""
    if not fork_is_safe():
        return False
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return cpus >= 2


class SizeHelper:
    """The files and bytes of ``names`` (entries of the directory ``dir_fd``), one by one
    in that order (:meth:`next`), shared between this process and a forked child.

    The parent counts from the first name on; the child from the last name
    down, sending each count through a pipe that the parent drains without
    ever waiting on it.  Where they meet the child is stopped, and the rest
    comes from what it sent.  So neither waits for the other: on a busy
    machine where the child gets no CPU, the parent counts everything itself
    at the sequential pace, and with a free CPU the two share the work.

    Use as a context manager: leaving it kills the child if it still runs and
    reaps it.
    """

    def __init__(self, dir_fd: int, names: Sequence[str]) -> None:
        self._dir_fd = dir_fd
        self._names = names
        self._given = 0
        # The child's counts, by job index, valid from ``_low`` up (it counts downwards).
        self._files = array("q", bytes(8 * len(names)))
        self._bytes = array("q", bytes(8 * len(names)))
        self._low = len(names)
        self._partial = b""
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
            def count() -> None:
                os.close(read_fd)
                _count_down(self._dir_fd, self._names, write_fd)

            run_child(count)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._read_fd, self._pid = read_fd, pid
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
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
        """The files and bytes of the next name: the child's count if it got there, else
        counted here."""
        index = self._given
        self._given += 1
        if index < self._low and self._read_fd is not None and index % CHUNK == 0:
            self._drain()
        if index >= self._low:
            if self._pid is not None:
                self._stop()  # it is counting below us: what we have done already
            return self._files[index], self._bytes[index]
        return usage_at(self._dir_fd, self._names[index])

    def _drain(self) -> None:
        """Take whatever the child has sent so far, without waiting."""
        assert self._read_fd is not None
        while True:
            try:
                data = os.read(self._read_fd, 1 << 16)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            if not data:  # the child is done or died: what it did not send is counted here
                self._stop()
                return
            data = self._partial + data
            end = len(data) - len(data) % _TRIPLE.size
            self._partial = data[end:]
            for index, files, size in _TRIPLE.iter_unpack(data[:end]):
                self._files[index], self._bytes[index] = files, size
                self._low = index  # sent from the last name down, one after the other


def _count_down(dir_fd: int, names: Sequence[str], write_fd: int) -> None:
    """The child's work: (index, files, bytes) of each name from the last one down,
    CHUNK names per write."""
    for top in range(len(names) - 1, -1, -CHUNK):
        data = b"".join(_TRIPLE.pack(i, *usage_at(dir_fd, names[i]))
                        for i in range(top, max(top - CHUNK, -1), -1))
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]


__all__ = ["CHUNK", "MIN_JOBS", "SizeHelper", "may_fork"]
