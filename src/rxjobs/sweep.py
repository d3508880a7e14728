"""The operator's sweep: retention and disk use over every user's share dir under a root.

``rxjobs cleanup --all-users ROOT`` and ``rxjobs du --all-users ROOT`` call
:func:`sweep_cleanup` and :func:`sweep_usage`.  They

1. find the share dirs under ROOT (:func:`find_share_dirs`): ROOT itself,
   its subdirectories and theirs (``ROOT/<user>/`` and
   ``ROOT/<group>/<user>/``, at most :data:`MAX_DEPTH` levels down), each a
   real directory carrying the ``.rxjobs-share`` marker (in ROOT itself, only
   a marker ROOT's owner wrote counts).  A symlink is never followed, a share
   dir is never searched for others inside it, a directory without the marker
   is only looked into, never touched, and a share dir below a directory that
   someone else could swap it in (writable by others without the sticky bit,
   or owned by a third user: :func:`exposure`) is left alone and reported;
2. refuse, before anything is done, a caller who is neither root nor able to
   write every share dir found (:func:`caller_refusal`);
3. for each share dir, fork a child that becomes the share dir's owner
   (:func:`rxjobs.privileges.drop_privileges`: ``initgroups``, ``setgid``,
   ``setuid``, verified).  The parent reaches the share dir again from ROOT's
   descriptor, one no-follow open per name, and hands the child that open
   descriptor; the child checks it with ``fstat`` (same device, inode and
   owner as found) and works through it (``/proc/self/fd/N``), never through
   a path someone could swap.  It runs the ordinary service there as that user
   (:func:`rxjobs.retention.apply_policy`, :func:`rxjobs.usage.disk_usage`);
   it sends its report back as JSON on a pipe.  The parent never opens a
   file inside another user's share dir, let alone deletes one: files are
   removed exactly as their owner's own ``rxjobs cleanup`` would remove them,
   under the same rules (un-retrieved results stay without ``force``).
   Each child has a time limit (:data:`CHILD_TIME_LIMIT` by default): a child
   that is stopped (its user may ``kill -STOP`` it) or stuck is killed,
   reported, and the sweep goes on with the next share dir.

``--max-total-size`` bounds each share dir by default; with ``in_total`` it
bounds them all together: every child first surveys its share dir, the
parent picks the oldest removable jobs across all of them
(:func:`select_in_total`, pure), and each child then cleans up what was
picked in its share dir.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import selectors
import signal
import stat
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from .cleanup import CleanupEntry, CleanupOutcome, RxCleanupWarning
from .privileges import Target, drop_privileges, user_environment, user_name
from .retention import (
    Pick,
    PolicyRun,
    RetentionPolicy,
    Selection,
    SurveyedJob,
    apply_policy,
    select_jobs,
    survey_jobs,
)
from .sharedir import normalize_share_dir
from .status import RxRemoteJobStatus
from .store import MARKER, open_store
from .store.fdtree import list_at, open_dir_at
from .times import utc_now
from .usage import UsageReport, disk_usage

# ROOT (depth 0), ROOT/<user> (1), ROOT/<group>/<user> (2).
MAX_DEPTH = 2
_OPEN_ROOT = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: Seconds a child acting as a user may take over one share dir before it is killed.
CHILD_TIME_LIMIT = 3600.0


# -- finding the share dirs -------------------------------------------------------------------


class Verdict(str, enum.Enum):
    """What the sweep does with an entry it meets under ROOT."""

    SHARE_DIR = "share dir"
    LOOK_INSIDE = "look inside"
    NOT_FOLLOWED = "a symlink: never followed"
    UNREADABLE = "cannot be read"
    IGNORED = "ignored"


def classify_entry(mode: int, marked: bool | None, depth: int, max_depth: int = MAX_DEPTH) -> Verdict:
    """What the sweep does with one entry under ROOT (pure).

    Parameters
    ----------
    mode
        The entry's ``st_mode`` from ``lstat`` (a symlink is seen as one).
    marked
        For a directory: whether it holds the share-dir marker (a regular
        file); None when it cannot be read.
    depth
        How far below ROOT the entry is (ROOT itself is 0).
    max_depth
        The deepest level at which share dirs are looked for.
    """
    if stat.S_ISLNK(mode):
        return Verdict.NOT_FOLLOWED
    if not stat.S_ISDIR(mode) or depth > max_depth:
        return Verdict.IGNORED
    if marked is None:
        return Verdict.UNREADABLE
    if marked:
        return Verdict.SHARE_DIR
    return Verdict.LOOK_INSIDE if depth < max_depth else Verdict.IGNORED


def swappable_by_others(mode: int) -> bool:
    """Whether users other than a directory's owner may rename its entries (pure).

    True for a directory that its group or others can write, unless the
    sticky bit keeps each entry to its own owner.
    """
    return bool(mode & 0o022) and not mode & stat.S_ISVTX


def exposure(parents: Sequence[tuple[str, int, int]], owner: int, caller: int) -> str | None:
    """Why someone else could swap a share dir for another directory, or None (pure).

    Parameters
    ----------
    parents
        Each directory from ROOT down to the share dir's parent, as
        ``(path, st_mode, st_uid)``.
    owner
        The share dir's owner.
    caller
        The uid running the sweep.

    Returns
    -------
    str or None
        A sentence naming the first such directory and the command that
        closes it; None when only root, the caller and the owner can rename
        entries on the way.
    """
    for path, mode, uid in parents:
        if swappable_by_others(mode):
            return (f"{path} can be written by others without the sticky bit (mode "
                    f"{stat.S_IMODE(mode):o}), so they could swap this share dir for another "
                    f"directory; run `chmod +t {path}` (or `chmod go-w {path}`) to have it swept")
        if uid not in (0, owner, caller):
            return (f"{path} belongs to uid {uid}, who could swap this share dir for another "
                    "directory; move the share dir to a directory of root or of its owner")
    return None


def marker_counts(depth: int, marker_uid: int, dir_uid: int) -> bool:
    """Whether a marker found at ``depth`` makes its directory a share dir (pure).

    In ROOT itself only a marker of ROOT's owner counts: in a ROOT anyone can
    write (``/scratch``), a marker planted by a user would make the sweep
    take ROOT for one share dir and never reach the others.
    """
    return depth > 0 or marker_uid == dir_uid


@dataclass(frozen=True)
class FoundShareDir:
    """A share dir found under ROOT: where, whose, which directory it was, and the names that
    lead to it from ROOT."""

    path: str
    uid: int
    gid: int
    mode: int
    dev: int
    ino: int
    names: tuple[str, ...] = ()

    @property
    def user(self) -> str:
        return user_name(self.uid)


@dataclass(frozen=True)
class Skipped:
    """An entry under ROOT the sweep left alone, and why."""

    path: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class ShareDirs:
    """The share dirs under ROOT, and what was left alone on the way."""

    root: str
    found: list[FoundShareDir] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _marker_owner(fd: int) -> int | None:
    """The owner of the marker in ``fd`` (a regular file), or None when there is none."""
    try:
        st = os.stat(MARKER, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return st.st_uid if stat.S_ISREG(st.st_mode) else None


def find_share_dirs(root: str, max_depth: int = MAX_DEPTH) -> ShareDirs:
    """The share dirs under ``root``, walked from descriptors without following a symlink.

    ``root`` itself may be given through a symlink (the operator named it);
    nothing below it is followed.  Reads names and ``lstat``\\ s only.

    Raises
    ------
    FileNotFoundError, NotADirectoryError, PermissionError
        ``root`` is not a directory that can be read.
    """
    fd = open_root(root)
    try:
        return find_share_dirs_at(fd, root, max_depth)
    finally:
        os.close(fd)


def open_root(root: str) -> int:
    """ROOT's descriptor (ROOT itself may be named through a symlink: the operator chose it).

    Raises
    ------
    ValueError
        ``root`` is an object store's URL.
    FileNotFoundError, NotADirectoryError, PermissionError
        ``root`` is not a directory that can be read.
    """
    root = normalize_share_dir(root)
    if "://" in root:
        raise ValueError(f"{root}: --all-users sweeps the share dirs of a local directory tree, "
                         "not an object store (whose keys have no owners)")
    return os.open(root, _OPEN_ROOT)


def find_share_dirs_at(fd: int, root: str, max_depth: int = MAX_DEPTH) -> ShareDirs:
    """:func:`find_share_dirs` from ROOT's open descriptor ``fd``."""
    found = ShareDirs(normalize_share_dir(root))
    _walk(fd, found.root, (), max_depth, found, ())
    return found


def _walk(fd: int, path: str, names: tuple[str, ...], max_depth: int, into: ShareDirs,
          parents: tuple[tuple[str, int, int], ...]) -> None:
    st = os.fstat(fd)
    depth = len(names)
    try:
        marker_uid = _marker_owner(fd)
        marked: bool | None = marker_uid is not None
    except PermissionError:
        marker_uid, marked = None, None
    if marker_uid is not None and not marker_counts(depth, marker_uid, st.st_uid):
        into.skipped.append(Skipped(f"{path.rstrip('/')}/{MARKER}", (
            f"written by uid {marker_uid}, not by the owner of {path} (uid {st.st_uid}): ignored, "
            "so the directories inside are swept as usual; its writer should remove it")))
        marked = False
    verdict = classify_entry(st.st_mode, marked, depth, max_depth)
    if verdict is Verdict.SHARE_DIR:
        why = exposure(parents, st.st_uid, os.geteuid())
        if why is not None:
            into.skipped.append(Skipped(path, f"not swept: {why}"))
            return
        into.found.append(FoundShareDir(path, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode),
                                        st.st_dev, st.st_ino, names))
        return
    parents = (*parents, (path, st.st_mode, st.st_uid))
    if verdict is Verdict.UNREADABLE:
        into.skipped.append(Skipped(path, f"{verdict.value} (owner uid {st.st_uid})"))
        return
    if verdict is not Verdict.LOOK_INSIDE:
        return
    try:
        entries = sorted(list_at(fd))
    except PermissionError:
        into.skipped.append(Skipped(path, f"{Verdict.UNREADABLE.value} (owner uid {st.st_uid})"))
        return
    for name in entries:
        where = f"{path.rstrip('/')}/{name}"
        try:
            entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(entry.st_mode):
            into.skipped.append(Skipped(where, Verdict.NOT_FOLLOWED.value))
            continue
        if not stat.S_ISDIR(entry.st_mode):
            continue  # a file, a device...: not a share dir
        try:
            child = open_dir_at(fd, name)
        except (FileNotFoundError, NotADirectoryError):
            continue  # gone, or swapped for a symlink meanwhile: never followed
        except PermissionError:
            into.skipped.append(Skipped(where, f"{Verdict.UNREADABLE.value} (owner uid {entry.st_uid})"))
            continue
        try:
            _walk(child, where, (*names, name), max_depth, into, parents)
        finally:
            os.close(child)


def open_found(root_fd: int, share: FoundShareDir) -> int:
    """The share dir found by the walk, opened again from ROOT's descriptor, one no-follow open
    per name, and checked to be the very directory found (device, inode, owner).

    Raises
    ------
    PermissionError
        Something on the way was swapped since the walk: the share dir is left alone.
    """
    fd = os.dup(root_fd)
    try:
        for name in share.names:
            try:
                child = open_dir_at(fd, name)
            except (FileNotFoundError, NotADirectoryError):
                raise PermissionError(f"{share.path} is gone or no longer a directory (swapped for a "
                                      "symlink?) since the sweep found it: left alone") from None
            os.close(fd)
            fd = child
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino, st.st_uid) != (share.dev, share.ino, share.uid):
            raise PermissionError(f"{share.path} is no longer the directory found by the sweep "
                                  "(swapped meanwhile): left alone")
        os.set_inheritable(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def caller_refusal(euid: int, found: Sequence[tuple[str, int, bool]],
                   unreadable: Sequence[str]) -> str | None:
    """Why a caller may not sweep, or None (pure).

    Root may; anyone else only when they can write every share dir found
    and read every directory on the way (else a share dir could be missed).

    Parameters
    ----------
    euid
        The caller's effective uid.
    found
        Each share dir as ``(path, owner uid, writable by the caller)``.
    unreadable
        Directories under ROOT the caller could not read.
    """
    if euid == 0:
        return None
    for path, owner, writable in found:
        if not writable:
            return (f"--all-users needs root, or write access to every share dir under the root: "
                    f"{path} belongs to uid {owner} and you (uid {euid}) cannot write it; run it as "
                    "root (e.g. from a root timer), which acts on each share dir as its owner")
    if unreadable:
        return (f"--all-users needs root, or access to every directory under the root: you (uid {euid}) "
                f"cannot read {unreadable[0]}; run it as root")
    return None


def check_caller(share_dirs: ShareDirs) -> None:
    """PermissionError (one line) unless the caller may sweep ``share_dirs``."""
    euid = os.geteuid()
    found = [(d.path, d.uid, d.uid == euid or os.access(d.path, os.W_OK | os.X_OK))
             for d in share_dirs.found]
    unreadable = [s.path for s in share_dirs.skipped if s.reason.startswith(Verdict.UNREADABLE.value)]
    refusal = caller_refusal(euid, found, unreadable)
    if refusal is not None:
        raise PermissionError(refusal)


# -- acting as the owner ----------------------------------------------------------------------


@dataclass
class ChildResult:
    """What a child acting as a share dir's owner sent back."""

    data: Any = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    acted_as: tuple[int, int] | None = None  # the child's (uid, gid) once it dropped root


def preload() -> None:
    """Import, before any child drops root, what the children may import lazily.

    A child acting as a user may no longer read root's own files, and rxjobs
    (and Python) may be installed there (under ``/root``, say).
    """
    import concurrent.futures.thread  # noqa: F401
    import encodings.idna  # noqa: F401

    from . import jobs, records, runner  # noqa: F401
    from .engines import get_engine
    from .store import local  # noqa: F401

    with contextlib.suppress(ImportError):
        get_engine("local")  # the local engine's probe of a driver, its start-time check


def run_as_owner(share: FoundShareDir, work: Callable[[str], Any], root_fd: int,
                 time_limit: float = CHILD_TIME_LIMIT) -> ChildResult:
    """Run ``work(share_dir)`` in a child process that is the owner of ``share``; what it returned.

    The parent opens the share dir again from ``root_fd`` (:func:`open_found`)
    and forks.  The child closes every other descriptor, drops to the owner
    (when the caller is root and the owner is not; a non-root caller stays
    itself), checks the descriptor with ``fstat``, and calls ``work`` with
    ``/proc/self/fd/N``: a path that leads to the open directory itself, never
    resolved through ROOT again.  It writes ``work``'s JSON-able result to a
    pipe.  Nothing of the parent's runs in the child after that: it ends with
    ``os._exit``.  A child that has not reported within ``time_limit`` seconds
    (stopped, stuck) is killed with its process group.
    """
    try:
        share_fd = open_found(root_fd, share)
    except OSError as exc:
        return ChildResult(error=str(exc))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read_end)
            _child(share, share_fd, work, write_end)  # never returns
    finally:
        os.close(share_fd)
    os.close(write_end)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # the child does too: whichever runs first
    chunks, timed_out = _read_until(read_end, time.monotonic() + time_limit)
    if timed_out:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return ChildResult(error=f"the process acting as {share.user} did not finish within "
                                 f"{time_limit:g} s (stopped or stuck): killed, and the sweep went on; "
                                 "what it had done by then stays done")
    if not chunks:
        return ChildResult(error=f"the process acting as {share.user} ended without a report "
                                 f"(exit status {os.waitstatus_to_exitcode(status)})")
    try:
        sent = json.loads(b"".join(chunks))
        acted = sent.get("acted_as")
        return ChildResult(sent.get("data"), sent.get("error"), list(sent.get("warnings", [])),
                           (int(acted[0]), int(acted[1])) if acted else None)
    except (ValueError, AttributeError, TypeError, IndexError) as exc:
        return ChildResult(error=f"the process acting as {share.user} sent an unreadable report: {exc}")


def _read_until(read_end: int, deadline: float) -> tuple[list[bytes], bool]:
    """Everything written to the pipe until it closes; True as well if ``deadline`` came first."""
    chunks: list[bytes] = []
    with os.fdopen(read_end, "rb", buffering=0) as pipe, selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                return chunks, True
            chunk = pipe.read(1 << 16)
            if not chunk:
                return chunks, False
            chunks.append(chunk)


def _named(text: str, share_fd: int, path: str) -> str:
    """``text`` (JSON) with the child's ``/proc/self/fd/N`` spelled as the share dir's path."""
    spelled = json.dumps(path)[1:-1]
    return re.sub(rf"/proc/self/fd/{share_fd}(?![0-9])", lambda _: spelled, text)


def _close_all_but(keep: set[int]) -> None:
    """Close every descriptor above stderr but ``keep`` (root's other open directories)."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max(os.sysconf("SC_OPEN_MAX"), low))


def _child(share: FoundShareDir, share_fd: int, work: Callable[[str], Any], write_end: int) -> None:
    code = 0
    sent: dict[str, Any] = {}
    try:
        os.setpgid(0, 0)
        _close_all_but({share_fd, write_end})
        os.chdir("/")
        target: Target = drop_privileges(share.uid if os.geteuid() == 0 else os.geteuid())
        os.environ.update(user_environment(target))
        sent["acted_as"] = [os.geteuid(), os.getegid()]
        st = os.fstat(share_fd)
        if (st.st_dev, st.st_ino, st.st_uid) != (share.dev, share.ino, share.uid):
            raise PermissionError(f"{share.path} is no longer the directory found by the sweep "
                                  "(swapped meanwhile): left alone")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sent["data"] = work(f"/proc/self/fd/{share_fd}")
        sent["warnings"] = [str(w.message) for w in caught
                            if not (isinstance(w.message, RxCleanupWarning) and w.message.job_id)]
    except BaseException as exc:  # reported by the parent, per share dir
        sent["error"] = str(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        sent.pop("data", None)
        code = 1
    try:
        data = _named(json.dumps(sent), share_fd, share.path).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(write_end, view):]
    except BaseException:
        code = 2
    finally:
        os._exit(code)


# -- the sweep of cleanup ----------------------------------------------------------------------


def kept_because(entry: CleanupEntry) -> str:
    """Why cleanup kept a job, in a word or two (pure)."""
    if entry.outcome is CleanupOutcome.ERROR:
        return "error"
    if "another user" in entry.reason:
        return "other user"
    if "unreadable" in entry.reason or "cannot be read" in entry.reason:
        return "unreadable"
    if "not a job" in entry.reason:
        return "not a job"
    return {"finished": "un-retrieved results", "running": "running", "queued": "running"}.get(
        entry.status, entry.status)


@dataclass
class UserCleanup:
    """One share dir of the sweep: whose, what the cleanup did there, or why it could not."""

    share_dir: str
    uid: int
    user: str
    run: PolicyRun | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    acted_as: tuple[int, int] | None = None  # (uid, gid) of the process that did it

    @property
    def kept(self) -> dict[str, int]:
        """Kept jobs counted by why (``un-retrieved results``, ``running``...)."""
        counts: dict[str, int] = {}
        for entry in self.run.report if self.run is not None else ():
            if entry.outcome in (CleanupOutcome.KEPT, CleanupOutcome.ERROR):
                why = kept_because(entry)
                counts[why] = counts.get(why, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        run = self.run.to_json() if self.run is not None else None
        return {"user": self.user, "uid": self.uid, "share_dir": self.share_dir, "error": self.error,
                "acted_as": {"uid": self.acted_as[0], "gid": self.acted_as[1]} if self.acted_as else None,
                "warnings": self.warnings, "kept_because": self.kept,
                "bytes_after": self.run.bytes_after if self.run is not None else None,
                "over_max_total_size": self.run.still_over if self.run is not None else False,
                "run": run}


@dataclass
class SweepReport:
    """What ``rxjobs cleanup --all-users ROOT`` did, share dir by share dir."""

    root: str
    policy: RetentionPolicy
    dry_run: bool
    in_total: bool
    users: list[UserCleanup] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def entries(self, *outcomes: CleanupOutcome) -> list[CleanupEntry]:
        return [e for u in self.users if u.run is not None for e in u.run.report
                if not outcomes or e.outcome in outcomes]

    @property
    def total_bytes(self) -> int | None:
        totals = [u.run.total_bytes for u in self.users if u.run is not None]
        return None if not totals or None in totals else sum(t for t in totals if t is not None)

    @property
    def bytes_after(self) -> int | None:
        afters = [u.run.bytes_after for u in self.users if u.run is not None]
        return None if not afters or None in afters else sum(a for a in afters if a is not None)

    @property
    def still_over(self) -> bool:
        """Above ``max_total_size``: all share dirs together (``in_total``), else any one."""
        if self.policy.max_total_size is None:
            return False
        if self.in_total:
            after = self.bytes_after
            return after is not None and after > self.policy.max_total_size
        return any(u.run is not None and u.run.still_over for u in self.users)

    @property
    def failed(self) -> list[UserCleanup]:
        return [u for u in self.users if u.error is not None]

    def to_json(self) -> dict[str, Any]:
        removed = self.entries(CleanupOutcome.REMOVED)
        would = self.entries(CleanupOutcome.WOULD_REMOVE)
        return {
            "root": self.root, "policy": self.policy.to_json(), "dry_run": self.dry_run,
            "max_total_size_in_total": self.in_total,
            "removed": len(removed), "would_remove": len(would),
            "kept": len(self.entries(CleanupOutcome.KEPT)),
            "errors": len(self.entries(CleanupOutcome.ERROR)) + len(self.failed),
            "bytes_freed": sum(e.bytes for e in removed),
            "bytes_would_free": sum(e.bytes for e in would),
            "total_bytes": self.total_bytes, "bytes_after": self.bytes_after,
            "over_max_total_size": self.still_over,
            "users": [u.to_json() for u in self.users],
            "skipped": [s.to_json() for s in self.skipped],
        }


def _age_key(job: SurveyedJob) -> tuple[datetime, str]:
    return (job.submitted or datetime.min.replace(tzinfo=timezone.utc), job.job_id)


def select_in_total(surveys: Mapping[str, Sequence[SurveyedJob]], policy: RetentionPolicy,
                    now: datetime) -> dict[str, Selection]:
    """Pick jobs in several share dirs with one ``max_total_size`` for them all (pure).

    Each share dir first gets what the policy picks there without a size
    bound (``older_than``, expiry, its own ``keep_last`` newest jobs
    protected, ``states``); then, while all of them together stay above
    ``max_total_size``, the oldest job the rules would remove, whichever
    share dir holds it, is picked too.

    Parameters
    ----------
    surveys
        Every job of each share dir, by share dir.
    policy
        The policy; its ``max_total_size`` bounds the sum.
    now
        The moment ``older_than`` counts back from.
    """
    if policy.max_total_size is None:
        return {key: select_jobs(jobs, policy, now) for key, jobs in surveys.items()}
    # A bound no share dir reaches: each picks by age and expiry only (None would mean
    # "no rule at all", which picks every job).
    unbounded = replace(policy, max_total_size=sys.maxsize)
    selections = {key: select_jobs(jobs, unbounded, now) for key, jobs in surveys.items()}
    for selection in selections.values():
        selection.max_total_size = None
    after = sum(s.bytes_after for s in selections.values())
    candidates: list[tuple[tuple[datetime, str], str, SurveyedJob]] = []
    for key, jobs in surveys.items():
        taken = set(selections[key].protected) | set(selections[key].job_ids)
        for job in jobs:
            if (job.status is RxRemoteJobStatus.MISSING or job.job_id in taken
                    or (policy.states is not None and job.status not in policy.states)
                    or not job.removable(policy.force)):
                continue
            candidates.append((_age_key(job), key, job))
    for _, key, job in sorted(candidates, key=lambda c: (c[0], c[1])):
        if after <= policy.max_total_size:
            break
        selection = selections[key]
        selection.picks.append(Pick(job.job_id, f"all share dirs over {policy.max_total_size} bytes"))
        selection.bytes_after -= job.bytes
        after -= job.bytes
    for key, selection in selections.items():
        order = {job.job_id: _age_key(job) for job in surveys[key]}
        selection.picks.sort(key=lambda p: order[p.job_id])
    return selections


def sweep_cleanup(root: str, policy: RetentionPolicy, dry_run: bool = False, in_total: bool = False,
                  now: datetime | None = None, max_depth: int = MAX_DEPTH,
                  on_user: Callable[[UserCleanup], None] | None = None,
                  time_limit: float = CHILD_TIME_LIMIT) -> SweepReport:
    """Apply a retention policy to every share dir under ``root``, each as its owner.

    Parameters
    ----------
    root
        The directory holding the users' share dirs (e.g. ``/scratch/rxjobs``).
    policy
        The retention policy (no rule at all: every job, as the rules allow).
    dry_run
        Remove nothing; say what would go.
    in_total
        ``policy.max_total_size`` bounds all share dirs together, not each.
    now
        The moment ages and expiry are judged at (default: now).
    max_depth
        How deep under ``root`` share dirs are looked for.
    on_user
        Called with each share dir's outcome as soon as it is known.
    time_limit
        Seconds each child acting as a user may take (once for the survey of
        ``in_total``, once for the cleanup) before it is killed and reported.

    Raises
    ------
    PermissionError
        The caller is neither root nor able to write every share dir found.
    """
    now = now or utc_now()
    root_fd = open_root(root)
    try:
        return _sweep_cleanup_at(root_fd, root, policy, dry_run, in_total, now, max_depth, on_user,
                                 time_limit)
    finally:
        os.close(root_fd)


def _sweep_cleanup_at(root_fd: int, root: str, policy: RetentionPolicy, dry_run: bool, in_total: bool,
                      now: datetime, max_depth: int, on_user: Callable[[UserCleanup], None] | None,
                      time_limit: float) -> SweepReport:
    share_dirs = find_share_dirs_at(root_fd, root, max_depth)
    check_caller(share_dirs)
    preload()
    report = SweepReport(share_dirs.root, policy, dry_run, in_total, skipped=share_dirs.skipped)
    selections: dict[str, Selection] = {}
    failed: dict[str, ChildResult] = {}
    child_policy = policy
    if in_total and policy.max_total_size is not None:
        surveys: dict[str, list[SurveyedJob]] = {}
        for share in share_dirs.found:
            surveyed = run_as_owner(share, _survey_work(now), root_fd, time_limit)
            if surveyed.error is not None:
                failed[share.path] = surveyed
            else:
                surveys[share.path] = [SurveyedJob.from_json(j) for j in surveyed.data]
        selections = select_in_total(surveys, policy, now)
        child_policy = replace(policy, max_total_size=None)
    for share in share_dirs.found:
        outcome = UserCleanup(share.path, share.uid, share.user)
        ran = failed.get(share.path) or run_as_owner(
            share, _cleanup_work(child_policy, dry_run, now, selections.get(share.path)), root_fd,
            time_limit)
        outcome.warnings, outcome.acted_as = ran.warnings, ran.acted_as
        if ran.error is not None:
            outcome.error = ran.error
        else:
            try:
                outcome.run = replace(PolicyRun.from_json(ran.data), share_dir=share.path)
            except ValueError as exc:
                outcome.error = str(exc)
        report.users.append(outcome)
        if on_user is not None:
            on_user(outcome)
    return report


def _survey_work(now: datetime) -> Callable[[str], Any]:
    def work(path: str) -> Any:
        return [job.to_json() for job in survey_jobs(open_store(path), now, sizes=True)]
    return work


def _cleanup_work(policy: RetentionPolicy, dry_run: bool, now: datetime,
                  selection: Selection | None) -> Callable[[str], Any]:
    def work(path: str) -> Any:
        # Acting as the owner after dropping root, the child starts no new interpreter
        # (a cleanup's helper processes): it runs only what it was forked with.
        return apply_policy(open_store(path), policy, dry_run, now, selection,
                            helper_processes=False).to_json()
    return work


# -- the sweep of disk use ----------------------------------------------------------------------


@dataclass
class UserUsage:
    """One share dir's disk use, as its owner sees it, or why it could not be surveyed."""

    share_dir: str
    uid: int
    user: str
    report: UsageReport | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "uid": self.uid, "share_dir": self.share_dir, "error": self.error,
                "usage": self.report.to_json() if self.report is not None else None}


@dataclass
class SweepUsage:
    """Who uses what under ROOT: ``rxjobs du --all-users ROOT``."""

    root: str
    users: list[UserUsage] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def by_user(self) -> dict[str, dict[str, int]]:
        """Jobs, files, bytes, what cleanup would free and what it keeps, per user (summed over
        their share dirs), largest first."""
        totals: dict[str, dict[str, int]] = {}
        for u in self.users:
            if u.report is None:
                continue
            sums = totals.setdefault(u.user, {"share_dirs": 0, "jobs": 0, "files": 0, "bytes": 0,
                                              "freeable_bytes": 0, "kept_bytes": 0})
            sums["share_dirs"] += 1
            sums["jobs"] += len(u.report.jobs)
            sums["files"] += u.report.files
            sums["bytes"] += u.report.bytes
            sums["freeable_bytes"] += u.report.freeable_bytes
            sums["kept_bytes"] += u.report.kept_bytes
        return dict(sorted(totals.items(), key=lambda kv: (-kv[1]["bytes"], kv[0])))

    def to_json(self) -> dict[str, Any]:
        users = self.by_user()
        return {"root": self.root, "by_user": users,
                "totals": {key: sum(u[key] for u in users.values())
                           for key in ("share_dirs", "jobs", "files", "bytes", "freeable_bytes",
                                       "kept_bytes")},
                "share_dirs": [u.to_json() for u in self.users],
                "skipped": [s.to_json() for s in self.skipped]}


def sweep_usage(root: str, policy: RetentionPolicy | None = None, top: int = 10,
                now: datetime | None = None, max_depth: int = MAX_DEPTH,
                time_limit: float = CHILD_TIME_LIMIT) -> SweepUsage:
    """Survey the disk use of every share dir under ``root``, each as its owner; removes nothing.

    Each child acting as a user may take ``time_limit`` seconds before it is
    killed and reported.

    Raises
    ------
    PermissionError
        The caller is neither root nor able to write every share dir found.
    """
    now = now or utc_now()
    root_fd = open_root(root)
    try:
        share_dirs = find_share_dirs_at(root_fd, root, max_depth)
        check_caller(share_dirs)
        preload()
        sweep = SweepUsage(share_dirs.root, skipped=share_dirs.skipped)
        for share in share_dirs.found:
            sweep.users.append(_usage_of(share, root_fd, _usage_work(policy, top, now), time_limit))
    finally:
        os.close(root_fd)
    return sweep


def _usage_of(share: FoundShareDir, root_fd: int, work: Callable[[str], Any],
              time_limit: float) -> UserUsage:
    ran = run_as_owner(share, work, root_fd, time_limit)
    outcome = UserUsage(share.path, share.uid, share.user, error=ran.error)
    if ran.error is None:
        try:
            outcome.report = replace(UsageReport.from_json(ran.data), share_dir=share.path)
        except ValueError as exc:
            outcome.error = str(exc)
    return outcome


def _usage_work(policy: RetentionPolicy | None, top: int, now: datetime) -> Callable[[str], Any]:
    def work(path: str) -> Any:
        return disk_usage(open_store(path), policy, top, now).to_json()
    return work


__all__ = ["CHILD_TIME_LIMIT", "MAX_DEPTH", "ChildResult", "FoundShareDir", "ShareDirs", "Skipped",
           "SweepReport", "SweepUsage", "UserCleanup", "UserUsage", "Verdict", "caller_refusal",
           "check_caller", "classify_entry", "exposure", "find_share_dirs", "find_share_dirs_at",
           "kept_because", "marker_counts", "open_found", "open_root", "preload", "run_as_owner",
           "select_in_total", "swappable_by_others", "sweep_cleanup", "sweep_usage"]
