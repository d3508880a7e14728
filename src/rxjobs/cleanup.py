"""Cleanup: the rules of docs/design.md#cleanup-rules as a pure decision, and the removal.

:func:`decide_cleanup` says what to do to one job from its state alone; it is
tested against the whole table.  :func:`cleanup_jobs` gathers the facts a
batch of jobs at a time, applies the decisions (one job's problem never stops
the others) and removes job directories crash-safely through the store.
"""

from __future__ import annotations

import contextlib
import enum
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from . import jobs
from .errors import JobNotFoundError
from .ids import validate_job_id
from .status import RxRemoteJobStatus
from .store import JobSnapshot, Store, Usage


class RxCleanupWarning(UserWarning):
    """A job was kept by cleanup; the message says how to remove it.

    ``job_id`` names the job (None for a warning about the share dir itself).
    """

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class Action(str, enum.Enum):
    REMOVE = "remove"
    CANCEL_AND_REMOVE = "cancel-and-remove"
    KEEP = "keep"
    NOTHING = "nothing"


@dataclass(frozen=True)
class Decision:
    """What cleanup should do to one job, and why (in words for the user)."""

    action: Action
    reason: str
    warn: bool = False


def decide_cleanup(status: RxRemoteJobStatus, retrieved: bool, force: bool,
                   why: str = "", expired: bool = False, is_job: bool = True,
                   newer_format: bool = False) -> Decision:
    """Decide what cleanup does to a job (docs/design.md#cleanup-rules, with retention).

    Parameters
    ----------
    status
        The job's derived state.
    retrieved
        Whether the ``retrieved`` marker exists (results were returned and kept).
    force
        ``rx_cleanup_jobs(force=True)``.
    why
        The reason behind an UNDETERMINED state, quoted in the decision.
    expired
        The job's ``expires_after`` has passed since it ended.  A terminal
        job that expired is removed without force, un-retrieved results
        included (its submitter opted in); a job that has not ended is never
        removed for its expiry.
    is_job
        False: a directory named like a job without a ``job.json`` naming it
        (debris), kept even with force; ``rxjobs doctor`` reports it.
    newer_format
        Its ``job.json`` is of a newer format (``why`` says which rxjobs it
        needs): kept even with force, for an rxjobs that knows its rules.

    Every cleanup, dry run or not, decides through this one function, so that
    a dry run says exactly what the run does.
    """
    S = RxRemoteJobStatus
    expired = expired and status.is_terminal()
    if status is S.MISSING:
        return Decision(Action.NOTHING, "not found: nothing to remove")
    if newer_format:
        return Decision(Action.KEEP, f"{why}; kept: only an rxjobs that reads its format removes it",
                        warn=True)
    if not is_job:
        return Decision(Action.KEEP, f"not a job: {why}; debris is never removed by cleanup "
                        "(see `rxjobs doctor`)", warn=True)
    if status is S.FINISHED:
        if retrieved:
            return Decision(Action.REMOVE, "finished, results retrieved" + (", expired" if expired else ""))
        if expired:
            return Decision(Action.REMOVE, "finished, results never retrieved, expired "
                                           "(expires_after has passed)")
        if force:
            return Decision(Action.REMOVE, "finished, results never retrieved (forced)")
        return Decision(
            Action.KEEP,
            "finished but its results were never retrieved: collect them with "
            "rx_get_job_results (rxjobs results) or pass force=True (--force) to delete them",
            warn=True,
        )
    if status is S.FAILED:
        return Decision(Action.REMOVE, "failed, expired" if expired else "failed")
    if status is S.CANCELED:
        return Decision(Action.REMOVE, "canceled, expired" if expired else "canceled")
    if status in (S.RUNNING, S.QUEUED):
        if force:
            return Decision(Action.CANCEL_AND_REMOVE, f"{status.value}: canceled and removed (forced)")
        return Decision(
            Action.KEEP,
            f"still {status.value}: cancel it first with rx_cancel_job (rxjobs cancel) "
            "or pass force=True (--force)",
            warn=True,
        )
    detail = f" ({why})" if why else ""
    if force:
        return Decision(Action.CANCEL_AND_REMOVE, f"state undetermined{detail}: removed (forced)")
    return Decision(
        Action.KEEP,
        f"state cannot be determined{detail}: kept in case it is still running; "
        "pass force=True (--force) to remove it anyway",
        warn=True,
    )


class CleanupOutcome(str, enum.Enum):
    """What cleanup did to one job; a ``str``, so reports and JSON say its value."""

    REMOVED = "removed"
    KEPT = "kept"
    MISSING = "missing"
    ERROR = "error"
    WOULD_REMOVE = "would remove"  # a dry run

    def __str__(self) -> str:
        return self.value


@dataclass
class CleanupEntry:
    """What cleanup did to one job."""

    job_id: str
    share_dir: str
    status: str
    outcome: CleanupOutcome
    reason: str
    files: int = 0
    bytes: int = 0
    expired: bool = False  # the job's expires_after had passed

    def __setattr__(self, name: str, value: Any) -> None:
        # An outcome given by its value ("removed") is stored as the member.
        super().__setattr__(name, CleanupOutcome(value) if name == "outcome" else value)

    def to_json(self) -> dict[str, Any]:
        """The entry as a report's JSON gives it, built directly: ``dataclasses.asdict``
        copies each value deeply, six times as slow for the entries of a big dry run."""
        return {"job_id": self.job_id, "share_dir": self.share_dir, "status": self.status,
                "outcome": self.outcome.value, "reason": self.reason, "files": self.files,
                "bytes": self.bytes, "expired": self.expired}


@dataclass
class CleanupReport:
    """Per job: removed or kept, why, and the files and bytes freed."""

    entries: list[CleanupEntry] = field(default_factory=list)

    @property
    def removed(self) -> list[CleanupEntry]:
        return [e for e in self.entries if e.outcome is CleanupOutcome.REMOVED]

    @property
    def kept(self) -> list[CleanupEntry]:
        return [e for e in self.entries if e.outcome in (CleanupOutcome.KEPT, CleanupOutcome.ERROR)]

    @property
    def files_freed(self) -> int:
        return sum(e.files for e in self.removed)

    @property
    def bytes_freed(self) -> int:
        return sum(e.bytes for e in self.removed)

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def _repr_html_(self) -> str:
        """The report as a notebook shows it: totals freed, and per job what was done and why."""
        from .displays import OutcomeView, cleanup_html
        return cleanup_html(OutcomeView(e.job_id, e.status, e.outcome.value, e.reason, e.files, e.bytes)
                            for e in self.entries)

    def to_json(self, lazy: bool = False) -> dict[str, Any]:
        """The JSON of a cleanup report (``rxjobs cleanup --json``).

        With ``lazy``, ``jobs`` is an iterator that makes each job's object as
        it is taken: a printer that writes them one by one never holds them
        all (100,000 dicts of a big share dir).
        """
        rows = (entry.to_json() for entry in self.entries)
        return {
            "removed": len(self.removed),
            "kept": len(self.kept),
            "files_freed": self.files_freed,
            "bytes_freed": self.bytes_freed,
            "jobs": rows if lazy else list(rows),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CleanupReport:
        """The report :meth:`to_json` gave (e.g. sent back by a sweep's child process).

        Raises
        ------
        ValueError
            ``data`` is not such a report.
        """
        try:
            return cls([CleanupEntry(**entry) for entry in data["jobs"]])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a cleanup report: {exc}") from None

    def __str__(self) -> str:
        return (f"{len(self.removed)} removed, {len(self.kept)} kept, "
                f"{self.files_freed} files and {self.bytes_freed} bytes freed")


REMOVALS = (Action.REMOVE, Action.CANCEL_AND_REMOVE)
# Batches deleted at once: the next one's deletion begins while the last files of one go.
DELETING_AT_ONCE = 2

# A job's entry in the report, and the decision behind it (None after an error).
Cleaned = tuple[CleanupEntry, Decision | None]


def _decide(store: Store, job_id: str, force: bool, now: datetime | None,
            snapshot: JobSnapshot | None, probe: bool = True) -> Cleaned | None:
    """Decide what cleanup does to a job from ``snapshot`` (None: the job is missing).

    The entry says ``kept`` (or ``missing``) until the job is removed.  With
    ``probe`` False, None for a job whose state only its engine can tell
    (:func:`jobs.settled_look`), to be decided again with ``probe``.
    """
    if snapshot is None:
        decision = decide_cleanup(RxRemoteJobStatus.MISSING, False, force)
        return CleanupEntry(job_id, store.url, RxRemoteJobStatus.MISSING.value,
                            CleanupOutcome.MISSING, decision.reason), decision
    owner = snapshot.owner
    if owner is not None and owner != os.geteuid():
        decision = Decision(Action.KEEP, f"owned by another user (uid {owner}): never removed",
                            warn=True)
        return CleanupEntry(job_id, store.url, "undetermined", CleanupOutcome.KEPT, decision.reason), decision
    look = jobs.look_at_job(store, job_id, snapshot) if probe else jobs.settled_look(store, job_id, snapshot)
    if look is None:
        return None
    derived = look.derived
    retrieved = derived.status is RxRemoteJobStatus.FINISHED and look.retrieved
    expired = jobs.is_expired(store, look, now)
    decision = decide_cleanup(derived.status, retrieved, force, why=derived.reason, expired=expired,
                              is_job=look.is_job, newer_format=look.newer_format)
    entry = CleanupEntry(job_id, store.url, derived.status.value, CleanupOutcome.KEPT, decision.reason,
                         expired=expired)
    if decision.action is Action.NOTHING:
        entry.outcome = CleanupOutcome.MISSING
    return entry, decision


def _error(store: Store, job_id: str, exc: BaseException) -> Cleaned:
    return CleanupEntry(job_id, store.url, "undetermined", CleanupOutcome.ERROR,
                        f"{type(exc).__name__}: {exc}"), None


def cleanup_jobs(
    targets: Iterable[tuple[Store, str]],
    force: bool = False,
    verbose: bool = True,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
    threads: int = 8,
    purge: bool = True,
    now: datetime | None = None,
    helper_processes: bool = True,
) -> CleanupReport:
    """Apply the cleanup rules to each ``(store, job_id)`` and remove what they allow.

    Jobs are taken a batch at a time (see :func:`_cleaned`): one look at a
    batch decides each of its jobs, the removable ones are detached
    together, and their files are deleted while the next batch is decided;
    reports, verbose lines and warnings come out in the order of
    ``targets``.  Leftovers of a crashed earlier cleanup are purged first
    (``purge=False`` skips that).  ``now`` is the moment job expiry is judged
    at (default: the current time).  A local share dir deletes big batches
    in ``find`` processes (:mod:`rxjobs.store.bulk_delete`);
    ``helper_processes=False`` starts no program, for a caller acting as
    another user after dropping root.  :func:`iter_cleanup` gives the same
    entries one by one, as they are done.
    """
    return CleanupReport(list(iter_cleanup(targets, force, verbose, dry_run, echo, threads, purge, now,
                                           helper_processes)))


def iter_cleanup(
    targets: Iterable[tuple[Store, str]],
    force: bool = False,
    verbose: bool = True,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
    threads: int = 8,
    purge: bool = True,
    now: datetime | None = None,
    helper_processes: bool = True,
) -> Iterator[CleanupEntry]:
    """:func:`cleanup_jobs`, each job's entry yielded in the order of ``targets`` once it is done.

    For a caller that reports as it goes (``rxjobs cleanup``'s lines and
    progress bar): one cleanup of every job, rather than a cleanup per batch,
    keeps the deletions going from the first batch to the last.  Closing the
    iterator early finishes the batches already begun (every job detached is
    deleted) and leaves the others untouched.
    """
    targets = list(targets)
    if not dry_run and purge:
        for store in {s.url: s for s, _ in targets}.values():
            try:
                for name in store.purge_trash():
                    if verbose:
                        echo(f"finished removing {store.removal_where(name)} "
                             "(left by an interrupted cleanup)")
            except PermissionError:
                pass  # a share dir that is not the caller's: each job's entry says so
            except OSError as exc:
                warnings.warn(f"could not empty {store.trash}: {exc}", RxCleanupWarning, stacklevel=4)

    for entry, decision in _cleaned(targets, force, dry_run, now, threads, helper_processes):
        if verbose:
            echo(_verbose_line(entry))
        if decision is not None and decision.warn and entry.outcome == CleanupOutcome.KEPT:
            warnings.warn(RxCleanupWarning(f"job {entry.job_id} kept: {entry.reason}",
                                           entry.job_id), stacklevel=4)
        elif entry.outcome == CleanupOutcome.ERROR:
            warnings.warn(RxCleanupWarning(f"job {entry.job_id} not cleaned up: {entry.reason}",
                                           entry.job_id), stacklevel=4)
        yield entry


def _cleaned(targets: list[tuple[Store, str]], force: bool, dry_run: bool, now: datetime | None,
             threads: int, helpers: bool) -> Iterator[Cleaned]:
    """Each target's entry and decision, in the order of ``targets``, as its batch is done.

    The jobs of each store are taken in batches (:func:`_decide_and_detach`),
    the first a small one (``Store.first_removal_batch``).  A batch's files
    are deleted in a thread of their own (:func:`_delete`) while this one
    decides the next batch, and the next batch's deletion begins while the
    last files of one go (:data:`DELETING_AT_ONCE`), so the deletions, which
    bound a cleanup, go on without a pause from the first batch to the last.
    Batches follow the order of their first job in ``targets``.
    """
    by_store: dict[str, list[int]] = {}
    stores: dict[str, Store] = {}
    for index, (store, _) in enumerate(targets):
        by_store.setdefault(store.url, []).append(index)
        stores[store.url] = store  # the instance that purged the share dir (the last one)
    batches: list[tuple[Store, list[int]]] = []
    for url, indexes in by_store.items():
        store, start = stores[url], 0
        while start < len(indexes):
            end = start + (store.first_removal_batch if start == 0 else store.removal_batch)
            batches.append((store, indexes[start:end]))
            start = end
    batches.sort(key=lambda batch: batch[1][0])

    results: dict[int, Cleaned] = {}
    following = 0  # the next index to yield
    begun: deque[tuple[list[int], Future[list[Cleaned]]]] = deque()

    def finish_oldest() -> Iterator[Cleaned]:
        """Wait for the oldest batch begun; yield every result now due, in order."""
        nonlocal following
        done_indexes, deleted = begun.popleft()
        results.update(zip(done_indexes, deleted.result(), strict=True))
        while following in results:
            yield results.pop(following)
            following += 1

    with ThreadPoolExecutor(max_workers=DELETING_AT_ONCE,
                            thread_name_prefix="rxjobs-cleanup-delete") as deleter:
        for store, indexes in batches:
            job_ids = [targets[i][1] for i in indexes]
            try:
                batch = _decide_and_detach(store, job_ids, force, dry_run, now, threads)
                begun.append((indexes, deleter.submit(_delete, store, batch, helpers)))
            except Exception as exc:  # what it detached stays in the trash: the next cleanup finishes it
                failed: Future[list[Cleaned]] = Future()
                failed.set_result([_error(store, job_id, exc) for job_id in job_ids])
                begun.append((indexes, failed))
            # Wait for the batch before this one only now: the next is decided meanwhile.
            while len(begun) >= DELETING_AT_ONCE or (begun and begun[0][1].done()):
                yield from finish_oldest()
        while begun:
            yield from finish_oldest()


@dataclass
class _Batch:
    """A batch of one store's jobs, decided, its removable jobs detached."""

    job_ids: list[str]
    done: dict[str, Cleaned]
    detached: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


def _decide_and_detach(store: Store, job_ids: list[str], force: bool, dry_run: bool,
                       now: datetime | None, threads: int) -> _Batch:
    """Decide on a batch of jobs of one store from one look, and detach those the rules remove.

    Decisions and detachments are made holding the batch's job locks
    (:meth:`Store.lock_jobs`), as one job at a time they would be: a reader
    of results, a cancel or another cleanup of one of these jobs waits for
    the batch, and finds each job as it was or gone.  Deciding every job
    from a look taken before the detachments is sound also where there is
    no lock (object stores): the decisions that remove are stable.  A
    terminal state (finished, failed, canceled) never changes (status writes
    refuse to leave one; the ``canceled`` and ``retrieved`` markers are only
    ever added), so a job decided removable stays removable, and an expired
    one stays expired.  A job that had not ended is kept without force
    whatever it becomes meanwhile (nothing is done to it), and with force is
    canceled and removed whatever it becomes.  A finished job whose results
    were never retrieved is removed only with force or expired.  The
    detachment itself (a rename into the trash, an exclusive marker) decides
    between concurrent removers, so each job is removed, and counted, once.
    """
    done: dict[str, Cleaned] = {}
    valid: list[str] = []
    for job_id in job_ids:
        try:
            valid.append(validate_job_id(job_id))
        except ValueError as exc:
            done[job_id] = _error(store, job_id, exc)
    valid = list(dict.fromkeys(valid))
    batch = _Batch(job_ids, done)
    with store.lock_jobs(valid, create=not dry_run):  # a dry run creates nothing
        # Sizes only for a dry run: a removal counts what it deletes.
        looks = dict(store.snapshots(valid, sizes=dry_run))

        def decide(job_id: str, probe: bool = True) -> Cleaned | None:
            try:
                return _decide(store, job_id, force, now, looks[job_id], probe)
            except Exception as exc:  # one job's problem never stops the others
                return _error(store, job_id, exc)

        unsettled = []
        for job_id in valid:
            decided = decide(job_id, probe=False)
            if decided is None:
                unsettled.append(job_id)
            else:
                done[job_id] = decided
        if unsettled:  # only the engine can tell: probes wait on it, so in threads
            with ThreadPoolExecutor(max_workers=max(1, min(threads, len(unsettled)))) as pool:
                for job_id, decided in zip(unsettled, pool.map(decide, unsettled), strict=True):
                    assert decided is not None  # a probe always decides
                    done[job_id] = decided
        removable = [job_id for job_id in valid
                     if (decision := done[job_id][1]) is not None and decision.action in REMOVALS
                     and done[job_id][0].outcome is CleanupOutcome.KEPT]
        if dry_run:
            for job_id in removable:
                entry, snapshot = done[job_id][0], looks[job_id]
                usage = snapshot.usage if snapshot is not None and snapshot.usage is not None \
                    else store.usage(job_id)
                entry.outcome = CleanupOutcome.WOULD_REMOVE
                entry.files, entry.bytes = usage.files, usage.bytes
            return batch
        cancels = [job_id for job_id in removable
                   if getattr(done[job_id][1], "action", None) is Action.CANCEL_AND_REMOVE]
        if cancels:
            with ThreadPoolExecutor(max_workers=max(1, min(threads, len(cancels)))) as pool:
                list(pool.map(lambda job_id: jobs.stop_on_engine(store, job_id), cancels))
        for job_id, token in zip(removable, store.detach_jobs(removable), strict=True):
            entry = done[job_id][0]
            if isinstance(token, JobNotFoundError):
                entry.outcome, entry.reason = CleanupOutcome.MISSING, "already removed (by another cleanup?)"
            elif isinstance(token, Exception):
                entry.outcome, entry.reason = CleanupOutcome.ERROR, f"{type(token).__name__}: {token}"
            else:
                batch.detached.append(job_id)
                batch.tokens.append(token)
    for job_id in batch.detached:
        with contextlib.suppress(OSError):
            jobs.drop_driver_log(store, job_id, salvage=False)  # what a killed driver left outside
    return batch


def _delete(store: Store, batch: _Batch, helpers: bool) -> list[Cleaned]:
    """Delete the files of a batch's detached jobs; each job's entry and decision, in order."""
    try:
        deleted: list[Usage | Exception] = store.delete_detached_jobs(batch.tokens, helpers)
    except Exception as exc:  # detached: they read as missing; the next cleanup finishes them
        deleted = [exc] * len(batch.tokens)
    for job_id, freed in zip(batch.detached, deleted, strict=True):
        entry = batch.done[job_id][0]
        if isinstance(freed, Exception):
            entry.outcome, entry.status, entry.reason = (
                CleanupOutcome.ERROR, "undetermined", f"{type(freed).__name__}: {freed}")
        else:
            entry.outcome, entry.files, entry.bytes = CleanupOutcome.REMOVED, freed.files, freed.bytes
    return _once_each(batch.job_ids, batch.done)


def _once_each(job_ids: list[str], done: dict[str, Cleaned]) -> list[Cleaned]:
    """The results in the order of ``job_ids``; a job named again after it was removed is
    reported missing there, as one by one it would be."""
    results: list[Cleaned] = []
    seen: set[str] = set()
    for job_id in job_ids:
        entry, decision = done[job_id]
        if job_id in seen:
            entry = replace(entry)
            if entry.outcome is CleanupOutcome.REMOVED:
                entry.outcome, entry.files, entry.bytes = CleanupOutcome.MISSING, 0, 0
                entry.reason = "already removed (named twice)"
        seen.add(job_id)
        results.append((entry, decision))
    return results


def _verbose_line(entry: CleanupEntry) -> str:
    where = f"{entry.share_dir}/{entry.job_id}"
    if entry.outcome == CleanupOutcome.REMOVED:
        return f"removed {where} ({entry.status}; {entry.files} files, {entry.bytes} bytes)"
    if entry.outcome == CleanupOutcome.WOULD_REMOVE:
        return f"would remove {where} ({entry.status}; {entry.files} files, {entry.bytes} bytes)"
    if entry.outcome == CleanupOutcome.MISSING:
        return f"nothing to do for {where}: {entry.reason}"
    return f"kept {where}: {entry.reason}"
