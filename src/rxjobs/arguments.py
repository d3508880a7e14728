"""Turn revoscalepy's argument forms into one keyword dict per run (pure)."""

from __future__ import annotations

from typing import Any


def build_runs(args: Any, times_to_run: int, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """The keyword arguments of every run, in run order.

    Parameters
    ----------
    args
        None, a dict (the same arguments for every run) or a list of dicts
        (one per run).
    times_to_run
        -1 for "as many runs as the arguments say, else 1"; otherwise the
        number of runs, which must agree with any per-run list.
    kwargs
        The keyword form: a list value gives one element per run (wrap a list
        meant as one value: ``the_list=[[0, 1, 2]]``); any other value is
        passed unchanged to every run.

    Raises
    ------
    TypeError, ValueError
        With a message that says which argument is wrong and how to fix it.
    """
    if isinstance(times_to_run, bool) or not isinstance(times_to_run, int) or (
        times_to_run < 1 and times_to_run != -1
    ):
        raise ValueError(f"times_to_run must be a positive integer or -1, not {times_to_run!r}")
    if args is None:
        per_run_args = None
        common: dict[str, Any] = {}
    elif isinstance(args, dict):
        per_run_args, common = None, dict(args)
    elif isinstance(args, (list, tuple)):
        for i, item in enumerate(args):
            if not isinstance(item, dict):
                raise TypeError(
                    f"args[{i}] is {type(item).__name__}, not a dict: give args as a dict of "
                    "keyword arguments, or a list with one such dict per run"
                )
        per_run_args, common = list(args), {}
    else:
        raise TypeError(
            f"args must be a dict of keyword arguments or a list of such dicts, "
            f"not {type(args).__name__}"
        )
    for key in kwargs:
        if key in common or any(key in d for d in per_run_args or []):
            raise ValueError(f"argument {key!r} is given both in args and as a keyword argument")

    lengths = {key: len(value) for key, value in kwargs.items() if isinstance(value, list)}
    counts = set(lengths.values())
    if per_run_args is not None:
        counts.add(len(per_run_args))
    if len(counts) > 1:
        detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        if per_run_args is not None:
            detail += f", args: {len(per_run_args)}"
        raise ValueError(
            f"per-run arguments have different lengths ({detail}); give every per-run list one "
            "element per run, and wrap a list meant as one value in another list ([[...]])"
        )
    if counts:
        n = counts.pop()
        if times_to_run not in (-1, n):
            raise ValueError(
                f"times_to_run={times_to_run} disagrees with the {n} per-run arguments given; "
                "leave times_to_run at -1 or make them agree"
            )
    else:
        n = 1 if times_to_run == -1 else times_to_run
    if n == 0:
        raise ValueError("no runs: the per-run argument lists are empty")

    runs = []
    for i in range(n):
        run = dict(common)
        if per_run_args is not None:
            run.update(per_run_args[i])
        for key, value in kwargs.items():
            run[key] = value[i] if key in lengths else value
        runs.append(run)
    return runs


def choose_chunk_size(n_runs: int, workers: int, task_chunk_size: int | None) -> int:
    """Runs per task: the user's choice, else about four tasks per worker.

    Fewer, larger tasks cut the per-task overhead; a few tasks per worker
    still balance runs of uneven length.
    """
    if task_chunk_size is not None:
        if isinstance(task_chunk_size, bool) or not isinstance(task_chunk_size, int) or (
            task_chunk_size < 1
        ):
            raise ValueError(f"task_chunk_size must be a positive integer, not {task_chunk_size!r}")
        return task_chunk_size
    return max(1, -(-n_runs // (max(1, workers) * 4)))
