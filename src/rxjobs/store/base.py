"""The share dir's layout and the Store interface every kind of storage implements.

:class:`JobPaths` is the one place that formats the name of a job's file.
:class:`Store` names the few basic operations a storage must provide
(atomic and exclusive writes, bounded reads, listings, the two halves of a
crash-safe removal, locks, trusted reads of pickles) and builds the rest on
them, as fsspec's ``AbstractFileSystem`` does.  Two implementations exist:
:class:`~rxjobs.store.local.LocalStore` (a directory, reached relative to
open descriptors) and :class:`~rxjobs.store.remote.FsspecStore` (object
stores and other fsspec filesystems); :func:`~rxjobs.store.open_store`
chooses once.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..ids import ids_in_window, valid_ids, validate_job_id
from ..options import storage_options
from ..sharedir import normalize_share_dir

TRASH = ".trash"
LOCKS = ".locks"
# Written when rxjobs creates a share dir: commands refuse a directory without it.
MARKER = ".rxjobs-share"
SHARE_FORMAT = 1
RESERVED = frozenset({TRASH, LOCKS, MARKER})
TMP_MARK = ".tmp-"
RESULT_SUFFIX = ".result.pkl"
OUTPUT_SUFFIX = ".out"
CHECKPOINT_SUFFIX = ".checkpoint.pkl"
FAILURES_SUFFIX = ".failed.json"
MAX_RECORD_BYTES = 1 << 20  # job.json, status.json, engine.json are small; refuse giants
MAX_RECORD_DEPTH = 32  # and nest a few levels; refuse what would exhaust the parser's recursion
LOCK_STRIPES = 64


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
        """The engine handle of a job written in format 1 (format 2 keeps it in ``job.json``)."""
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

    def failures(self, task: int) -> str:
        """How many runs of task ``task`` raised, when some did (Slurm engine; written by the
        task's worker before its result file, so the task that ends the job can count them)."""
        return f"{self.tasks}/{task}{FAILURES_SUFFIX}"

    def checkpoint(self, run: int) -> str:
        """Where a run that was checkpointed before a Slurm requeue keeps the call to resume
        with (``rxjobs.compat.submitit``; written by the run itself, read when it runs again)."""
        return f"{self.tasks}/run-{run}{CHECKPOINT_SUFFIX}"

    def rank_outcome(self, run: int, rank: int) -> str:
        """The outcome of rank ``rank`` of run ``run`` of a multi-task job (``rxjobs.compat.submitit``;
        written by the rank, read and removed by the run that started the ranks)."""
        return f"{self.tasks}/run-{run}.rank-{rank}.pkl"

    @staticmethod
    def task_indexes(names: Iterable[str], suffix: str, n_tasks: int) -> list[int]:
        """The task numbers below ``n_tasks`` of the files named in ``names`` that end
        with ``suffix`` (``RESULT_SUFFIX``, ``OUTPUT_SUFFIX``...), in order.

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


@dataclass(frozen=True)
class TopEntry:
    """An entry at the top of a share dir, as ``rxjobs doctor`` sees it (reserved ones left out).

    Attributes
    ----------
    name
        Its name.
    kind
        ``"directory"``, ``"file"``, ``"symlink"`` or ``"other"`` (a fifo, a socket...).
    is_job
        It is a job: a directory holding a ``job.json`` that parses and names it.
        None when that cannot be told (its owner made it unreadable).
    owner_uid
        Its owner (None where storage has no owners).
    mtime
        When it last changed (POSIX seconds; for an object-store prefix, its newest key).
    """

    name: str
    kind: str
    is_job: bool | None
    owner_uid: int | None
    mtime: float | None


@dataclass(frozen=True)
class TrashEntry:
    """A removal that began and has not finished: an entry of ``.trash/`` (local share dirs)
    or a job marked ``deleting`` (object stores).

    ``remover_alive`` is None when the remover cannot be told from here (another host).
    """

    name: str
    remover_alive: bool | None
    mine: bool
    mtime: float | None


@dataclass(frozen=True)
class TempFile:
    """A temporary file (``<name>.tmp-<pid>-<hex>``) of a write that did not finish.

    ``writer_alive`` is whether a process of that pid runs on this machine.
    """

    path: str
    writer_alive: bool
    mtime: float | None


def plain_name(name: str, where: str) -> str:
    """``name`` if it is one plain, non-reserved entry name of a share dir; ValueError otherwise."""
    if not name or "/" in name or "\0" in name or name in (".", "..") or name in RESERVED:
        raise ValueError(f"{name!r} is not an entry of share dir {where} that may be removed")
    return name


@dataclass(frozen=True)
class JobSnapshot:
    """One look at a job directory: its names, owner, size and the records read through it.

    What a survey needs of every job (``rxjobs du``, ``list``, a cleanup dry
    run), gathered in one visit: on a local share dir the job directory is
    opened once (fd-relative, no symlink followed), its names and sizes come
    from one ``scandir`` walk, and the records are read through that
    descriptor.
    """

    #: Names directly in the job directory, temporary files left out.
    entries: frozenset[str]
    #: The uid owning the job directory (None where storage has no owners).
    owner: int | None
    #: Files and bytes under the job directory (None if not asked for).
    usage: Usage | None
    #: Each record asked for that the directory holds: its bytes, or the error reading it.
    records: Mapping[str, bytes | Exception]

    def record(self, name: str) -> bytes:
        """The bytes of record ``name``; FileNotFoundError if the directory has none,
        the reading's own error (ValueError, OSError) if it could not be read."""
        found = self.records.get(name)
        if found is None:
            raise FileNotFoundError(f"{name} is not there")
        if isinstance(found, Exception):
            raise found
        return found


def loads_record(data: bytes, where: str) -> Any:
    """Parse a JSON record read from a share dir; ValueError unless it is sane JSON.

    Hostile records are refused before parsing when they nest deeper than
    :data:`MAX_RECORD_DEPTH` (a 1 MiB run of ``[`` would exhaust the parser's
    recursion), and a record that is not UTF-8 JSON says where it came from.
    """
    # Nesting needs an opening bracket per level: a record with few of them (every
    # record rxjobs writes) is bounded by two counts in C, without a scan in Python.
    if (len(data) > 256 and data.count(b"[") + data.count(b"{") > MAX_RECORD_DEPTH
            and _nesting_depth(data) > MAX_RECORD_DEPTH):
        raise ValueError(f"{where} nests deeper than {MAX_RECORD_DEPTH} levels: not an rxjobs record")
    try:
        # Records are UTF-8 (ASCII, in fact): decoding first spares json's
        # encoding detection; anything else gets json.loads' own verdict.
        return json.loads(data.decode())
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        pass
    except RecursionError:
        raise ValueError(f"{where} nests too deeply: not an rxjobs record") from None
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{where} nests too deeply: not an rxjobs record") from None


def _nesting_depth(data: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text, strings skipped (a bound, not a parse)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_RECORD_DEPTH:
                    return deepest
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


class Store(ABC):
    """A share directory: the basic operations of its storage, and what is built on them.

    Paths are full paths inside the share dir, as :class:`JobPaths` spells
    them; an implementation refuses any path outside it.

    Attributes
    ----------
    url
        The share dir, spelled once (an absolute path or ``protocol://path``).
    options
        fsspec storage options that reach it (credentials included; never stored).
    root
        The share dir's path on its filesystem, the prefix of every job path.
    is_object_store
        An object store: no directories, no rename, atomic single puts.
    atomic_rename
        Removal renames a job into the trash; without it, a ``deleting``
        marker is written first (docs/storage.md).
    """

    is_object_store: bool = False
    atomic_rename: bool = False
    #: Many jobs are read faster together than one by one (:meth:`snapshots`): an
    #: object store lists the whole share dir once and reads records in parallel.
    reads_in_bulk: bool = False
    #: Cleanup takes this many jobs at a time (:meth:`lock_jobs`, :meth:`snapshots`,
    #: :meth:`detach_jobs`, :meth:`delete_detached_jobs`): one look, the detachments
    #: and the deletions cover a batch, and what is held stays bounded.  An object
    #: store lists the share dir for a look, so its batches are as big as a request of
    #: deletes (1000 keys).
    removal_batch: int = 1000
    #: The size of a cleanup's first batch, which is decided before anything is
    #: deleted; the same as the others unless a store deletes best when it begins soon.
    first_removal_batch: int = 1000

    def __init__(self, share_dir: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = normalize_share_dir(share_dir)
        frozen = storage_options(options)
        self.options: dict[str, Any] = frozen.to_dict() if frozen is not None else {}
        self.root = self.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def paths(self, job_id: str, validated: bool = False) -> JobPaths:
        """The paths of one job; ``job_id`` is validated first unless ``validated``
        (it was just listed, and listings let only valid ids through)."""
        return JobPaths(self.root, job_id if validated else validate_job_id(job_id))

    @property
    def trash(self) -> str:
        return f"{self.root}/{TRASH}"

    def not_found(self, job_id: str) -> str:
        return f"job {job_id} not found in share dir {self.url}"

    # -- what callers may ask of the storage (never which kind it is) ----------------------

    def os_path(self, path: str) -> str | None:
        """``path`` as this machine's processes open it (``open``, ``stat``, a Slurm
        ``--output`` pattern), or None where the share dir is not a filesystem mounted
        here (an object store, ``memory://``): there no process can append to a file.
        ValueError for a path outside the share dir."""
        return None

    def caller_uid(self) -> int | None:
        """The caller's uid as this storage records owners (None where it has no owners)."""
        return None

    def being_removed(self, job_id: str, or_canceled: bool = False) -> bool:
        """Whether the job is gone or a removal of it began (a ``deleting`` marker), or,
        with ``or_canceled``, it was canceled.  One look at the job directory."""
        entries = self.job_entries(job_id)
        return entries is None or "deleting" in entries or (or_canceled and "canceled" in entries)

    def removal_may_tear(self, job_id: str, or_canceled: bool = False) -> bool:
        """Whether a removal may have torn what was just read of the job, or would be undone
        by what is about to be written into it: :meth:`being_removed`, on a store whose
        removal deletes file by file.  Where removal is one atomic rename
        (:attr:`atomic_rename`) never: a reader saw the whole job or none of it, and a
        write into a removed job fails because its directory is gone."""
        return not self.atomic_rename and self.being_removed(job_id, or_canceled)

    def removal_where(self, name: str) -> str:
        """Where a removal that :meth:`purge_trash` finished (one of the names it
        returned) had been left, as a message names it."""
        return f"{self.url}/{name}"

    # -- the basic operations -------------------------------------------------------------

    @abstractmethod
    def ensure_root(self) -> None:
        """Create the share dir (private to its user) with its marker, or check an existing
        one is a share dir that can be written; NotAShareDirError for an unmarked one."""

    @abstractmethod
    def adopt(self) -> list[str]:
        """Mark an existing share dir made by an older rxjobs; return the jobs it holds.

        Refused (NotAShareDirError naming them) while the directory holds
        anything but jobs and rxjobs' own entries.
        """

    @abstractmethod
    def makedir(self, path: str, exist_ok: bool = False) -> None:
        """Create one directory inside the share dir."""

    @abstractmethod
    def write_atomic(self, path: str, data: bytes) -> None:
        """Write a whole file so that readers see all of it or nothing."""

    @abstractmethod
    def write_exclusive(self, path: str, data: bytes = b"") -> None:
        """Create a file only if it does not exist yet; FileExistsError otherwise."""

    @abstractmethod
    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        """Read a whole file; FileNotFoundError if absent, ValueError beyond ``limit``
        or if it is not a regular file (a symlink is never followed)."""

    @abstractmethod
    def read_trusted(self, path: str) -> bytes:
        """Read a file to unpickle: UntrustedShareDirError unless nobody but the
        caller could have written it (docs/security.md)."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """Whether an entry is there (a symlink counts, and is not followed)."""

    @abstractmethod
    def remove_file(self, path: str) -> bool:
        """Remove one file; False if it was not there."""

    @abstractmethod
    def listdir(self, path: str) -> list[str]:
        """Base names in a directory, without temporary files; [] if absent."""

    @abstractmethod
    def job_entries(self, job_id: str) -> frozenset[str] | None:
        """Names directly in a job directory (``job.json``, ``tasks``, markers...) in one look;
        None when there is no job directory."""

    @abstractmethod
    def list_names(self, windowed: bool) -> list[str]:
        """Names at the top of the share dir that may be jobs (only real directories
        unless ``windowed``, for which :meth:`is_job_dir` checks the few kept)."""

    @abstractmethod
    def is_job_dir(self, job_id: str) -> bool:
        """Whether ``job_id`` names a real directory (not a symlink, not a file)."""

    @abstractmethod
    def usage(self, job_id: str) -> Usage:
        """Files and bytes in a job directory (symlinks counted, never followed)."""

    @abstractmethod
    def owner_uid(self, job_id: str) -> int | None:
        """The uid owning a job directory (None where storage has no owners, or it is gone)."""

    def snapshot(self, job_id: str, records: tuple[str, ...] = ("job.json", "status.json"),
                 sizes: bool = True) -> JobSnapshot | None:
        """One look at a job directory (see :class:`JobSnapshot`); None when there is none.

        Parameters
        ----------
        job_id
            The job (already validated).
        records
            Names of the records to read, when the directory holds them
            (each at most :data:`MAX_RECORD_BYTES`).
        sizes
            Also count the files and bytes under the directory.

        This generic form asks the other primitives; a store that can do it in
        one visit overrides it.
        """
        entries = self.job_entries(job_id)
        if entries is None:
            return None
        paths = self.paths(job_id, validated=True)
        found: dict[str, bytes | Exception] = {}
        # A job marked ``deleting`` reads as missing: its records are not read.
        for name in records if "deleting" not in entries else ():
            if name in entries:
                try:
                    found[name] = self.read_bytes(f"{paths.dir}/{name}", limit=MAX_RECORD_BYTES)
                except FileNotFoundError:
                    continue
                except (OSError, ValueError) as exc:
                    found[name] = exc
        return JobSnapshot(entries, self.owner_uid(job_id), self.usage(job_id) if sizes else None, found)

    def snapshots(self, job_ids: Iterable[str], records: tuple[str, ...] = ("job.json", "status.json"),
                  sizes: bool = True) -> Iterator[tuple[str, JobSnapshot | None]]:
        """:meth:`snapshot` of each job, in the order given, as ``(job_id, snapshot)``.

        The one way a survey of many jobs (listing, ``du``, a dry run) looks
        at them: a store that can take many snapshots faster together (one
        listing of the share dir, parallel reads, several threads) overrides
        it.  ``job_ids`` are already validated.  Consumed lazily: a caller
        that stops early leaves the rest unread.
        """
        for job_id in job_ids:
            yield job_id, self.snapshot(job_id, records, sizes)

    def detach_jobs(self, job_ids: Sequence[str]) -> list[str | Exception]:
        """:meth:`detach_job` of each job, in the order given: its token, or the exception
        it raised (JobNotFoundError: another cleaner got it first).

        A store whose removals are cheaper together overrides it; crash
        safety is the same as one by one: once this returns, each detached job
        reads as missing and :meth:`purge_trash` finishes it if the caller dies.
        """
        found: list[str | Exception] = []
        for job_id in job_ids:
            try:
                found.append(self.detach_job(job_id))
            except Exception as exc:  # one job's problem never stops the others
                found.append(exc)
        return found

    def delete_detached_jobs(self, tokens: Sequence[str], helpers: bool = True) -> list[Usage | Exception]:
        """:meth:`delete_detached` of each token of :meth:`detach_jobs`, in the order
        given: what it freed, or the exception it raised (the job stays detached,
        for :meth:`purge_trash`).

        ``helpers`` False: start no other program for it (a local share dir
        deletes big batches in ``find`` processes); a caller acting as another
        user after dropping root runs only what it was forked with.
        """
        freed: list[Usage | Exception] = []
        for token in tokens:
            try:
                freed.append(self.delete_detached(token))
            except Exception as exc:
                freed.append(exc)
        return freed

    @abstractmethod
    def detach_job(self, job_id: str, durable: bool = True) -> str:
        """First half of a removal: from here on the job reads as missing.

        Returns a token for :meth:`delete_detached`.  A crash in between
        leaves what :meth:`purge_trash` finishes.  JobNotFoundError if the
        job is not there (another cleaner got it first).  With ``durable``
        False, the detachment may not have reached the disk yet when this
        returns (a local share dir's rename, whose two directory fsyncs then
        wait for the second half): pass ``make_durable=True`` to
        :meth:`delete_detached`.
        """

    @abstractmethod
    def delete_detached(self, token: str, make_durable: bool = False) -> Usage:
        """Second half of a removal: delete what :meth:`detach_job` set aside (first making
        the detachment durable, with ``make_durable``, for a ``durable=False`` detach)."""

    @abstractmethod
    def purge_trash(self) -> list[str]:
        """Finish deletions a crashed cleanup left behind; return what was purged."""

    @abstractmethod
    def discard_new_job(self, job_id: str) -> None:
        """Remove a job directory that a failed submission just created (best effort,
        needing no room on disk)."""

    @abstractmethod
    def lock(self, job_id: str, create: bool = True) -> contextlib.AbstractContextManager[None]:
        """Hold the job's lock across processes (decisions and removals of one job).

        With ``create`` False (a read-only command) the store creates nothing to
        take it; a lock nobody ever made is not waited for.
        """

    @contextlib.contextmanager
    def lock_jobs(self, job_ids: Iterable[str], create: bool = True) -> Iterator[None]:
        """Hold the locks of many jobs at once (a batch of a cleanup), taken in one order.

        ``job_ids`` are already validated.  A store whose locks are shared
        between jobs (stripes) overrides it, so as never to wait on a lock it holds.
        """
        with contextlib.ExitStack() as held:
            for job_id in sorted(set(job_ids)):
                held.enter_context(self.lock(job_id, create))
            yield

    # -- what rxjobs doctor looks at -------------------------------------------------------

    def share_owner_uid(self) -> int | None:
        """The share dir's owner (None where storage has no owners, or it does not exist)."""
        return None

    def squatted_reserved(self) -> list[tuple[str, str]]:
        """Reserved entries (``.trash``, ``.locks``) that rxjobs did not make, with what is wrong
        and the fix; none where storage has no owners."""
        return []

    def set_aside_reserved(self, name: str) -> str:
        """Rename a squatted reserved entry out of the way (its new name); see
        :meth:`squatted_reserved`."""
        raise ValueError(f"{self.url} has no owners: no reserved entry can be squatted")

    @abstractmethod
    def top_entries(self) -> list[TopEntry]:
        """Every entry at the top of the share dir but the reserved ones, jobs included."""

    @abstractmethod
    def trash_entries(self) -> list[TrashEntry]:
        """Removals that began and have not finished, with whether their remover lives."""

    @abstractmethod
    def temp_files(self) -> list[TempFile]:
        """Temporary files of unfinished writes, at the top and in the caller's jobs."""

    @abstractmethod
    def remove_debris(self, name: str) -> Usage:
        """Remove a top-level entry that is not a job, as crash-safely as a job is removed.

        Raises
        ------
        ValueError
            ``name`` is reserved, not a plain name, or turned out to be a job
            (it is then left as it was).
        """

    @abstractmethod
    def remove_trash_entry(self, name: str) -> Usage:
        """Finish a removal that began (an entry of :meth:`trash_entries`) if its
        remover is dead; what was freed."""

    @abstractmethod
    def remove_temp_file(self, path: str) -> bool:
        """Remove a temporary file of :meth:`temp_files`; False if it was not there."""

    # -- built on them -----------------------------------------------------------------

    def write_json(self, path: str, obj: Any) -> None:
        self.write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode())

    def read_json(self, path: str) -> Any:
        """Read a JSON record; FileNotFoundError if absent, ValueError if it is not a sane one."""
        return loads_record(self.read_bytes(path, limit=MAX_RECORD_BYTES), path)

    def remove_job(self, job_id: str) -> Usage:
        """Remove a job directory crash-safely and return what it held.

        Raises
        ------
        JobNotFoundError
            The job directory is not there (e.g. another cleaner got it first).
        """
        return self.delete_detached(self.detach_job(job_id))

    def list_job_ids(self, start: datetime | None = None, end: datetime | None = None) -> list[str]:
        """Ids of the jobs in the share dir, oldest first (ids are time-ordered).

        Parameters
        ----------
        start, end
            A submit-time window (aware datetimes).  rxjobs ids
            (``rxJob_<UTC µs>_<hex>``) outside it are left out by their name
            alone; ids of any other form are all kept, for the caller to check
            by their record.  A narrow window so costs one directory listing,
            with nothing done per job outside it.
        """
        windowed = start is not None or end is not None
        names = self.list_names(windowed)
        if not names:
            return []
        if not windowed:
            return sorted(valid_ids(names))
        return sorted(job_id for job_id in ids_in_window(names, start, end) if self.is_job_dir(job_id))

