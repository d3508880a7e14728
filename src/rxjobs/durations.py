"""Durations and sizes as people write them: ``7d``, ``1h30m``, ``50G``.

Used by ``expires_after`` on compute contexts, by retention policies and by
the command line.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

_DURATION_RE = re.compile(r"(?:\d+(?:\.\d*)?[smhdw])+")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

_SIZE_RE = re.compile(r"(\d+(?:\.\d*)?)\s*([kmgtp]?)(i?)b?\Z")
_SIZE_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def is_duration(text: str) -> bool:
    """Whether ``text`` is spelled as a duration (numbers each followed by a unit)."""
    return bool(_DURATION_RE.fullmatch(_compact(text)))


def _compact(text: str) -> str:
    return str(text).strip().lower().replace(" ", "")


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``30m``, ``2h``, ``7d``, ``1w`` or ``1h30m``.

    Parameters
    ----------
    text
        Numbers each followed by a unit: ``s``, ``m``, ``h``, ``d`` or ``w``.

    Returns
    -------
    timedelta

    Raises
    ------
    ValueError
        ``text`` is not a duration, or one longer than a ``timedelta`` holds.
    """
    compact = _compact(text)
    if not _DURATION_RE.fullmatch(compact):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 2h, 7d, 1w)")
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART_RE.findall(compact))
    return _seconds(seconds, text)


def _seconds(seconds: float, text: Any) -> timedelta:
    """``timedelta(seconds=seconds)``, or ValueError naming ``text`` when no timedelta holds it."""
    try:
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError):  # beyond 999999999 days, inf, nan
        raise ValueError(f"duration out of range: {text!r} (at most {timedelta.max.days} days)") from None


def format_duration(value: timedelta) -> str:
    """The shortest spelling :func:`parse_duration` reads back exactly (``7d``, ``1h30m``, ``0s``)."""
    seconds = value.total_seconds()
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds!r}s"
    parts = []
    for unit in ("d", "h", "m", "s"):
        n, whole = divmod(whole, _UNIT_SECONDS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"


def to_timedelta(value: Any, name: str = "duration") -> timedelta:
    """A duration given as a ``timedelta``, a string such as ``"7d"``, or seconds.

    Raises
    ------
    TypeError
        ``value`` is none of these.
    ValueError
        It is negative, not a duration, or longer than a ``timedelta`` holds.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, str):
        result = parse_duration(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = _seconds(value, value)
    else:
        raise TypeError(f"{name} must be a duration such as '7d' or a timedelta, "
                        f"not {type(value).__name__}")
    if result < timedelta(0):
        raise ValueError(f"{name} cannot be negative: {value!r}")
    return result


def parse_size(text: str | int) -> int:
    """Parse a size in bytes: ``500``, ``50G``, ``1.5T``, ``200MiB``, ``10kB``.

    Decimal units (``k``, ``M``, ``G``, ``T``, ``P``: powers of 1000) unless
    written with ``i`` (``GiB``: powers of 1024); a trailing ``B`` is optional.

    Raises
    ------
    ValueError
        ``text`` is not a size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return text
    m = _SIZE_RE.match(str(text).strip().lower())
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 500M, 50G, 2T, 200MiB)")
    number, unit, binary = m.groups()
    if binary and not unit:
        raise ValueError(f"not a size: {text!r} (use e.g. 500M, 50G, 2T, 200MiB)")
    base = 1024 if binary else 1000
    try:
        return int(float(number) * base ** _SIZE_POWER[unit])
    except OverflowError:  # digits beyond a float: infinity
        raise ValueError(f"size out of range: {text!r}") from None
