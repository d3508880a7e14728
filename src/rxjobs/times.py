"""Points in time: the one rule for reading them, and how records write them.

Records store aware UTC ISO-8601 timestamps.  What a user gives (a
``datetime`` to ``rx_get_jobs``, ``--since``/``--until``, a timestamp in a
record written by hand) may have no zone: **a time without a zone is local
time**, as Python's ``datetime.astimezone()`` and RevoScaleR users read it.
This module is the only place that rule is applied.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


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
    """
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, not {type(value).__name__}")
    try:
        return value.astimezone(timezone.utc)
    except (OverflowError, ValueError) as exc:  # year 1 or 9999 shifted out of range
        raise ValueError(f"{value!r} is out of the range of dates: {exc}") from None


def parse_timestamp(text: Any) -> datetime | None:
    """An ISO-8601 timestamp as an aware UTC datetime, or None if ``text`` is not one.

    A trailing ``Z`` means UTC; a timestamp without a zone is local time.
    Used for what records say, where an unreadable time is no error.
    """
    if not isinstance(text, str):
        return None
    iso = text.strip()
    if iso[-1:] in ("Z", "z"):
        iso = iso[:-1] + "+00:00"
    try:
        return to_utc(datetime.fromisoformat(iso))
    except (TypeError, ValueError):
        return None
