"""Cleanup: the rules of docs/design.md#cleanup-rules as a pure decision, and the removal.

:func:`decide_cleanup` says what to do to one job from its state alone; it is
tested against the whole table.  :func:`cleanup_jobs` gathers the facts,
applies the decisions job by job (one job's problem never stops the others)
and removes job directories crash-safely through the store.
"""

from __future__ import annotations

import contextlib
import enum
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from . import jobs
from .errors import JobNotFoundError
from .ids import validate_job_id
from .status import RxRemoteJobStatus
from .store import JobSnapshot, Store
from .store.delete_workers import DeleteWorkers

# A cleanup of at least this many jobs of local share dirs deletes their files in
# helper processes (rxjobs.store.delete_workers): forked, ready at once, where this
# process runs one thread; else new interpreters, 0.1 s or more to start.
HELPER_PROCESSES_FROM_JOBS = 256
# Deletions the helpers keep in flight together (at least ``threads``).  Each unlink on
# the benchmark VM waits for a synchronous discard, and its disk serves more than 8 at
# once: in paired deletion-only runs of 2,000 jobs, 2 helpers x 8 threads took 0.82x and
# 0.86x the time of 2 x 4 (and 24 parallel `rm -rf` beat 8 in both); 2 x 12 was no
# faster than 2 x 8, and 4 x 6 slower on 2 CPUs (docs/benchmarks.md).
DELETIONS_AT_ONCE = 16


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


def _clean_one(store: Store, job_id: str, force: bool, dry_run: bool, now: datetime | None,
               helpers: DeleteWorkers | None = None,
               ) -> tuple[CleanupEntry, Decision, Future | None]:
    """Clean one job; with ``helpers``, its files may still be being deleted.

    Returns the entry, the decision and, when helpers delete the files, the
    future of the files and bytes freed (the entry's counts are filled in
    from it later, see :func:`_finish_entry`).
    """
    # The lock covers the decision and the rename into .trash/ only: once renamed
    # the job reads as missing to every reader, so its files are deleted after
    # the lock is released, and other threads waiting on the same lock stripe
    # do not wait for a whole deletion.
    with store.lock(job_id, create=not dry_run):  # a dry run creates nothing
        entry, decision, detached = _clean_one_locked(store, job_id, force, dry_run, now)
    if detached is None:
        return entry, decision, None
    entry.outcome = CleanupOutcome.REMOVED
    if helpers is not None and store.helpers_may_delete():
        return entry, decision, helpers.submit(store, detached)
    usage = store.delete_detached(detached)
    entry.files, entry.bytes = usage.files, usage.bytes
    return entry, decision, None


def _finish_entry(entry: CleanupEntry, deleted: Future | None,
                  helpers: DeleteWorkers | None) -> CleanupEntry:
    """Wait for a job's files to be deleted by the helpers and count them in its entry."""
    if deleted is None or helpers is None:
        return entry
    try:
        usage = helpers.result(deleted)
    except Exception as exc:  # the job is in the trash; the next cleanup finishes it
        return CleanupEntry(entry.job_id, entry.share_dir, "undetermined", CleanupOutcome.ERROR,
                            f"{type(exc).__name__}: {exc}")
    entry.files, entry.bytes = usage.files, usage.bytes
    return entry


REMOVALS = (Action.REMOVE, Action.CANCEL_AND_REMOVE)


def _decide(store: Store, job_id: str, force: bool, now: datetime | None,
            snapshot: JobSnapshot | None = None) -> tuple[CleanupEntry, Decision]:
    """Look at a job (through ``snapshot`` when one was taken) and decide what cleanup does.

    The entry says ``kept`` (or ``missing``) until the job is removed.
    """
    owner = snapshot.owner if snapshot is not None else store.owner_uid(job_id)
    if owner is not None and owner != os.geteuid():
        decision = Decision(Action.KEEP, f"owned by another user (uid {owner}): never removed",
                            warn=True)
        return CleanupEntry(job_id, store.url, "undetermined", CleanupOutcome.KEPT, decision.reason), decision
    look = jobs.look_at_job(store, job_id, snapshot)
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


def _clean_one_locked(store: Store, job_id: str, force: bool, dry_run: bool,
                      now: datetime | None) -> tuple[CleanupEntry, Decision, str | None]:
    """Decide, and remove the job or (local share dirs) move it into the trash.

    Returns the entry, the decision and the trash path left to delete (None
    when nothing is left to delete).
    """
    # One visit of the job directory (its owner, names and records through one
    # descriptor) instead of a stat, a listing and two reads that each open it anew.
    entry, decision = _decide(store, job_id, force, now, store.snapshot(job_id, sizes=False))
    if decision.action not in REMOVALS:
        return entry, decision, None
    if dry_run:
        usage = store.usage(job_id)
        entry.outcome, entry.files, entry.bytes = CleanupOutcome.WOULD_REMOVE, usage.files, usage.bytes
        return entry, decision, None
    if decision.action is Action.CANCEL_AND_REMOVE:
        jobs.stop_on_engine(store, job_id)
    try:
        detached = store.detach_job(job_id)
    except JobNotFoundError:
        entry.outcome, entry.reason = CleanupOutcome.MISSING, "already removed (by another cleanup?)"
        return entry, decision, None
    jobs.drop_driver_log(store, job_id, salvage=False)  # what a killed driver left outside
    return entry, decision, detached


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

    Jobs are handled in parallel threads (deleting many small files is bound
    by system calls, and object-store requests by the network, both of which
    release the GIL); reports, verbose lines and warnings come out in the
    order of ``targets``.  Leftovers of a crashed earlier cleanup are purged
    first (``purge=False`` skips that).
    ``now`` is the moment job expiry is judged at (default: the current time).
    A big cleanup of local share dirs deletes the files in a few helper
    processes (see :mod:`rxjobs.store.delete_workers`); decisions and renames into
    the trash stay in this process, and every deletion is waited for;
    ``helper_processes=False`` keeps every deletion in this process.
    :func:`iter_cleanup` gives the same entries one by one, as they are done.
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
    keeps the deletions in flight from the first job to the last (a batch
    waited for its slowest job before the next one began) and starts the
    helper processes once, when there are enough jobs to pay for them.
    Every job is handed to the threads at the start: closing the iterator
    early waits for all of them to be cleaned up, their entries unseen.
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

    # Stores that remove many jobs faster together (object stores) take their jobs in
    # batches; the others, job by job below.
    in_bulk = _clean_in_bulk(targets, force, dry_run, now, threads)
    targets_left = [t for i, t in enumerate(targets) if i not in in_bulk]
    helpers = _start_delete_workers(targets_left, threads) if helper_processes and not dry_run else None

    def work(target: tuple[Store, str]) -> tuple[CleanupEntry, Decision | None, Future | None]:
        store, job_id = target
        try:
            return _clean_one(store, job_id, force, dry_run, now, helpers)
        except Exception as exc:  # one job's problem never stops the others
            entry = CleanupEntry(job_id, store.url, "undetermined", CleanupOutcome.ERROR,
                                 f"{type(exc).__name__}: {exc}")
            return entry, None, None

    with contextlib.ExitStack() as stack:
        if helpers is not None:
            stack.callback(helpers.close)
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=max(1, threads)))
        one_by_one = pool.map(work, targets_left)
        for index in range(len(targets)):
            entry, decision, deleted = in_bulk[index] if index in in_bulk else next(one_by_one)
            entry = _finish_entry(entry, deleted, helpers)
            if verbose:
                echo(_verbose_line(entry))
            if decision is not None and decision.warn and entry.outcome == CleanupOutcome.KEPT:
                warnings.warn(RxCleanupWarning(f"job {entry.job_id} kept: {entry.reason}",
                                               entry.job_id), stacklevel=4)
            elif entry.outcome == CleanupOutcome.ERROR:
                warnings.warn(RxCleanupWarning(f"job {entry.job_id} not cleaned up: {entry.reason}",
                                               entry.job_id), stacklevel=4)
            yield entry


# Jobs of a store that removes in bulk are decided, marked and deleted this many at once:
# a listing, the markers and the deletions cover a batch; what is held stays bounded.
BULK_BATCH = 1000


def _clean_in_bulk(targets: list[tuple[Store, str]], force: bool, dry_run: bool,
                   now: datetime | None, threads: int,
                   ) -> dict[int, tuple[CleanupEntry, Decision | None, Future | None]]:
    """Clean the jobs of stores that remove in bulk (:attr:`Store.removes_in_bulk`), a batch
    at a time; their results by index in ``targets``.

    Per batch: one bulk look (:meth:`Store.snapshots`: on S3 one listing and
    the records read concurrently) decides every job; the ``deleting``
    markers of the jobs to remove are written together
    (:meth:`Store.detach_jobs`), then every key is deleted and the markers
    last (:meth:`Store.delete_detached_jobs`).

    Deciding from a look taken before the markers are written is sound for
    the same reason it is one job at a time on an object store (which has no
    lock): the decisions that remove are stable.  A terminal state (finished,
    failed, canceled) never changes (status writes refuse to leave one; the
    ``canceled`` and ``retrieved`` markers are only ever added), so a job
    decided removable stays removable, and an expired one stays expired.  A
    job that had not ended is kept without force whatever it becomes
    meanwhile (nothing is done to it), and with force is canceled and removed
    whatever it becomes.  A finished job whose results were never retrieved
    is removed only with force or expired, never because of this window.
    The exclusive marker still decides between concurrent removers, so each
    job is removed, and counted, once.
    """
    results: dict[int, tuple[CleanupEntry, Decision | None, Future | None]] = {}
    by_store: dict[str, list[int]] = {}
    stores: dict[str, Store] = {}
    for index, (store, _) in enumerate(targets):
        if store.removes_in_bulk:
            by_store.setdefault(store.url, []).append(index)
            stores[store.url] = store  # the instance that purged the share dir (the last one)
    for url, indexes in by_store.items():
        store = stores[url]
        for start in range(0, len(indexes), BULK_BATCH):
            batch = indexes[start:start + BULK_BATCH]
            job_ids = [targets[i][1] for i in batch]
            try:
                done = _clean_batch(store, job_ids, force, dry_run, now, threads)
            except Exception as exc:  # the batch's markers stay: the next cleanup finishes them
                done = [(CleanupEntry(job_id, store.url, "undetermined", CleanupOutcome.ERROR,
                                      f"{type(exc).__name__}: {exc}"), None) for job_id in job_ids]
            for index, (entry, decision) in zip(batch, done, strict=True):
                results[index] = (entry, decision, None)
    return results


def _clean_batch(store: Store, job_ids: list[str], force: bool, dry_run: bool, now: datetime | None,
                 threads: int) -> list[tuple[CleanupEntry, Decision | None]]:
    """Decide on a batch of jobs of one store from one bulk look, then remove what the
    rules allow together; each job's entry and decision, in order."""
    valid: list[str] = []
    done: dict[str, tuple[CleanupEntry, Decision | None]] = {}
    for job_id in job_ids:
        try:
            valid.append(validate_job_id(job_id))
        except ValueError as exc:
            done[job_id] = (CleanupEntry(job_id, store.url, "undetermined", CleanupOutcome.ERROR,
                                         f"ValueError: {exc}"), None)
    looks = dict(store.snapshots(list(dict.fromkeys(valid)), sizes=True))

    def decide(job_id: str) -> tuple[CleanupEntry, Decision | None]:
        try:
            snapshot = looks[job_id]
            if snapshot is None:
                decision = decide_cleanup(RxRemoteJobStatus.MISSING, False, force)
                return CleanupEntry(job_id, store.url, RxRemoteJobStatus.MISSING.value,
                                    CleanupOutcome.MISSING, decision.reason), decision
            return _decide(store, job_id, force, now, snapshot)
        except Exception as exc:  # one job's problem never stops the others
            return CleanupEntry(job_id, store.url, "undetermined", CleanupOutcome.ERROR,
                                f"{type(exc).__name__}: {exc}"), None

    # Deriving a state may probe an engine (jobs that have not ended): in threads.
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        decided = dict(zip(valid, pool.map(decide, valid), strict=True))
    done.update(decided)
    removable = list(dict.fromkeys(
        job_id for job_id, (entry, decision) in decided.items()
        if decision is not None and decision.action in REMOVALS and entry.outcome is CleanupOutcome.KEPT))
    if dry_run:
        for job_id in removable:
            entry, snapshot = done[job_id][0], looks[job_id]
            usage = snapshot.usage if snapshot is not None and snapshot.usage is not None \
                else store.usage(job_id)
            entry.outcome, entry.files, entry.bytes = CleanupOutcome.WOULD_REMOVE, usage.files, usage.bytes
        return _once_each(job_ids, done)
    cancels = [job_id for job_id in removable
               if getattr(done[job_id][1], "action", None) is Action.CANCEL_AND_REMOVE]
    if cancels:
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(cancels)))) as pool:
            list(pool.map(lambda job_id: jobs.stop_on_engine(store, job_id), cancels))
    detached: list[str] = []
    tokens: list[str] = []
    for job_id, token in zip(removable, store.detach_jobs(removable), strict=True):
        entry = done[job_id][0]
        if isinstance(token, JobNotFoundError):
            entry.outcome, entry.reason = CleanupOutcome.MISSING, "already removed (by another cleanup?)"
        elif isinstance(token, Exception):
            entry.outcome, entry.reason = CleanupOutcome.ERROR, f"{type(token).__name__}: {token}"
        else:
            detached.append(job_id)
            tokens.append(token)
            with contextlib.suppress(OSError):
                jobs.drop_driver_log(store, job_id, salvage=False)  # what a killed driver left outside
    for job_id, freed in zip(detached, store.delete_detached_jobs(tokens), strict=True):
        entry = done[job_id][0]
        if isinstance(freed, Exception):  # detached: reads as missing; the next cleanup finishes it
            entry.outcome, entry.status, entry.reason = (
                CleanupOutcome.ERROR, "undetermined", f"{type(freed).__name__}: {freed}")
        else:
            entry.outcome, entry.files, entry.bytes = CleanupOutcome.REMOVED, freed.files, freed.bytes
    return _once_each(job_ids, done)


def _once_each(job_ids: list[str], done: dict[str, tuple[CleanupEntry, Decision | None]],
               ) -> list[tuple[CleanupEntry, Decision | None]]:
    """The results in the order of ``job_ids``; a job named again after it was removed is
    reported missing there, as one by one it would be."""
    results: list[tuple[CleanupEntry, Decision | None]] = []
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


def _start_delete_workers(targets: list[tuple[Store, str]], threads: int) -> DeleteWorkers | None:
    """Helper processes for a big local cleanup on a machine of several CPUs, else None."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    n_deletable = sum(1 for store, _ in targets if store.helpers_may_delete())
    if cpus < 2 or threads < 2 or n_deletable < HELPER_PROCESSES_FROM_JOBS:
        return None
    processes = min(cpus, 4, threads)
    return DeleteWorkers(processes, max(threads, DELETIONS_AT_ONCE) // processes)


def _verbose_line(entry: CleanupEntry) -> str:
    where = f"{entry.share_dir}/{entry.job_id}"
    if entry.outcome == CleanupOutcome.REMOVED:
        return f"removed {where} ({entry.status}; {entry.files} files, {entry.bytes} bytes)"
    if entry.outcome == CleanupOutcome.WOULD_REMOVE:
        return f"would remove {where} ({entry.status}; {entry.files} files, {entry.bytes} bytes)"
    if entry.outcome == CleanupOutcome.MISSING:
        return f"nothing to do for {where}: {entry.reason}"
    return f"kept {where}: {entry.reason}"
