"""A share dir on this machine's filesystems, reached relative to open descriptors.

The share dir itself is opened once (its path may be a symlink: a share dir
is a place, reached however it is spelled); every entry inside it is then
reached from that descriptor, name by name, with ``O_NOFOLLOW``, and checked
by ``fstat`` on the descriptor it is used through.  Reserved entries
(``.trash``, ``.locks``, the marker) that are not what rxjobs made are
refused, never followed (docs/security.md).

Removal renames a job directory into ``.trash/`` (atomic), then deletes it;
locks are ``flock``s on a fixed set of stripe files in ``.locks/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import JobNotFoundError, NotAShareDirError, UnsafeShareDirError, UntrustedShareDirError
from ..ids import is_job_id, validate_job_id
from ..times import utc_now_iso
from . import size_helper
from .base import (
    LOCK_STRIPES,
    LOCKS,
    MARKER,
    MAX_RECORD_BYTES,
    RESERVED,
    SHARE_FORMAT,
    TMP_MARK,
    TRASH,
    JobSnapshot,
    Store,
    TempFile,
    TopEntry,
    TrashEntry,
    Usage,
    loads_record,
    plain_name,
)
from .bulk_delete import PROCESSES, delete_trees
from .durability import durable, fsync_dir, fsync_pair, fsync_path, trash_syncs
from .fdtree import (
    is_dir_at,
    list_at,
    open_dir_at,
    open_file_at,
    read_file_at,
    read_open_file,
    remove_tree_at,
    snapshot_at,
    subdirs_at,
    usage_at,
)
from .removers import process_mark, process_running, remover_alive
from .trust import check_trusted, reserved_problem, trusts_everyone

_NOT_NAMES = frozenset({"", ".", ".."})  # what no part of a path inside a share dir may be


def _token() -> str:
    """8 random hex digits for a unique name: what ``secrets.token_hex(4)`` returns, without
    importing ``secrets`` (and hashlib) into every command that opens a store."""
    return os.urandom(4).hex()


def root_creation_refusal(euid: int, owner: int, url: str) -> str | None:
    """Why this process may not create anything in the share dir, or None (pure).

    Root creates nothing in a directory it does not own: a root-owned entry
    in a user's share dir (a ``.locks/``, a marker) is one she can neither use
    nor remove.  Root acts on a user's share dir as that user, or not at all.
    """
    if euid != 0 or owner == 0:
        return None
    return (f"share dir {url} belongs to uid {owner}: root creates nothing in a directory it does "
            f"not own. Run the command as its owner (runuser -u $(id -nu {owner}) -- rxjobs "
            f"--share-dir {url} ...), or sweep it with `rxjobs cleanup --all-users`")


def _usage_or_error(freed: tuple[int, int] | Exception) -> Usage | Exception:
    return freed if isinstance(freed, Exception) else Usage(*freed)


def _sync_trash(root: int, trash: int) -> None:
    """Make renames from the share dir ``root`` into its ``trash`` durable (group-committed
    with the other threads of this process renaming into it)."""
    trash_syncs(root, trash).wait_durable(lambda: fsync_pair(trash, root))


class LocalStore(Store):
    """A share dir that is a directory on this machine (or a mount of a shared filesystem)."""

    atomic_rename = True
    #: A cleanup's batch is renamed into the trash with one pair of fsyncs, and deleted
    #: by ``find`` processes (:meth:`detach_jobs`, :meth:`delete_detached_jobs`),
    #: smaller than an object store's; the first is smaller still, so that the
    #: deletions, which bound a cleanup, begin within a few milliseconds.
    removal_batch = 500
    first_removal_batch = 64
    #: Let :meth:`snapshots` fork a helper that counts sizes (tests compare both ways).
    fork_size_helper = True

    def __init__(self, share_dir: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(share_dir, options)
        self._prefix = self.root.rstrip("/") + "/"
        self._fd: int | None = None
        # The process that opened ``_fd``: a forked child (a job driver forked from its
        # caller, a pool worker) inherits the object, and its copy of the number may have
        # been closed (``take_stdio`` closes every inherited descriptor) and reused since.
        self._fd_pid: int | None = None
        self._root_stat: os.stat_result | None = None

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the share dir's descriptor (reopened when next needed).

        Only the process that opened it closes it: in a forked child the same number
        may now be another descriptor (a process pool's pipe), which a store collected
        there as garbage must not close.
        """
        fd, self._fd = self._fd, None
        if fd is not None and self._fd_pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(fd)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_fd_pid": None, "_root_stat": None}

    @property
    def fs(self) -> Any:
        """An fsspec filesystem of the local disk (for callers that want fsspec's API)."""
        import fsspec

        return fsspec.filesystem("file")

    # -- what callers may ask of the storage -------------------------------------------

    def os_path(self, path: str) -> str:
        self._parts(path)  # ValueError outside the share dir
        return path

    def caller_uid(self) -> int:
        return os.geteuid()

    def removal_where(self, name: str) -> str:
        return f"{self.trash}/{name}"

    # -- the share dir itself ---------------------------------------------------------

    def _root(self) -> int | None:
        """The share dir's descriptor, checked to be a marked (or empty) share dir;
        None when the directory does not exist."""
        if self._fd is not None and self._fd_pid == os.getpid():
            return self._fd
        self._fd = None  # opened by the process this one was forked from: never used here
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except PermissionError:
            raise PermissionError(_denied_message(self.url)) from None
        except NotADirectoryError:
            raise NotADirectoryError(f"share dir {self.url} is not a directory") from None
        try:
            self._check_marker(fd)
        except BaseException:
            os.close(fd)
            raise
        self._root_stat = os.fstat(fd)
        self._fd, self._fd_pid = fd, os.getpid()
        return fd

    def _root_or_missing(self) -> int:
        fd = self._root()
        if fd is None:
            raise FileNotFoundError(f"share dir {self.url} does not exist")
        return fd

    def _check_marker(self, fd: int) -> None:
        """NotAShareDirError unless ``fd`` holds rxjobs' marker, or nothing at all."""
        try:
            data, _ = read_file_at(fd, MARKER, limit=4096)
        except FileNotFoundError:
            # Reserved entries, and a write in progress (the marker itself being written
            # by a process that is making this share dir), do not make it another's dir.
            names = [n for n in list_at(fd) if n not in RESERVED and TMP_MARK not in n]
            if names:
                raise NotAShareDirError(_unmarked_message(self.url, names)) from None
            return  # an empty directory: a share dir yet to be used
        except (ValueError, OSError) as exc:
            raise UnsafeShareDirError(f"{self.url}/{MARKER} is not rxjobs' marker file "
                                      f"({exc}); refusing to use {self.url}") from None
        try:
            marker = loads_record(data, f"{self.url}/{MARKER}")
            version = marker["format"] if isinstance(marker, dict) else None
        except (ValueError, KeyError):
            version = None
        if not isinstance(version, int) or version > SHARE_FORMAT:
            raise NotAShareDirError(f"{self.url}/{MARKER} is not a share-dir marker this "
                                    "rxjobs understands; upgrade rxjobs or choose another share dir")

    def _check_may_create(self) -> None:
        """PermissionError when root would create something in another user's share dir."""
        st = self._root_stat or os.fstat(self._root_or_missing())
        refusal = root_creation_refusal(os.geteuid(), st.st_uid, self.url)
        if refusal is not None:
            raise PermissionError(refusal)

    def _shared_mode(self) -> bool:
        """A team share dir (group-writable): what rxjobs makes in it is group-readable."""
        return self._root_stat is not None and bool(self._root_stat.st_mode & 0o020)

    def ensure_root(self) -> None:
        if not os.path.isdir(self.root):
            if os.path.lexists(self.root):
                raise NotADirectoryError(f"share dir {self.url} is not a directory "
                                         "(a file, or a dangling symlink)")
            parent = os.path.dirname(self.root)
            os.makedirs(parent, mode=0o700, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.root, 0o700)
                os.chmod(self.root, 0o700)  # whatever the umask
                fsync_path(parent)  # the new share dir's entry survives a power loss
        fd = self._root_or_missing()
        self._check_may_create()
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(f"share dir {self.url} is not writable; "
                                  "choose another share_dir")
        if not os.path.lexists(f"{self.root}/{MARKER}"):
            self._write_marker(fd)
            if self._shared_mode():
                # A team share dir: made now, as the team's (3770), no member can make
                # them first as their own and block the others.
                for name in (LOCKS, TRASH):
                    with self._reserved_dir(name, create=True):
                        pass

    def _write_marker(self, fd: int) -> None:
        data = json.dumps({"rxjobs": "share dir", "format": SHARE_FORMAT,
                           "created": utc_now_iso()}, indent=1).encode()
        with contextlib.suppress(FileExistsError):
            self._write_at(fd, MARKER, data, exclusive=True)

    def adopt(self) -> list[str]:
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotAShareDirError(f"{self.url} does not exist") from None
        try:
            jobs: list[str] = []
            debris: list[str] = []
            for name in sorted(list_at(fd)):
                if name in RESERVED:
                    continue
                (jobs if is_job_id(name) and _is_job_at(fd, name) is True else debris).append(name)
            refusal = root_creation_refusal(os.geteuid(), os.fstat(fd).st_uid, self.url)
            if refusal is not None:
                raise PermissionError(refusal)
            if debris:
                shown = ", ".join(debris[:10]) + (", ..." if len(debris) > 10 else "")
                raise NotAShareDirError(
                    f"{self.url} holds {len(debris)} entries that are not rxjobs jobs "
                    f"({shown}); it is not adopted. Move them out of it first, or choose another "
                    "share dir")
            self._write_marker(fd)
        finally:
            os.close(fd)
        return jobs

    # -- paths to descriptors ---------------------------------------------------------

    def _parts(self, path: str) -> list[str]:
        """The names leading from the share dir to ``path``; ValueError outside it."""
        if path == self.root:
            return []
        prefix = self._prefix
        if not path.startswith(prefix):
            raise ValueError(f"{path} is not inside share dir {self.url}")
        parts = path[len(prefix):].split("/")
        if _NOT_NAMES.intersection(parts):
            raise ValueError(f"{path} is not a plain path inside share dir {self.url}")
        return parts

    @contextlib.contextmanager
    def _dir(self, parts: list[str], write: bool = False) -> Iterator[int]:
        """A descriptor of the directory ``parts`` lead to, each step without following a
        symlink; a reserved directory that is not what rxjobs made is refused.

        With ``write``, every directory below the share dir must be the caller's:
        rxjobs writes and deletes only inside jobs of the caller's own, so a job
        directory swapped for another user's is refused, never written to.
        """
        fd = self._root_or_missing()
        opened: int | None = None
        try:
            for i, name in enumerate(parts):
                new = open_dir_at(fd if opened is None else opened, name)
                if opened is not None:
                    os.close(opened)
                opened = new
                if i == 0 and name in RESERVED:
                    self._check_reserved(opened, name)
                elif write:
                    owner = os.fstat(opened).st_uid
                    if owner != os.geteuid():
                        raise UnsafeShareDirError(
                            f"{self.root}/{'/'.join(parts[:i + 1])} is owned by uid {owner}, not by "
                            f"you (uid {os.geteuid()}): rxjobs writes only into your own jobs")
            yield fd if opened is None else opened
        finally:
            if opened is not None:
                os.close(opened)

    def _check_reserved(self, fd: int, name: str) -> None:
        """Refuse ``.trash``/``.locks`` unless they are directories rxjobs could have made:
        owned by the caller or the share dir's owner, and nobody else can swap entries in them."""
        problem = self._reserved_problem(os.fstat(fd))
        if problem is not None:
            raise UnsafeShareDirError(f"{self.url}/{name} is not what rxjobs made ({problem}); refusing "
                                      f"to use it. {self._squat_remedy()}")

    def _reserved_problem(self, st: os.stat_result) -> str | None:
        """What is wrong with a ``.trash``/``.locks`` of this ``lstat``, or None."""
        root = self._root_stat or os.fstat(self._root_or_missing())
        return reserved_problem(st, root, os.geteuid())

    def _squat_remedy(self) -> str:
        owner = (self._root_stat or os.fstat(self._root_or_missing())).st_uid
        return (f"The share dir's owner (uid {owner}) sets it aside with `rxjobs --share-dir {self.url} "
                "doctor --fix`; whoever made it can also remove it")

    def share_owner_uid(self) -> int | None:
        root = self._root()
        return None if root is None else (self._root_stat or os.fstat(root)).st_uid

    def squatted_reserved(self) -> list[tuple[str, str]]:
        """``.trash``/``.locks`` entries rxjobs did not make (another member's, a symlink...),
        each with what is wrong and how to fix it."""
        root = self._root()
        if root is None:
            return []
        found = []
        for name in (LOCKS, TRASH):
            try:
                st = os.stat(name, dir_fd=root, follow_symlinks=False)
            except FileNotFoundError:
                continue
            problem = self._reserved_problem(st)
            if problem is not None:
                found.append((name, f"not what rxjobs made ({problem}): it blocks every member's "
                                    f"cleanup and results. {self._squat_remedy()}"))
        return found

    def set_aside_reserved(self, name: str) -> str:
        """Rename a squatted ``.trash``/``.locks`` to a debris name (``.locks.squatted-UID-...``),
        so that rxjobs makes its own on next use; the new name.

        Only the share dir's owner (or root, in its own directory) may rename
        another's entry in a sticky directory: the kernel refuses anyone else.
        """
        if name not in (LOCKS, TRASH):
            raise ValueError(f"{name} is not a reserved entry of a share dir")
        root = self._root_or_missing()
        self._check_may_create()
        st = os.stat(name, dir_fd=root, follow_symlinks=False)
        if self._reserved_problem(st) is None:
            raise ValueError(f"{self.url}/{name} is what rxjobs made: left alone")
        aside = f"{name}.squatted-{st.st_uid}-{_token()}"
        os.rename(name, aside, src_dir_fd=root, dst_dir_fd=root)
        fsync_dir(root)
        return aside

    @contextlib.contextmanager
    def _reserved_dir(self, name: str, create: bool) -> Iterator[int | None]:
        """``.trash`` or ``.locks``, made if asked (None when absent and not made)."""
        root = self._root_or_missing()
        try:
            fd = open_dir_at(root, name)
        except FileNotFoundError:
            if not create:
                yield None
                return
            self._check_may_create()
            mode = 0o3770 if self._shared_mode() else 0o700
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, mode, dir_fd=root)
            fd = open_dir_at(root, name)
            if self._shared_mode():
                os.fchmod(fd, mode)  # the umask may have taken the group's bits
        except NotADirectoryError:
            raise UnsafeShareDirError(f"{self.url}/{name} is a symlink or not a "
                                      f"directory; refusing to follow it. {self._squat_remedy()}") from None
        try:
            self._check_reserved(fd, name)
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _parent(self, path: str, write: bool = False) -> Iterator[tuple[int, str]]:
        """The directory holding ``path`` (as a descriptor) and ``path``'s own name."""
        parts = self._parts(path)
        if not parts:
            raise ValueError(f"{path} is the share dir itself, not an entry of it")
        with self._dir(parts[:-1], write=write) as fd:
            yield fd, parts[-1]

    def _file_mode(self) -> int:
        return 0o640 if self._shared_mode() else 0o600

    def _write_at(self, dir_fd: int, name: str, data: bytes, exclusive: bool = False) -> None:
        """Write a whole file durably: its data reaches the disk before the rename that
        publishes it, and its directory entry right after (docs/reliability.md).

        With ``exclusive`` the file is published by a hard link instead of a
        rename, which fails if ``name`` exists: exactly one writer wins, and no
        reader ever sees the file half-written.
        """
        target = f"{name}{TMP_MARK}{os.getpid()}-{_token()}"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     self._file_mode(), dir_fd=dir_fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if durable():
                    os.fsync(fd)
            finally:
                os.close(fd)
            if exclusive:
                os.link(target, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                os.unlink(target, dir_fd=dir_fd)
            else:
                os.replace(target, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            fsync_dir(dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(target, dir_fd=dir_fd)  # only ever our temporary name
            raise

    # -- the basic operations ---------------------------------------------------------

    def makedir(self, path: str, exist_ok: bool = False) -> None:
        with self._parent(path, write=True) as (fd, name):
            try:
                os.mkdir(name, 0o750 if self._shared_mode() else 0o700, dir_fd=fd)
            except FileExistsError:
                if not exist_ok or not is_dir_at(fd, name):
                    raise
                return
            fsync_dir(fd)  # a job directory (or its tasks/) survives with what is written into it

    def write_atomic(self, path: str, data: bytes) -> None:
        with self._parent(path, write=True) as (fd, name):
            self._write_at(fd, name, data)

    def write_exclusive(self, path: str, data: bytes = b"") -> None:
        with self._parent(path, write=True) as (fd, name):
            self._write_at(fd, name, data, exclusive=True)

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        # The hot path of a listing (one job.json per job): the same walk as _dir, from
        # the share dir's descriptor one name at a time, written out without its layers.
        parts = self._parts(path)
        if not parts:
            raise ValueError(f"{path} is the share dir itself, not a file of it")
        fd = self._root_or_missing()
        opened: list[int] = []
        try:
            for i, name in enumerate(parts[:-1]):
                fd = open_dir_at(fd, name)
                opened.append(fd)
                if i == 0 and name in RESERVED:
                    self._check_reserved(fd, name)
            return read_file_at(fd, parts[-1], limit)[0]
        except NotADirectoryError:
            raise FileNotFoundError(f"{path} is not there (a directory on its "
                                    "way is missing or a symlink)") from None
        finally:
            for fd in opened:
                os.close(fd)

    def read_trusted(self, path: str) -> bytes:
        trust = trusts_everyone()
        me = os.geteuid()
        parts = self._parts(path)
        root = self._root_or_missing()
        if not trust:
            check_trusted(os.fstat(root), self.root, me, share_dir=True)
        opened: list[int] = []
        try:
            fd = root
            where = self.root
            for name in parts[:-1]:
                fd = open_dir_at(fd, name)
                opened.append(fd)
                where = f"{where}/{name}"
                if not trust:
                    check_trusted(os.fstat(fd), where, me)
            try:
                file_fd = open_file_at(fd, parts[-1])
            except ValueError:
                raise UntrustedShareDirError(f"{path} is a symlink: refused") from None
            try:
                st = os.fstat(file_fd)
                if not trust:
                    check_trusted(st, path, me)
                return read_open_file(file_fd, st, path, None)
            finally:
                os.close(file_fd)
        except NotADirectoryError:
            raise UntrustedShareDirError(f"a directory on the way to {path} is a "
                                         "symlink or not a directory: refused") from None
        finally:
            for fd in opened:
                os.close(fd)

    def exists(self, path: str) -> bool:
        try:
            with self._parent(path) as (fd, name):
                os.stat(name, dir_fd=fd, follow_symlinks=False)
                return True
        except (FileNotFoundError, NotADirectoryError):
            return False

    def remove_file(self, path: str) -> bool:
        try:
            with self._parent(path, write=True) as (fd, name):
                os.unlink(name, dir_fd=fd)
                return True
        except (FileNotFoundError, NotADirectoryError):
            return False

    def listdir(self, path: str) -> list[str]:
        try:
            with self._dir(self._parts(path)) as fd:
                names = list_at(fd)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [n for n in names if TMP_MARK not in n]

    def job_entries(self, job_id: str) -> frozenset[str] | None:
        validate_job_id(job_id)
        root = self._root()
        if root is None:
            return None
        try:
            fd = open_dir_at(root, job_id)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except PermissionError:
            return frozenset()  # there, but its markers cannot be seen: reads will say more
        try:
            names = list_at(fd)
        except PermissionError:
            return frozenset()
        finally:
            os.close(fd)
        return frozenset(n for n in names if TMP_MARK not in n)

    def list_names(self, windowed: bool) -> list[str]:
        root = self._root()
        if root is None:
            return []
        # Names only for a window (the few kept are checked by is_job_dir); else real
        # directories only, from the same pass that reads the names.
        return list_at(root) if windowed else subdirs_at(root)

    def is_job_dir(self, job_id: str) -> bool:
        root = self._root()
        return root is not None and is_dir_at(root, job_id)

    def usage(self, job_id: str) -> Usage:
        validate_job_id(job_id)
        root = self._root()
        if root is None:
            return Usage()
        return Usage(*usage_at(root, job_id))

    def snapshot(self, job_id: str, records: tuple[str, ...] = ("job.json", "status.json"),
                 sizes: bool = True) -> JobSnapshot | None:
        """One visit of the job directory: opened once from the share dir's descriptor
        (``O_NOFOLLOW``), owner from its ``fstat``, names and sizes from one ``scandir``
        walk below it, records read through it (see :func:`~.fdtree.snapshot_at`)."""
        root = self._root()
        if root is None:
            return None
        return self._snapshot_at(root, job_id, records, sizes)

    def snapshots(self, job_ids: Iterable[str], records: tuple[str, ...] = ("job.json", "status.json"),
                  sizes: bool = True) -> Iterator[tuple[str, JobSnapshot | None]]:
        """:meth:`snapshot` of each job, from the share dir's descriptor.

        With ``sizes``, and a list of at least :data:`~.size_helper.MIN_JOBS`
        ids, a forked helper counts the files and bytes while this process
        reads each job's names and records (:mod:`.size_helper`; only where
        that is safe: one thread, two CPUs).  Never in threads: a snapshot is
        a few dozen short system calls with Python between them, and threads
        taking turns at the GIL made the walk slower, not faster.
        """
        root = self._root()
        if root is None:
            for job_id in job_ids:
                yield job_id, None
            return
        if not (sizes and self.fork_size_helper and isinstance(job_ids, Sequence)
                and len(job_ids) >= size_helper.MIN_JOBS and size_helper.may_fork()):
            for job_id in job_ids:
                yield job_id, self._snapshot_at(root, job_id, records, sizes)
            return
        with size_helper.SizeHelper(root, job_ids) as helper:
            for job_id in job_ids:
                snapshot = self._snapshot_at(root, job_id, records, sizes=False)
                counted = helper.next()  # this job's files and bytes (taken for every job, in order)
                if snapshot is not None:
                    snapshot = JobSnapshot(snapshot.entries, snapshot.owner, Usage(*counted),
                                           snapshot.records)
                yield job_id, snapshot

    def _snapshot_at(self, root: int, job_id: str, records: tuple[str, ...],
                     sizes: bool) -> JobSnapshot | None:
        try:
            fd = open_dir_at(root, job_id)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except PermissionError:  # there but unreadable: the primitives say what they can
            return super().snapshot(job_id, records, sizes)
        try:
            found = snapshot_at(fd, records, MAX_RECORD_BYTES, sizes)
        except PermissionError:
            return super().snapshot(job_id, records, sizes)
        finally:
            os.close(fd)
        names, owner, files, size, read = found
        return JobSnapshot(frozenset(n for n in names if TMP_MARK not in n), owner,
                           Usage(files, size) if sizes else None, read)

    def owner_uid(self, job_id: str) -> int | None:
        validate_job_id(job_id)
        root = self._root()
        if root is None:
            return None
        try:
            return os.stat(job_id, dir_fd=root, follow_symlinks=False).st_uid
        except OSError:
            return None

    def detach_job(self, job_id: str, durable: bool = True) -> str:
        """Move a job directory into ``.trash/`` with one atomic rename; its trash path.

        The trash name carries the remover's pid and start time, so that a
        concurrent :meth:`purge_trash` leaves an entry alone while its
        remover is alive, and not while another process that reused the pid is.
        With ``durable`` False the rename's two directory fsyncs are left to
        :meth:`delete_detached` (``make_durable=True``): the job is gone from
        every reader's view 3–4 ms sooner, and no file of it is deleted before
        the rename is on disk either way.
        """
        validate_job_id(job_id)
        root = self._root_or_missing()
        with self._reserved_dir(TRASH, create=True) as trash:
            assert trash is not None
            token = self._detach_at(root, trash, job_id)
            # Durable before a file of the job is deleted: a power loss then leaves the
            # job whole in its place, or in the trash, never half-deleted in its place.
            # Threads detaching jobs of this share dir at once share the two fsyncs.
            if durable:
                _sync_trash(root, trash)
        return token

    def detach_jobs(self, job_ids: Sequence[str]) -> list[str | Exception]:
        """:meth:`detach_job` of each job, made durable together by one pair of fsyncs.

        The share dir and ``.trash/`` are opened once for the whole batch.  If
        the fsyncs fail, every job of the batch gets their error: each is in
        the trash, and the next cleanup finishes it (:meth:`purge_trash`).
        """
        if not job_ids:  # nothing to detach, whether or not there is a share dir
            return []
        root = self._root_or_missing()
        found: list[str | Exception] = []
        with self._reserved_dir(TRASH, create=True) as trash:
            assert trash is not None
            for job_id in job_ids:
                try:
                    found.append(self._detach_at(root, trash, validate_job_id(job_id)))
                except Exception as exc:  # one job's problem never stops the others
                    found.append(exc)
            if any(isinstance(token, str) for token in found):
                try:
                    _sync_trash(root, trash)
                except OSError as exc:
                    return [token if isinstance(token, Exception) else exc for token in found]
        return found

    def _detach_at(self, root: int, trash: int, job_id: str) -> str:
        """Rename ``job_id`` from ``root`` into ``trash`` (not yet durable); its trash path."""
        self._check_searchable(root, job_id)
        target = f"{job_id}.{process_mark()}-{_token()}"
        try:
            # Names relative to the two descriptors: an entry swapped for a symlink
            # is moved as the symlink, never followed.
            os.rename(job_id, target, src_dir_fd=root, dst_dir_fd=trash)
        except FileNotFoundError:
            raise JobNotFoundError(self.not_found(job_id)) from None
        owner = os.stat(target, dir_fd=trash, follow_symlinks=False).st_uid
        if owner != os.geteuid():  # swapped in after the caller's checks: put it back
            os.rename(target, job_id, src_dir_fd=trash, dst_dir_fd=root)
            raise UnsafeShareDirError(f"{self.root}/{job_id} is owned by uid {owner}, not by you: "
                                      "it was swapped in during the removal and is left alone")
        return f"{self.trash}/{target}"

    def _check_searchable(self, root: int, job_id: str) -> None:
        """PermissionError if the caller cannot enter the job directory or one below it:
        its owner made it unreadable on purpose, so it is left alone, not forced open."""
        where = job_id
        try:
            fd = open_dir_at(root, job_id)
            try:
                for name in subdirs_at(fd):
                    where = f"{job_id}/{name}"
                    os.close(open_dir_at(fd, name))
            finally:
                os.close(fd)
        except FileNotFoundError:
            return  # gone meanwhile: the rename says so
        except NotADirectoryError:
            return  # a symlink or file where a job was: the rename moves it as it is
        except PermissionError:
            raise PermissionError(f"{self.root}/{where} cannot be read (its owner made it unreadable): "
                                  f"job {job_id} is left alone; make it readable to remove it") from None

    def delete_detached(self, token: str, make_durable: bool = False) -> Usage:
        """Delete a trash entry made by :meth:`detach_job`; the files and bytes it held."""
        name = self._trash_name(token)
        with self._reserved_dir(TRASH, create=False) as trash:
            if trash is None:
                return Usage()
            if make_durable:  # the rename of a detach_job(durable=False)
                _sync_trash(self._root_or_missing(), trash)
            return Usage(*remove_tree_at(trash, name))

    def delete_detached_jobs(self, tokens: Sequence[str], helpers: bool = True) -> list[Usage | Exception]:
        """Delete the trash entries :meth:`detach_jobs` made, many at once in ``find``
        processes (:mod:`.bulk_delete`; with ``helpers`` False, in this process)."""
        if not tokens:  # nothing to delete, whether or not there is a share dir
            return []
        names: list[str | Exception] = []
        for token in tokens:
            try:
                names.append(self._trash_name(token))
            except ValueError as exc:
                names.append(exc)
        wanted = [name for name in names if isinstance(name, str)]
        with self._reserved_dir(TRASH, create=False) as trash:
            deleted = ([(0, 0)] * len(wanted) if trash is None
                       else delete_trees(trash, wanted, PROCESSES if helpers else 0))
        freed = dict(zip(wanted, deleted, strict=True))
        return [name if isinstance(name, Exception) else _usage_or_error(freed[name]) for name in names]

    def _trash_name(self, token: str) -> str:
        """The entry of ``.trash/`` a token of :meth:`detach_job` names; ValueError if it names none."""
        parent, name = os.path.split(token)
        if parent != self.trash or name in _NOT_NAMES:
            raise ValueError(f"{token} is not an entry of {self.trash}")
        return name

    def purge_trash(self) -> list[str]:
        if self._root() is None:
            return []
        purged = []
        me = os.geteuid()
        with self._reserved_dir(TRASH, create=False) as trash:
            if trash is None:
                return []
            names = list_at(trash)
            if names:
                # A remover killed between its rename and its fsyncs leaves an entry whose
                # rename may not be on disk yet: make it so before deleting a file of it.
                fsync_pair(trash, self._root_or_missing())
            for name in names:
                if remover_alive(name):
                    continue  # another cleanup is deleting it right now
                try:
                    if os.stat(name, dir_fd=trash, follow_symlinks=False).st_uid != me:
                        continue  # another member's, in a team share dir: theirs to purge
                except FileNotFoundError:
                    continue
                remove_tree_at(trash, name)
                purged.append(name)
        return purged

    def discard_new_job(self, job_id: str) -> None:
        root = self._root()
        if root is None:
            return
        with contextlib.suppress(OSError):
            remove_tree_at(root, validate_job_id(job_id))

    @contextlib.contextmanager
    def lock(self, job_id: str, create: bool = True) -> Iterator[None]:
        """Hold the job's lock: an ``flock`` on one of a fixed set of stripe files in
        ``.locks/``, which are never deleted (deleting a lock file that another process
        waits on would let two processes hold "the" lock at once).

        With ``create`` False (a read-only command: a dry run, doctor, a survey)
        nothing is created: without ``.locks/`` or the stripe file no writer has
        ever locked, so there is nothing to wait for and the read goes on unlocked
        (removals are renames: a reader sees a job whole or not at all).
        """
        with self.lock_jobs([validate_job_id(job_id)], create):
            yield

    @contextlib.contextmanager
    def lock_jobs(self, job_ids: Iterable[str], create: bool = True) -> Iterator[None]:
        """Hold the locks of many jobs at once: each stripe they fall on, once, in
        increasing order (so two batches never wait on each other crosswise)."""
        stripes = sorted({zlib.crc32(job_id.encode()) % LOCK_STRIPES for job_id in job_ids})
        if not stripes or self._root() is None:  # no share dir, so no job to protect
            yield
            return
        with contextlib.ExitStack() as held:
            fds = []
            with self._reserved_dir(LOCKS, create=create) as locks:
                for stripe in stripes:
                    fd = self._open_stripe(locks, stripe, create) if locks is not None else None
                    if fd is not None:
                        held.callback(os.close, fd)
                        fds.append((stripe, fd))
            for stripe, fd in fds:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise UnsafeShareDirError(f"{self.url}/{LOCKS}/{stripe}.lock is not a "
                                              "regular file; refusing to use it")
                # A blocking flock waits in the kernel and wakes as soon as the holder
                # lets go; every holder does bounded work, and the kernel drops the
                # lock if it dies.
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield

    def _open_stripe(self, locks: int, stripe: int, create: bool) -> int | None:
        """A descriptor of stripe file ``stripe``, made if ``create`` (else None if absent)."""
        # Read-only is enough for flock, so in a team share dir every member can
        # lock a stripe file another member made.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(f"{stripe}.lock", flags, dir_fd=locks)
        except FileNotFoundError:
            if not create:
                return None
            self._check_may_create()
            return os.open(f"{stripe}.lock", flags | os.O_CREAT, self._file_mode(), dir_fd=locks)

    # -- what rxjobs doctor looks at -----------------------------------------------------

    def top_entries(self) -> list[TopEntry]:
        root = self._root()
        if root is None:
            return []
        found = []
        for name in sorted(list_at(root)):
            if name in RESERVED:
                continue
            try:
                st = os.stat(name, dir_fd=root, follow_symlinks=False)
            except FileNotFoundError:
                continue
            kind = ("directory" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
                    else "symlink" if stat.S_ISLNK(st.st_mode) else "other")
            is_job: bool | None = False
            if kind == "directory" and is_job_id(name):
                is_job = _is_job_at(root, name)
            found.append(TopEntry(name, kind, is_job, st.st_uid, st.st_mtime))
        return found

    def trash_entries(self) -> list[TrashEntry]:
        if self._root() is None:
            return []
        found = []
        me = os.geteuid()
        with self._reserved_dir(TRASH, create=False) as trash:
            if trash is None:
                return []
            for name in sorted(list_at(trash)):
                try:
                    st = os.stat(name, dir_fd=trash, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                found.append(TrashEntry(name, remover_alive(name), st.st_uid == me, st.st_mtime))
        return found

    def temp_files(self) -> list[TempFile]:
        root = self._root()
        if root is None:
            return []
        found = _temp_files_at(root, self.root)
        me = os.geteuid()
        for name in subdirs_at(root):
            if not is_job_id(name):
                continue
            try:
                fd = open_dir_at(root, name)
            except OSError:
                continue
            try:
                if os.fstat(fd).st_uid != me:
                    continue  # another member's job: theirs to sweep
                found += _temp_files_at(fd, f"{self.root}/{name}")
                try:
                    tasks = open_dir_at(fd, "tasks")
                except OSError:
                    continue
                try:
                    found += _temp_files_at(tasks, f"{self.root}/{name}/tasks")
                finally:
                    os.close(tasks)
            finally:
                os.close(fd)
        return found

    def remove_debris(self, name: str) -> Usage:
        """Rename a top-level entry that is not a job into ``.trash/``, then delete it there
        (fd-relative, never following a symlink), as a job is removed."""
        plain_name(name, self.url)
        root = self._root_or_missing()
        target = f"{name}.{process_mark()}-{_token()}"
        with self._reserved_dir(TRASH, create=True) as trash:
            assert trash is not None
            os.rename(name, target, src_dir_fd=root, dst_dir_fd=trash)
            st = os.stat(target, dir_fd=trash, follow_symlinks=False)
            if st.st_uid != os.geteuid() or (stat.S_ISDIR(st.st_mode) and is_job_id(name)
                                              and _is_job_at(trash, target) is not False):
                os.rename(target, name, src_dir_fd=trash, dst_dir_fd=root)  # put it back
                raise ValueError(f"{self.root}/{name} is a job or not yours: left alone")
            return Usage(*remove_tree_at(trash, target))

    def remove_trash_entry(self, name: str) -> Usage:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"{name!r} is not an entry of {self.trash}")
        with self._reserved_dir(TRASH, create=False) as trash:
            if trash is None or remover_alive(name):
                return Usage()
            try:
                if os.stat(name, dir_fd=trash, follow_symlinks=False).st_uid != os.geteuid():
                    return Usage()  # another member's, in a team share dir: theirs to purge
            except FileNotFoundError:
                return Usage()
            return Usage(*remove_tree_at(trash, name))

    def remove_temp_file(self, path: str) -> bool:
        if TMP_MARK not in os.path.basename(path):
            raise ValueError(f"{path} is not a temporary file")
        return self.remove_file(path)


def _temp_files_at(dir_fd: int, where: str) -> list[TempFile]:
    found = []
    for name in list_at(dir_fd):
        m = _TMP_RE.search(name)
        if not m:
            continue
        try:
            mtime: float | None = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        except OSError:
            mtime = None
        found.append(TempFile(f"{where}/{name}", process_running(int(m.group(1)), None), mtime))
    return found


_TMP_RE = re.compile(re.escape(TMP_MARK) + r"(\d+)-[0-9a-f]+\Z")


def _is_job_at(root: int, name: str) -> bool | None:
    """Whether ``name`` is a job (a directory whose ``job.json`` names it); None if that
    cannot be told because its owner made it unreadable."""
    try:
        fd = open_dir_at(root, name)
    except PermissionError:
        return None
    except OSError:
        return False
    try:
        data, _ = read_file_at(fd, "job.json", MAX_RECORD_BYTES)
        record = loads_record(data, f"{name}/job.json")
    except PermissionError:
        return None
    except (OSError, ValueError):
        return False
    finally:
        os.close(fd)
    return isinstance(record, dict) and record.get("job_id") == name


def _unmarked_message(url: str, names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
    return (f"{url} is not an rxjobs share dir: it has no {MARKER} marker and holds other things "
            f"({shown}). rxjobs refuses to list or clean it up. If it is a share dir made by an "
            f"older rxjobs, check it and adopt it with `rxjobs adopt` (`rxjobs --share-dir {url} "
            "adopt`); otherwise give the right --share-dir (or $RXJOBS_SHARE_DIR)")


def _denied_message(url: str) -> str:
    try:
        owner = f"uid {os.stat(url).st_uid}"
    except OSError:
        owner = "another user"
    return (f"permission denied: share dir {url} belongs to {owner}, not to you (uid {os.geteuid()}); "
            "only its owner can list, read or clean up its jobs")


__all__ = ["LocalStore", "root_creation_refusal"]
