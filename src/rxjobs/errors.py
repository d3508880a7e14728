"""Exceptions rxjobs raises, each with a message that says what to do next.

Every exception a user can meet is defined here, below every other module,
so that any layer may raise it and the facades can report it in one line.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EngineNotInstalledError",
    "EngineRefusedError",
    "IncompleteResultsError",
    "JobCanceledError",
    "JobFailedError",
    "JobNotFinishedError",
    "JobNotFoundError",
    "NewerFormatError",
    "NotAShareDirError",
    "RxRunError",
    "RxUnsupportedContextError",
    "UnsafeShareDirError",
    "UntrustedShareDirError",
]


class JobNotFoundError(LookupError):
    """The job directory does not exist in the share dir (never created, or removed)."""


class NewerFormatError(ValueError):
    """A job written in a newer format than this rxjobs reads; the message names the rxjobs it needs.

    A ValueError, as any record rxjobs cannot read, but not debris: the job is
    listed, kept by cleanup, and every action on it says to upgrade rxjobs.
    """


class UntrustedShareDirError(PermissionError):
    """Files others could have written: loading pickles from them is refused."""


class NotAShareDirError(FileNotFoundError):
    """A directory that rxjobs did not make a share dir (no marker file): refused."""


class UnsafeShareDirError(PermissionError):
    """An entry of the share dir is not what rxjobs made (a symlink, another owner...)."""


class EngineRefusedError(PermissionError):
    """The engine's scheduler refused an action on the job (``scancel`` denied, say)."""


class RxUnsupportedContextError(NotImplementedError):
    """A RevoScaleR compute context that rxjobs does not provide (RxHadoopMR, RxInTeradata)."""


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

    def __reduce__(self) -> tuple[Any, ...]:  # keep the fields through pickling
        msg = str(self).split(": ", 1)[-1]
        return (type(self), (self.exc_type, msg, self.remote_traceback))
