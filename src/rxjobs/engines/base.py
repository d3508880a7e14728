"""The engine protocol: the three things every engine must do.

Bookkeeping (chunking, artifacts, status, cleanup) is written once in the
core; an engine only starts a job's tasks, says whether it still holds them,
and stops them.  A handle is a small JSON-able dict stored in the job's ``job.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..contexts import RxComputeContext
from ..status import Probe

Handle = dict[str, Any]


@dataclass(frozen=True)
class SubmittedJob:
    """What an engine needs to run a job whose artifacts are already written."""

    share_dir: str
    job_id: str
    context: RxComputeContext
    n_tasks: int
    share_dir_options: dict[str, Any] | None = None  # fsspec options, credentials included
    # The installed top-level modules the payload refers to (rxjobs.preload): an engine
    # that keeps processes between jobs (the local fork server) may import them once.
    modules: tuple[str, ...] = ()


class Engine(Protocol):
    """Start, ask about and stop a job on one kind of engine."""

    def parallelism(self, context: RxComputeContext) -> int:
        """How many tasks the engine runs at once for ``context`` (sizes automatic chunks)."""
        ...

    def submit(self, job: SubmittedJob) -> Handle:
        """Start the job's tasks; return the handle to store in the job record."""
        ...

    def probe(self, handle: Handle) -> Probe:
        """Say whether the engine still holds the job (and whether it started)."""
        ...

    def cancel(self, handle: Handle) -> bool:
        """Stop the job's tasks; True if something was stopped."""
        ...

    # Optional: an engine may also define
    #
    #     def sleeper(self, handle: Handle) -> Callable[[float], None] | None
    #
    # returning a sleep(seconds) that may return early when the job may have
    # ended (its driver exited, its server said so), so that a waiting caller
    # sees a short job end at once instead of at its next poll.  None, or no
    # such method, means a plain sleep.  Waiters always re-check the status
    # after it returns, so waking early (or spuriously) is harmless.
