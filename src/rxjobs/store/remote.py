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

import contextlib
import json
import socket
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import psutil

from ..errors import JobNotFoundError, NotAShareDirError
from ..ids import is_job_id, validate_job_id
from ..sharedir import OBJECT_STORE_PROTOCOLS
from ..times import utc_now_iso
from .base import (
    MARKER,
    RESERVED,
    SHARE_FORMAT,
    TMP_MARK,
    Store,
    TempFile,
    TopEntry,
    TrashEntry,
    Usage,
    plain_name,
)


class FsspecStore(Store):
    """A share dir on an fsspec filesystem other than the local disk."""

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

    # -- the share dir itself ---------------------------------------------------------

    def _check_marked(self) -> bool:
        """NotAShareDirError if the prefix holds things but no marker; False if it is empty."""
        if self._checked:
            return True
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
            data = bytes(self.fs.cat_file(path, start=0, end=limit + 1))
            if len(data) > limit:
                raise ValueError(f"{path} is larger than the {limit} bytes allowed")
            return data
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
            names = [e.rstrip("/").rsplit("/", 1)[-1] for e in self.fs.ls(path, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not names and not self.fs.isdir(path):
            return None  # object stores have no empty directories: no keys, no job
        return frozenset(n for n in names if TMP_MARK not in n)

    def list_names(self, windowed: bool) -> list[str]:
        names = self.listdir(self.root)
        if names:
            self._check_marked()
        return names

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

    def detach_job(self, job_id: str) -> str:
        """Write the job's ``deleting`` marker exclusively: from then on the job reads as
        missing, and this caller is its one remover.  The token is the job id."""
        paths = self.paths(job_id)
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

    def delete_detached(self, token: str) -> Usage:
        """Delete every object of a job marked ``deleting`` in batched requests, the marker last."""
        paths = self.paths(token)
        found = self._objects(paths.dir)
        found.pop(paths.deleting, None)
        if found:
            self.fs.rm(sorted(found))  # one request per 1000 keys on S3
        self._finish_removal(token)
        return Usage(len(found), sum(found.values()))

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
        # One listing of the whole share dir finds every ``<job>/deleting`` marker.
        depth = self.root.count("/") + 2
        marked = sorted({
            key[len(self.root) + 1:].split("/", 1)[0] for key in self._objects(self.root)
            if key.endswith("/deleting") and key.count("/") == depth
        })
        purged = []
        for job_id in marked:
            if is_job_id(job_id):
                self._finish_removal(job_id)
                purged.append(job_id)
        return purged

    def discard_new_job(self, job_id: str) -> None:
        path = self.paths(job_id).dir
        with contextlib.suppress(OSError):
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

    @contextlib.contextmanager
    def lock(self, job_id: str) -> Iterator[None]:
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
