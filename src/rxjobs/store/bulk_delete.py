"""Deleting many trees of one directory at once, in ``find`` processes that count what they delete.

A big cleanup of a local share dir renames every job it removes into
``.trash/``, then deletes a batch of such entries at once (:meth:`LocalStore.
delete_detached_jobs <rxjobs.store.local.LocalStore.delete_detached_jobs>`).
What bounds that deletion is the kernel's work per unlink and how many
unlinks the disk serves at once; a Python walk costs as much again per file
on top (a directory entry, a stat, an unlink call, the GIL handed between
threads), and on a 2-CPU machine that CPU is what made a cleanup slower
than parallel ``rm -rf`` (docs/benchmarks.md).  GNU ``find`` walks in C:
``-printf`` gives each file's size and ``-delete`` unlinks it through its
directory's descriptor, never following a symlink.  Each process is given
:data:`ENTRIES_PER_PROCESS` entries and up to :data:`PROCESSES` run at once
(in this whole process, whoever started them), a new one as soon as one
ends: together they delete at the pace of parallel ``rm -rf``, and every
entry's files and bytes are counted on the way.

The processes start in the directory itself, by way of their own copy of
its descriptor (``/proc/self/fd/<fd>``), so a path swapped meanwhile cannot
send them elsewhere, and they are given the entries as ``./<name>``, which
no name can turn into an option.  Whatever they leave (an error, a file a
late writer put) is deleted here in this process, which also says why an
entry could not be.  Without GNU ``find``, or for a few entries, everything
is deleted here.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from .fdtree import remove_tree_at

# ``find`` processes deleting at once.  On the 2-CPU benchmark VM, whose disk serves
# more than 8 unlinks at once, 16 processes of 32 jobs each deleted 2,000 jobs in
# 0.92x the time of 8 parallel `rm -rf`; 8 took 1.12x (docs/benchmarks.md).
PROCESSES = 16
# Entries one ``find`` process is given: enough that starting it (~1 ms) is a small part
# of its work, few enough that the last ones of a batch end close together.
ENTRIES_PER_PROCESS = 32
# Fewer entries than this are deleted in this process: starting a process costs ~1 ms,
# and a few jobs' files take about that.
FIND_FROM_ENTRIES = 32
# Every ``find`` of this process holds one of these while it runs: batches deleted at
# once (a cleanup deletes the next while the last processes of one end) share the cap.
_RUNNING = threading.BoundedSemaphore(PROCESSES)


def _fresh_cap_after_fork() -> None:
    """A forked child starts with every slot free: the threads holding them stayed behind."""
    global _RUNNING
    _RUNNING = threading.BoundedSemaphore(PROCESSES)


os.register_at_fork(after_in_child=_fresh_cap_after_fork)


@functools.cache
def gnu_find() -> str | None:
    """The path of GNU ``find`` (it has ``-printf`` and ``-delete``), or None."""
    path = shutil.which("find")
    if path is None:
        return None
    try:
        version = subprocess.run([path, "--version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if b"GNU findutils" in version.stdout else None


def delete_trees(dir_fd: int, names: Sequence[str],
                 processes: int = PROCESSES) -> list[tuple[int, int] | Exception]:
    """Delete each of ``names`` (a tree, a file or a symlink) from the directory open as ``dir_fd``.

    Returns, in the order of ``names``, the files and bytes each held
    (directories not counted; an entry already gone held nothing), or the
    exception that kept it from being deleted.  ``processes`` 0 deletes
    everything in this process.
    """
    counted: dict[str, list[int]] = {name: [0, 0] for name in names}
    find = gnu_find() if processes > 0 and len(counted) >= FIND_FROM_ENTRIES else None
    if find is not None:
        _delete_in_find(find, dir_fd, list(counted), processes, counted)
    freed: list[tuple[int, int] | Exception] = []
    for name in names:
        files, size = counted[name]
        try:
            # What find left, or everything: the same walk, with its error if it fails.
            more_files, more_size = remove_tree_at(dir_fd, name)
        except Exception as exc:  # one entry's problem never stops the others
            freed.append(exc)
            continue
        freed.append((files + more_files, size + more_size))
    return freed


def _delete_in_find(find: str, dir_fd: int, names: list[str], processes: int,
                    counted: dict[str, list[int]]) -> None:
    """Delete ``names`` in ``find`` processes of :data:`ENTRIES_PER_PROCESS` entries, up to
    ``processes`` of them at once, adding what each printed to ``counted``.

    A thread per running process starts the next one as soon as its own
    has ended, so the disk is never left with a few stragglers while
    the rest wait.  A process that cannot start leaves its entries to the
    caller.
    """
    chunks = [names[start:start + ENTRIES_PER_PROCESS]
              for start in range(0, len(names), ENTRIES_PER_PROCESS)]
    with ThreadPoolExecutor(max_workers=min(processes, len(chunks)),
                            thread_name_prefix="rxjobs-find") as pool:
        for printed in pool.map(functools.partial(_run_find, find, dir_fd), chunks):
            _count_lines(printed, counted)


def _run_find(find: str, dir_fd: int, names: list[str]) -> bytes:
    """Run one ``find`` that deletes ``names``; what it printed, empty if it could not start."""
    # Output goes to an anonymous file in memory, never full: the process never waits for
    # this one to read a pipe, and its lines are read once it has ended.
    out = os.memfd_create("rxjobs-find", os.MFD_CLOEXEC)
    try:
        with _RUNNING:
            try:
                proc = subprocess.Popen(
                    [find, "-P", *(f"./{name}" for name in names),
                     "(", "-type", "d", "-o", "-printf", r"%s %H\n", ")", "-delete"],
                    cwd=f"/proc/self/fd/{dir_fd}", pass_fds=(dir_fd,), stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.DEVNULL, close_fds=True)
            except OSError:
                return b""  # no process, no /proc: the caller deletes what is left
            proc.wait()
        return _read_all(out)
    finally:
        os.close(out)


def _read_all(fd: int) -> bytes:
    """The whole content of the file open as ``fd``, from its start."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _count_lines(printed: bytes, counted: dict[str, list[int]]) -> None:
    """Add each ``<size> ./<entry>`` line ``find`` printed to its entry's files and bytes."""
    for line in printed.splitlines():
        size, _, start = line.partition(b" ./")
        count = counted.get(start.decode("utf-8", "surrogateescape"))
        if count is not None and size.isdigit():
            count[0] += 1
            count[1] += int(size)


__all__ = ["ENTRIES_PER_PROCESS", "FIND_FROM_ENTRIES", "PROCESSES", "delete_trees", "gnu_find"]
