"""Trust checks of a local share dir: who could have written what rxjobs is about to use.

Loading a pickle runs code, so a pickle is read only when nobody but the
caller could have written it (:func:`check_trusted`); the reserved
directories (``.trash``, ``.locks``) are used only when they are what rxjobs
could have made (:func:`reserved_problem`).  ``RXJOBS_TRUST_SHARE_DIR=1`` lifts
the first check for a share dir the caller trusts (docs/security.md).
"""

from __future__ import annotations

import os
import stat

from ..errors import UntrustedShareDirError

TRUST_ENV = "RXJOBS_TRUST_SHARE_DIR"
STICKY = stat.S_ISVTX


def trusts_everyone() -> bool:
    """Whether the caller said to trust whoever can write the share dir (``RXJOBS_TRUST_SHARE_DIR=1``)."""
    return os.environ.get(TRUST_ENV) == "1"


def reserved_problem(st: os.stat_result, root: os.stat_result, me: int) -> str | None:
    """What is wrong with a reserved directory (``.trash``, ``.locks``) of this ``lstat`` in
    the share dir ``root``, or None when it is one rxjobs could have made (pure): a directory
    owned by ``me`` or the share dir's owner, or the team's own, in which nobody else can swap
    entries."""
    if not stat.S_ISDIR(st.st_mode):
        return "a symlink or not a directory"
    others_write = st.st_mode & 0o002 or (st.st_mode & 0o020 and not st.st_mode & STICKY)
    # In a team share dir any member may have made it: then it is the team's own
    # (its group, sticky, so no member can rename another's entries).
    team_made = bool(st.st_mode & STICKY) and st.st_gid == root.st_gid
    if st.st_uid not in (me, root.st_uid) and not team_made or others_write:
        return f"owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}"
    return None


def check_trusted(st: os.stat_result, where: str, me: int, share_dir: bool = False) -> None:
    """UntrustedShareDirError unless only ``me`` could have written what ``st`` describes.

    The share dir itself may be another's (a team's) when nobody else can
    rename entries in it: not writable by others, or sticky.
    """
    if share_dir:
        if st.st_mode & 0o022 and not st.st_mode & STICKY:
            raise UntrustedShareDirError(
                f"share dir {where} lets others rename its entries (mode "
                f"{stat.S_IMODE(st.st_mode):o}, no sticky bit): another user could swap your job for "
                f"theirs, and loading its pickles would run their code. Run `chmod go-w {where}` (or "
                f"`chmod +t {where}` for a team share dir, mode 3770), or set {TRUST_ENV}=1 if you "
                "trust everyone who can write it")
        return
    if st.st_uid != me:
        raise UntrustedShareDirError(
            f"{where} is owned by uid {st.st_uid}, not by you (uid {me}); loading "
            "pickles from it could run another user's code. Use a share dir of your own, or set "
            f"{TRUST_ENV}=1 if you trust it")
    if st.st_mode & 0o022:
        raise UntrustedShareDirError(
            f"{where} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"loading pickles from it could run their code. Run `chmod go-w {where}`, or set "
            f"{TRUST_ENV}=1 if you trust it")


__all__ = ["STICKY", "TRUST_ENV", "reserved_problem", "check_trusted", "trusts_everyone"]
