"""What an fsspec share dir keeps between calls: the last whole listing, and records read.

As fsspec keeps its listings cache in ``dircache.py`` apart from each
filesystem, :class:`~rxjobs.store.remote.FsspecStore` keeps here what spares
it requests: the listing a survey made, offered once to the cleanup that may
follow it (:data:`LISTINGS`), and records whose listing shows they have not
changed since they were read (:data:`RECORDS`).  Both are per process and
bounded; nothing here is taken on trust without a fresh listing of the
caller's own (docs/storage.md).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

#: What a listing says of a key: its size, and its version (ETag and modification time;
#: "" when the filesystem gives none).
Listed = tuple[int, str]
# A listing of the whole share dir serves the cleanup that follows it if no older than this
# (see FsspecStore.purge_trash).
REUSE_LISTING_S = 10.0
# A survey's listing of at most this many keys is kept for such a cleanup (about 11 MB).
OFFER_MAX_KEYS = 50_000


@dataclass(frozen=True)
class Listing:
    """One listing of a whole share dir: every key's size and version, by job."""

    started: float  # time.monotonic() when the listing began
    by_job: dict[str, dict[str, Listed]]
    keys: int  # how many keys it held (of every job, kept or not)
    top_count: int  # how many names the share dir's top held
    complete: bool  # every job's keys are in by_job, not only those of the jobs asked for

    def young(self) -> bool:
        """Whether it began no more than :data:`REUSE_LISTING_S` ago: a cleanup may use it."""
        return time.monotonic() - self.started <= REUSE_LISTING_S


class RecentListings:
    """The last listing of a whole share dir that a survey made, offered once to the cleanup
    that may follow it (``rx_cleanup_jobs(rx_get_jobs(cc))``), which then does not list the
    share dir again.

    One listing is held (the last offered), of at most :data:`OFFER_MAX_KEYS`
    keys, and only if it holds every job's keys; it is taken once, by a
    cleanup of the same share dir reached with the same options, and not
    after :data:`REUSE_LISTING_S` from its start.  Removing jobs from the
    share dir (:meth:`~rxjobs.store.remote.FsspecStore.detach_jobs`) withdraws it.
    """

    def __init__(self) -> None:
        self._held: tuple[str, str, Listing] | None = None
        self._lock = threading.Lock()

    def offer(self, scope: str, root: str, listing: Listing) -> None:
        with self._lock:
            self._held = (scope, root, listing) if listing.complete and listing.keys <= OFFER_MAX_KEYS \
                else None

    def take(self, scope: str, root: str) -> Listing | None:
        """The listing of this share dir if one is held and young enough, given up;
        else None (a listing of another share dir stays held)."""
        with self._lock:
            if self._held is None or self._held[:2] != (scope, root):
                return None
            listing, self._held = self._held[2], None
        return listing if listing.young() else None

    def withdraw(self, scope: str, root: str) -> None:
        with self._lock:
            if self._held is not None and self._held[:2] == (scope, root):
                self._held = None

    def clear(self) -> None:
        """Forget the held listing (a benchmark measures a cold start so)."""
        with self._lock:
            self._held = None


# The listing of this process's last survey, for all its stores.
LISTINGS = RecentListings()


class RecordCache:
    """Records read recently, by the version their listing gave (ETag and modification time).

    A cleanup right after a listing (``rx_cleanup_jobs(rx_get_jobs(cc))``)
    reads the same ``job.json`` files: a record whose fresh listing shows the
    same size, ETag and modification time as when it was read is the same
    object (a put changes its modification time, and its ETag with its
    content), so it is not read again.  Nothing is taken on trust: the
    listing that validates an entry is always the caller's own, just made.
    Bounded in bytes, the least recently used entries go first.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._held = 0
        self._entries: OrderedDict[tuple[str, str, Listed], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, scope: str, path: str, listed: Listed) -> bytes | None:
        if not listed[1]:
            return None
        with self._lock:
            data = self._entries.get((scope, path, listed))
            if data is not None:
                self._entries.move_to_end((scope, path, listed))
            return data

    def clear(self) -> None:
        """Forget every record (a benchmark measures a cold start so)."""
        with self._lock:
            self._entries.clear()
            self._held = 0

    def put(self, scope: str, path: str, listed: Listed, data: bytes) -> None:
        if not listed[1] or len(data) != listed[0] or len(data) > self.max_bytes // 16:
            return
        with self._lock:
            if (scope, path, listed) in self._entries:
                return
            self._entries[scope, path, listed] = data
            self._held += len(data)
            while self._held > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._held -= len(dropped)


# Records of this process, for all its stores; a few thousand job.json files.
RECORDS = RecordCache(32 << 20)


__all__ = ["LISTINGS", "OFFER_MAX_KEYS", "RECORDS", "REUSE_LISTING_S", "Listed", "Listing", "RecentListings",
           "RecordCache"]
