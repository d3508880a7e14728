"""Durability of a local share dir's writes: fsync, and group commit of the fsyncs.

Every commit point of a local share dir (a record published by rename, a
job's rename into ``.trash/``) reaches the disk in the order a power loss
needs (docs/reliability.md).  ``RXJOBS_FSYNC=0`` turns fsync off for a
scratch share dir, where a power loss may lose or tear what was written.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

# "0" turns fsync off (a scratch share dir: a power loss may lose or tear what was written).
FSYNC_ENV = "RXJOBS_FSYNC"


def durable() -> bool:
    """Whether writes are fsynced (the default; ``RXJOBS_FSYNC=0`` turns it off)."""
    return os.environ.get(FSYNC_ENV, "1").strip() != "0"


def fsync_dir(dir_fd: int) -> None:
    """Make the entries of the open directory ``dir_fd`` durable (unless fsync is off)."""
    if durable():
        os.fsync(dir_fd)


def fsync_pair(trash: int, root: int) -> None:
    """Make the entries of both open directories durable: a rename from one into the other."""
    fsync_dir(trash)
    fsync_dir(root)


class GroupSync:
    """Group commit: one fsync made durable what several threads did before it began.

    A thread that has made a change (a rename into ``.trash/``) calls
    :meth:`wait_durable` with the fsync that makes it durable; it returns once
    an fsync that *began after* the call has ended, whichever thread made it.
    One thread syncs at a time; those that arrive meanwhile wait for the next
    round, which one of them makes for all.  A cleanup's threads so share one
    pair of directory fsyncs per round instead of making a pair each: every
    fsync is a disk flush, which the deletions running alongside wait behind.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._begun = 0  # rounds begun
        self._done = 0  # rounds ended: every change made before round k began is durable
        self._syncing = False

    def wait_durable(self, fsync: Callable[[], None]) -> None:
        """Return when what the caller did before calling is durable.

        Raises what ``fsync`` raised, in the thread that ran it; the threads
        waiting on that round then sync again themselves.
        """
        with self._cond:
            need = self._begun + 1  # a round begun from now on covers the caller's change
            while self._done < need:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                self._begun += 1
                round_ = self._begun
                ok = False
                self._cond.release()
                try:
                    fsync()
                    ok = True
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    if ok:
                        self._done = round_
                    self._cond.notify_all()


_GROUP_SYNCS: dict[tuple[int, int, int], GroupSync] = {}
_GROUP_SYNCS_LOCK = threading.Lock()


def _forget_group_syncs() -> None:
    # A child forked while a thread of its parent was syncing would wait forever on a
    # round no thread of its own makes: it starts with none.
    global _GROUP_SYNCS_LOCK
    _GROUP_SYNCS.clear()
    _GROUP_SYNCS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_group_syncs)


def trash_syncs(root: int, trash: int) -> GroupSync:
    """The group commit of renames from the share dir ``root`` into its ``trash``.

    Keyed by the two directories' inodes, so that every store object of one
    share dir in this process (a cleanup's jobs may each bring their own)
    shares it; an fsync of another descriptor of the same directory covers
    the same entries.
    """
    root_st, trash_st = os.fstat(root), os.fstat(trash)
    key = (root_st.st_dev, root_st.st_ino, trash_st.st_ino)
    with _GROUP_SYNCS_LOCK:
        found = _GROUP_SYNCS.get(key)
        if found is None:
            found = _GROUP_SYNCS[key] = GroupSync()
        return found


def fsync_path(path: str) -> None:
    """Make the entries of the directory at ``path`` durable (unless fsync is off)."""
    if not durable():
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["FSYNC_ENV", "GroupSync", "durable", "fsync_dir", "fsync_pair", "fsync_path", "trash_syncs"]
