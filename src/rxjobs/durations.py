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

_SIZE_RE = re.compile(r"(\d+(?:\.\d*)?)\s*([kmgtp]?)(i?)(b?)\Z")
_SIZE_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_BARE_NUMBER_RE = re.compile(r"[+-]?\d+(?:\.\d*)?")

DURATION_FORMS = "30s, 30m, 2h, 7d, 1w or 1h30m"
SIZE_FORMS = "500B, 10kB, 500M, 50G, 2T or 200MiB"


def is_duration(text: str) -> bool:
    """Whether ``text`` is spelled as a duration (numbers each followed by a unit)."""
    return bool(_DURATION_RE.fullmatch(_compact(text)))


def _compact(text: str) -> str:
    return str(text).strip().lower().replace(" ", "")


def _is_zero(text: str) -> bool:
    """``0`` (or ``0.0``): the one number that needs no unit, being zero in all of them."""
    return bool(_BARE_NUMBER_RE.fullmatch(text)) and float(text) == 0


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``30m``, ``2h``, ``7d``, ``1w`` or ``1h30m``.

    A number without a unit is refused (but ``0``): ``30`` could mean seconds
    or days, and a retention rule read the wrong way removes every job.

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
    if _is_zero(compact):
        return timedelta(0)
    if _BARE_NUMBER_RE.fullmatch(compact):
        raise ValueError(f"a duration needs a unit: {text!r} (use e.g. {DURATION_FORMS})")
    if not _DURATION_RE.fullmatch(compact):
        raise ValueError(f"not a duration: {text!r} (use e.g. {DURATION_FORMS})")
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
    """A duration given as a ``timedelta`` or a string such as ``"7d"``.

    A number is refused (but ``0``), as in :func:`parse_duration`: say the unit.

    Raises
    ------
    TypeError
        ``value`` is neither.
    ValueError
        It is a number, negative, not a duration, or longer than a ``timedelta`` holds.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, str):
        result = parse_duration(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != 0:
            raise ValueError(f"{name} needs a unit: {value!r} is no duration "
                             f"(use e.g. '{value}s' or '{value}d'; forms: {DURATION_FORMS})")
        result = timedelta(0)
    else:
        raise TypeError(f"{name} must be a duration such as '7d' or a timedelta, "
                        f"not {type(value).__name__}")
    if result < timedelta(0):
        raise ValueError(f"{name} cannot be negative: {value!r}")
    return result


def parse_size(text: str | int) -> int:
    """Parse a size in bytes: ``500B``, ``50G``, ``1.5T``, ``200MiB``, ``10kB``.

    Decimal units (``k``, ``M``, ``G``, ``T``, ``P``: powers of 1000) unless
    written with ``i`` (``GiB``: powers of 1024); a trailing ``B`` is optional
    after a unit, and is the unit of plain bytes.  A number without a unit is
    refused (but ``0``), as durations are: say ``500B`` or ``500M``.

    Raises
    ------
    ValueError
        ``text`` is not a size, or a number without a unit.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        if text != 0:
            raise ValueError(f"a size needs a unit: {text!r} (use e.g. '{text}B' or '{text}G'; "
                             f"forms: {SIZE_FORMS})")
        return 0
    compact = str(text).strip().lower()
    if _is_zero(compact):
        return 0
    if _BARE_NUMBER_RE.fullmatch(compact):
        raise ValueError(f"a size needs a unit: {text!r} (use e.g. {SIZE_FORMS})")
    m = _SIZE_RE.match(compact)
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. {SIZE_FORMS})")
    number, unit, binary, _ = m.groups()
    if binary and not unit:
        raise ValueError(f"not a size: {text!r} (use e.g. {SIZE_FORMS})")
    base = 1024 if binary else 1000
    try:
        return int(float(number) * base ** _SIZE_POWER[unit])
    except OverflowError:  # digits beyond a float: infinity
        raise ValueError(f"size out of range: {text!r}") from None


def format_size(size: int) -> str:
    """A byte count as :func:`parse_size` reads it back exactly (``500B``, ``0``)."""
    return f"{size}B" if size else "0"
