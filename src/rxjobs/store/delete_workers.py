"""Helper processes that delete trash entries for a big local cleanup.

Deleting a job's files is mostly waiting in the kernel (on the benchmark VM,
for a synchronous discard per file), and one Python process deleting in many
threads spends much of the rest handing its one GIL around: two processes of
four threads delete the same files in about a quarter less time than one
process of eight (docs/benchmarks.md).  So a cleanup of many jobs of a local
share dir renames each job into ``.trash/`` itself, under the job's lock, and
then hands the trash entry to one of a few helper processes
(``python -m rxjobs.store.delete_workers``), waiting for the files and bytes it
deleted.  If a helper cannot start or dies, the caller deletes what is left
itself; an entry a dead helper left half-deleted is then counted only for
what remained.  Until a helper has started (a Python interpreter and its
imports: 0.1 s on a quiet machine, a second on a loaded one), the entries
are deleted by the threads that submit them, so that deletion, which bounds
a cleanup, starts with the first job and not when the helpers are up.

A helper is forked from the calling process when that is safe (one thread,
``os.fork`` available: see :func:`may_fork`), so it is ready at once, with
every module already imported; otherwise it is a new interpreter.  On the
benchmark VM a started interpreter was ready 0.65-1.15 s into a cleanup of
2,000 jobs on tmpfs (0.14 s alone: it competed for the 2 CPUs with the
cleanup it was to help), and the caller deleted 170-620 jobs itself
meanwhile (docs/benchmarks.md).  A forked helper closes its siblings' pipes
(else a sibling would never see its input end), makes only system calls on
its own descriptors and its own store objects, writes only to its pipe, and
never returns into its parent's code (``os._exit``).

The protocol is JSON lines: the helper first says ``["ready"]``; then the
parent writes ``[share_dir, path]``, the helper answers ``[path, files,
bytes]``, or ``[path, null, "error"]``.  A
helper deletes only entries of its share dir's trash
(:meth:`rxjobs.store.Store.delete_detached` checks), never follows a
symlink, and exits when its input closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

from . import Store, Usage, open_store
from .forking import fork_is_safe, run_child


class _HelperGone(Exception):
    """The helper process exited or could not be written to."""


def may_fork() -> bool:
    """Whether helpers may be forked here (:func:`.forking.fork_is_safe`)."""
    return fork_is_safe()


class _Helper:
    """One helper process and the answers it still owes.

    Made in two steps: the process (forked, or a new interpreter), then
    :meth:`start`, which starts the thread reading its answers; helpers to be
    forked are all made before any such thread runs.
    """

    def __init__(self, threads: int, fork: bool, siblings: list[_Helper]) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._pid: int | None = None
        if fork:
            self._pid, self._stdin, self._stdout = _fork(threads, siblings)
        else:
            package_parent = str(Path(__file__).resolve().parent.parent.parent)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "rxjobs.store.delete_workers", str(threads)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True, encoding="utf-8", env=env, close_fds=True,
            )
            assert self._proc.stdin is not None and self._proc.stdout is not None  # both PIPEs
            self._stdin, self._stdout = self._proc.stdin, self._proc.stdout
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._gone = False
        self.ready = threading.Event()  # the helper has started and reads entries
        self._reader = threading.Thread(target=self._read, name="rxjobs-delete-reader", daemon=True)

    @property
    def forked(self) -> bool:
        """Whether the helper was forked from this process (not a new interpreter)."""
        return self._pid is not None

    def start(self) -> None:
        """Start reading the helper's answers."""
        self._reader.start()

    def close_pipes(self) -> None:
        """Close this process's ends of the helper's pipes (a forked sibling's own copies)."""
        for pipe in (self._stdin, self._stdout):
            with contextlib.suppress(OSError):
                pipe.close()

    def kill(self) -> None:
        """Kill the helper and reap it (a test's way to see what a dead helper leaves)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        elif self._pid is not None:
            pid, self._pid = self._pid, None
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def submit(self, share_dir: str, path: str) -> Future:
        future: Future = Future()
        with self._lock:
            if self._gone:
                raise _HelperGone()
            self._pending[path] = future
            try:
                self._stdin.write(json.dumps([share_dir, path]) + "\n")
                self._stdin.flush()
            except (OSError, ValueError):  # broken pipe, or closed
                self._pending.pop(path, None)
                self._gone = True
                raise _HelperGone() from None
        return future

    def _read(self) -> None:
        try:
            for line in self._stdout:
                answer = json.loads(line)
                if answer == ["ready"]:
                    self.ready.set()
                    continue
                path, files, info = answer
                with self._lock:
                    future = self._pending.pop(path, None)
                if future is None:
                    continue
                if files is None:
                    future.set_exception(OSError(f"could not delete {path}: {info}"))
                else:
                    future.set_result(Usage(int(files), int(info)))
        except (OSError, ValueError):  # a garbled answer: treat the helper as gone
            pass
        with self._lock:
            self._gone = True
            rest = list(self._pending.values())
            self._pending.clear()
        for future in rest:
            future.set_exception(_HelperGone())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stdin.close()
        if self._proc is not None:
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:  # stuck in the kernel: do not hang the caller on it
                self._proc.kill()
                self._proc.wait()
        elif self._pid is not None:
            # Its answers end when it exits (its end of the pipe closes with it).
            self._reader.join(timeout=60)
            if self._reader.is_alive():  # stuck in the kernel: do not hang the caller on it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGKILL)
            pid, self._pid = self._pid, None
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self._reader.join(timeout=10)
        if not self._reader.is_alive():  # else it still reads the pipe: leave it to the reader
            self._stdout.close()


def _fork(threads: int, siblings: list[_Helper]) -> tuple[int, IO[str], IO[str]]:
    """Fork a helper; its pid and this process's ends of its input and output pipes.

    Raises OSError when no process can be forked.
    """
    to_child, from_parent = os.pipe()[::-1]  # (write end, read end)
    to_parent, from_child = os.pipe()[::-1]
    try:
        pid = os.fork()
    except OSError:
        for fd in (to_child, from_parent, to_parent, from_child):
            os.close(fd)
        raise
    if pid == 0:  # the helper: serve, and never come back
        def helper() -> None:
            os.close(to_child)
            os.close(from_child)
            for sibling in siblings:
                sibling.close_pipes()
            with open(from_parent, encoding="utf-8") as entries, \
                    open(to_parent, "w", encoding="utf-8") as answers:
                serve(entries, answers, threads)

        run_child(helper)
    os.close(from_parent)
    os.close(to_parent)
    return (pid, open(to_child, "w", encoding="utf-8"),  # noqa: SIM115 - closed by _Helper.close
            open(from_child, encoding="utf-8"))  # noqa: SIM115


class DeleteWorkers:
    """A few helper processes deleting trash entries; ``delete`` blocks for the answer.

    Parameters
    ----------
    processes
        Helper processes to start.
    threads
        Deletion threads in each helper.
    """

    def __init__(self, processes: int, threads: int) -> None:
        self._helpers: list[_Helper] = []
        fork = may_fork()
        try:
            for _ in range(max(1, processes)):
                self._helpers.append(_Helper(max(1, threads), fork, list(self._helpers)))
        except OSError:  # no process to fork, no interpreter to start: fewer or no helpers
            pass
        for helper in self._helpers:  # after every fork: these threads are not copied into one
            helper.start()
        self._next = 0
        self._entries: dict[Future, tuple[Store, str]] = {}
        self._lock = threading.Lock()

    def submit(self, store: Store, path: str) -> Future:
        """Have a helper delete the trash entry ``path`` of ``store``; read it with :meth:`result`.

        Deleted here at once when no helper can take it, or none has started yet.
        """
        with self._lock:
            helpers = self._helpers[self._next:] + self._helpers[:self._next]
            self._next = (self._next + 1) % max(1, len(self._helpers))
        helpers = [helper for helper in helpers if helper.ready.is_set()]
        for helper in helpers:
            try:
                future = helper.submit(store.url, path)
            except _HelperGone:
                continue
            with self._lock:
                self._entries[future] = (store, path)
            return future
        future = Future()
        future.set_result(store.delete_detached(path))
        return future

    def wait_started(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every helper to start; whether they all have.

        Nothing needs to wait (entries are deleted here meanwhile); a test
        that must see a helper at work does.
        """
        deadline = time.monotonic() + timeout
        return all(helper.ready.wait(max(0.0, deadline - time.monotonic())) for helper in self._helpers)

    def result(self, future: Future) -> Usage:
        """The files and bytes a submitted entry held, once deleted (here, if its helper died)."""
        with self._lock:
            entry = self._entries.pop(future, None)
        try:
            return future.result()
        except _HelperGone:
            if entry is None:
                raise
            store, path = entry
            return store.delete_detached(path)

    def delete(self, store: Store, path: str) -> Usage:
        """Delete the trash entry ``path`` of ``store`` and wait; the files and bytes it held."""
        return self.result(self.submit(store, path))

    def close(self) -> None:
        """Let the helpers finish and exit."""
        for helper in self._helpers:
            helper.close()

    def __enter__(self) -> DeleteWorkers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve(entries: IO[str], answers: IO[str], threads: int) -> None:
    """The helper's work: delete the entries read from ``entries`` in ``threads`` threads,
    answer each on ``answers``; return when ``entries`` ends and every deletion is done."""
    stores: dict[str, Store] = {}
    out_lock = threading.Lock()

    def work(share_dir: str, path: str) -> None:
        try:
            store = stores.get(share_dir)
            if store is None:
                store = stores[share_dir] = open_store(share_dir)
            if not store.helpers_may_delete():
                raise ValueError(f"{share_dir} is not a local share dir")
            usage = store.delete_detached(path)
            answer = [path, usage.files, usage.bytes]
        except Exception as exc:
            answer = [path, None, f"{type(exc).__name__}: {exc}"]
        with out_lock:
            answers.write(json.dumps(answer) + "\n")
            answers.flush()

    from . import local  # noqa: F401  (imported before saying ready, not on the first entry)

    answers.write(json.dumps(["ready"]) + "\n")
    answers.flush()
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for line in entries:
            share_dir, path = json.loads(line)
            pool.submit(work, share_dir, path)


def main(argv: list[str] | None = None) -> int:
    """The helper as a new interpreter: entries on stdin, answers on stdout."""
    argv = sys.argv[1:] if argv is None else argv
    serve(sys.stdin, sys.stdout, int(argv[0]) if argv else 4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
