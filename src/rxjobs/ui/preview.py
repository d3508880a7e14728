"""A bounded preview of a job's results, made in a child process.

Unpickling runs code, and a value's ``repr`` may be huge or slow, so the
page never does either in the server: it runs ``python -m
rxjobs.ui.preview`` with a time limit and a memory limit, sends it the
request on stdin (storage options included: never on a command line), and
reads back at most a few runs, each repr cut to a few hundred characters.
The child reads the results through :func:`rxjobs.jobs.peek_results`, that
is through the trust check: nothing is unpickled from a share dir others can
write to, and nothing is marked retrieved or removed.
"""

from __future__ import annotations

import json
import os
import reprlib
import subprocess
import sys
from typing import Any

MAX_RUNS = 20
MAX_CHARS = 400
MAX_TRACEBACK_CHARS = 4000
TIMEOUT_SECONDS = 10.0
MEMORY_LIMIT_BYTES = 2 << 30


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _describe(value: Any, failed: bool, max_chars: int) -> dict[str, Any]:
    if failed or isinstance(value, BaseException):
        traceback = getattr(value, "remote_traceback", "") or ""
        return {"failed": True, "repr": _cut(f"{type(value).__name__}: {value}", max_chars),
                "traceback": _cut(str(traceback), MAX_TRACEBACK_CHARS)}
    shower = reprlib.Repr()
    shower.maxstring = shower.maxother = max_chars
    shower.maxlist = shower.maxtuple = shower.maxdict = shower.maxset = 20
    try:
        text = shower.repr(value)
    except Exception as exc:  # a value whose repr raises is still previewed
        text = f"<repr failed: {type(exc).__name__}>"
    return {"failed": False, "repr": _cut(text, max_chars), "traceback": ""}


def preview_in_this_process(request: dict[str, Any]) -> dict[str, Any]:
    """Read and describe the runs a request asks for (the child's work)."""
    from ..errors import UntrustedShareDirError
    from ..jobs import peek_results
    from ..store import open_store

    max_runs = int(request.get("max_runs", MAX_RUNS))
    max_chars = int(request.get("max_chars", MAX_CHARS))
    store = open_store(request["share_dir"], request.get("options") or None)
    try:
        outcomes, n_runs = peek_results(store, request["job_id"], max_runs)
    except UntrustedShareDirError as exc:
        return {"error": str(exc)}
    except (LookupError, ValueError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    runs = [{"run": o.run, **_describe(o.value, o.failed, max_chars)} for o in outcomes]
    return {"n_runs": n_runs, "runs": runs, "truncated": len(runs) < n_runs}


def preview_results(share_dir: str, options: dict[str, Any] | None, job_id: str,
                    max_runs: int = MAX_RUNS, max_chars: int = MAX_CHARS,
                    timeout: float = TIMEOUT_SECONDS) -> dict[str, Any]:
    """A preview of a job's first runs: ``{"job_id", "n_runs", "runs": [...], "truncated"}``.

    Each run is ``{"run", "failed", "repr", "traceback"}``.  On a refusal (an
    untrusted share dir), a missing job or a timeout, the dict holds
    ``"error"`` instead.  ``job_id`` must be validated by the caller.
    """
    request = {"share_dir": share_dir, "options": options, "job_id": job_id,
               "max_runs": max_runs, "max_chars": max_chars}
    try:
        done = subprocess.run([sys.executable, "-m", "rxjobs.ui.preview"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return {"job_id": job_id, "error": f"the preview took longer than {timeout:g} s and was stopped"}
    try:
        answer = json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"job_id": job_id, "error": f"the preview failed: {_cut(last, 300)}"}
    return {"job_id": job_id, **answer}


def main() -> None:
    """The child: a request on stdin, the preview as JSON on stdout."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    request = json.loads(sys.stdin.read(1 << 20))
    answer_to = sys.stdout
    sys.stdout = sys.stderr  # what unpickling prints must not mix into the answer
    answer = json.dumps(preview_in_this_process(request))
    answer_to.write(answer + "\n")


if __name__ == "__main__":
    main()
