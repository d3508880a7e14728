"""Which installed modules a job's payload names: the fork server imports them once.

A local job's pool workers unpickle its payload, and so import the modules its
function and arguments refer to: seconds for scikit-learn, paid again by every
job's fresh workers.  The fork server (:mod:`rxjobs.engines.forkserver`) forks
each driver, and the driver forks its workers: a module the server has
imported is imported in all of them, for free.  So the submitting side names
the modules a payload refers to *by reference* (cloudpickle's
``GLOBAL``/``STACK_GLOBAL`` opcodes: what unpickling would import, such as
``sklearn.svm._classes``; a function pickled by value, from ``__main__`` or
a user's script, names no module of its own), and the server imports those it
may, before it forks the driver, so that this job and every later one start
warm.

The server imports a module only if it is safe to hold for every later job:

- its top-level package is an *installed distribution* (found in
  ``importlib.metadata``), not the standard library, not rxjobs and not
  ``__main__``;
- that package resolves, in the server and in the caller alike, to the same
  file (path, mtime and size: its *stamp*) in one of the interpreter's site
  directories (never the caller's working directory or script directory,
  never an editable checkout), and the server has not imported another copy;
- at most :data:`MAX_MODULES` per request; one that fails to import is
  skipped and remembered.

This module decides; it never imports what it names.  ``$RXJOBS_FORK_SERVER_PRELOAD=0``
turns preloading off.  It imports nothing of rxjobs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pickletools
import site
import sys
import sysconfig
from collections.abc import Collection, Iterable, Mapping

PRELOAD_ENV = "RXJOBS_FORK_SERVER_PRELOAD"
# At most this many modules are named per payload, and imported per request.
MAX_MODULES = 64
# A payload's opcodes are read up to this many (~15 ms): a function's references come first,
# and a huge list of plain values names no module.
MAX_OPS = 20_000
# Never preloaded: what the server has already, what is no distribution, what must not be.
_NEVER = frozenset({"__main__", "__mp_main__", "builtins", "copyreg", "rxjobs", "cloudpickle",
                    "psutil", "setproctitle"})
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_NOT_PUSHES = frozenset({"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME", "PROTO"})


def preload_enabled() -> bool:
    """Whether the fork server preloads a payload's modules (``$RXJOBS_FORK_SERVER_PRELOAD`` not 0)."""
    return os.environ.get(PRELOAD_ENV, "1").strip().lower() not in ("0", "no", "false", "off")


def referenced_modules(data: bytes, max_ops: int = MAX_OPS, limit: int = MAX_MODULES) -> list[str]:
    """The modules a pickle refers to by reference (dotted names), first seen first.

    Read from the opcodes (:mod:`pickletools`), never unpickled: nothing is
    imported.  ``STACK_GLOBAL`` takes the module and attribute names pushed
    just before it (strings, or memo gets of strings); ``GLOBAL`` and ``INST``
    carry them.  At most ``limit`` names, from the first ``max_ops`` opcodes;
    a pickle that does not parse names what was read before the fault.
    """
    found: dict[str, None] = {}
    memo: dict[int, str | None] = {}
    pushed: list[str | None] = []  # the values of the last pushes, when strings
    try:
        for count, (op, arg, _pos) in enumerate(pickletools.genops(data)):
            if count >= max_ops or len(found) >= limit:
                break
            name = op.name
            if name in ("GLOBAL", "INST"):
                found.setdefault(str(arg).split(" ", 1)[0], None)
            elif name == "STACK_GLOBAL":
                if len(pushed) >= 2 and isinstance(pushed[-2], str):
                    found.setdefault(pushed[-2], None)
                pushed.append(None)
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg if isinstance(arg, int) else -1] = pushed[-1] if pushed else None
            elif name in _MEMO_GETS:
                pushed.append(memo.get(arg) if isinstance(arg, int) else None)
            elif name in _STRING_OPS:
                pushed.append(str(arg))
            elif name not in _NOT_PUSHES:
                pushed.append(None)
            del pushed[:-2]
    except (ValueError, TypeError):
        pass  # not a pickle, or cut short: what was read is named
    return [name for name in found if is_module_name(name)]


def is_module_name(name: str) -> bool:
    """Whether ``name`` is a dotted module name (``a``, ``a.b._c``)."""
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def top_level(name: str) -> str:
    """``"sklearn.svm._classes"`` → ``"sklearn"``."""
    return name.partition(".")[0]


def may_preload(top: str, installed: Collection[str]) -> bool:
    """Whether a top-level name may be preloaded at all: an installed distribution's, not the
    standard library's, nor rxjobs' or the server's own."""
    return (top.isidentifier() and not top.startswith("_") and top not in _NEVER
            and top not in sys.stdlib_module_names and top in installed)


def modules_to_preload(requested: Iterable[str], installed: Collection[str],
                       imported: Collection[str], held: Collection[str],
                       failed: Collection[str], limit: int = MAX_MODULES) -> list[str]:
    """Of the requested modules, those the server should import now, in order.

    Parameters
    ----------
    requested
        Dotted names a payload refers to (:func:`referenced_modules`).
    installed
        Top-level names of installed distributions (:func:`installed_top_level`).
    imported
        Names already imported in the server (``sys.modules``).
    held
        Top-level names the server imported for requests (checked against the
        caller's stamps); a package imported otherwise (an rxjobs dependency) is
        the server's own, and none of its modules is preloaded.
    failed
        Names that failed to import before.
    limit
        At most this many names.
    """
    chosen: list[str] = []
    for name in requested:
        if len(chosen) >= limit:
            break
        top = top_level(name)
        if (not is_module_name(name) or name in chosen or name in imported or name in failed
                or not may_preload(top, installed) or (top in imported and top not in held)):
            continue
        chosen.append(name)
    return chosen


def in_site_dirs(origin: str | None, site_dirs: Iterable[str]) -> bool:
    """Whether ``origin`` (a module's file) lies in one of ``site_dirs`` (absolute, normalized)."""
    if not origin or not os.path.isabs(origin):
        return False
    path = os.path.normpath(origin)
    return any(path.startswith(os.path.join(os.path.normpath(d), "")) for d in site_dirs if d)


def site_dirs() -> list[str]:
    """This interpreter's site directories, where installed distributions live."""
    dirs = [sysconfig.get_paths().get(key, "") for key in ("purelib", "platlib")]
    dirs += list(getattr(site, "getsitepackages", list)())
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else ""
    dirs.append(user if isinstance(user, str) else "")
    return [os.path.realpath(d) for d in dict.fromkeys(dirs) if d]


def module_stamp(name: str, dirs: Iterable[str]) -> str | None:
    """Where the top-level module ``name`` resolves (file, mtime, size), if in ``dirs``; else None.

    Uses :func:`importlib.util.find_spec`, which for a top-level name imports
    nothing.  The stamp changes when the module is reinstalled, so a server
    holding an older copy is seen to be stale.
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec is not None else None
    if origin is None or not in_site_dirs(os.path.realpath(origin), dirs):
        return None
    try:
        st = os.stat(origin)
    except OSError:
        return None
    return f"{os.path.realpath(origin)}:{st.st_mtime_ns}:{st.st_size}"


def caller_stamps(names: Iterable[str], dirs: Iterable[str] | None = None) -> dict[str, str]:
    """The stamps of the top-level packages of ``names`` that resolve into the site
    directories here (the caller's side)."""
    where = site_dirs() if dirs is None else list(dirs)
    stamps: dict[str, str] = {}
    for top in dict.fromkeys(top_level(name) for name in names):
        if not top.isidentifier() or top in _NEVER or top in sys.stdlib_module_names:
            continue
        stamp = module_stamp(top, where)
        if stamp is not None:
            stamps[top] = stamp
    return stamps


def installed_top_level() -> set[str]:
    """The top-level module names of the installed distributions (``importlib.metadata``)."""
    return set(importlib.metadata.packages_distributions())


def stale(stamps: Mapping[str, str], held: Mapping[str, str]) -> list[str]:
    """The names whose stamp differs from the one a server holds (it imported an older copy)."""
    return [name for name, stamp in stamps.items() if name in held and held[name] != stamp]
