"""The rxjobs runtime directory: the few files rxjobs keeps outside share dirs.

Nothing rxjobs creates outside a share dir is left behind by a process that
dies.  Every such file lives in one private directory (created 0700 and
checked): ``$RXJOBS_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/rxjobs``, else
``<tmp>/rxjobs-<uid>``.  Each file is named after what owns it, so that whoever
finds its owner gone can remove it:

``job-<job_id>.driver.log``
    The log of a detached driver whose share dir is on an object store (a
    process cannot append to an object; the driver copies it into the job's
    ``driver.log`` at the end and deletes it).  It is created under ``flock``
    by the process that starts the driver and inherited by the driver's whole
    process tree as its stderr: the lock lives exactly as long as one of those
    processes runs.  Cancel and cleanup of the job remove it once it is free.
``spark-<key>.json``, ``.sock``, ``.lock``, ``.log``
    The persistent Spark server of one key: its record, socket, start lock and
    log (the log held like a driver log).  The server removes them when it
    stops in order; those of a killed server go with ``rx_spark_disconnect``,
    the next start of that key, or ``rxjobs doctor --fix``.
``forkserver-<key>.json``, ``.sock``
    The fork server of local drivers (:mod:`rxjobs.engines.forkserver`):
    its record (pid, start time, host) and socket.  They live while the
    record names a live process of this host, or while the runtime dir
    itself is ``flock``-ed (a fork server being started: its socket comes
    before its record).  The server removes both when it stops; those of a
    killed server go with the next start or ``rxjobs doctor --fix``.
``<name>.tmp-<pid>-...``
    A file being written; that of a writer which died is debris.

``rxjobs doctor`` lists the files of dead processes (:func:`scan_runtime_dir`)
and removes them (:func:`remove_runtime_file`).  This module imports nothing of
rxjobs: engines and job services both use it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import socket
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import psutil

RUNTIME_DIR_ENV = "RXJOBS_RUNTIME_DIR"
TMP_MARK = ".tmp-"
DRIVER_LOG_PREFIX = "job-"
DRIVER_LOG_SUFFIX = ".driver.log"
SERVER_PREFIX = "spark-"
FORK_SERVER_PREFIX = "forkserver-"
_MAX_RECORD = 1 << 16

_TMP_RE = re.compile(r"\.tmp-(\d+)(?:-[0-9a-f]+)?\Z")
_SERVER_RE = re.compile(r"spark-([0-9a-f]{1,64})\.(json|sock|lock|log)\Z")
_FORK_SERVER_RE = re.compile(r"forkserver-([0-9a-f]{1,64})\.(json|sock)\Z")
_DRIVER_LOG_RE = re.compile(r"job-([A-Za-z0-9][A-Za-z0-9_.-]{0,127})\.driver\.log\Z")


def runtime_dir(base: str | None = None) -> str:
    """The private runtime directory (created 0700), checked to be the caller's alone.

    Raises
    ------
    PermissionError
        It is not a real directory of the caller's that only the caller can access.
    """
    if base is None:
        base = os.environ.get(RUNTIME_DIR_ENV)
    if not base:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        base = (os.path.join(xdg, "rxjobs") if xdg
                else os.path.join(tempfile.gettempdir(), f"rxjobs-{os.geteuid()}"))
    os.makedirs(base, mode=0o700, exist_ok=True)
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(
            f"{base} must be a directory of your own that only you can access (a real directory, "
            f"mode 0700): rxjobs keeps driver logs and the persistent Spark server's socket there. "
            f"Run `chmod 700 {base}`, or point ${RUNTIME_DIR_ENV} at another directory"
        )
    return base


def driver_log_file(job_id: str, base: str | None = None) -> str:
    """Where the detached driver of ``job_id`` logs when its share dir is not local."""
    return os.path.join(runtime_dir(base), f"{DRIVER_LOG_PREFIX}{job_id}{DRIVER_LOG_SUFFIX}")


def server_file(key: str, suffix: str, base: str | None = None) -> str:
    """A file of the persistent Spark server of ``key`` (``json``, ``sock``, ``lock``, ``log``)."""
    return os.path.join(runtime_dir(base), f"{SERVER_PREFIX}{key}.{suffix}")


def open_held(path: str) -> int:
    """Create ``path`` (replacing an old one) open for appending, under an exclusive ``flock``.

    The file is made under a temporary name and locked before it takes its
    name, so it is never seen free while its owner lives.  The lock belongs to
    the open file: processes that inherit the descriptor (a driver's stderr)
    hold it with it, and the kernel drops it when the last of them exits.
    """
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f"{name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return fd


@contextlib.contextmanager
def _free(path: str) -> Iterator[int | None]:
    """The file at ``path`` open and locked by us if no live process holds it, else None.

    The lock is taken without waiting and the name checked to still be that
    file, so a file replaced meanwhile is never removed in its successor's stead.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                yield None
                return
            raise
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        yield fd if same and stat.S_ISREG(os.fstat(fd).st_mode) else None
    finally:
        os.close(fd)


def is_held(path: str) -> bool:
    """Whether a live process holds the ``flock`` of ``path`` (False when it is absent)."""
    if not os.path.lexists(path):
        return False
    with _free(path) as fd:
        return fd is None


def take_driver_log(job_id: str, base: str | None = None) -> bytes | None:
    """Remove the runtime-dir log of ``job_id``'s driver if its driver is gone; its content.

    None when there is no such log or its driver (or a process below it) still
    holds it.  Cancel salvages it into the job's ``driver.log``; cleanup drops it.
    """
    path = driver_log_file(job_id, base)
    with _free(path) as fd:
        if fd is None:
            return None
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
        os.unlink(path)
        return data


class RuntimeKind(str, Enum):
    """What a file of the runtime directory is."""

    DRIVER_LOG = "driver log"
    SERVER_RECORD = "server record"
    SERVER_SOCKET = "server socket"
    SERVER_LOCK = "server lock"
    SERVER_LOG = "server log"
    FORK_SERVER_RECORD = "fork server record"
    FORK_SERVER_SOCKET = "fork server socket"
    TEMP = "temp file"
    OTHER = "unknown file"


_SERVER_KINDS = {"json": RuntimeKind.SERVER_RECORD, "sock": RuntimeKind.SERVER_SOCKET,
                 "lock": RuntimeKind.SERVER_LOCK, "log": RuntimeKind.SERVER_LOG}


_FORK_SERVER_KINDS = {"json": RuntimeKind.FORK_SERVER_RECORD, "sock": RuntimeKind.FORK_SERVER_SOCKET}


@dataclass(frozen=True)
class RuntimeFile:
    """One file of the runtime directory and whether the process owning it lives.

    ``alive`` is None when no owner can be told (a file rxjobs did not name).
    """

    path: str
    kind: RuntimeKind
    owner: str
    alive: bool | None


def process_alive(pid: Any, create_time: Any = None) -> bool:
    """Whether process ``pid`` runs (and is the one that started at ``create_time``, if given)."""
    try:
        proc = psutil.Process(int(pid))
        if create_time is not None and abs(proc.create_time() - float(create_time)) > 0.05:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, TypeError, ValueError):
        return False
    except psutil.AccessDenied:
        return True


def read_server_record(path: str) -> dict[str, Any] | None:
    """A server record (``spark-<key>.json``), or None if absent or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = json.loads(os.read(fd, _MAX_RECORD))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


def server_alive(key: str, base: str) -> bool:
    """Whether the persistent Spark server of ``key`` lives: its record names a live process
    of this host, or a process holds its log or its start lock (a server starting)."""
    record = read_server_record(os.path.join(base, f"{SERVER_PREFIX}{key}.json"))
    if record is not None and record.get("host") == socket.gethostname() and process_alive(
            record.get("pid"), record.get("create_time")):
        return True
    return any(is_held(os.path.join(base, f"{SERVER_PREFIX}{key}.{suffix}")) for suffix in ("log", "lock"))


@contextlib.contextmanager
def _holding_dir(path: str) -> Iterator[bool]:
    """The ``flock`` of the directory ``path``, taken without waiting: True while we hold
    it, False when another process does (the fork server's starter, while it starts one)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing drops a lock we took


def dir_locked(path: str) -> bool:
    """Whether a live process holds the ``flock`` of the directory ``path``."""
    try:
        with _holding_dir(path) as mine:
            return not mine
    except OSError:
        return False


def _fork_server_recorded(key: str, base: str) -> bool:
    record = read_server_record(os.path.join(base, f"{FORK_SERVER_PREFIX}{key}.json"))
    return record is not None and record.get("host") == socket.gethostname() and process_alive(
        record.get("pid"), record.get("create_time"))


def fork_server_alive(key: str, base: str) -> bool:
    """Whether the fork server of ``key`` lives: its record names a live process of this
    host, or the runtime dir is locked (a server being started, its record not yet written)."""
    return _fork_server_recorded(key, base) or dir_locked(base)


def classify(name: str) -> tuple[RuntimeKind, str]:
    """What the runtime-dir file ``name`` is and whom it belongs to (a job id, a server key,
    a pid), from its name alone (pure)."""
    tmp = _TMP_RE.search(name)
    if tmp:
        return RuntimeKind.TEMP, tmp.group(1)
    log = _DRIVER_LOG_RE.match(name)
    if log:
        return RuntimeKind.DRIVER_LOG, log.group(1)
    server = _SERVER_RE.match(name)
    if server:
        return _SERVER_KINDS[server.group(2)], server.group(1)
    fork_server = _FORK_SERVER_RE.match(name)
    if fork_server:
        return _FORK_SERVER_KINDS[fork_server.group(2)], fork_server.group(1)
    return RuntimeKind.OTHER, ""


def scan_runtime_dir(base: str | None = None) -> list[RuntimeFile]:
    """Every file of the runtime directory, with whether its owner lives.

    A driver log lives while a process holds it; a Spark server's files while
    the server does (:func:`server_alive`), a fork server's likewise
    (:func:`fork_server_alive`); a temporary file while its writer's pid runs.
    """
    folder = runtime_dir(base)
    found = []
    servers: dict[str, bool] = {}
    fork_servers: dict[str, bool] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        kind, owner = classify(name)
        alive: bool | None
        if kind is RuntimeKind.TEMP:
            alive = process_alive(owner)
        elif kind is RuntimeKind.DRIVER_LOG:
            alive = is_held(path)
        elif kind is RuntimeKind.OTHER:
            alive = None
        elif kind in _FORK_SERVER_KINDS.values():
            if owner not in fork_servers:
                fork_servers[owner] = fork_server_alive(owner, folder)
            alive = fork_servers[owner]
        else:
            if owner not in servers:
                servers[owner] = server_alive(owner, folder)
            alive = servers[owner]
        found.append(RuntimeFile(path, kind, owner, alive))
    return found


def remove_runtime_file(entry: RuntimeFile) -> bool:
    """Remove a file of a dead owner, checking again that it is dead; True if removed.

    Locks, logs and driver logs are removed only while we hold their lock, so
    a process waiting for a server's start lock never holds a lock on a file
    that no longer has a name (see :func:`locked`).
    """
    if entry.alive is not False:
        return False
    folder, name = os.path.split(entry.path)
    kind, owner = classify(name)
    if kind is not entry.kind:
        return False
    if kind is RuntimeKind.TEMP:
        if process_alive(owner):
            return False
    elif kind in _FORK_SERVER_KINDS.values():
        # Under the runtime dir's lock, which a starter holds until its server has
        # written its record: no server of this key can come to life meanwhile.
        with _holding_dir(folder) as mine:
            if not mine or _fork_server_recorded(owner, folder):
                return False
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                return False
            return True
    elif kind not in (RuntimeKind.DRIVER_LOG, RuntimeKind.SERVER_LOG, RuntimeKind.SERVER_LOCK):
        if server_alive(owner, folder):
            return False
    else:
        if kind is not RuntimeKind.DRIVER_LOG and server_alive(owner, folder):
            return False
        with _free(entry.path) as fd:
            if fd is None:
                return False
            os.unlink(entry.path)
            return True
    try:
        os.unlink(entry.path)
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Hold the ``flock`` of the lock file ``path``, made if absent.

    After the lock is granted the name is checked to still be the locked
    file: one removed meanwhile (:func:`remove_runtime_file`) is opened again,
    so two processes never both hold "the" lock.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


__all__ = ["DRIVER_LOG_SUFFIX", "FORK_SERVER_PREFIX", "RUNTIME_DIR_ENV", "RuntimeFile", "RuntimeKind",
           "classify", "dir_locked", "driver_log_file", "fork_server_alive", "is_held", "locked", "open_held",
           "process_alive", "read_server_record", "remove_runtime_file", "runtime_dir", "scan_runtime_dir",
           "server_alive", "server_file", "take_driver_log"]
