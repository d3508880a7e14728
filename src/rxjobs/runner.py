"""The worker side: run one task of a job and drop its files in the share dir.

Every engine calls :func:`run_task` on its workers.  It loads the payload,
runs each run of the task's chunk with its console output captured, and
writes ``tasks/<k>.out`` then ``tasks/<k>.result.pkl``, each atomically.
While the runs go on, a thread of the worker rewrites ``tasks/<k>.out`` with
what they printed so far (:class:`_LiveOutput`), so that output is live and a
killed or canceled task keeps what it printed; a task that printed nothing
leaves no ``tasks/<k>.out``.  A task whose result file already exists is not
run again, so an engine may retry a task harmlessly.  Workers write only their
own task files.

A job submitted with ``rng_seed`` has each run seeded before it runs
(:func:`seeded_run`): Python's ``random`` and numpy's global generator get
the run's own streams, derived from the seed and the run's index alone
(:mod:`rxjobs.seeds`), and :func:`run_rng` hands the run its own
``numpy.random.Generator``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import random
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import cloudpickle

from .errors import RxRunError
from .seeds import NUMPY_GLOBAL_STREAM, PYTHON_RANDOM_STREAM, stream_seed, stream_words
from .store import FAILURES_SUFFIX, JobPaths, Store, open_store
from .times import utc_now_iso

PAYLOAD_FORMAT = 1
RESULT_FORMAT = 1

Capture = Literal["fd", "python", "none"]


@dataclass
class Payload:
    """The function and every run's keyword arguments, as pickled in ``payload.pkl``."""

    function: Any
    runs: list[dict[str, Any]]
    task_chunk_size: int
    continue_on_failure: bool = True
    format: int = PAYLOAD_FORMAT
    rng_seed: int | None = None  # None: runs are not seeded (payloads written before it read so)

    @property
    def n_tasks(self) -> int:
        return -(-len(self.runs) // self.task_chunk_size)

    def run_range(self, task: int) -> range:
        start = task * self.task_chunk_size
        return range(start, min(start + self.task_chunk_size, len(self.runs)))


@dataclass
class TaskResult:
    """The content of ``tasks/<k>.result.pkl``: one outcome per run of the chunk.

    ``values[i]`` is the run's return value, or an exception for a run that
    raised; ``failed`` lists the run indexes (within the job) that raised.
    """

    task: int
    first_run: int
    values: list[Any]
    failed: list[int] = field(default_factory=list)
    started: str = ""
    finished: str = ""
    format: int = RESULT_FORMAT


@dataclass(frozen=True)
class TaskSummary:
    """What a worker tells its driver about a task it ran."""

    task: int
    runs: int
    skipped: bool = False
    first_error: str | None = None
    failed: int = 0  # runs that raised (kept in their result slots)


def load_payload(store: Store, job_id: str) -> Payload:
    """Unpickle a job's payload (kept for the next task of the same job in this process)."""
    key = (store.url, job_id)
    last = _last_payload[:]  # one snapshot: threads of a worker process share the cache
    if last and last[0] == key:
        return last[1]
    payload = cloudpickle.loads(store.read_trusted(store.paths(job_id).payload))
    if not isinstance(payload, Payload):
        raise ValueError(f"payload of job {job_id} is not an rxjobs payload")
    _last_payload[:] = [key, payload]  # a payload is written once and never changes
    return payload


_last_payload: list = []


def load_task_result(store: Store, job_id: str, task: int) -> TaskResult:
    """Unpickle one task's result file (FileNotFoundError if it is not there)."""
    result = cloudpickle.loads(store.read_trusted(store.paths(job_id).result(task)))
    if not isinstance(result, TaskResult):
        raise ValueError(f"task {task} of job {job_id} has no valid result file")
    return result


def run_task(share_dir: str, job_id: str, task: int, capture: Capture = "fd",
             options: dict[str, Any] | None = None, note_failures: bool = False) -> TaskSummary:
    """Run task ``task`` of a job and write its output and result files.

    Parameters
    ----------
    share_dir
        The job's share dir (path or fsspec URL).
    job_id
        The job.
    task
        The task (chunk) index.
    capture
        ``"fd"`` redirects file descriptors 1 and 2, so that output of C code
        and child processes is captured too (only safe in a process that runs
        one task at a time); ``"python"`` redirects ``sys.stdout``/``sys.stderr``.
    options
        fsspec storage options of the share dir (endpoint, credentials...).
    note_failures
        Also write ``tasks/<k>.failed.json`` (how many runs raised, when some
        did), before the result file: for engines with no driver to tell
        (Slurm), so the task that ends the job can count them
        (:func:`count_failed_runs`).

    Returns
    -------
    TaskSummary
        Runs done and the first error, if any.
    """
    store = open_store(share_dir, options)
    paths = store.paths(job_id)
    if store.exists(paths.result(task)):
        return TaskSummary(task, 0, skipped=True)
    if store.exists(paths.canceled):
        return TaskSummary(task, 0, skipped=True)
    payload = load_payload(store, job_id)
    runs = payload.run_range(task)
    result = TaskResult(task=task, first_run=runs.start, values=[], started=utc_now_iso())
    first_error = None
    with _captured(capture) as output, _LiveOutput(store, job_id, task, output) as live:
        for index in runs:
            try:
                with seeded_run(getattr(payload, "rng_seed", None), index), _running(store, job_id, index):
                    value = payload.function(**payload.runs[index])
            except Exception as exc:
                text = traceback.format_exc()
                print(text, file=sys.stderr, end="")
                result.values.append(_portable_exception(exc, text))
                result.failed.append(index)
                first_error = first_error or f"run {index} raised {type(exc).__name__}: {exc}"
                if not payload.continue_on_failure:
                    break
            else:
                result.values.append(value)
    result.finished = utc_now_iso()
    if store.removal_may_tear(job_id, or_canceled=True):
        # A put would re-create a key of a job that is being (or was) removed:
        # on an object store nothing stops it, so do not write at all.
        return TaskSummary(task, len(result.values), skipped=True, first_error=first_error)
    if output.getvalue() or live.published:
        store.write_atomic(paths.output(task), output.getvalue())
    if note_failures and result.failed:
        store.write_json(paths.failures(task), {"failed": len(result.failed)})
    store.write_atomic(paths.result(task), _dumps_result(result))
    return TaskSummary(task, len(result.values), first_error=first_error, failed=len(result.failed))


def count_failed_runs(store: Store, job_id: str, n_tasks: int, names: list[str] | None = None) -> int | None:
    """How many runs of a job raised, from its ``tasks/<k>.failed.json`` files.

    ``names`` is a listing of the job's ``tasks/`` taken once every task's
    result file was there (each task writes its count before its result, so
    none is missing); None: it is listed now, for a caller that knows every
    result is there.  None when a count cannot be read or is not one: the
    job's record then says nothing rather than something wrong.
    """
    paths = store.paths(job_id)
    if names is None:
        names = store.listdir(paths.tasks)
    total = 0
    for task in JobPaths.task_indexes(names, FAILURES_SUFFIX, n_tasks):
        try:
            failed = store.read_json(paths.failures(task)).get("failed")
        except (OSError, ValueError, AttributeError):
            return None
        if type(failed) is not int or failed < 0:
            return None
        total += failed
    return total


# -- the run in progress ------------------------------------------------------------------

_current = threading.local()


@dataclass(frozen=True)
class CurrentRun:
    """The run this thread is executing: its job's store, the job id and the run's index."""

    store: Store
    job_id: str
    run: int


@contextlib.contextmanager
def _running(store: Store, job_id: str, run: int) -> Iterator[None]:
    previous = getattr(_current, "run", None)
    _current.run = CurrentRun(store, job_id, run)
    try:
        yield
    finally:
        _current.run = previous


def current_run() -> CurrentRun | None:
    """The run the calling thread executes inside :func:`run_task` (None outside a run).

    For run-side code that keeps per-run state in the job's directory (a
    Slurm checkpoint, :mod:`rxjobs.compat.submitit.requeue`).
    """
    return getattr(_current, "run", None)


# -- random numbers -----------------------------------------------------------------------

_run_state = threading.local()
# Python's ``random`` and numpy's global generator are the process's: seeded runs that
# share a process (threads of a Dask worker) take turns, so each sees its own stream.
_seeded_lock = threading.RLock()
_numpy_checked: list[Any] = []


def _numpy() -> Any:
    """numpy, imported once if it is installed, else None."""
    if not _numpy_checked:
        _numpy_checked.append(
            __import__("numpy") if importlib.util.find_spec("numpy") is not None else None)
    return _numpy_checked[0]


@contextlib.contextmanager
def seeded_run(rng_seed: int | None, index: int) -> Iterator[None]:
    """Run the body as run ``index`` of a job seeded with ``rng_seed`` (None: no seeding).

    Seeds Python's ``random`` and, when numpy is installed, numpy's global
    generator with the run's own streams (:mod:`rxjobs.seeds`), makes
    :func:`run_rng` return the run's generator, and puts the states the
    process had back afterwards (so that ``RxLocalSeq`` leaves the caller's
    random numbers alone).  Seeded runs of one process run one at a time.
    """
    if rng_seed is None:
        yield
        return
    np = _numpy()
    with _seeded_lock:
        saved_random = random.getstate()
        saved_numpy = np.random.get_state() if np is not None else None
        previous = getattr(_run_state, "run", None)
        random.seed(stream_seed(rng_seed, index, PYTHON_RANDOM_STREAM))
        if np is not None:
            np.random.seed(np.array(stream_words(rng_seed, index, NUMPY_GLOBAL_STREAM), dtype=np.uint32))
        _run_state.run = (rng_seed, index, [])
        try:
            yield
        finally:
            _run_state.run = previous
            random.setstate(saved_random)
            if np is not None:
                np.random.set_state(saved_numpy)


def run_rng() -> Any:
    """The current run's own ``numpy.random.Generator``.

    Inside a run of a job submitted with ``rng_seed``, it is
    ``numpy.random.default_rng(numpy.random.SeedSequence(rng_seed, spawn_key=(index,)))``
    for the run's index, the same object for every call within the run, so its
    numbers are the same whatever engine, chunk size or number of workers ran
    the job (and equal to ``default_rng(SeedSequence(rng_seed).spawn(n_runs)[index])``).
    Elsewhere (no ``rng_seed``, or outside a run) it is a generator seeded
    afresh by the operating system, as ``numpy.random.default_rng()`` gives.

    Raises
    ------
    ImportError
        numpy is not installed.
    """
    try:
        import numpy as np
    except ImportError:
        raise ImportError("rxjobs.run_rng() needs numpy: pip install numpy") from None
    run = getattr(_run_state, "run", None)
    if run is None:
        return np.random.default_rng()
    rng_seed, index, cache = run
    if not cache:
        cache.append(np.random.default_rng(np.random.SeedSequence(rng_seed, spawn_key=(index,))))
    return cache[0]


def _dumps_result(result: TaskResult) -> bytes:
    """Pickle a task result; a value that cannot be pickled becomes that run's error."""
    try:
        return cloudpickle.dumps(result)
    except Exception:
        pass
    for i, value in enumerate(result.values):
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            run = result.first_run + i
            text = f"the return value of run {run} cannot be pickled: {type(exc).__name__}: {exc}"
            result.values[i] = RxRunError(type(exc).__name__, text, "")
            if run not in result.failed:
                result.failed.append(run)
    return cloudpickle.dumps(result)


def _portable_exception(exc: Exception, text: str) -> Exception:
    """The exception itself, carrying the remote traceback, if it survives pickling."""
    exc.remote_traceback = text  # type: ignore[attr-defined]
    exc.__traceback__ = None
    try:
        clone = cloudpickle.loads(cloudpickle.dumps(exc))
        if hasattr(clone, "add_note"):
            clone.add_note("Remote traceback:\n" + text.rstrip())
        cloudpickle.dumps(clone)
        return clone
    except Exception:
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        return RxRunError(name, str(exc), text)


class _Output:
    """A task's captured output: ``so_far()`` while it runs, ``getvalue()`` once it is done."""

    def __init__(self) -> None:
        self.data = b""
        self.so_far: Callable[[], bytes] = lambda: self.data

    def getvalue(self) -> bytes:
        return self.data


# How often a running task's output is published: on a local (or shared) filesystem
# within about a second; on object stores, where each publish is a put, every few
# seconds.  A big output is published less often, so that rewriting it whole costs
# at most about one byte written per byte printed every ``_REWRITE_RATE`` bytes/s.
LIVE_INTERVAL_LOCAL_S = 0.5
LIVE_INTERVAL_REMOTE_S = 2.0
_REWRITE_RATE = 8 << 20


class _LiveOutput:
    """While a task runs, rewrite ``tasks/<k>.out`` with what it printed so far.

    A thread of the worker does it, every :data:`LIVE_INTERVAL_LOCAL_S` (local
    share dirs) or :data:`LIVE_INTERVAL_REMOTE_S` (other stores) when the output
    grew, each time whole and atomically (``Store.write_atomic``), so a reader
    sees a prefix of the final output, never a torn one, and a task that is
    killed keeps what it published.  The worker is the file's one writer: the
    thread is stopped before the worker's final write.  On a store without
    atomic rename, nothing is put once the job is being removed or canceled.
    """

    def __init__(self, store: Store, job_id: str, task: int, output: _Output) -> None:
        self._store = store
        self._job_id = job_id
        self._path = store.paths(job_id).output(task)
        self._output = output
        # A filesystem renames a whole new file into place; elsewhere each publish is a put.
        self._interval = LIVE_INTERVAL_LOCAL_S if store.atomic_rename else LIVE_INTERVAL_REMOTE_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rxjobs-output-{task}", daemon=True)
        self.published = 0

    def __enter__(self) -> _LiveOutput:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(max(self._interval, self.published / _REWRITE_RATE)):
            try:
                data = self._output.so_far()
                if len(data) == self.published:
                    continue
                if self._store.removal_may_tear(self._job_id, or_canceled=True):
                    return
                self._store.write_atomic(self._path, data)
                self.published = len(data)
            except (OSError, ValueError):
                continue  # the job directory went away, or the store failed: try again later


class _ThreadRoutedStream:
    """Stands in for ``sys.stdout``/``sys.stderr``: a thread that is capturing writes
    to its own buffer, every other thread to the stream this one replaced.

    Installed once per process by :func:`_captured` (``capture="python"``), so
    that tasks running at the same time in threads of one worker process (Dask)
    each capture only their own output.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _target(self) -> Any:
        buffer = getattr(_capture_state, "buffer", None)
        return self._stream if buffer is None else buffer

    def write(self, text: str) -> int:
        target = self._target()
        if target is None:  # no console at all (pythonw): drop, like print does
            return len(text)
        return target.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        target = self._target()
        if target is not None:
            target.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, buffer...
        return getattr(self._stream, name)


_capture_state = threading.local()
_capture_install_lock = threading.Lock()


def _install_thread_routing() -> None:
    """Put a :class:`_ThreadRoutedStream` in front of sys.stdout and sys.stderr (once)."""
    if isinstance(sys.stdout, _ThreadRoutedStream) and isinstance(sys.stderr, _ThreadRoutedStream):
        return
    with _capture_install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, _ThreadRoutedStream):
                setattr(sys, name, _ThreadRoutedStream(stream))


@contextlib.contextmanager
def _captured(capture: Capture) -> Iterator[_Output]:
    """Capture a task's console output.

    ``"fd"`` redirects file descriptors 1 and 2 (the whole process: one task at
    a time only).  ``"python"`` captures what the calling thread writes to
    ``sys.stdout``/``sys.stderr``, and only that thread, so that tasks running
    concurrently in threads of one process (a Dask worker) do not mix their
    output; threads a run starts itself are not captured.
    """
    output = _Output()
    if capture == "fd":
        with tempfile.TemporaryFile() as tmp:
            output.so_far = functools.partial(_read_all, tmp.fileno())
            sys.stdout.flush()
            sys.stderr.flush()
            saved = os.dup(1), os.dup(2)
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            try:
                yield output
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
                tmp.seek(0)
                output.data = tmp.read()
    elif capture == "python":
        _install_thread_routing()
        buf = io.StringIO()
        outer = getattr(_capture_state, "buffer", None)
        _capture_state.buffer = buf
        output.so_far = lambda: buf.getvalue().encode()
        try:
            yield output
        finally:
            _capture_state.buffer = outer
            output.data = buf.getvalue().encode()
    else:
        yield output


def _read_all(fd: int) -> bytes:
    """Everything written to ``fd`` so far, without moving its offset (writers append)."""
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""
