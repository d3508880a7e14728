"""How many trials the fault, load and fuzz tests run: reduced by default, full counts with
``RXJOBS_FULL_TRIALS=1`` (what ``make test-full`` sets).

Reduced counts keep every code path of a trial exercised (each still kills, races or fuzzes
enough times for its own "the test proved something" check) so that ``make test`` stays
short; the full counts give the figures docs/reliability.md quotes.  A count's own variable
(``RXJOBS_CRASH_TRIALS``, ...) overrides both, as before.
"""

from __future__ import annotations

import os

FULL_ENV = "RXJOBS_FULL_TRIALS"


def full_trials() -> bool:
    """Whether this run asks for the full counts (``RXJOBS_FULL_TRIALS`` set to 1/true/yes)."""
    return os.environ.get(FULL_ENV, "").strip().lower() in ("1", "true", "yes")


def trial_count(variable: str, *, full: int, reduced: int) -> int:
    """The count ``variable`` sets if it is set, else ``full`` or ``reduced`` by :func:`full_trials`."""
    given = os.environ.get(variable)
    if given:
        try:
            value = int(given)
        except ValueError:
            raise ValueError(f"{variable}={given!r}: give a whole number of trials") from None
        if value < 1:
            raise ValueError(f"{variable}={given!r}: give at least 1 trial")
        return value
    return full if full_trials() else reduced
