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

import functools
import importlib.metadata
import importlib.util
import os
import re
import site
import sys
import sysconfig
from collections.abc import Collection, Iterable, Mapping

PRELOAD_ENV = "RXJOBS_FORK_SERVER_PRELOAD"
# At most this many modules are named per payload, and imported per request.
MAX_MODULES = 64
# A payload is scanned up to this many bytes (~2 ms): a function's references come first,
# and a huge array names no module.
MAX_SCAN_BYTES = 4 << 20
# Never preloaded: what the server has already, what is no distribution, what must not be.
_NEVER = frozenset({"__main__", "__mp_main__", "builtins", "copyreg", "rxjobs", "cloudpickle",
                    "psutil", "setproctitle"})
# Protocol 4+: a module name as SHORT_BINUNICODE (length byte, UTF-8 name), then MEMOIZE.
_MODULE_STRING = re.compile(rb"\x8c([\x01-\x7f])([A-Za-z_][\w.]{0,126})\x94")
# Protocols 0-3: GLOBAL or INST, "c<module>\n<name>\n".
_GLOBAL_LINE = re.compile(rb"[ci]([A-Za-z_][\w.]{0,126})\n[^\n]{1,256}\n")
_SHORT_STRING, _MEMOIZE, _STACK_GLOBAL, _BINGET, _LONG_BINGET = b"\x8c", b"\x94", b"\x93", b"h", b"j"


def preload_enabled() -> bool:
    """Whether the fork server preloads a payload's modules (``$RXJOBS_FORK_SERVER_PRELOAD`` not 0)."""
    return os.environ.get(PRELOAD_ENV, "1").strip().lower() not in ("0", "no", "false", "off")


def referenced_modules(data: bytes, max_bytes: int = MAX_SCAN_BYTES, limit: int = MAX_MODULES) -> list[str]:
    """The modules a pickle refers to by reference (dotted names), first seen first.

    Found by patterns over the bytes, never unpickled: nothing is imported.
    In protocol 4 and 5 (cloudpickle's), a reference is ``STACK_GLOBAL``
    after two pushed strings, the module and the attribute; a module's first
    reference pushes its name as a literal, memoized, which is what is
    matched, with the attribute (a literal or a memo get) and the
    ``STACK_GLOBAL`` right after it.  Older protocols carry both names in
    ``GLOBAL``/``INST``.  Walking every opcode with :mod:`pickletools` gave
    the same names for a scikit-learn search's payload in 3.5 ms; this takes
    0.25 ms, on the path of every local job's start.

    What it may miss costs only the preload (the job's workers then import
    the module themselves): a module name first pushed as a plain string and
    later got from the memo, a reference split by a frame boundary.  What it
    may wrongly match (the same byte patterns inside a ``bytes`` value) is
    only a name the fork server checks like any other (installed, stamped).
    At most ``limit`` names, from the first ``max_bytes`` bytes.
    """
    hits: list[tuple[int, bytes]] = []  # matched within the first max_bytes, without a copy
    for match in _MODULE_STRING.finditer(data, 0, max_bytes):
        if match.group(1)[0] == len(match.group(2)) and _stack_global_follows(data, match.end()):
            hits.append((match.start(), match.group(2)))
    if not (data[:1] == b"\x80" and data[1:2] >= b"\x04"):  # no PROTO 4+: GLOBAL lines
        hits.extend((match.start(), match.group(1)) for match in _GLOBAL_LINE.finditer(data, 0, max_bytes))
    found: dict[str, None] = {}
    for _at, raw in sorted(hits):
        name = raw.decode("ascii", errors="replace")
        if is_module_name(name):
            found.setdefault(name, None)
            if len(found) >= limit:
                break
    return list(found)


def _stack_global_follows(data: bytes, at: int) -> bool:
    """Whether the attribute name (a short string memoized, or a memo get) and then
    ``STACK_GLOBAL`` come at ``at``."""
    op = data[at:at + 1]
    if op == _SHORT_STRING and at + 1 < len(data):
        end = at + 2 + data[at + 1]
        return data[end:end + 2] == _MEMOIZE + _STACK_GLOBAL
    if op == _BINGET:
        return data[at + 2:at + 3] == _STACK_GLOBAL
    if op == _LONG_BINGET:
        return data[at + 5:at + 6] == _STACK_GLOBAL
    return False


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
    """This interpreter's site directories, where installed distributions live (found once
    per process: they are fixed at start-up, and looking them up took 0.7 ms per job)."""
    return list(_site_dirs())


@functools.cache
def _site_dirs() -> tuple[str, ...]:
    dirs = [sysconfig.get_paths().get(key, "") for key in ("purelib", "platlib")]
    dirs += list(getattr(site, "getsitepackages", list)())
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else ""
    dirs.append(user if isinstance(user, str) else "")
    return tuple(os.path.realpath(d) for d in dict.fromkeys(dirs) if d)


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
    real = os.path.realpath(origin) if origin is not None else None
    if real is None or not in_site_dirs(real, dirs):
        return None
    try:
        st = os.stat(real)
    except OSError:
        return None
    return f"{real}:{st.st_mtime_ns}:{st.st_size}"


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
