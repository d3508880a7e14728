"""submitit's executors over rxjobs: Auto-, Local-, Slurm- and DebugExecutor.

``folder`` is the share dir (up to a ``%j`` component, which rxjobs makes
itself: every job has its own directory named by its id).  Jobs are
ordinary rxjobs jobs, submitted with ``auto_cleanup=False``: reading a result
marks the job retrieved and cleanup removes it later (docs/executor.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ... import jobs
from ...calls import as_invocation, invoke
from ...contexts import RxComputeContext, RxLocalParallel, RxSlurm
from ...store import open_store
from . import parameters, ranks, requeue
from .job import DebugJob, DelayedSubmission, Job, RxArray


def share_dir_of(folder: str | os.PathLike[str]) -> str:
    """The share dir a submitit ``folder`` names: the path up to its first ``%`` component.

    ``"logs/%j"`` -> ``"logs"`` (absolute): rxjobs gives each job its own
    directory, which is what ``%j`` asks for.
    """
    path = Path(os.fspath(folder)).expanduser()
    parts = path.parts
    for i, part in enumerate(parts):
        if "%" in part:
            if part != "%j" and not part.startswith("%j"):
                raise ValueError(f"folder {os.fspath(folder)!r}: only %j is understood in a folder "
                                 f"(rxjobs gives each job its own directory), not {part!r}")
            path = Path(*parts[:i]) if i else Path(".")
            break
    return str(path.resolve())


class Executor:
    """What submitit's executors share: parameters, ``submit``, ``map_array``, ``batch()``."""

    cluster = ""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(os.fspath(folder))
        self.share_dir = share_dir_of(folder)
        self.parameters: dict[str, Any] = {}
        self._batched: list[Job] | None = None

    # -- parameters --------------------------------------------------------------------

    def _check(self, given: dict[str, Any]) -> None:
        parameters.check_native(self.cluster, given)

    def _native(self) -> dict[str, Any]:
        return dict(self.parameters)

    def update_parameters(self, **kwargs: Any) -> None:
        """Set job parameters by submitit's names; an unknown name raises ``ValueError`` naming it."""
        if self._batched is not None:
            raise RuntimeError("update_parameters cannot be called inside `with executor.batch():` "
                               "(all jobs of a batch share the same parameters)")
        self._check(kwargs)
        merged = {**self.parameters, **kwargs}
        self._settings(merged)  # a bad value fails here, not at the next submit
        self.parameters = merged

    def _settings(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    def context(self) -> RxComputeContext:
        """The rxjobs compute context the jobs are submitted with now."""
        raise NotImplementedError

    # -- submitting ----------------------------------------------------------------------

    def _new_job(self, submission: DelayedSubmission) -> Job:
        return Job(submission)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Job:
        """Run ``fn(*args, **kwargs)`` as one rxjobs job (inside ``batch()``: as an array element)."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        job = self._new_job(DelayedSubmission(fn, *args, **kwargs))
        if self._batched is not None:
            self._batched.append(job)
        else:
            self._submit([job], chunk=1)
        return job

    def map_array(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Job]:
        """One job per element of the zipped iterables, as one rxjobs job (one Slurm array).

        Raises
        ------
        ValueError
            The iterables have different lengths (submitit's rule).
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        columns = [list(items) for items in iterables]
        lengths = {len(column) for column in columns}
        if len(lengths) > 1:
            raise ValueError(f"map_array needs iterables of equal length, got lengths "
                             f"{[len(column) for column in columns]}")
        submitted = [self._new_job(DelayedSubmission(fn, *items)) for items in zip(*columns, strict=True)]
        if submitted:
            self._submit(submitted, chunk=None)
        return submitted

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Submit the ``submit`` calls of the block as one array when it exits; an error drops them."""
        if self._batched is not None:
            raise RuntimeError("executor.batch() blocks cannot be nested")
        self._batched = []
        try:
            yield
        except BaseException:
            self._batched = None
            raise
        batched, self._batched = self._batched, None
        if batched:
            self._submit(batched, chunk=None)

    def _context_for(self, checkpointable: bool) -> RxComputeContext:
        """The context of a job; ``checkpointable``: one of its calls has ``checkpoint``."""
        return self.context()

    def _num_tasks(self) -> int:
        """How many tasks (ranks) each call runs as: ``nodes`` × tasks per node."""
        return parameters.num_tasks(self.cluster, self._native())

    def _submit(self, submitted: list[Job], chunk: int | None) -> None:
        checkpointable = any(requeue.has_checkpoint(job.submission().function) for job in submitted)
        num_tasks = self._num_tasks()
        if checkpointable and num_tasks > 1:
            raise ValueError(f"a checkpointable call runs as one task here, not {num_tasks}: set nodes and "
                             "tasks_per_node to 1, or submit a callable without checkpoint")
        cc = self._context_for(checkpointable)
        runs = [as_invocation(job.submission().function, job.submission().args, job.submission().kwargs)
                for job in submitted]
        function: Callable[..., Any] = requeue.run_checkpointable if checkpointable else invoke
        if num_tasks > 1:  # each run starts its ranks (ranks.py) and returns their values
            launcher = "srun" if self.cluster == "slurm" else "local"
            runs = [{**run, "num_tasks": num_tasks, "launcher": launcher} for run in runs]
            function = ranks.run_ranks
        payload, options = jobs.prepare_job(cc, function, runs, chunk, True, False, False, None)
        store = open_store(cc.job_share_dir(), cc.job_share_dir_options())
        job_id = jobs.submit_job(store, cc, payload, options)
        array = RxArray(store, cc, job_id, len(runs), payload.task_chunk_size, num_tasks)
        for run, job in enumerate(submitted):
            job._attach(array, run)


class LocalExecutor(Executor):
    """Jobs in processes of this machine (rxjobs' local engine, ``RxLocalParallel``)."""

    cluster = "local"

    def _settings(self, params: dict[str, Any]) -> dict[str, Any]:
        return parameters.local_settings(params)

    def context(self) -> RxComputeContext:
        return RxLocalParallel(share_dir=self.share_dir, wait=False, auto_cleanup=False,
                               **self._settings(self._native()))


class SlurmExecutor(Executor):
    """Jobs on Slurm (``RxSlurm``): submitit's Slurm names (``partition``, ``time``, ...)."""

    cluster = "slurm"

    def __init__(self, folder: str | os.PathLike[str], python: str | None = None,
                 max_num_timeout: int = 3) -> None:
        super().__init__(folder)
        self.python = python
        self.max_num_timeout = max_num_timeout

    def _settings(self, params: dict[str, Any]) -> dict[str, Any]:
        return parameters.slurm_settings(params)

    def context(self) -> RxComputeContext:
        return RxSlurm(share_dir=self.share_dir, wait=False, auto_cleanup=False, python=self.python,
                       **self._settings(self._native()))

    def _context_for(self, checkpointable: bool) -> RxComputeContext:
        if not checkpointable:
            return self.context()
        settings = self._settings(self._native())
        delay = self.parameters.get("signal_delay_s") or 90
        # USR2 to the batch step (the task's Python itself) `delay` s before the time
        # limit; the task checkpoints and requeues itself (see requeue.py).
        settings["extra_sbatch_options"] = [*settings.get("extra_sbatch_options", []),
                                            f"--signal=B:USR2@{int(delay)}", "--requeue"]
        return RxSlurm(share_dir=self.share_dir, wait=False, auto_cleanup=False, python=self.python,
                       **settings)


class DebugExecutor(Executor):
    """Jobs run in this process, when their result is asked for (for a debugger); no files."""

    cluster = "debug"

    def _new_job(self, submission: DelayedSubmission) -> Job:
        return DebugJob(submission)

    def _submit(self, submitted: list[Job], chunk: int | None) -> None:
        pass  # each DebugJob runs itself when asked

    def _num_tasks(self) -> int:
        return 1  # a call runs once, in this process

    def context(self) -> RxComputeContext:
        raise RuntimeError("the debug executor runs jobs in this process, with no compute context")


def slurm_answers() -> bool:
    """Slurm's commands and slurm.conf are here and its controller answers (AutoExecutor then picks Slurm)."""
    from ...slurm_client import missing_commands, run_slurm

    if missing_commands():
        return False
    if not os.path.exists(os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"):
        return False  # sinfo would retry reading it for a minute before saying no
    try:
        run_slurm(["sinfo", "--noheader", "--format=%P"], timeout=10)
    except Exception:
        return False
    return True


_EXECUTORS: dict[str, type[Executor]] = {"slurm": SlurmExecutor, "local": LocalExecutor,
                                          "debug": DebugExecutor}


class AutoExecutor:
    """Slurm when the Slurm commands answer, the local engine otherwise (or ``cluster=``).

    Parameters
    ----------
    folder
        The share dir (up to a ``%j`` component).
    cluster
        ``"slurm"``, ``"local"`` or ``"debug"``; default: detected.
    **kwargs
        Constructor arguments of the chosen executor prefixed by its name
        (``slurm_python``, ``slurm_max_num_timeout``); another executor's are ignored.
    """

    def __init__(self, folder: str | os.PathLike[str], cluster: str | None = None, **kwargs: Any) -> None:
        if cluster is None:
            cluster = "slurm" if slurm_answers() else "local"
        if cluster not in _EXECUTORS:
            raise ValueError(f"cluster must be one of {', '.join(_EXECUTORS)}, not {cluster!r}")
        self.cluster = cluster
        own = {}
        for key, value in kwargs.items():
            prefix, _, rest = key.partition("_")
            if prefix not in _EXECUTORS or not rest:
                raise ValueError(f"unknown AutoExecutor argument {key!r}: executor arguments are "
                                 "prefixed by the executor's name, e.g. slurm_python")
            if prefix == cluster:
                own[rest] = value
        if own and cluster != "slurm":
            raise ValueError(f"the {cluster} executor takes no arguments ({', '.join(own)})")
        try:
            self._executor = _EXECUTORS[cluster](folder, **own)
        except TypeError as exc:
            raise ValueError(f"bad {cluster} executor argument: {exc}") from None
        self.parameters: dict[str, Any] = {}

    @property
    def folder(self) -> Path:
        return self._executor.folder

    def update_parameters(self, **kwargs: Any) -> None:
        """submitit's generic names, and names prefixed by an executor (``slurm_partition``).

        Raises
        ------
        ValueError
            A name submitit does not have (named in the message).
        """
        parameters.check_auto(self.cluster, kwargs)
        merged = {**self.parameters, **kwargs}
        native = parameters.native_of_auto(self.cluster, merged)
        if native:
            self._executor.update_parameters(**native)
        self.parameters = merged

    def context(self) -> RxComputeContext:
        return self._executor.context()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Job:
        return self._executor.submit(fn, *args, **kwargs)

    def map_array(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Job]:
        return self._executor.map_array(fn, *iterables)

    def batch(self) -> contextlib.AbstractContextManager[None]:
        return self._executor.batch()
