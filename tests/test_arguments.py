"""revoscalepy's argument forms mapped to runs (pure)."""

from __future__ import annotations

import pytest

from rxjobs.arguments import build_runs, choose_chunk_size


@pytest.mark.parametrize(
    ("args", "times", "kwargs", "expected"),
    [
        (None, -1, {}, [{}]),
        (None, 3, {}, [{}, {}, {}]),
        ({"a": 1}, -1, {}, [{"a": 1}]),
        ({"a": 1}, 2, {}, [{"a": 1}, {"a": 1}]),
        ([{"a": 1}, {"a": 2}], -1, {}, [{"a": 1}, {"a": 2}]),
        ([{"a": 1}, {"a": 2}], 2, {}, [{"a": 1}, {"a": 2}]),
        (None, -1, {"x": [1, 2, 3], "y": 6}, [{"x": 1, "y": 6}, {"x": 2, "y": 6}, {"x": 3, "y": 6}]),
        (None, -1, {"the_list": [[0, 1, 2]]}, [{"the_list": [0, 1, 2]}]),
        (None, 2, {"y": 6}, [{"y": 6}, {"y": 6}]),
        ({"a": 1}, -1, {"x": [1, 2]}, [{"a": 1, "x": 1}, {"a": 1, "x": 2}]),
        ([{"a": 1}, {"a": 2}], -1, {"x": [5, 6]}, [{"a": 1, "x": 5}, {"a": 2, "x": 6}]),
        (None, -1, {"t": (1, 2)}, [{"t": (1, 2)}]),
    ],
)
def test_build_runs(args, times, kwargs, expected):
    assert build_runs(args, times, kwargs) == expected


@pytest.mark.parametrize(
    ("args", "times", "kwargs", "error", "words"),
    [
        (None, 0, {}, ValueError, "times_to_run"),
        (None, -2, {}, ValueError, "times_to_run"),
        (None, True, {}, ValueError, "times_to_run"),
        ("x", -1, {}, TypeError, "args must be a dict"),
        ([{"a": 1}, 3], -1, {}, TypeError, r"args\[1\]"),
        (None, -1, {"x": [1, 2], "y": [1, 2, 3]}, ValueError, "different lengths"),
        ([{"a": 1}], -1, {"x": [1, 2]}, ValueError, "different lengths"),
        (None, 5, {"x": [1, 2]}, ValueError, "disagrees"),
        ([{"a": 1}, {"a": 2}], 3, {}, ValueError, "disagrees"),
        ({"x": 1}, -1, {"x": 2}, ValueError, "both in args"),
        (None, -1, {"x": []}, ValueError, "no runs"),
    ],
)
def test_build_runs_rejects_bad_forms(args, times, kwargs, error, words):
    with pytest.raises(error, match=words):
        build_runs(args, times, kwargs)


@pytest.mark.parametrize(
    ("n", "workers", "given", "expected"),
    [(10, 2, None, 2), (1000, 2, None, 125), (1, 8, None, 1), (7, 2, 3, 3), (5, 1, 1, 1)],
)
def test_choose_chunk_size(n, workers, given, expected):
    assert choose_chunk_size(n, workers, given) == expected


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_choose_chunk_size_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="task_chunk_size"):
        choose_chunk_size(10, 2, bad)
