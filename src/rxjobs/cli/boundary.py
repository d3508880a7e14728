"""The command boundary: what a user can cause ends as one line on stderr, never a traceback.

Errors a user can cause end as ``rxjobs: error: <message>`` with exit status 1
(usage errors, also one line, exit with 2).  Output into a pipe whose reader
went away (``rxjobs list | head``) ends the command quietly.  Warnings of the
core are captured and shown as ``rxjobs: warning: <message>`` lines.
"""

from __future__ import annotations

import errno
import select
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..errors import (
    EngineNotInstalledError,
    IncompleteResultsError,
    JobCanceledError,
    JobFailedError,
    JobNotFinishedError,
    JobNotFoundError,
    RxUnsupportedContextError,
)

# What a user can cause (a bad id, an unknown job, a job in the wrong state, an
# unwritable share dir): reported in one line, never with a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    JobNotFoundError,
    JobNotFinishedError,
    JobFailedError,
    JobCanceledError,
    IncompleteResultsError,
    EngineNotInstalledError,
    RxUnsupportedContextError,
    OSError,
)

# The libraries behind object-store share dirs: their errors (no credentials, no such
# bucket, endpoint unreachable) are the user's to fix, said in one line.
_STORAGE_PACKAGES = frozenset({"botocore", "aiobotocore", "s3fs", "gcsfs", "google", "adlfs", "azure",
                               "fsspec", "aiohttp"})


class CliError(click.ClickException):
    """An error reported as ``rxjobs: error: <message>`` on stderr, exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"rxjobs: error: {self.format_message()}", err=True, file=file)


class OneLineUsageError(click.UsageError):
    """A usage error in one line, ``rxjobs: error: <message> (see '<command> --help')``, status 2.

    Click prints the usage, a hint, a blank line and then the error: four lines
    where a script reading stderr expects one.
    """

    def show(self, file: Any = None) -> None:
        where = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"rxjobs: error: {self.format_message()}{where}", err=True, file=file)


def one_line(exc: click.UsageError) -> click.UsageError:
    """``exc`` as a one-line usage error (a request for help stays as it is: it prints the help)."""
    if isinstance(exc, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):
        return exc
    return OneLineUsageError(exc.format_message(), exc.ctx)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe or socket whose reader has closed it (``rxjobs list | head``)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _is_storage_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in _STORAGE_PACKAGES


class BoundaryGroup(click.Group):
    """A command group that turns rxjobs errors into one-line messages at the command boundary."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise one_line(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise one_line(exc) from exc
        except (click.exceptions.Exit, click.ClickException):
            raise
        except OSError as exc:
            if exc.errno == errno.EPIPE and _stdout_reader_gone():
                raise  # click ends the command quietly, with status 1
            raise CliError(str(exc) or type(exc).__name__) from exc
        except USER_ERRORS as exc:
            raise CliError(str(exc) or type(exc).__name__) from exc
        except Exception as exc:
            if not _is_storage_error(exc):
                raise
            raise CliError(f"the share dir's storage said: {type(exc).__name__}: {exc}") from exc


def error(message: str) -> None:
    """Say ``rxjobs: error: <message>`` on stderr (the command goes on)."""
    click.echo(f"rxjobs: error: {message}", err=True)


def warning(message: str) -> None:
    """Say ``rxjobs: warning: <message>`` on stderr."""
    click.echo(f"rxjobs: warning: {message}", err=True)


@contextmanager
def captured_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the core's warnings instead of letting Python print them with a source line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
