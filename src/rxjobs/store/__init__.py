"""The share directory: the one place that knows its layout (docs/design.md#the-share-dir).

Every path of a job is formatted by :class:`JobPaths`; every read, atomic
write, listing and removal goes through :class:`Store`.  The store sits on
fsspec, so a share dir may be any fsspec URL; local directories take a fast
path over ``os`` that never follows a symlink.

Object stores (``s3://``, ``gs://``, ``az://``...) have no directories and no
atomic rename: a job directory is the set of keys under its prefix, a single
put is atomic, and a removal is arbitrated by writing the ``deleting`` marker
exclusively (see :meth:`Store.remove_job` and docs/storage.md).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import secrets
import stat
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psutil

from ..errors import JobNotFoundError, UntrustedShareDirError
from ..ids import ids_in_window, is_job_id, valid_ids, validate_job_id
from ..options import storage_options
from ..sharedir import OBJECT_STORE_PROTOCOLS, normalize_share_dir

TRASH = ".trash"
_TMP_MARK = ".tmp-"
RESULT_SUFFIX = ".result.pkl"
OUTPUT_SUFFIX = ".out"


_LOCK_STRIPES = 64
MAX_RECORD_BYTES = 1 << 20  # job.json, status.json, engine.json are small; refuse giants


@dataclass(frozen=True)
class JobPaths:
    """Every artifact path of one job; nobody else formats a file name."""

    root: str
    job_id: str

    @property
    def dir(self) -> str:
        return f"{self.root}/{self.job_id}"

    @property
    def job_json(self) -> str:
        return f"{self.dir}/job.json"

    @property
    def payload(self) -> str:
        return f"{self.dir}/payload.pkl"

    @property
    def engine_json(self) -> str:
        return f"{self.dir}/engine.json"

    @property
    def status_json(self) -> str:
        return f"{self.dir}/status.json"

    @property
    def canceled(self) -> str:
        return f"{self.dir}/canceled"

    @property
    def retrieved(self) -> str:
        return f"{self.dir}/retrieved"

    @property
    def deleting(self) -> str:
        return f"{self.dir}/deleting"

    @property
    def driver_log(self) -> str:
        return f"{self.dir}/driver.log"

    @property
    def tasks(self) -> str:
        return f"{self.dir}/tasks"

    def result(self, task: int) -> str:
        return f"{self.tasks}/{task}{RESULT_SUFFIX}"

    def output(self, task: int) -> str:
        return f"{self.tasks}/{task}{OUTPUT_SUFFIX}"

    @staticmethod
    def task_indexes(names: Iterable[str], suffix: str, n_tasks: int) -> list[int]:
        """The task numbers below ``n_tasks`` of the files named in ``names`` that end
        with ``suffix`` (``RESULT_SUFFIX`` or ``OUTPUT_SUFFIX``), in order.

        Bounded by what the directory holds, not by what a (hostile) record claims.
        """
        found = set()
        for name in names:
            number = name[:-len(suffix)] if name.endswith(suffix) else ""
            if number.isascii() and number.isdigit() and len(number) < 20 and int(number) < n_tasks:
                found.add(int(number))
        return sorted(found)


@dataclass(frozen=True)
class Usage:
    """Files and bytes under a job directory."""

    files: int = 0
    bytes: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.files + other.files, self.bytes + other.bytes)


class Store:
    """A share directory on any fsspec filesystem.

    Parameters
    ----------
    share_dir
        A local path or an fsspec URL.
    options
        fsspec storage options for the URL's filesystem (endpoint, credentials...).
    """

    def __init__(self, share_dir: str | os.PathLike[str],
                 options: Mapping[str, Any] | None = None) -> None:
        self.url = normalize_share_dir(share_dir)
        frozen = storage_options(options)
        self.options: dict[str, Any] = frozen.to_dict() if frozen is not None else {}
        self._trash_ready = self._locks_ready = False
        if "://" not in self.url:
            # A local directory: plain os calls, fsspec only if someone asks for .fs.
            self._fs = None
            self.is_local, self.is_object_store, self.root = True, False, self.url
        else:
            import fsspec
            from fsspec.implementations.local import LocalFileSystem

            kwargs = dict(self.options)
            # Listings are never cached: other processes add and remove jobs, and a
            # stale listing would show removed jobs or hide new results.
            kwargs.setdefault("use_listings_cache", False)
            self._fs, root = fsspec.core.url_to_fs(self.url, **kwargs)
            self.is_local = isinstance(self._fs, LocalFileSystem)
            protocol = self._fs.protocol
            protocols = {protocol} if isinstance(protocol, str) else set(protocol)
            # Object stores have no directories: a prefix exists while keys are under it.
            self.is_object_store = bool(protocols & OBJECT_STORE_PROTOCOLS)
            self.root = os.path.abspath(root) if self.is_local else root.rstrip("/")
        # Local directories and object stores give an atomic rename or put;
        # other filesystems (memory://, ...) get a ``deleting`` marker first.
        self.atomic_rename = self.is_local

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @property
    def fs(self):
        """The fsspec filesystem (made on first use for local share dirs)."""
        if self._fs is None:
            import fsspec

            self._fs = fsspec.filesystem("file")
        return self._fs

    def paths(self, job_id: str, validated: bool = False) -> JobPaths:
        """The paths of one job; ``job_id`` is validated first unless ``validated``
        (it was just listed, and listings let only valid ids through)."""
        return JobPaths(self.root, job_id if validated else validate_job_id(job_id))

    @property
    def trash(self) -> str:
        return f"{self.root}/{TRASH}"

    # -- primitives ---------------------------------------------------------------------

    def ensure_root(self) -> None:
        """Create the share dir (mode 0700) if needed and check it can be written."""
        if self.is_local:
            if os.path.islink(self.root) and not os.path.isdir(self.root):
                raise NotADirectoryError(f"share dir {self.url} is a dangling symlink")
            if not os.path.isdir(self.root):
                os.makedirs(self.root, mode=0o700, exist_ok=True)
                os.chmod(self.root, 0o700)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(
                    errno.EACCES, f"share dir {self.url} is not writable; choose another share_dir"
                )
        else:
            self.fs.makedirs(self.root, exist_ok=True)

    def makedir(self, path: str, exist_ok: bool = False) -> None:
        """Create one directory (0700 on local disks)."""
        if self.is_local:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                if not exist_ok:
                    raise
        else:
            if not exist_ok and self.fs.exists(path):
                raise FileExistsError(path)
            self.fs.makedirs(path, exist_ok=True)

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write a whole file so that readers see all of it or nothing."""
        if self.is_local:
            tmp = f"{path}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                _unlink_quietly(tmp)
                raise
        else:
            # A single put is atomic on object stores and in-process stores.
            self.fs.pipe_file(path, data)

    def write_json(self, path: str, obj: Any) -> None:
        self.write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode())

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        """Read a whole file; FileNotFoundError if absent.  Never follows a symlink locally.

        With ``limit``, a larger file raises ValueError instead of being read.
        A fifo or device is refused, never opened for a blocking read.
        """
        if self.is_local:
            return _read_local_file(path, limit)
        try:
            if limit is None:
                return self.fs.cat_file(path)
            # One ranged read (a single GET on object stores), not a size query first.
            data = self.fs.cat_file(path, start=0, end=limit + 1)
            if len(data) > limit:
                raise ValueError(f"{path} is larger than the {limit} bytes allowed")
            return data
        except (FileNotFoundError, IsADirectoryError):
            raise
        except OSError as exc:  # some backends raise a bare OSError for absent keys
            raise FileNotFoundError(path) from exc

    def read_json(self, path: str) -> Any:
        """Read a JSON file; FileNotFoundError if absent, ValueError if corrupt."""
        data = self.read_bytes(path, limit=MAX_RECORD_BYTES)
        try:
            # Records are UTF-8 (ASCII, in fact): decoding first spares json's
            # encoding detection; anything else gets json.loads' own verdict.
            return json.loads(data.decode())
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            pass
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None

    def exists(self, path: str) -> bool:
        if self.is_local:
            return os.path.lexists(path)
        return self.fs.exists(path)

    def is_job_dir(self, path: str) -> bool:
        """A real directory (not a symlink to one)."""
        if self.is_local:
            try:
                return stat.S_ISDIR(os.lstat(path).st_mode)
            except OSError:
                return False
        return self.fs.isdir(path)

    def job_entries(self, job_id: str) -> frozenset[str] | None:
        """Names directly in a job directory (``job.json``, ``tasks``, markers...).

        None when there is no job directory (absent, or a symlink locally).
        One system call locally, one listing request on an object store, so
        that a job's presence and markers are learned in a single look.
        """
        path = self.paths(job_id).dir
        if self.is_local:
            if not self.is_job_dir(path):
                return None
            try:
                names = os.listdir(path)
            except (FileNotFoundError, NotADirectoryError):
                return None
            except PermissionError:
                return frozenset()  # there, but its markers cannot be seen: reads will say more
        else:
            try:
                names = [e.rstrip("/").rsplit("/", 1)[-1] for e in self.fs.ls(path, detail=False)]
            except (FileNotFoundError, NotADirectoryError):
                return None
            if not names and not self.fs.isdir(path):
                return None  # object stores have no empty directories: no keys, no job
        return frozenset(n for n in names if _TMP_MARK not in n)

    def write_exclusive(self, path: str, data: bytes = b"") -> None:
        """Create a file only if it does not exist yet; FileExistsError otherwise.

        On S3 this is a conditional put (``If-None-Match: *``), so exactly one
        of several concurrent writers succeeds.
        """
        if self.is_local:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return
        try:
            self.fs.pipe_file(path, data, mode="create")
        except TypeError:  # a backend without exclusive creation: best effort
            if self.fs.exists(path):
                raise FileExistsError(path) from None
            self.fs.pipe_file(path, data)

    def remove_file(self, path: str) -> bool:
        """Remove one file; False if it was not there."""
        try:
            if self.is_local:
                os.unlink(path)
            else:
                self.fs.rm_file(path)
            return True
        except FileNotFoundError:
            return False

    def listdir(self, path: str) -> list[str]:
        """Base names in a directory, without temporary files; [] if absent."""
        try:
            if self.is_local:
                names = os.listdir(path)
            else:
                names = [e.rstrip("/").rsplit("/", 1)[-1] for e in self.fs.ls(path, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [n for n in names if _TMP_MARK not in n]

    # -- jobs ---------------------------------------------------------------------------

    def list_job_ids(self, start: datetime | None = None, end: datetime | None = None) -> list[str]:
        """Ids of the jobs in the share dir, oldest first (ids are time-ordered).

        Parameters
        ----------
        start, end
            A submit-time window (naive datetimes are local time).  rxjobs ids
            (``rxJob_<UTC µs>_<hex>``) outside it are left out by their name
            alone; ids of any other form are all kept, for the caller to check
            by their record.  A narrow window so costs one directory listing,
            with nothing done per job outside it.
        """
        windowed = start is not None or end is not None
        if self.is_local:
            try:
                if windowed:
                    names = os.listdir(self.root)  # names only: the few kept are checked below
                else:
                    with os.scandir(self.root) as entries:
                        names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
            except (FileNotFoundError, NotADirectoryError):
                return []
        else:
            names = self.listdir(self.root)
        if not names:
            return []
        if not windowed:
            return sorted(valid_ids(names))
        ids = ids_in_window(names, start, end)
        if self.is_local:
            # Only real directories: a symlink or a file named like a job is
            # not a job, and is never followed.
            ids = [job_id for job_id in ids if self.is_job_dir(f"{self.root}/{job_id}")]
        return sorted(ids)

    def read_job_json(self, job_id: str, listed: bool = False) -> Any:
        """A job's ``job.json``, parsed: the one read a listing makes per job.

        Parameters
        ----------
        job_id
            The job's id, validated first unless ``listed``.
        listed
            ``job_id`` was just returned by :meth:`list_job_ids`, which let
            only valid ids through: it is not validated again.

        Raises
        ------
        FileNotFoundError
            No ``job.json`` (or no job directory).
        ValueError
            Not a regular file, bigger than a record may be, or not JSON.
        OSError
            It cannot be read (a symlink is refused, never followed).
        """
        return self.read_json(JobPaths(self.root, job_id if listed else validate_job_id(job_id)).job_json)

    def usage(self, job_id: str) -> Usage:
        """Files and bytes in a job directory (symlinks counted, never followed)."""
        return self._usage_of(self.paths(job_id).dir)

    def _usage_of(self, path: str) -> Usage:
        if self.is_local:
            files = size = 0
            for entry in _walk_no_follow(path):
                if not entry.is_dir(follow_symlinks=False):
                    files += 1
                    try:
                        size += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        pass
            return Usage(files, size)
        try:
            found = self.fs.find(path, detail=True)
        except FileNotFoundError:
            return Usage()
        return Usage(len(found), sum(int(info.get("size") or 0) for info in found.values()))

    def remove_job(self, job_id: str) -> Usage:
        """Remove a job directory crash-safely and return what it held.

        The directory is first moved into ``.trash/`` with one atomic rename,
        so that a crash at any instant leaves the job either intact or in the
        trash, which :meth:`purge_trash` finishes later.  On stores without an
        atomic rename a ``deleting`` marker is written first instead.

        Raises
        ------
        JobNotFoundError
            The job directory is not there (e.g. another cleaner got it first).
        """
        paths = self.paths(job_id)
        if self.is_local:
            return self.delete_detached(self.detach_job(job_id))
        # No atomic rename: the ``deleting`` marker, written exclusively, makes the
        # job read as missing and elects one remover; then every object goes in one
        # batched delete, and the marker last.
        try:
            self.write_exclusive(paths.deleting)
        except FileExistsError:
            raise JobNotFoundError(f"job {job_id} is already being removed from "
                                   f"{self.url}") from None
        found = self._objects(paths.dir)
        found.pop(paths.deleting, None)
        if not found and (self.is_object_store or set(self.listdir(paths.dir)) <= {"deleting"}):
            self.remove_file(paths.deleting)  # removed meanwhile by another remover (or never there)
            if not self.is_object_store:
                self._remove_tree(paths.dir)
            raise JobNotFoundError(self._not_found(job_id))
        self.fs.rm(sorted(found))  # one request per 1000 keys on S3
        self._finish_removal(job_id)
        return Usage(len(found), sum(found.values()))

    def detach_job(self, job_id: str) -> str:
        """Move a local job directory into ``.trash/`` with one atomic rename; its trash path.

        The first half of :meth:`remove_job`: from here on the job reads as
        missing, so a caller holding the job's lock may let go of it and
        finish with :meth:`delete_detached`.  A crash in between leaves the
        entry for :meth:`purge_trash`.

        Raises
        ------
        JobNotFoundError
            The job directory is not there (e.g. another cleaner got it first).
        """
        if not self.is_local:
            raise NotImplementedError(f"{self.url} has no atomic rename; use remove_job")
        paths = self.paths(job_id)
        if not self._trash_ready:
            os.makedirs(self.trash, mode=0o700, exist_ok=True)
            if os.path.islink(self.trash) or not os.path.isdir(self.trash):
                raise RuntimeError(f"{self.trash} is not a directory; refusing to use it as trash")
            self._trash_ready = True
        # The trash name carries the remover's pid and start time, so that a
        # concurrent purge_trash leaves an entry alone while its remover is
        # alive, and not while another process that reused the pid is.
        target = f"{self.trash}/{job_id}.{_process_mark()}-{secrets.token_hex(4)}"
        try:
            os.rename(paths.dir, target)
        except FileNotFoundError:
            raise JobNotFoundError(self._not_found(job_id)) from None
        return target

    def delete_detached(self, path: str) -> Usage:
        """Delete a trash entry made by :meth:`detach_job`; the files and bytes it held."""
        if os.path.dirname(path) != self.trash:
            raise ValueError(f"{path} is not an entry of {self.trash}")
        return _rmtree_no_follow(path)

    def _objects(self, path: str) -> dict[str, int]:
        """Every file under ``path`` with its size (one paginated listing on object stores)."""
        try:
            found = self.fs.find(path, detail=True)
        except FileNotFoundError:
            return {}
        return {name: int(info.get("size") or 0) for name, info in found.items()
                if info.get("type", "file") != "directory"}

    def _finish_removal(self, job_id: str) -> None:
        """Delete what is left of a job marked ``deleting``, the marker last.

        The marker goes only once a listing shows nothing else, so a job is
        never left half-deleted without it, even if a late writer (a worker
        of a force-removed job) put a file meanwhile.
        """
        paths = self.paths(job_id)
        for _ in range(5):
            rest = sorted(k for k in self._objects(paths.dir) if k != paths.deleting)
            if not rest:
                if self.is_object_store:
                    self.remove_file(paths.deleting)
                else:  # empty directories are left: remove them with the marker
                    self._remove_tree(paths.dir)
                return
            self.fs.rm(rest)
        raise OSError(f"could not empty {paths.dir}: objects keep appearing in it")

    def _remove_tree(self, path: str) -> None:
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def purge_trash(self) -> list[str]:
        """Finish deletions a crashed cleanup left behind; return what was purged."""
        purged = []
        if self.is_local:
            for name in self.listdir(self.trash):
                owner = _trash_owner(name)
                if owner is not None and owner[0] != os.getpid() and _process_running(*owner):
                    continue  # another cleanup is deleting it right now
                _rmtree_no_follow(f"{self.trash}/{name}")
                purged.append(name)
            return purged
        # One listing of the whole share dir finds every ``<job>/deleting`` marker.
        depth = self.root.count("/") + 2
        marked = sorted({
            key[len(self.root) + 1:].split("/", 1)[0] for key in self._objects(self.root)
            if key.endswith("/deleting") and key.count("/") == depth
        })
        for job_id in marked:
            if not is_job_id(job_id):
                continue
            self._finish_removal(job_id)
            purged.append(job_id)
        return purged

    def discard_new_job(self, job_id: str) -> None:
        """Remove a job directory that a failed submission just created (best effort).

        Unlike :meth:`remove_job` this needs no room for a trash entry, so it
        also works when the disk is full.
        """
        paths = self.paths(job_id)
        try:
            if self.is_local:
                _rmtree_no_follow(paths.dir)
            elif self.fs.exists(paths.dir):
                self.fs.rm(paths.dir, recursive=True)
        except OSError:
            pass

    @contextlib.contextmanager
    def lock(self, job_id: str) -> Iterator[None]:
        """Hold the job's lock (local share dirs; elsewhere the exclusive ``deleting``
        marker arbitrates removals, and readers check it before and after reading).

        Locks are striped over a fixed set of files in ``.locks/``, which are
        never deleted: deleting a lock file that another process waits on
        would let two processes hold "the" lock at once.
        """
        if not self.is_local:
            yield
            return
        locks = f"{self.root}/.locks"
        if not self._locks_ready:
            os.makedirs(locks, mode=0o700, exist_ok=True)
            self._locks_ready = True
        stripe = zlib.crc32(validate_job_id(job_id).encode()) % _LOCK_STRIPES
        fd = os.open(f"{locks}/{stripe}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            # A blocking flock waits in the kernel and wakes as soon as the holder
            # lets go (a polling lock cost a third of a big cleanup's time); every
            # holder does bounded work, and the kernel drops the lock if it dies.
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def check_trusted(self, job_id: str) -> None:
        """Refuse to unpickle from a local share dir that others could have written to.

        Unpickling runs code, so a payload or result in a directory writable
        by another user could run that user's code as us.  Set
        ``RXJOBS_TRUST_SHARE_DIR=1`` to opt out of this check explicitly.
        """
        if not self.is_local or os.environ.get("RXJOBS_TRUST_SHARE_DIR") == "1":
            return
        me = os.geteuid()
        for path in (self.root, self.paths(job_id).dir):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if st.st_uid != me:
                raise UntrustedShareDirError(
                    f"{path} is owned by uid {st.st_uid}, not by you (uid {me}); loading pickles "
                    "from it could run another user's code. Use a share dir of your own, or set "
                    "RXJOBS_TRUST_SHARE_DIR=1 if you trust it"
                )
            if st.st_mode & 0o022:
                raise UntrustedShareDirError(
                    f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
                    f"loading pickles from it could run their code. Run `chmod go-w {path}`, or "
                    "set RXJOBS_TRUST_SHARE_DIR=1 if you trust it"
                )

    def owner_uid(self, job_id: str) -> int | None:
        """The uid owning a local job directory (None elsewhere, or if it is gone)."""
        if not self.is_local:
            return None
        try:
            return os.lstat(self.paths(job_id).dir).st_uid
        except OSError:
            return None

    def _not_found(self, job_id: str) -> str:
        return f"job {job_id} not found in share dir {self.url}"


def _process_mark() -> str:
    """``<pid>-<start time in 1/100 s>`` of this process: who made a trash entry."""
    return _mark_of(os.getpid())  # keyed by pid: a forked child has its own


@functools.lru_cache(maxsize=1)
def _mark_of(pid: int) -> str:
    return f"{pid}-{round(psutil.Process(pid).create_time() * 100)}"


# ``.<pid>-<token>`` (before trash names held a start time) or ``.<pid>-<start>-<token>``.
_TRASH_OWNER_RE = re.compile(r"\.(\d+)-(?:(\d+)-)?[0-9a-f]+\Z")


def _trash_owner(name: str) -> tuple[int, int | None] | None:
    """The pid and start time (1/100 s, None in older names) in a trash entry's name."""
    m = _TRASH_OWNER_RE.search(name)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)) if m.group(2) else None


def _process_running(pid: int, start: int | None) -> bool:
    """Whether process ``pid`` runs, and is the one that started at ``start`` if known."""
    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    return start is None or abs(round(created * 100) - start) <= 5


def _walk_no_follow(path: str) -> Iterator[os.DirEntry[str]]:
    try:
        entries = list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        yield entry
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_no_follow(entry.path)


# Every directory is entered through an open descriptor, never through a path
# that could lead through a symlink (O_NOFOLLOW refuses one).
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _rmtree_no_follow(path: str) -> Usage:
    """Delete a tree in one pass; the files and bytes it held.

    Symlinks are unlinked (and counted), never followed.  The walk works
    relative to open directory descriptors (``os.scandir(fd)``,
    ``os.unlink(name, dir_fd=fd)``): no path is resolved again below the
    top, a directory swapped for a symlink meanwhile is not entered, and
    each file's size comes from the same pass that deletes it.
    """
    parent, name = os.path.split(path)
    try:
        parent_fd = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return Usage()
    try:
        files, size = _remove_entry(parent_fd, name)
    finally:
        os.close(parent_fd)
    return Usage(files, size)


def _remove_entry(dir_fd: int, name: str) -> tuple[int, int]:
    """Remove ``name`` from the directory open as ``dir_fd``, a whole tree if a directory."""
    try:
        fd = os.open(name, _OPEN_DIR, dir_fd=dir_fd)
    except FileNotFoundError:
        return 0, 0
    except PermissionError:  # a directory without read permission: ours, make it readable
        os.chmod(name, 0o700, dir_fd=dir_fd)
        fd = os.open(name, _OPEN_DIR, dir_fd=dir_fd)
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
            n, b = _remove_entry(fd, entry.name) if is_dir else _unlink_counted(fd, entry.name, entry)
            files += n
            size += b
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass  # another remover got there first
    return files, size


def _unlink_counted(dir_fd: int, name: str, entry: os.DirEntry | None) -> tuple[int, int]:
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


def _read_local_file(path: str, limit: int | None) -> bytes:
    """A whole local file in a few system calls (``Store.read_bytes``'s local path).

    Never follows a symlink, never opens a fifo or device for a blocking read;
    with ``limit``, a larger file raises ValueError instead of being read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file")
        if limit is not None and st.st_size > limit:
            raise ValueError(f"{path} is {st.st_size} bytes, more than the {limit} allowed")
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
            raise ValueError(f"{path} is more than the {limit} bytes allowed")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def open_store(share_dir: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> Store:
    """The store of a share dir: a local directory or any fsspec URL.

    Parameters
    ----------
    share_dir
        A local path or an fsspec URL (``s3://bucket/prefix``, ``memory://x``...).
    options
        fsspec storage options for the URL's filesystem (endpoint, credentials...).
    """
    return Store(share_dir, options)
