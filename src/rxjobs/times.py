"""Points in time: the one rule for reading them, and how records write them.

Records store aware UTC ISO-8601 timestamps.  What a user gives (a
``datetime`` or a string to ``rx_get_jobs``, ``--since``/``--until``, a
timestamp in a record written by hand) may have no zone: **a time without a
zone is local time**, as Python's ``datetime.astimezone()`` and RevoScaleR
users read it.  A user may also say "a duration ago" (``2h``, ``7d``).  This
module is the only place these rules are applied; every time it returns is
aware and in UTC.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from .durations import format_duration, is_duration, parse_duration


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


def utc_now_iso() -> str:
    """The current UTC time, ISO-8601, as stored in every record."""
    return utc_now().isoformat()


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive ``datetime`` is local time.

    Raises
    ------
    TypeError
        ``value`` is not a ``datetime``.
    ValueError
        ``value`` lies outside the range of dates once in UTC (year 1 or 9999).
    """
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, not {type(value).__name__}")
    try:
        return value.astimezone(timezone.utc)
    except (OverflowError, ValueError) as exc:  # year 1 or 9999 shifted out of range
        raise ValueError(f"{value.isoformat()} is out of the range of dates once in UTC "
                         f"({exc})") from None


def time_ago(duration: timedelta, now: datetime | None = None) -> datetime:
    """The moment ``duration`` before ``now`` (default: the current time), in UTC.

    Raises
    ------
    ValueError
        That moment is before year 1 (a duration far too long).
    """
    start = to_utc(now) if now is not None else utc_now()
    try:
        return start - duration
    except OverflowError:
        raise ValueError(f"{format_duration(duration)} ago is before year 1: "
                         "give a shorter duration") from None


def parse_age(text: str, now: datetime | None = None) -> timedelta:
    """A duration that counts back from ``now`` to a date (``--older-than 30d``).

    Raises
    ------
    ValueError
        ``text`` is not a duration, or reaches back before year 1.
    """
    duration = parse_duration(text)
    time_ago(duration, now)
    return duration


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """Parse a point in time: an ISO date/time, or a duration ago (``2h`` is two hours ago).

    Parameters
    ----------
    text
        ``2026-11-28``, ``2026-11-28T14:30``, ``2026-11-28 14:30:00+01:00``,
        ``...Z``, or a duration such as ``30m``, ``2h``, ``7d``.  A date/time
        without a UTC offset is local time.
    now
        The moment durations count back from (default: now).

    Returns
    -------
    datetime
        An aware datetime in UTC.

    Raises
    ------
    ValueError
        ``text`` is neither, or names a moment outside the range of dates.
    """
    if is_duration(text):
        return time_ago(parse_duration(text), now)
    try:
        when = _from_iso(str(text))
    except ValueError:
        raise ValueError(
            f"not a date/time or duration: {text!r} (use e.g. 2026-11-28, 2026-11-28T14:30, "
            "or a duration ago such as 30m, 2h, 7d)"
        ) from None
    try:
        return to_utc(when)
    except ValueError:
        raise ValueError(f"{text!r} is out of the range of dates (years 1 to 9999, in UTC)") from None


def as_time(value: datetime | str, name: str = "time") -> datetime:
    """A time given as a ``datetime`` or as text :func:`parse_time` reads, in UTC.

    Raises
    ------
    TypeError
        ``value`` is neither.
    ValueError
        The text is no time, or the time is outside the range of dates.
    """
    if isinstance(value, datetime):
        return to_utc(value)
    if isinstance(value, str):
        return parse_time(value)
    raise TypeError(f"{name} must be a datetime or a string such as '2026-11-28' or '2h' "
                    f"(two hours ago), not {type(value).__name__}")


def parse_timestamp(text: Any) -> datetime | None:
    """An ISO-8601 timestamp as an aware UTC datetime, or None if ``text`` is not one.

    A trailing ``Z`` means UTC; a timestamp without a zone is local time.
    Used for what records say, where an unreadable time is no error.
    """
    if not isinstance(text, str):
        return None
    try:
        return to_utc(_from_iso(text))
    except ValueError:
        return None


def _from_iso(text: str) -> datetime:
    """``datetime.fromisoformat`` that also reads a trailing ``Z`` (UTC) before Python 3.11."""
    iso = text.strip()
    if iso[-1:] in ("Z", "z"):
        iso = iso[:-1] + "+00:00"
    return datetime.fromisoformat(iso)
