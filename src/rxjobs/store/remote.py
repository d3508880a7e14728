"""A share dir on any other fsspec filesystem: object stores (``s3://``, ``gs://``...)
and in-process ones (``memory://``).

Object stores have no directories and no atomic rename: a job directory is
the set of keys under its prefix, a single put is atomic, and a removal is
arbitrated by writing the ``deleting`` marker exclusively (a conditional put
on S3), then deleting every key, the marker last (docs/storage.md).  Nobody
owns a key here: whoever can write the prefix is trusted as its owner, as
the bucket's access policy says (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import psutil

from ..errors import JobNotFoundError, NotAShareDirError
from ..ids import is_job_id, validate_job_id
from ..sharedir import OBJECT_STORE_PROTOCOLS
from ..times import utc_now_iso
from .base import (
    MARKER,
    MAX_RECORD_BYTES,
    RESERVED,
    SHARE_FORMAT,
    TMP_MARK,
    JobSnapshot,
    Store,
    TempFile,
    TopEntry,
    TrashEntry,
    Usage,
    plain_name,
)
from .listing_cache import LISTINGS, RECORDS, Listed, Listing

T = TypeVar("T")

# A survey or removal of at least this many jobs of a share dir of unknown size lists the
# whole of it once (one request per 1000 keys); fewer jobs are listed prefix by prefix,
# concurrently, so that a page of a big share dir does not list all of it (see
# FsspecStore._lists_whole_share_dir for a share dir whose size is known).
WHOLE_LISTING_FROM_JOBS = 64
# Requests in flight at once in a bulk operation (s3fs' connection pool caps it further).
CONCURRENT_REQUESTS = 64
# Records of this many jobs are read before their snapshots are handed out: what is
# held at once stays bounded, and a caller that stops early leaves the rest unread.
SNAPSHOT_CHUNK = 1000


class FsspecStore(Store):
    """A share dir on an fsspec filesystem other than the local disk.

    Many jobs are looked at and removed together (:attr:`reads_in_bulk`,
    :meth:`detach_jobs`, :meth:`delete_detached_jobs`): one listing of the share dir gives every job's
    names and sizes, and reads, ``deleting`` markers and deletions of many
    jobs go out concurrently (s3fs is asynchronous; other filesystems get a
    few threads).
    """

    reads_in_bulk = True

    def __init__(self, share_dir: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(share_dir, options)
        import fsspec

        kwargs = dict(self.options)
        # Listings are never cached: other processes add and remove jobs, and a
        # stale listing would show removed jobs or hide new results.
        kwargs.setdefault("use_listings_cache", False)
        self.fs, root = fsspec.core.url_to_fs(self.url, **kwargs)
        protocol = self.fs.protocol
        protocols = {protocol} if isinstance(protocol, str) else set(protocol)
        # Object stores have no directories: a prefix exists while keys are under it.
        self.is_object_store = bool(protocols & OBJECT_STORE_PROTOCOLS)
        self.root = root.rstrip("/")
        self._checked = False
        # How many names the share dir's top held at its last listing (None: not listed yet):
        # tells whether a survey of some jobs should list all of it or their prefixes.
        self._top_count: int | None = None
        # Keys of jobs detached by detach_jobs, listed after their markers were written, for
        # delete_detached_jobs (which lists again if a token is not here).
        self._detached: dict[str, dict[str, int]] = {}
        self._detached_lock = threading.Lock()
        # The listing purge_trash looked at, for the survey that follows it (see purge_trash).
        self._recent: Listing | None = None
        # Which filesystem records are cached for (RecordCache): protocol and options, hashed.
        self._cache_scope = hashlib.sha256(json.dumps(
            [protocol, self.options], sort_keys=True, default=str).encode()).hexdigest()

    # -- the share dir itself ---------------------------------------------------------

    def _check_marked(self, names: list[str] | None = None) -> bool:
        """NotAShareDirError if the prefix holds things but no marker; False if it is empty.

        ``names`` are the share dir's top names if the caller just listed them.
        """
        if self._checked:
            return True
        if names is None:
            names = self.listdir(self.root)
        if not names:
            return False
        if MARKER not in names:
            others = sorted(n for n in names if n not in RESERVED)
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise NotAShareDirError(
                f"{self.url} is not an rxjobs share dir: it has no {MARKER} marker and "
                f"holds other things ({shown}). If it is a share dir made by an older rxjobs, check "
                f"it and adopt it with `rxjobs adopt` (`rxjobs --share-dir {self.url} adopt`); "
                "otherwise give the right share dir")
        self._checked = True
        return True

    def _write_marker(self) -> None:
        data = json.dumps({"rxjobs": "share dir", "format": SHARE_FORMAT, "created": utc_now_iso()},
                          indent=1).encode()
        with contextlib.suppress(FileExistsError):
            self.write_exclusive(f"{self.root}/{MARKER}", data)
        self._checked = True

    def ensure_root(self) -> None:
        if not self._check_marked():
            self.fs.makedirs(self.root, exist_ok=True)
            self._write_marker()

    def adopt(self) -> list[str]:
        names = [n for n in self.listdir(self.root) if n not in RESERVED]
        jobs = [n for n in names if is_job_id(n) and self._names_itself(n)]
        debris = sorted(set(names) - set(jobs))
        if debris:
            shown = ", ".join(debris[:10]) + (", ..." if len(debris) > 10 else "")
            raise NotAShareDirError(f"{self.url} holds {len(debris)} entries that are "
                                    f"not rxjobs jobs ({shown}); it is not adopted. Move them out "
                                    "of it first, or choose another share dir")
        self._write_marker()
        return sorted(jobs)

    def _names_itself(self, name: str) -> bool:
        try:
            record = self.read_json(f"{self.root}/{name}/job.json")
        except (OSError, ValueError):
            return False
        return isinstance(record, dict) and record.get("job_id") == name

    def _inside(self, path: str) -> str:
        prefix = self.root + "/"
        if path != self.root and (not path.startswith(prefix) or any(
                p in ("", ".", "..") for p in path[len(prefix):].split("/"))):
            raise ValueError(f"{path} is not a plain path inside share dir {self.url}")
        return path

    # -- the basic operations ---------------------------------------------------------

    def makedir(self, path: str, exist_ok: bool = False) -> None:
        self._inside(path)
        if not exist_ok and self.fs.exists(path):
            raise FileExistsError(path)
        self.fs.makedirs(path, exist_ok=True)

    def write_atomic(self, path: str, data: bytes) -> None:
        # A single put is atomic on object stores and in-process stores.
        self.fs.pipe_file(self._inside(path), data)

    def write_exclusive(self, path: str, data: bytes = b"") -> None:
        """On S3 a conditional put (``If-None-Match: *``): exactly one writer succeeds."""
        self._inside(path)
        try:
            self.fs.pipe_file(path, data, mode="create")
        except TypeError:  # a backend without exclusive creation: best effort
            if self.fs.exists(path):
                raise FileExistsError(path) from None
            self.fs.pipe_file(path, data)

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        self._inside(path)
        try:
            if limit is None:
                return bytes(self.fs.cat_file(path))
            # One ranged read (a single GET on object stores), not a size query first.
            return _within(path, bytes(self.fs.cat_file(path, start=0, end=limit + 1)), limit)
        except (FileNotFoundError, IsADirectoryError):
            raise
        except OSError as exc:  # some backends raise a bare OSError for absent keys
            raise FileNotFoundError(path) from exc

    def read_trusted(self, path: str) -> bytes:
        # No owners here: the bucket's access policy says who may write (docs/security.md).
        return self.read_bytes(path)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._inside(path)))

    def remove_file(self, path: str) -> bool:
        try:
            self.fs.rm_file(self._inside(path))
            return True
        except FileNotFoundError:
            return False

    def listdir(self, path: str) -> list[str]:
        try:
            names = [e.rstrip("/").rsplit("/", 1)[-1] for e in self.fs.ls(self._inside(path), detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [n for n in names if TMP_MARK not in n]

    def job_entries(self, job_id: str) -> frozenset[str] | None:
        path = self.paths(job_id).dir
        try:
            listed = self.fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return None
        names = [str(e["name"]).rstrip("/") for e in listed]
        if names == [path] and listed[0].get("type") != "directory":
            return None  # a key named like a job, not a prefix: no job directory
        if not names and not self.fs.isdir(path):
            return None  # object stores have no empty directories: no keys, no job
        return frozenset(n for n in (n.rsplit("/", 1)[-1] for n in names) if TMP_MARK not in n)

    def list_names(self, windowed: bool) -> list[str]:
        names = self.listdir(self.root)
        self._top_count = len(names)
        if names:
            self._check_marked(names)
        return names

    # -- many jobs at once ------------------------------------------------------------

    def _concurrently(self, coroutine: Callable[[str], Awaitable[T]], plain: Callable[[str], T],
                      paths: Sequence[str]) -> list[T | Exception]:
        """Call ``coroutine`` (on an asynchronous filesystem: s3fs) or ``plain`` (elsewhere)
        on each path, concurrently: each result, or the exception it raised, in order.

        On s3fs up to :data:`CONCURRENT_REQUESTS` requests are in flight on its
        event loop; another filesystem gets a few threads.
        """
        if not paths:
            return []
        if getattr(self.fs, "async_impl", False):
            import fsspec.asyn

            async def run_all() -> list[T | Exception]:
                gate = asyncio.Semaphore(CONCURRENT_REQUESTS)

                async def one(path: str) -> T | Exception:
                    async with gate:
                        try:
                            return await coroutine(path)
                        except Exception as exc:  # each path's outcome is its own
                            return exc

                return list(await asyncio.gather(*(one(p) for p in paths)))

            return list(fsspec.asyn.sync(self.fs.loop, run_all))

        def call(path: str) -> T | Exception:
            try:
                return plain(path)
            except Exception as exc:
                return exc

        if len(paths) == 1:
            return [call(paths[0])]
        with ThreadPoolExecutor(max_workers=min(8, len(paths))) as pool:
            return list(pool.map(call, paths))

    def _lists_whole_share_dir(self, n_jobs: int) -> bool:
        """Whether one listing of the share dir beats listing ``n_jobs`` prefixes.

        A listing request returns 1000 keys, a job holds a few: when the share
        dir's size is known (from a listing of it), the whole of it is listed
        unless it holds a hundred times more jobs than asked for; when it is
        not, only for :data:`WHOLE_LISTING_FROM_JOBS` jobs or more.
        """
        if self._top_count is not None:
            return n_jobs * 100 >= self._top_count
        return n_jobs >= WHOLE_LISTING_FROM_JOBS

    def _job_keys(self, job_ids: Sequence[str], recent: bool = False) -> dict[str, dict[str, Listed]]:
        """Every key of each job, as ``{path inside the job: (size, version)}`` ({} for none).

        One paginated listing of the whole share dir for many jobs, else one
        listing per job's prefix, all at once.  With ``recent`` (a survey, not
        a removal), the listing :meth:`purge_trash` just looked at serves, once
        (a job it does not show is looked at afresh), and a fresh listing of an
        object store is offered to a cleanup that may follow (:data:`LISTINGS`).
        """
        prefix = self.root + "/"
        found: dict[str, dict[str, Listed]] = {job_id: {} for job_id in job_ids}
        if self._lists_whole_share_dir(len(found)):
            kept, self._recent = self._recent, None
            if not (recent and kept is not None and kept.young()):
                kept = None
            listing = kept or self._listing_by_job(set(found))
            if kept is None and recent and self.is_object_store:
                LISTINGS.offer(self._cache_scope, self.root, listing)
            for job_id, keys in found.items():
                keys.update(listing.by_job.get(job_id, {}))
            if kept is not None:
                # Jobs the kept listing does not show may be newer than it: looked at afresh.
                unseen = [job_id for job_id in found if job_id not in listing.by_job]
                if unseen:
                    found.update(self._job_keys(unseen))
            return found
        dirs = [f"{prefix}{job_id}" for job_id in found]
        fs = self.fs
        listings = self._concurrently(lambda d: fs._find(d, detail=True),
                                      lambda d: fs.find(d, detail=True), dirs)
        for job_id, folder, listed in zip(found, dirs, listings, strict=True):
            if isinstance(listed, FileNotFoundError):
                continue
            if isinstance(listed, Exception):
                raise listed
            inside = folder + "/"
            found[job_id] = {key[len(inside):]: _listed(info) for key, info in listed.items()
                             if key.startswith(inside) and len(key) > len(inside)
                             and info.get("type", "file") != "directory"}
        return found

    def _listing_by_job(self, wanted: set[str] | None = None) -> Listing:
        """One paginated listing of the whole share dir, grouped by the job (top name) holding
        each key; only the keys of ``wanted`` jobs are kept, if given."""
        prefix = self.root + "/"
        started = time.monotonic()
        by_job: dict[str, dict[str, Listed]] = {}
        try:
            listed = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return Listing(started, by_job, 0, 0, True)
        tops = set()
        complete = True
        for key, info in listed.items():
            job_id, sep, rel = key[len(prefix):].partition("/")
            tops.add(job_id)
            if not (sep and rel and info.get("type", "file") != "directory"):
                continue
            if wanted is None or job_id in wanted:
                by_job.setdefault(job_id, {})[rel] = _listed(info)
            elif is_job_id(job_id):
                complete = False
        self._top_count = len(tops)
        return Listing(started, by_job, len(listed), len(tops), complete)

    def _read_records(self, wanted: Sequence[tuple[str, Listed]], limit: int) -> list[bytes | Exception]:
        """Read each record (at most ``limit`` bytes), concurrently, as :meth:`read_bytes`
        would: its bytes or the error reading it; FileNotFoundError for an absent one.

        ``wanted`` pairs each path with what the listing said of it: a record
        read earlier whose listed version (ETag and modification time) is the
        same is not read again (see :class:`RecordCache`).
        """
        cached = [RECORDS.get(self._cache_scope, path, listed) for path, listed in wanted]
        missing = [path for (path, _), data in zip(wanted, cached, strict=True) if data is None]
        fs = self.fs
        fetched = iter(self._concurrently(lambda p: fs._cat_file(p, start=0, end=limit + 1),
                                          lambda p: fs.cat_file(p, start=0, end=limit + 1), missing))
        read = [data if data is not None else next(fetched) for data in cached]
        outcomes: list[bytes | Exception] = []
        for (path, listed), data in zip(wanted, read, strict=True):
            if isinstance(data, (FileNotFoundError, IsADirectoryError)):
                outcomes.append(data)
            elif isinstance(data, OSError):  # some backends raise a bare OSError for absent keys
                outcomes.append(FileNotFoundError(path))
            elif isinstance(data, Exception):
                raise data
            else:
                try:
                    outcomes.append(_within(path, bytes(data), limit))
                    RECORDS.put(self._cache_scope, path, listed, bytes(data))
                except ValueError as exc:
                    outcomes.append(exc)
        return outcomes

    def snapshots(self, job_ids: Iterable[str], records: tuple[str, ...] = ("job.json", "status.json"),
                  sizes: bool = True) -> Iterator[tuple[str, JobSnapshot | None]]:
        """Snapshots of many jobs: one listing, records read concurrently.

        Equal to :meth:`~rxjobs.store.base.Store.snapshot` of each job: names
        and sizes come from one paginated listing of the share dir (or of each
        job's prefix, for a few jobs), temporary names left out; a record
        larger than :data:`MAX_RECORD_BYTES` by its listed size is refused
        without reading it, and the others are read concurrently (one GET
        each).  A job marked ``deleting`` has its names (so it reads as
        missing) and no records read.  Records are read :data:`SNAPSHOT_CHUNK`
        jobs at a time, as the caller consumes them; the listing itself holds
        every key's size of the jobs asked for.
        """
        ids = list(job_ids)
        if not ids:
            return
        keys = self._job_keys(ids, recent=True)
        for start in range(0, len(ids), SNAPSHOT_CHUNK):
            chunk = ids[start:start + SNAPSHOT_CHUNK]
            entries: dict[str, frozenset[str]] = {}
            wanted: list[tuple[str, str, str, Listed]] = []  # job, record, path, listed
            refused: dict[tuple[str, str], Exception] = {}
            for job_id in chunk:
                names = frozenset(n for n in (rel.split("/", 1)[0] for rel in keys[job_id])
                                  if TMP_MARK not in n)
                if not names:
                    continue
                entries[job_id] = names
                if "deleting" in names:
                    continue  # reads as missing: nothing more to read
                for name in records:
                    listed = keys[job_id].get(name)
                    if listed is None:
                        continue  # absent, or a prefix (which no read could return)
                    path = f"{self.root}/{job_id}/{name}"
                    if listed[0] > MAX_RECORD_BYTES:
                        refused[job_id, name] = _too_large(path, MAX_RECORD_BYTES)
                    else:
                        wanted.append((job_id, name, path, listed))
            read = self._read_records([(path, listed) for _, _, path, listed in wanted], MAX_RECORD_BYTES)
            found: dict[str, dict[str, bytes | Exception]] = {job_id: {} for job_id in entries}
            for (job_id, name), exc in refused.items():
                found[job_id][name] = exc
            for (job_id, name, _, _), data in zip(wanted, read, strict=True):
                if not isinstance(data, FileNotFoundError):  # removed since the listing
                    found[job_id][name] = data
            for job_id in chunk:
                names_of = entries.get(job_id)
                if names_of is None:
                    yield job_id, None
                    continue
                job_keys = keys[job_id]
                usage = Usage(len(job_keys), sum(size for size, _ in job_keys.values())) if sizes else None
                yield job_id, JobSnapshot(names_of, None, usage,
                                          {n: found[job_id][n] for n in records if n in found[job_id]})

    def is_job_dir(self, job_id: str) -> bool:
        return bool(self.fs.isdir(f"{self.root}/{job_id}"))

    def usage(self, job_id: str) -> Usage:
        found = self._objects(self.paths(job_id).dir)
        return Usage(len(found), sum(found.values()))

    def owner_uid(self, job_id: str) -> int | None:
        return None

    def _objects(self, path: str) -> dict[str, int]:
        """Every file under ``path`` with its size (one paginated listing on object stores)."""
        try:
            found = self.fs.find(path, detail=True)
        except FileNotFoundError:
            return {}
        return {name: int(info.get("size") or 0) for name, info in found.items()
                if info.get("type", "file") != "directory"}

    def detach_job(self, job_id: str, durable: bool = True) -> str:
        """Write the job's ``deleting`` marker exclusively: from then on the job reads as
        missing, and this caller is its one remover.  The token is the job id.  The
        marker is durable once written (``durable`` changes nothing)."""
        paths = self.paths(job_id)
        LISTINGS.withdraw(self._cache_scope, self.root)
        try:
            self.write_exclusive(paths.deleting, _remover_identity())
        except FileExistsError:
            raise JobNotFoundError(f"job {job_id} is already being removed from {self.url}") from None
        rest = [k for k in self._objects(paths.dir) if k != paths.deleting]
        if not rest and (self.is_object_store or set(self.listdir(paths.dir)) <= {"deleting"}):
            self.remove_file(paths.deleting)  # removed meanwhile by another remover (or never there)
            if not self.is_object_store:
                self._remove_tree(paths.dir)
            raise JobNotFoundError(self.not_found(job_id))
        return job_id

    def delete_detached(self, token: str, make_durable: bool = False) -> Usage:
        """Delete every object of a job marked ``deleting`` in batched requests, the marker last."""
        paths = self.paths(token)
        found = self._objects(paths.dir)
        found.pop(paths.deleting, None)
        if found:
            self.fs.rm(sorted(found))  # one request per 1000 keys on S3
        self._finish_removal(token)
        return Usage(len(found), sum(found.values()))

    def detach_jobs(self, job_ids: Sequence[str]) -> list[str | Exception]:
        """Write the ``deleting`` marker of every job at once (conditional puts, concurrently),
        then list them all once.

        As :meth:`detach_job` does for one job: a marker that is already
        there means another remover owns the job (JobNotFoundError), and a
        job with nothing but this marker left was removed meanwhile (its
        marker is deleted again, in one batched request; JobNotFoundError).
        The listing is kept for :meth:`delete_detached_jobs`.
        """
        if not self.is_object_store:
            return super().detach_jobs(job_ids)
        LISTINGS.withdraw(self._cache_scope, self.root)
        paths = [self.paths(job_id) for job_id in job_ids]
        identity = _remover_identity()
        fs = self.fs
        written = self._concurrently(lambda m: _create_async(fs, m, identity),
                                     lambda m: self.write_exclusive(m, identity),
                                     [p.deleting for p in paths])
        outcome: list[str | Exception] = []
        mine = []
        for job_id, result in zip(job_ids, written, strict=True):
            if isinstance(result, FileExistsError):
                outcome.append(JobNotFoundError(f"job {job_id} is already being removed from {self.url}"))
            elif isinstance(result, Exception):
                outcome.append(result)
            else:
                mine.append(job_id)
                outcome.append(job_id)
        try:
            listed = self._job_keys(mine)
        except Exception as exc:  # the markers stay: purge_trash finishes those jobs
            return [exc if token in mine else token for token in outcome]
        gone = []
        with self._detached_lock:
            for job_id in mine:
                rest = {rel: size for rel, (size, _) in listed[job_id].items() if rel != "deleting"}
                if rest:
                    self._detached[job_id] = rest
                else:
                    gone.append(job_id)
        if gone:
            self._delete_keys([self.paths(job_id, validated=True).deleting for job_id in gone])
            outcome = [JobNotFoundError(self.not_found(t)) if isinstance(t, str) and t in gone else t
                       for t in outcome]
        return outcome

    def delete_detached_jobs(self, tokens: Sequence[str], helpers: bool = True) -> list[Usage | Exception]:
        """Delete every key of jobs marked ``deleting`` (1000 keys a request, a few
        requests at once), list them again and delete what a late writer put,
        then delete their markers, together, last."""
        if not self.is_object_store:
            return super().delete_detached_jobs(tokens, helpers)
        with self._detached_lock:
            known = {t: self._detached.pop(t) for t in tokens if t in self._detached}
        unknown = [t for t in tokens if t not in known]
        if unknown:
            try:
                known.update({t: {rel: size for rel, (size, _) in keys.items() if rel != "deleting"}
                              for t, keys in self._job_keys(unknown).items()})
            except Exception as exc:
                return [exc for _ in tokens]
        try:
            self._delete_keys([f"{self.root}/{t}/{rel}" for t in known for rel in known[t]])
            self._finish_removals(list(tokens))
        except Exception as exc:  # the markers stay: purge_trash finishes these jobs
            return [exc for _ in tokens]
        return [Usage(len(known[t]), sum(known[t].values())) for t in tokens]

    def _delete_keys(self, keys: Sequence[str]) -> None:
        """Delete keys in batched requests (s3fs: one DeleteObjects per 1000 keys, a few
        at once; nothing is asked for the keys first)."""
        if keys:
            self.fs.rm(sorted(keys))

    def _finish_removals(self, job_ids: Sequence[str]) -> None:
        """Delete what is left of jobs marked ``deleting``, their markers last.

        As :meth:`_finish_removal_at` does for one job, for all of them with
        one listing a round: a marker goes only once a listing shows nothing
        else in its job, so a late writer's key is never left without it.
        """
        pending = list(dict.fromkeys(job_ids))
        for _ in range(5):
            listed = self._job_keys(pending)
            rest = [f"{self.root}/{job_id}/{rel}" for job_id in pending
                    for rel in listed[job_id] if rel != "deleting"]
            done = [job_id for job_id in pending if set(listed[job_id]) <= {"deleting"}]
            self._delete_keys([f"{self.root}/{job_id}/deleting" for job_id in done
                               if "deleting" in listed[job_id]])
            pending = [job_id for job_id in pending if job_id not in set(done)]
            if not pending:
                return
            self._delete_keys(rest)
        raise OSError(f"could not empty {len(pending)} jobs of {self.url} ({', '.join(pending[:3])}...): "
                      "objects keep appearing in them")

    def _finish_removal(self, job_id: str) -> None:
        """Delete what is left of a job marked ``deleting``, the marker last.

        The marker goes only once a listing shows nothing else, so a job is
        never left half-deleted without it, even if a late writer (a worker
        of a force-removed job) put a file meanwhile.
        """
        paths = self.paths(job_id)
        self._finish_removal_at(paths.dir)

    def _finish_removal_at(self, folder: str) -> None:
        marker = f"{folder}/deleting"
        for _ in range(5):
            rest = sorted(k for k in self._objects(folder) if k != marker)
            if not rest:
                if self.is_object_store:
                    self.remove_file(marker)
                else:  # empty directories are left: remove them with the marker
                    self._remove_tree(folder)
                return
            self.fs.rm(rest)
        raise OSError(f"could not empty {folder}: objects keep appearing in it")

    def _remove_tree(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)

    def purge_trash(self) -> list[str]:
        """Finish every removal an interrupted cleanup left: one listing of the whole
        share dir finds every ``<job>/deleting`` marker.

        On an object store that listing is kept for a few seconds
        (:data:`REUSE_LISTING_S`), for the survey of many jobs that a cleanup
        makes next (:meth:`snapshots`), which so does not list the share dir
        a second time.  And the listing itself may be the one a survey of this
        process made a few seconds before (:data:`LISTINGS`: in
        ``rx_cleanup_jobs(rx_get_jobs(cc))``, the listing of
        ``rx_get_jobs``).  A listing a moment old is as good to decide on as a
        fresh one: removals are arbitrated by the exclusive marker, written
        after the decision either way (see ``rxjobs.cleanup``), and a job the
        listing does not show is looked at afresh.  A marker left since is
        finished by the next cleanup.
        """
        listing = LISTINGS.take(self._cache_scope, self.root) if self.is_object_store else None
        if listing is None:
            listing = self._listing_by_job()
        else:
            self._top_count = listing.top_count
        by_job = listing.by_job
        marked = sorted(job_id for job_id, keys in by_job.items() if "deleting" in keys)
        purged = [job_id for job_id in marked if is_job_id(job_id)]
        if self.is_object_store:
            if purged:
                self._finish_removals(purged)  # all together: one listing a round
            for job_id in purged:
                by_job.pop(job_id, None)
            self._recent = listing
        else:
            for job_id in purged:
                self._finish_removal(job_id)
        return purged

    def discard_new_job(self, job_id: str) -> None:
        path = self.paths(job_id).dir
        with contextlib.suppress(OSError):
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

    @contextlib.contextmanager
    def lock(self, job_id: str, create: bool = True) -> Iterator[None]:
        """No cross-process lock here: the exclusive ``deleting`` marker arbitrates
        removals, and readers check it before and after reading."""
        validate_job_id(job_id)
        yield

    # -- what rxjobs doctor looks at -----------------------------------------------------

    def top_entries(self) -> list[TopEntry]:
        try:
            listed = self.fs.ls(self.root, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for info in listed:
            name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
            if name in RESERVED or not name:
                continue
            if info.get("type") == "directory":
                path = f"{self.root}/{name}"
                is_job = is_job_id(name) and self._names_itself(name)
                try:
                    keys = self.fs.find(path, detail=True)
                except FileNotFoundError:
                    keys = {}
                times = [t for t in (_mtime(i) for i in keys.values()) if t is not None]
                found.append(TopEntry(name, "directory", is_job, None, max(times) if times else None))
            else:
                found.append(TopEntry(name, "file", False, None, _mtime(info)))
        return sorted(found, key=lambda e: e.name)

    def trash_entries(self) -> list[TrashEntry]:
        depth = self.root.count("/") + 2
        found = []
        for key, info in sorted(self.fs.find(self.root, detail=True).items()):
            if not key.endswith("/deleting") or key.count("/") != depth:
                continue
            name = key[len(self.root) + 1:].split("/", 1)[0]
            try:
                remover = json.loads(self.read_bytes(key, limit=4096) or b"null")
            except (OSError, ValueError):
                remover = None
            found.append(TrashEntry(name, _alive(remover), True, _mtime(info)))
        return found

    def temp_files(self) -> list[TempFile]:
        return []  # a put is whole: there are no temporary files

    def remove_debris(self, name: str) -> Usage:
        """A key is deleted at once; a prefix is marked ``deleting`` exclusively, then its
        keys are deleted, the marker last, as a job is removed."""
        plain_name(name, self.url)
        path = f"{self.root}/{name}"
        if self.fs.isfile(path):
            size = int(self.fs.info(path).get("size") or 0)
            return Usage(1, size) if self.remove_file(path) else Usage()
        if self._names_itself(name):
            raise ValueError(f"{path} is a job: left alone")
        self.write_exclusive(f"{path}/deleting", _remover_identity())
        found = self._objects(path)
        found.pop(f"{path}/deleting", None)
        self._finish_removal_at(path)
        return Usage(len(found), sum(found.values()))

    def remove_trash_entry(self, name: str) -> Usage:
        plain_name(name, self.url)
        path = f"{self.root}/{name}"
        found = self._objects(path)
        found.pop(f"{path}/deleting", None)
        self._finish_removal_at(path)
        return Usage(len(found), sum(found.values()))

    def remove_temp_file(self, path: str) -> bool:
        return False


def _listed(info: Mapping[str, Any]) -> Listed:
    """A listing entry's size and version: its ETag and modification time ("" if unknown)."""
    etag, modified = info.get("ETag") or info.get("etag"), _mtime(dict(info))
    version = f"{etag}@{modified}" if etag and modified is not None else ""
    return int(info.get("size") or 0), version


def _too_large(path: str, limit: int) -> ValueError:
    return ValueError(f"{path} is larger than the {limit} bytes allowed")


def _within(path: str, data: bytes, limit: int) -> bytes:
    """``data`` read from ``path`` (asking for ``limit + 1`` bytes), if no more than ``limit``."""
    if len(data) > limit:
        raise _too_large(path, limit)
    return data


async def _create_async(fs: Any, path: str, data: bytes) -> None:
    """Exclusive creation on an asynchronous filesystem, as :meth:`FsspecStore.write_exclusive`."""
    try:
        await fs._pipe_file(path, data, mode="create")
    except TypeError:  # a backend without exclusive creation: best effort
        if await fs._exists(path):
            raise FileExistsError(path) from None
        await fs._pipe_file(path, data)


def _remover_identity() -> bytes:
    """What a ``deleting`` marker says of its writer: host, pid and start time."""
    me = psutil.Process()
    return json.dumps({"host": socket.gethostname(), "pid": me.pid,
                       "create_time": me.create_time()}).encode()


def _alive(remover: Any) -> bool | None:
    """Whether the writer of a ``deleting`` marker runs (None: unknown, another host or an
    empty marker from an older rxjobs)."""
    if not isinstance(remover, dict) or remover.get("host") != socket.gethostname():
        return None
    try:
        proc = psutil.Process(int(remover["pid"]))
        return abs(proc.create_time() - float(remover["create_time"])) <= 0.05
    except (psutil.NoSuchProcess, KeyError, TypeError, ValueError):
        return False
    except psutil.AccessDenied:
        return True


def _mtime(info: dict[str, Any]) -> float | None:
    """A listing entry's modification time (POSIX seconds), whatever the backend calls it."""
    for field in ("LastModified", "last_modified", "mtime", "created"):
        value = info.get(field)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
    return None
