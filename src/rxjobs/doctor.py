"""``rxjobs doctor``: what no job owns in a share dir and the runtime dir, and its removal.

Like batchtools' ``sweepRegistry``, a consistency check of a share dir.  It
reports what no job owns:

- **debris**: top-level entries that are not jobs (a directory without a
  readable ``job.json`` naming it, a file, a symlink).  A readable job is
  never reported, never touched;
- **trash** left by dead cleaners: ``.trash/`` entries (local share dirs) or
  jobs marked ``deleting`` (object stores) whose remover is gone;
- **temporary files** (``*.tmp-<pid>-...``) of writers that died;
- **squatted reserved entries**: a ``.trash``/``.locks`` rxjobs did not make
  (in a team share dir, one a member made first as their own blocks everyone
  else's results and cleanup).  ``--fix`` run by the share dir's owner sets
  it aside (renames it to ``.locks.squatted-UID-...``, debris its maker can
  remove) and rxjobs makes its own on next use; anyone else is told to ask
  the owner;
- **files of dead processes outside the share dir**, in the rxjobs runtime
  dir: driver logs of killed drivers and the record, socket, lock and log of
  dead persistent Spark servers and fork servers (:mod:`rxjobs.runtime`);
  those of live ones are not findings.

With ``fix``, each finding marked for removal is removed with cleanup's
crash-safety (a rename into ``.trash/`` then a delete, or the ``deleting``
marker protocol); a second run finds nothing.  Entries that are young (a job
being submitted, a write in progress, a removal under way elsewhere) are left
alone until they are older than ``grace``.

The decisions are pure functions of what the store reports
(:func:`decide_top_entry`, :func:`decide_trash_entry`,
:func:`decide_temp_file`, :func:`decide_runtime_file`), tested by tables;
:func:`examine` gathers and decides, :func:`repair` applies.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from .runtime import RuntimeFile, RuntimeKind, remove_runtime_file, runtime_dir, scan_runtime_dir
from .store import Store, TempFile, TopEntry, TrashEntry

GRACE_S = 3600.0  # younger than this, an entry may belong to work in progress


class FindingKind(str, Enum):
    """What a finding of ``rxjobs doctor`` is."""

    DEBRIS = "debris"
    TRASH = "trash"
    TEMP_FILE = "temp file"
    RUNTIME_FILE = "runtime file"
    RESERVED = "reserved entry"


class Remedy(str, Enum):
    """What ``--fix`` does about a finding."""

    REMOVE = "remove"
    SET_ASIDE = "set aside"  # a squatted reserved entry: renamed out of the way, not deleted
    LEAVE = "leave"  # reported, but not ours to remove (another user's, unreadable, unknown)


@dataclass(frozen=True)
class Finding:
    """One thing no job owns.

    Attributes
    ----------
    kind
        Debris, trash, a temporary file or a runtime-dir file.
    where
        Its path (or name in the share dir, for debris and trash).
    reason
        Why it is reported, in words.
    remedy
        What ``--fix`` does: remove it, or leave it (and say why).
    target
        What the store or the runtime dir needs to remove it.
    """

    kind: FindingKind
    where: str
    reason: str
    remedy: Remedy
    target: Any = field(default=None, compare=False, repr=False)


def _old(mtime: float | None, now: float, grace: float) -> bool:
    return mtime is None or now - mtime >= grace


def decide_top_entry(entry: TopEntry, me: int | None, now: float, grace: float) -> Finding | None:
    """A top-level entry of a share dir: None for a job (never touched) or young debris.

    Parameters
    ----------
    entry
        What the store saw.
    me
        The caller's uid (None where storage has no owners).
    now, grace
        The time, and how old (seconds) an entry without a job record must be to
        be debris rather than a job being submitted.
    """
    if entry.is_job:
        return None
    if entry.is_job is None:
        return Finding(FindingKind.DEBRIS, entry.name, "cannot be read (its owner made it unreadable): "
                       "it may be a job, so it is left alone", Remedy.LEAVE)
    if entry.kind == "directory":
        what = "a directory without a job.json naming it"
    else:
        what = f"a {entry.kind}, not a job"
    if entry.owner_uid is not None and me is not None and entry.owner_uid != me:
        return Finding(FindingKind.DEBRIS, entry.name, f"{what}, owned by uid {entry.owner_uid}: "
                       "only its owner can remove it", Remedy.LEAVE)
    if entry.kind == "directory" and not _old(entry.mtime, now, grace):
        return None  # a job being submitted writes its job.json a moment after its directory
    return Finding(FindingKind.DEBRIS, entry.name, what, Remedy.REMOVE, entry.name)


def decide_reserved_entry(name: str, problem: str, me: int | None, share_owner: int | None,
                          ) -> Finding:
    """A squatted ``.trash``/``.locks``: set aside by the share dir's owner, else left (pure).

    Parameters
    ----------
    name, problem
        The entry and what is wrong with it (with the fix), as the store says.
    me, share_owner
        The caller's uid and the share dir's owner (the one who may rename
        another's entry in a sticky directory).
    """
    if me is not None and me == share_owner:
        return Finding(FindingKind.RESERVED, name, problem, Remedy.SET_ASIDE, name)
    return Finding(FindingKind.RESERVED, name, problem, Remedy.LEAVE)


def decide_trash_entry(entry: TrashEntry, now: float, grace: float) -> Finding | None:
    """A removal that began: None while its remover lives (or, unknown, for ``grace``)."""
    if entry.remover_alive:
        return None
    if entry.remover_alive is None and not _old(entry.mtime, now, grace):
        return None  # a remover elsewhere may still be at work
    if not entry.mine:
        return Finding(FindingKind.TRASH, entry.name, "an unfinished removal of another user's: "
                       "theirs to finish", Remedy.LEAVE)
    return Finding(FindingKind.TRASH, entry.name, "an unfinished removal whose remover is gone",
                   Remedy.REMOVE, entry.name)


def decide_temp_file(entry: TempFile, now: float, grace: float) -> Finding | None:
    """A temporary file: removed once its writer is gone and it is older than ``grace``
    (a writer on another host of a shared filesystem has a pid that means nothing here)."""
    if entry.writer_alive or not _old(entry.mtime, now, grace):
        return None
    return Finding(FindingKind.TEMP_FILE, entry.path, "a write that never finished (its writer is gone)",
                   Remedy.REMOVE, entry.path)


_RUNTIME_WHAT = {
    RuntimeKind.DRIVER_LOG: "the log of a driver that is gone (job {owner})",
    RuntimeKind.SERVER_RECORD: "the record of a persistent Spark server that is gone ({owner})",
    RuntimeKind.SERVER_SOCKET: "the socket of a persistent Spark server that is gone ({owner})",
    RuntimeKind.SERVER_LOCK: "the start lock of a persistent Spark server that is gone ({owner})",
    RuntimeKind.SERVER_LOG: "the log of a persistent Spark server that is gone ({owner})",
    RuntimeKind.FORK_SERVER_RECORD: "the record of a fork server that is gone ({owner})",
    RuntimeKind.FORK_SERVER_SOCKET: "the socket of a fork server that is gone ({owner})",
    RuntimeKind.TEMP: "a write that never finished (pid {owner} is gone)",
}


def decide_runtime_file(entry: RuntimeFile) -> Finding | None:
    """A file of the runtime dir: None while its owner lives; an unknown file is left."""
    if entry.alive:
        return None
    if entry.alive is None:
        return Finding(FindingKind.RUNTIME_FILE, entry.path, "not a file rxjobs names: left alone",
                       Remedy.LEAVE)
    return Finding(FindingKind.RUNTIME_FILE, entry.path, _RUNTIME_WHAT[entry.kind].format(owner=entry.owner),
                   Remedy.REMOVE, entry)


@dataclass
class DoctorReport:
    """What ``rxjobs doctor`` found, and (with ``--fix``) what became of it.

    ``clean`` is True when nothing was found, or everything found was removed.
    """

    share_dir: str
    runtime_dir: str | None
    findings: list[Finding] = field(default_factory=list)
    fixed: list[Finding] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return len(self.fixed) == len(self.findings)

    def to_json(self) -> dict[str, Any]:
        fixed = {f.where for f in self.fixed}
        return {
            "share_dir": self.share_dir,
            "runtime_dir": self.runtime_dir,
            "clean": self.clean,
            "findings": [{**{k: v for k, v in asdict(f).items() if k != "target"},
                          "kind": f.kind.value, "remedy": f.remedy.value,
                          "fixed": f.where in fixed, "error": self.errors.get(f.where)}
                         for f in self.findings],
        }


def examine(store: Store, now: float | None = None, grace: float = GRACE_S,
            runtime_base: str | None = None, include_runtime: bool = True) -> DoctorReport:
    """Look at a share dir and the runtime dir; decide what no job owns (nothing is changed).

    Parameters
    ----------
    store
        The share dir.
    now
        The time (POSIX seconds) ages are judged at (default: now).
    grace
        How old (seconds) what may belong to work in progress must be to be reported.
    runtime_base
        The runtime dir (default: :func:`rxjobs.runtime.runtime_dir`'s).
    include_runtime
        Look at the runtime dir too.
    """
    now = time.time() if now is None else now
    me = store.caller_uid()
    findings: list[Finding | None] = []
    owner = store.share_owner_uid()
    findings += [decide_reserved_entry(name, problem, me, owner)
                 for name, problem in store.squatted_reserved()]
    findings += [decide_top_entry(e, me, now, grace) for e in store.top_entries()]
    findings += [decide_trash_entry(e, now, grace) for e in store.trash_entries()]
    findings += [decide_temp_file(e, now, grace) for e in store.temp_files()]
    runtime = None
    if include_runtime:
        try:
            runtime = runtime_dir(runtime_base)
            findings += [decide_runtime_file(e) for e in scan_runtime_dir(runtime)]
        except PermissionError as exc:  # a runtime dir that is not private: said, not fixed
            findings.append(Finding(FindingKind.RUNTIME_FILE, str(runtime_base or "runtime dir"),
                                    str(exc), Remedy.LEAVE))
    return DoctorReport(store.url, runtime, [f for f in findings if f is not None])


def repair(store: Store, report: DoctorReport,
           echo: Callable[[str], None] | None = None) -> DoctorReport:
    """Remove what ``report`` marks for removal; each finding's failure is kept, the others go on."""
    for finding in report.findings:
        if finding.remedy is Remedy.LEAVE:
            continue
        try:
            if finding.kind is FindingKind.RESERVED:
                aside = store.set_aside_reserved(finding.target)
                done = True
                if echo is not None:
                    echo(f"set {finding.where} aside as {aside}")
            elif finding.kind is FindingKind.DEBRIS:
                store.remove_debris(finding.target)
                done = True
            elif finding.kind is FindingKind.TRASH:
                store.remove_trash_entry(finding.target)
                done = True
            elif finding.kind is FindingKind.TEMP_FILE:
                store.remove_temp_file(finding.target)
                done = True
            else:
                done = remove_runtime_file(finding.target) or not os.path.lexists(finding.where)
        except (OSError, ValueError) as exc:
            report.errors[finding.where] = f"{type(exc).__name__}: {exc}"
            continue
        if done:
            report.fixed.append(finding)
            if echo is not None:
                echo(f"removed {finding.kind.value} {finding.where}")
        else:
            report.errors[finding.where] = "its owner came back to life: left alone"
    return report


def doctor(store: Store, fix: bool = False, now: float | None = None, grace: float = GRACE_S,
           runtime_base: str | None = None) -> DoctorReport:
    """Examine a share dir and the runtime dir and, with ``fix``, remove what no job owns."""
    report = examine(store, now=now, grace=grace, runtime_base=runtime_base)
    return repair(store, report) if fix else report


__all__ = ["GRACE_S", "DoctorReport", "Finding", "FindingKind", "Remedy", "decide_reserved_entry",
           "decide_runtime_file", "decide_temp_file", "decide_top_entry", "decide_trash_entry", "doctor",
           "examine", "repair"]
