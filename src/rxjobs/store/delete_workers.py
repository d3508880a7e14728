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

The protocol is JSON lines: the helper first says ``["ready"]``; then the
parent writes ``[share_dir, path]``, the helper answers ``[path, files,
bytes]``, or ``[path, null, "error"]``.  A
helper deletes only entries of its share dir's trash
(:meth:`rxjobs.store.Store.delete_detached` checks), never follows a
symlink, and exits when its input closes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

from . import Store, Usage, open_store


class _HelperGone(Exception):
    """The helper process exited or could not be written to."""


class _Helper:
    """One helper process and the answers it still owes."""

    def __init__(self, threads: int) -> None:
        package_parent = str(Path(__file__).resolve().parent.parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "rxjobs.store.delete_workers", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, encoding="utf-8", env=env, close_fds=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None  # both PIPEs
        self._stdin: IO[str] = self._proc.stdin
        self._stdout: IO[str] = self._proc.stdout
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._gone = False
        self.ready = threading.Event()  # the helper has started and reads entries
        self._reader = threading.Thread(target=self._read, name="rxjobs-delete-reader", daemon=True)
        self._reader.start()

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
        try:
            self._stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # stuck in the kernel: do not hang the caller on it
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=10)
        if not self._reader.is_alive():  # else it still reads the pipe: leave it to the reader
            self._stdout.close()


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
        try:
            for _ in range(max(1, processes)):
                self._helpers.append(_Helper(max(1, threads)))
        except OSError:  # no interpreter to start (embedded Python...): fewer or no helpers
            pass
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


def main(argv: list[str] | None = None) -> int:
    """The helper: delete the entries read from stdin, answer each on stdout."""
    argv = sys.argv[1:] if argv is None else argv
    threads = int(argv[0]) if argv else 4
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
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()

    from . import local  # noqa: F401  (imported before saying ready, not on the first entry)

    sys.stdout.write(json.dumps(["ready"]) + "\n")
    sys.stdout.flush()
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for line in sys.stdin:
            share_dir, path = json.loads(line)
            pool.submit(work, share_dir, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
