"""How many trials the fault, load and fuzz tests run: reduced by default, full counts with
``RXJOBS_FULL_TRIALS=1`` (what ``make test-full`` sets).

Reduced counts keep every code path of a trial exercised (each still kills, races or fuzzes
enough times for its own "the test proved something" check) so that ``make test`` stays
short; the full counts give the figures docs/reliability.md quotes.  A count's own variable
(``RXJOBS_CRASH_TRIALS``, ...) overrides both, as before.
"""

from __future__ import annotations

import os
import random

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


#: Gives the random seed of the trials that take a new one each run (to run one again).
SEED_ENV = "RXJOBS_TRIAL_SEED"

#: Set by pytest-xdist in each worker of a parallel run, the same in all of them.
_XDIST_RUN_ID_ENV = "PYTEST_XDIST_TESTRUNUID"


def run_seed() -> int:
    """This run's random seed (below 2**32), for the trials that add a new seed to a fixed one.

    ``RXJOBS_TRIAL_SEED`` gives it (to run a failed seed again).  Else it is new each run, and
    the same in every worker of a parallel run (``pytest -n 2``), which must all collect the
    same test ids (the seed is in them): it is drawn from the id xdist gives the run.
    """
    given = os.environ.get(SEED_ENV)
    if given:
        try:
            return int(given) % 2**32
        except ValueError:
            raise ValueError(f"{SEED_ENV}={given!r}: give a whole number") from None
    run_id = os.environ.get(_XDIST_RUN_ID_ENV)
    if run_id:
        return random.Random(run_id).randrange(2**32)
    return random.SystemRandom().randrange(2**32)
