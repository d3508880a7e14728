"""File operations relative to open directory descriptors, never following a symlink.

A share dir is an attack surface: between a check by path and a use by path,
another user may swap a directory for a symlink.  Everything here works
relative to a descriptor of the directory already opened and checked
(``openat``, ``unlinkat``, ``fstat``), every name opened with ``O_NOFOLLOW``,
so nothing is ever resolved through a path that could have changed.
"""

from __future__ import annotations

import errno
import os
import stat

OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_O_PATH = getattr(os, "O_PATH", 0)


def open_dir_at(dir_fd: int, name: str) -> int:
    """Open the directory ``name`` inside ``dir_fd`` without following a symlink.

    Raises
    ------
    FileNotFoundError
        No such entry.
    NotADirectoryError
        The entry is a symlink or not a directory.
    PermissionError
        It cannot be read.
    """
    try:
        return os.open(name, OPEN_DIR, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise NotADirectoryError(exc.errno, f"{name} is not a directory (or is a symlink)") from None
        raise


def read_file_at(dir_fd: int, name: str, limit: int | None = None) -> tuple[bytes, os.stat_result]:
    """Read a whole regular file ``name`` of ``dir_fd``; its bytes and its ``fstat``.

    Never follows a symlink, never opens a fifo or device for a blocking
    read; with ``limit``, a larger file raises ValueError instead of being read.
    """
    fd = open_file_at(dir_fd, name)
    try:
        st = os.fstat(fd)
        return read_open_file(fd, st, name, limit), st
    finally:
        os.close(fd)


def open_file_at(dir_fd: int, name: str) -> int:
    """Open ``name`` in ``dir_fd`` for reading: never through a symlink (ValueError),
    never blocking on a fifo.  The caller checks what it is with ``fstat``."""
    try:
        return os.open(name, OPEN_FILE, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise ValueError(f"{name} is a symlink, not a regular file") from None
        raise


def read_open_file(fd: int, st: os.stat_result, name: str, limit: int | None) -> bytes:
    """The whole content of the open regular file ``fd`` (``st`` is its ``fstat``)."""
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{name} is not a regular file")
    if limit is not None and st.st_size > limit:
        raise ValueError(f"{name} is {st.st_size} bytes, more than the {limit} allowed")
    data = os.read(fd, st.st_size + 1)
    if len(data) == st.st_size:
        return data
    # A short read, or a file that grew: read on to its end, within the limit.
    chunks = [data]
    size = len(data)
    while data and (limit is None or size <= limit):
        data = os.read(fd, 1 << 20 if limit is None else limit + 1 - size)
        chunks.append(data)
        size += len(data)
    if limit is not None and size > limit:
        raise ValueError(f"{name} is more than the {limit} bytes allowed")
    return b"".join(chunks)


def list_at(dir_fd: int) -> list[str]:
    """The names in the directory ``dir_fd`` (read through a fresh descriptor of it, so
    that threads listing the same directory never share a read position)."""
    fd = os.open(".", OPEN_DIR, dir_fd=dir_fd)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def subdirs_at(dir_fd: int) -> list[str]:
    """The names of the real directories (not symlinks) in ``dir_fd``."""
    fd = os.open(".", OPEN_DIR, dir_fd=dir_fd)
    try:
        with os.scandir(fd) as entries:
            return [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    finally:
        os.close(fd)


def is_dir_at(dir_fd: int, name: str) -> bool:
    """Whether ``name`` in ``dir_fd`` is a real directory (a symlink is not)."""
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def make_private_dir_usable(dir_fd: int, name: str) -> bool:
    """Give a directory of ours that we cannot read or search back its ``rwx`` for us.

    The directory is pinned with ``O_PATH | O_NOFOLLOW`` and checked to be a
    directory owned by us on that descriptor before its mode changes, so a
    symlink swapped in is never followed and nobody else's file changes mode.
    Returns False when that is not so (nothing changed).
    """
    if not _O_PATH:
        return False
    try:
        fd = os.open(name, _O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            return False
        # chmod of an O_PATH descriptor goes through /proc (fchmod refuses one):
        # the inode pinned above, whatever the name points at now.
        os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(st.st_mode) | 0o700)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_tree_at(dir_fd: int, name: str) -> tuple[int, int]:
    """Remove ``name`` from the directory open as ``dir_fd``, a whole tree if a directory.

    Returns the files and bytes removed.  Symlinks are unlinked (and counted),
    never followed; every directory is entered through a descriptor; entries
    another remover got first are skipped.
    """
    try:
        fd = os.open(name, OPEN_DIR, dir_fd=dir_fd)
    except FileNotFoundError:
        return 0, 0
    except PermissionError:  # a directory of ours without read permission
        if not make_private_dir_usable(dir_fd, name):
            raise
        fd = os.open(name, OPEN_DIR, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        return _unlink_counted(dir_fd, name, None)  # a file, or a symlink (not followed)
    files = size = 0
    try:
        with os.scandir(fd) as it:
            entries = list(it)
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except FileNotFoundError:
                continue
            n, b = remove_tree_at(fd, entry.name) if is_dir else _unlink_counted(fd, entry.name, entry)
            files += n
            size += b
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass  # another remover got there first
    return files, size


def _unlink_counted(dir_fd: int, name: str, entry: os.DirEntry[str] | None) -> tuple[int, int]:
    """Unlink one non-directory; (1, its size), or (0, 0) if someone else got it first."""
    try:
        st = entry.stat(follow_symlinks=False) if entry is not None else os.lstat(name, dir_fd=dir_fd)
        size = st.st_size
    except FileNotFoundError:
        return 0, 0
    except OSError:
        size = 0
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return 0, 0
    return 1, size


def usage_at(dir_fd: int, name: str) -> tuple[int, int]:
    """Files and bytes under ``name`` in ``dir_fd`` (symlinks counted, never followed)."""
    try:
        fd = os.open(name, OPEN_DIR, dir_fd=dir_fd)
    except OSError:
        return 0, 0
    files = size = 0
    try:
        with os.scandir(fd) as it:
            entries = list(it)
        for entry in entries:
            n, b = entry_usage(fd, entry)
            files += n
            size += b
    finally:
        os.close(fd)
    return files, size


def entry_usage(dir_fd: int, entry: os.DirEntry[str]) -> tuple[int, int]:
    """Files and bytes of one entry of ``dir_fd``: a subdirectory walked through
    descriptors, anything else counted as one file; (0, 0) if it cannot be looked at."""
    try:
        if entry.is_dir(follow_symlinks=False):
            return usage_at(dir_fd, entry.name)
        return 1, entry.stat(follow_symlinks=False).st_size
    except OSError:
        return 0, 0


def snapshot_at(fd: int, records: tuple[str, ...], limit: int, sizes: bool,
                ) -> tuple[list[str], int, int, int, dict[str, bytes | Exception]]:
    """One visit of the open directory ``fd``: its names, owner, usage and some records.

    ``fd`` must be the caller's own descriptor, used by no other thread meanwhile.

    Returns the names directly in it, its owner (``fstat``), the files and
    bytes under it (with ``sizes``; else 0, 0: one ``fstatat`` per entry, no
    symlink followed, subdirectories walked through descriptors), and each of
    ``records`` it holds, read through ``fd`` (at most ``limit`` bytes; the
    error instead when it cannot be read: a symlink, a fifo, too big).
    """
    owner = os.fstat(fd).st_uid
    files = size = 0
    names = []
    # ``fd`` is the caller's own (it shares no read position with another thread), so
    # it is listed as it is: scandir reads a duplicate of it and rewinds it when done.
    with os.scandir(fd) as it:
        for entry in it:
            names.append(entry.name)
            if not sizes:
                continue
            n, b = entry_usage(fd, entry)
            files += n
            size += b
    read: dict[str, bytes | Exception] = {}
    present = set(names)
    for name in records:
        if name not in present:
            continue
        try:
            read[name] = read_file_at(fd, name, limit)[0]
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            read[name] = exc
    return names, owner, files, size, read
