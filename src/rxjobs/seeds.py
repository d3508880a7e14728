"""Reproducible parallel random numbers: one independent stream per run (``rng_seed``).

RevoScaleR's ``RNGseed`` gave every run of ``rxExec`` its own stream of
random numbers, derived from one seed, so that a job's results were the same
whatever ran it.  ``rx_exec(..., rng_seed=42)`` does the same: run ``i`` of a
job gets the streams of numpy's ``SeedSequence(42, spawn_key=(i,))`` — the
``i``-th child of ``SeedSequence(42).spawn(n_runs)`` — so they depend on the
seed and the run's index only, never on the engine, the chunk size or the
number of workers.  Before each run the worker seeds:

- Python's ``random`` from the child ``(i, 0)`` of that sequence;
- numpy's global generator (``numpy.random.seed``), when numpy is installed,
  from the child ``(i, 1)``;

and :func:`rxjobs.run_rng` gives the run ``numpy.random.default_rng`` of the
sequence ``(i,)`` itself.

The words are computed here in pure Python, bit for bit as numpy's
``SeedSequence.generate_state`` does (``tests/test_seeds.py`` checks it), so
Python's ``random`` is seeded the same with or without numpy.  This module
imports nothing of rxjobs.
"""

from __future__ import annotations

import operator
from typing import Any

MAX_SEED = (1 << 128) - 1

_MASK32 = 0xFFFFFFFF
_INIT_A = 0x43B0D7E5
_MULT_A = 0x931E8875
_INIT_B = 0x8B51F9DD
_MULT_B = 0x58F38DED
_MIX_MULT_L = 0xCA01F9DD
_MIX_MULT_R = 0x4973F715
_XSHIFT = 16
_POOL_SIZE = 4

PYTHON_RANDOM_STREAM = 0
NUMPY_GLOBAL_STREAM = 1


def validate_rng_seed(seed: Any) -> int | None:
    """``rng_seed`` as given to ``rx_exec``: None, or an int from 0 to 2**128 - 1.

    Raises
    ------
    TypeError
        Not an integer (a bool is not one).
    ValueError
        Out of range.
    """
    if seed is None:
        return None
    if isinstance(seed, bool):
        raise TypeError("rng_seed must be an integer such as 42, not a bool")
    try:
        value = operator.index(seed)
    except TypeError:
        raise TypeError(f"rng_seed must be an integer such as 42, not {type(seed).__name__}") from None
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"rng_seed must be between 0 and 2**128 - 1, not {value}")
    return value


def _words(value: int) -> list[int]:
    """An int as little-endian 32-bit words (numpy's ``_coerce_to_uint32_array``)."""
    if value == 0:
        return [0]
    words = []
    while value:
        words.append(value & _MASK32)
        value >>= 32
    return words


def _pool(seed: int, spawn_key: tuple[int, ...]) -> list[int]:
    """The entropy pool of ``SeedSequence(seed, spawn_key=spawn_key)``."""
    entropy = _words(seed)
    spawn: list[int] = []
    for key in spawn_key:
        spawn.extend(_words(key))
    if spawn and len(entropy) < _POOL_SIZE:
        entropy = entropy + [0] * (_POOL_SIZE - len(entropy))
    entropy = entropy + spawn
    hash_const = _INIT_A

    def hashmix(value: int) -> int:
        nonlocal hash_const
        value = (value ^ hash_const) & _MASK32
        hash_const = (hash_const * _MULT_A) & _MASK32
        value = (value * hash_const) & _MASK32
        return value ^ (value >> _XSHIFT)

    def mix(x: int, y: int) -> int:
        result = (_MIX_MULT_L * x - _MIX_MULT_R * y) & _MASK32
        return result ^ (result >> _XSHIFT)

    pool = [hashmix(entropy[i] if i < len(entropy) else 0) for i in range(_POOL_SIZE)]
    for src in range(_POOL_SIZE):
        for dst in range(_POOL_SIZE):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for src in range(_POOL_SIZE, len(entropy)):
        for dst in range(_POOL_SIZE):
            pool[dst] = mix(pool[dst], hashmix(entropy[src]))
    return pool


def generate_state(seed: int, spawn_key: tuple[int, ...], n_words: int) -> list[int]:
    """``SeedSequence(seed, spawn_key=spawn_key).generate_state(n_words)`` (uint32 words)."""
    pool = _pool(seed, spawn_key)
    hash_const = _INIT_B
    state = []
    for i in range(n_words):
        value = pool[i % _POOL_SIZE] ^ hash_const
        hash_const = (hash_const * _MULT_B) & _MASK32
        value = (value * hash_const) & _MASK32
        state.append(value ^ (value >> _XSHIFT))
    return state


def stream_seed(seed: int, run: int, stream: int, n_words: int = 8) -> int:
    """The integer that seeds stream ``stream`` of run ``run`` (a ``SeedSequence`` child's
    ``generate_state(n_words)`` as one little-endian integer)."""
    value = 0
    for i, word in enumerate(generate_state(seed, (run, stream), n_words)):
        value |= word << (32 * i)
    return value


def stream_words(seed: int, run: int, stream: int, n_words: int = 8) -> list[int]:
    """The words of stream ``stream`` of run ``run`` (what seeds numpy's global generator)."""
    return generate_state(seed, (run, stream), n_words)


__all__ = ["MAX_SEED", "NUMPY_GLOBAL_STREAM", "PYTHON_RANDOM_STREAM", "generate_state", "stream_seed",
           "stream_words", "validate_rng_seed"]
