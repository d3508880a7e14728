"""Dropping root's privileges to a user's, for good, and checking that it held.

The operator's sweep (:mod:`rxjobs.sweep`) acts on each user's share dir
**as that user** (docs/security.md, rule 7): a child process takes the
user's supplementary groups, then their group, then their uid, in that
order (``initgroups`` and ``setgid`` need root, which ``setuid`` gives up),
and then checks that every real, effective and saved id is the user's and
that root cannot be taken back.  Anything else ends the child before it
touches a file.

:func:`drop_problems` is the pure part, a comparison of what the kernel says
with what was asked, tested by a table; :func:`drop_privileges` does the
calls.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass


class PrivilegeDropError(PermissionError):
    """The process could not become the user it had to act as; nothing was done."""


@dataclass(frozen=True)
class Credentials:
    """The ids of a process: real, effective and saved uid and gid, and the groups."""

    uids: tuple[int, int, int]
    gids: tuple[int, int, int]
    groups: frozenset[int]

    @classmethod
    def of_this_process(cls) -> Credentials:
        return cls(os.getresuid(), os.getresgid(), frozenset(os.getgroups()))


@dataclass(frozen=True)
class Target:
    """Whom to become: a uid with its name, primary group and supplementary groups."""

    uid: int
    name: str
    gid: int
    groups: frozenset[int]

    @classmethod
    def of_uid(cls, uid: int) -> Target:
        """The account of ``uid`` from the password and group databases.

        Raises
        ------
        PrivilegeDropError
            ``uid`` has no account (a share dir of a deleted user): nobody to act as.
        """
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            raise PrivilegeDropError(f"uid {uid} has no account (a deleted user?): nobody to act "
                                     "as, so its share dir is left alone") from None
        return cls(uid, entry.pw_name, entry.pw_gid,
                   frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid)))


def drop_problems(seen: Credentials, target: Target, regained_root: bool) -> list[str]:
    """What is wrong with the ids a process has after dropping to ``target`` (pure).

    Parameters
    ----------
    seen
        The ids the kernel reports after the drop.
    target
        The account the process had to become.
    regained_root
        Whether ``setuid(0)`` succeeded after the drop (it must not, unless
        the target is root itself).

    Returns
    -------
    list of str
        One sentence per problem; empty when the drop held.
    """
    problems = []
    if seen.uids != (target.uid,) * 3:
        problems.append(f"uids (real, effective, saved) are {seen.uids}, not uid {target.uid}")
    if seen.gids != (target.gid,) * 3:
        problems.append(f"gids (real, effective, saved) are {seen.gids}, not gid {target.gid}")
    extra = seen.groups - target.groups - {target.gid}
    if extra:
        problems.append(f"still in groups {sorted(extra)}, which {target.name} is not in")
    if regained_root and target.uid != 0:
        problems.append("setuid(0) succeeded after the drop: root could be taken back")
    return problems


def drop_privileges(uid: int) -> Target:
    """Become ``uid`` for good (``initgroups``, ``setgid``, ``setuid``), verified.

    A process that already is ``uid`` (a non-root operator sweeping their own
    share dirs, or root's own share dir) keeps its ids.  Call this only in a
    child process made to act as the user: there is no way back.

    Returns
    -------
    Target
        The account the process now is.

    Raises
    ------
    PrivilegeDropError
        The process is neither root nor ``uid``, ``uid`` has no account, or
        the ids after the drop are not exactly the user's.
    """
    if os.geteuid() == uid and os.getuid() == uid:
        entry = _account_or_none(uid)
        return Target(uid, entry.pw_name if entry else str(uid), os.getgid(), frozenset(os.getgroups()))
    if os.geteuid() != 0:
        raise PrivilegeDropError(f"acting as uid {uid} needs root; this process is uid {os.geteuid()}")
    target = Target.of_uid(uid)
    os.initgroups(target.name, target.gid)
    os.setgid(target.gid)  # as root: real, effective and saved gid
    os.setuid(target.uid)  # as root: real, effective and saved uid; root is gone
    regained = False
    if target.uid != 0:
        try:
            os.setuid(0)
            regained = True
        except PermissionError:
            pass
    problems = drop_problems(Credentials.of_this_process(), target, regained)
    if problems:
        raise PrivilegeDropError(f"could not become {target.name} (uid {uid}): " + "; ".join(problems))
    return target


def _account_or_none(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


def user_name(uid: int) -> str:
    """The login name of ``uid``, or the number as text for a uid without an account."""
    entry = _account_or_none(uid)
    return entry.pw_name if entry else str(uid)


def user_environment(target: Target, home: str | None = None) -> dict[str, str]:
    """The variables naming the user that a process acting as ``target`` should carry."""
    entry = _account_or_none(target.uid)
    return {"USER": target.name, "LOGNAME": target.name,
            "HOME": home or (entry.pw_dir if entry else "/")}


__all__ = ["Credentials", "PrivilegeDropError", "Target", "drop_privileges", "drop_problems",
           "user_environment", "user_name"]
