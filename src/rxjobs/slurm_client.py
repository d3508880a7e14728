"""The Slurm client commands: run them, and learn which cluster they talk to.

What both the ``RxSlurm`` compute context (checking the commands exist, naming
the cluster) and the Slurm engine need, below both, so that neither imports
the other.  Needs no Python package: only ``sbatch``, ``squeue``,
``scontrol``, ``scancel`` and ``sinfo`` on PATH.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
import time

from .errors import EngineNotInstalledError

COMMANDS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
# Queries are cheap round trips; a controller that does not answer within this
# long is unreachable (Slurm's clients retry for about MessageTimeout first).
QUERY_TIMEOUT_S = 30.0
# After a failed contact, queries fail at once for this long (a cleanup or a
# listing probes many jobs, each would wait for the client's retries).
_DOWN_TTL_S = 5.0
# What Slurm's commands print when slurmctld does not answer (lowercased).  Plain
# substrings, not regular expressions: array tasks import this module, and every
# millisecond of their start is paid once per task.
_UNREACHABLE_MARKS = ("unable to contact slurm controller", "socket timed out",
                      "zero bytes were transmitted", "connection refused",
                      "communication connection failure", "slurm backup controller in standby",
                      "transport endpoint is not connected")


def _unreachable(stderr: str) -> bool:
    text = stderr.lower()
    return any(mark in text for mark in _UNREACHABLE_MARKS)




class SlurmUnreachableError(ConnectionError):
    """``slurmctld`` does not answer the Slurm commands."""


class SlurmCommandError(RuntimeError):
    """A Slurm command failed (the message says which and why)."""


# -- running the Slurm commands -----------------------------------------------------------


_down: dict[str, tuple[float, str]] = {}  # SLURM_CONF -> (until, why)
_down_lock = threading.Lock()


def missing_commands() -> list[str]:
    """The Slurm client commands rxjobs needs that are not on PATH."""
    return [name for name in COMMANDS if shutil.which(name) is None]


def require_commands(kind: str = "RxSlurm") -> None:
    """Raise :class:`EngineNotInstalledError` unless the Slurm commands are on PATH."""
    missing = missing_commands()
    if missing:
        raise EngineNotInstalledError(
            f"{kind} needs the Slurm client commands on PATH (missing: {', '.join(missing)}); "
            "run it on a login node of the cluster, or install the Slurm client there "
            "(Debian/Ubuntu: apt-get install slurm-client) with the cluster's slurm.conf"
        )


def config_key() -> str:
    return os.environ.get("SLURM_CONF", "")


def run_slurm(args: list[str], timeout: float = QUERY_TIMEOUT_S, input: str | None = None,
              env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run one Slurm command; its result (raises on failure when ``check``).

    Raises
    ------
    SlurmUnreachableError
        The controller did not answer (or failed to a moment ago).
    SlurmCommandError
        Any other failure, with the command's own message.
    """
    key = config_key()
    with _down_lock:
        until, why = _down.get(key, (0.0, ""))
    if time.monotonic() < until:
        raise SlurmUnreachableError(why)
    try:
        done = subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout,
                              env=env, stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        require_commands()
        raise
    except subprocess.TimeoutExpired:
        _mark_down(key, f"`{args[0]}` got no answer from slurmctld within {timeout:.0f} s")
        raise SlurmUnreachableError(_down[key][1]) from None
    if done.returncode != 0 and _unreachable(done.stderr):
        _mark_down(key, f"cannot reach slurmctld: {done.stderr.strip().splitlines()[-1]}")
        raise SlurmUnreachableError(_down[key][1])
    with _down_lock:
        _down.pop(key, None)
    if check and done.returncode != 0:
        raise SlurmCommandError(f"`{shlex.join(args[:3])} ...` failed (exit {done.returncode}): "
                                f"{done.stderr.strip() or done.stdout.strip()}")
    return done


def _mark_down(key: str, why: str) -> None:
    with _down_lock:
        _down[key] = (time.monotonic() + _DOWN_TTL_S, why)


def forget_unreachable() -> None:
    """Forget that slurmctld failed to answer (tests restart it)."""
    with _down_lock:
        _down.clear()


# -- the cluster ----------------------------------------------------------------------------


_config_cache: dict[str, dict[str, str]] = {}


def cluster_config() -> dict[str, str]:
    """``scontrol show config`` as a dict, cached per ``SLURM_CONF`` for this process.

    When slurmctld does not answer, the keys of the local ``slurm.conf``
    (``$SLURM_CONF``, else ``/etc/slurm/slurm.conf``) stand in, uncached.
    """
    key = config_key()
    cached = _config_cache.get(key)
    if cached is not None:
        return cached
    try:
        text = run_slurm(["scontrol", "show", "config"]).stdout
    except (SlurmUnreachableError, SlurmCommandError):
        return _read_conf_file()
    config = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            config[name.strip()] = value.strip()
    _config_cache[key] = config
    return config


def _read_conf_file() -> dict[str, str]:
    path = os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    config: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                name, sep, value = line.split("#", 1)[0].partition("=")
                if sep and " " not in name.strip():
                    config.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return config


def cluster_name() -> str:
    """The name of the Slurm cluster this machine's commands talk to (``ClusterName``).

    Raises
    ------
    SlurmUnreachableError
        Neither slurmctld nor a local slurm.conf says it.
    """
    name = cluster_config().get("ClusterName", "")
    if not name or name == "(null)":
        raise SlurmUnreachableError(
            "cannot tell which Slurm cluster this is: slurmctld does not answer `scontrol show "
            "config` and no slurm.conf names it; pass RxSlurm(cluster=...)")
    return name
