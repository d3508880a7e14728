"""Compute contexts: plain, picklable, comparable values that say where a job runs.

A context names its engine by a string; the engine module is imported only
when a job is run, probed or canceled (see :mod:`rxjobs.engines`).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass
from typing import Any, ClassVar

from .store import default_share_dir, normalize_share_dir


class RxUnsupportedContextError(NotImplementedError):
    """A RevoScaleR compute context that rxjobs does not provide."""


@dataclass(frozen=True)
class RxComputeContext:
    """Base of every compute context.

    Subclasses are frozen dataclasses; their fields are the settings stored in
    ``job.json`` and compared by ``rx_get_jobs(exact_match=True)``.
    """

    engine: ClassVar[str | None] = None

    @property
    def kind(self) -> str:
        return type(self).__name__

    def settings(self) -> dict[str, Any]:
        """Every setting, as stored in ``job.json``."""
        return dataclasses.asdict(self)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "description": repr(self), "settings": self.settings()}

    @staticmethod
    def from_dict(record: dict[str, Any]) -> RxComputeContext:
        """Rebuild a context from its ``job.json`` record."""
        kind = record.get("kind")
        cls = _KINDS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(f"unknown compute context kind {kind!r} in job record")
        names = {f.name for f in dataclasses.fields(cls)}
        settings = {k: v for k, v in (record.get("settings") or {}).items() if k in names}
        return cls(**settings)

    @property
    def waits(self) -> bool:
        return True

    def engine_address(self) -> str:
        """Where the engine is: a host, a scheduler address or a Spark master."""
        return socket.gethostname()

    def job_share_dir(self) -> str:
        return default_share_dir()

    def matches(self, other: RxComputeContext, exact_match: bool = False) -> bool:
        """RevoScaleR's matching: same share dir and engine address, or every setting."""
        if exact_match:
            return self.kind == other.kind and self.settings() == other.settings()
        return (
            self.job_share_dir() == other.job_share_dir()
            and self.engine_address() == other.engine_address()
        )


@dataclass(frozen=True)
class RxLocalSeq(RxComputeContext):
    """Run every run in the calling process, one after another; always waits, no artifacts."""

    engine: ClassVar[str | None] = None


@dataclass(frozen=True)
class RxLocalParallel(RxComputeContext):
    """Run a job in a pool of processes on this machine.

    Parameters
    ----------
    num_workers
        Worker processes; None means one per CPU.
    wait
        True: ``rx_exec`` blocks and returns the results.  False: it returns an
        :class:`~rxjobs.RxRemoteJob` at once and the job runs in a detached
        driver process that outlives the caller.
    share_dir
        Where the job's artifacts live; default ``$RXJOBS_SHARE_DIR`` or the
        per-user data directory.
    console_output
        Print the runs' console output when results are collected.
    auto_cleanup
        Remove the job's artifacts once its results have been returned.
    """

    num_workers: int | None = None
    wait: bool = True
    share_dir: str | None = None
    console_output: bool = False
    auto_cleanup: bool = True

    engine: ClassVar[str | None] = "local"

    def __post_init__(self) -> None:
        if self.num_workers is not None and (
            not isinstance(self.num_workers, int) or isinstance(self.num_workers, bool)
            or self.num_workers < 1
        ):
            raise ValueError(f"num_workers must be a positive integer or None, not {self.num_workers!r}")
        share = normalize_share_dir(self.share_dir) if self.share_dir is not None else default_share_dir()
        if "://" in share:
            raise ValueError(
                f"RxLocalParallel needs a share_dir on a local disk, not {share!r}: its driver and "
                "workers are separate processes that must see the same files"
            )
        object.__setattr__(self, "share_dir", share)

    @property
    def waits(self) -> bool:
        return bool(self.wait)

    def job_share_dir(self) -> str:
        assert self.share_dir is not None  # set by __post_init__
        return self.share_dir

    @property
    def workers(self) -> int:
        return self.num_workers or os.cpu_count() or 1


def RxHadoopMR(*args: Any, **kwargs: Any) -> RxComputeContext:  # noqa: N802 - revoscalepy name
    """Not available: Hadoop MapReduce went with Machine Learning Server."""
    raise RxUnsupportedContextError(
        "RxHadoopMR is not available in rxjobs (Hadoop MapReduce was retired with Machine "
        "Learning Server); use RxSpark(master='yarn', ...) to run on the same Hadoop cluster, "
        "or RxDask(address) for a Dask cluster"
    )


def RxInTeradata(*args: Any, **kwargs: Any) -> RxComputeContext:  # noqa: N802 - revoscalepy name
    """Not available: in-database Teradata execution went with Machine Learning Server."""
    raise RxUnsupportedContextError(
        "RxInTeradata is not available in rxjobs; read the data out of Teradata and run the job "
        "with RxSpark(...) or RxDask(address), or locally with RxLocalParallel()"
    )


_KINDS: dict[str, type[RxComputeContext]] = {
    "RxLocalSeq": RxLocalSeq,
    "RxLocalParallel": RxLocalParallel,
}


def register_context(cls: type[RxComputeContext]) -> type[RxComputeContext]:
    """Make a context kind known to :meth:`RxComputeContext.from_dict` (used by engine extras)."""
    _KINDS[cls.__name__] = cls
    return cls
