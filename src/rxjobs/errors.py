"""Exceptions rxjobs raises, each with a message that says what to do next."""

from __future__ import annotations

from .store import JobNotFoundError, UntrustedShareDirError

__all__ = [
    "JobNotFoundError",
    "UntrustedShareDirError",
    "JobNotFinishedError",
    "JobFailedError",
    "JobCanceledError",
    "IncompleteResultsError",
    "RxRunError",
    "EngineNotInstalledError",
]


class EngineNotInstalledError(ImportError):
    """An engine's optional dependencies (or Java, for Spark) are not installed."""


class JobNotFinishedError(RuntimeError):
    """Results were asked of a job that is still queued or running."""


class JobFailedError(RuntimeError):
    """The job failed; its reason (and remote traceback, if any) is in the message."""


class JobCanceledError(RuntimeError):
    """The job was canceled; its results were deleted."""


class IncompleteResultsError(RuntimeError):
    """A finished job's result files are not all there (nothing was deleted)."""


class RxRunError(Exception):
    """A run raised an exception that could not be carried back as itself.

    Attributes
    ----------
    exc_type
        The qualified name of the original exception type.
    remote_traceback
        The traceback printed on the worker.
    """

    def __init__(self, exc_type: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.remote_traceback = remote_traceback

    def __reduce__(self):  # keep the fields through pickling
        msg = str(self).split(": ", 1)[-1]
        return (type(self), (self.exc_type, msg, self.remote_traceback))
