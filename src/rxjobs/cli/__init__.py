"""The ``rxjobs`` command: list, inspect, wait for, cancel and clean up the jobs of a share dir.

The command only parses arguments and prints.  Every job operation is a call
into :mod:`rxjobs.api`; what it shows comes from the job services:
:mod:`rxjobs.listing` (``list``), :mod:`rxjobs.usage` (``du``),
:mod:`rxjobs.retention` and :mod:`rxjobs.cleanup` (``cleanup``, dry runs) and
:mod:`rxjobs.jobs` (states).

This root only holds the group, its share-dir options and a table of the
subcommands.  Each subcommand lives in a module of this package that is
imported when that command runs, or for its own ``--help`` (click's
documented lazy-group pattern): ``rxjobs --help`` imports none of them, and
``rxjobs list`` none of rich, the cleanup, the sweep or the API.

* :mod:`.listing`: ``list`` and ``status``;
* :mod:`.lifecycle`: ``output``, ``results``, ``wait`` and ``cancel``;
* :mod:`.cleanup`: ``cleanup`` (with :mod:`.policy`, the retention options,
  and :mod:`.cleanup_report`, how an outcome is said);
* :mod:`.disk_use`: ``du``;
* :mod:`.all_users`: the operator's ``--all-users ROOT`` of ``cleanup`` and ``du``;
* :mod:`.maintenance`: ``adopt`` and ``doctor``;  :mod:`.serve`: ``ui`` and ``demo``;
* :mod:`.boundary` (one-line errors), :mod:`.params` (shared options),
  :mod:`.printing` (JSON and every table) and :mod:`.rich_output` (progress bars).

Errors a user can cause end as one line on stderr, ``rxjobs: error: <message>``,
with exit status 1 (usage errors, also one line, exit with 2).  Output into a
pipe whose reader went away (``rxjobs list | head``) ends the command quietly.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

import click

from ..sharedir import default_share_dir, normalize_share_dir
from ..version import __version__
from .boundary import BoundaryGroup, CliError
from .params import ParsedType, ShareDir, parse_share_dir_options

# name -> (module of this package, its command object, the summary `rxjobs --help` shows).
# The summary is the first paragraph of the command's docstring (a test keeps them equal),
# so that the root's help imports no subcommand.
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "adopt": ("maintenance", "adopt",
              "Mark a share dir made by an older rxjobs, after checking it holds only jobs."),
    "cancel": ("lifecycle", "cancel",
               "Stop queued or running jobs; exit 1 if one could not be canceled (e.g. it had ended)."),
    "cleanup": ("cleanup", "cleanup", "Remove the artifacts of jobs, following the cleanup rules."),
    "demo": ("serve", "demo", "Run a small job without waiting and follow it through its whole life."),
    "doctor": ("maintenance", "doctor", "Check the share dir (and the runtime dir) for what no job owns."),
    "du": ("disk_use", "du",
           "Show disk use: per job, per state, the largest jobs, and what each policy would free."),
    "list": ("listing", "list_command", "List the jobs of the share dir, oldest first."),
    "output": ("lifecycle", "output",
               "Print the console output of a job's finished tasks, as it is (--follow: as it comes)."),
    "results": ("lifecycle", "results", "Print each run's value of a finished job, then remove the job."),
    "status": ("listing", "status",
               "Show the state of jobs and the reason for it (exit 1 if a job is not found)."),
    "ui": ("serve", "ui",
           "Serve a web page of the share dir's jobs, their output and disk use, with safe cleanup."),
    "wait": ("lifecycle", "wait",
             "Wait for jobs to end; exit 0 if all finished, 1 otherwise (failed, canceled, timed out)."),
}


class LazyGroup(BoundaryGroup):
    """The ``rxjobs`` group: its subcommands are imported by name, on first use.

    ``lazy_subcommands`` maps a name to (module of this package, attribute,
    summary), as :data:`LAZY_COMMANDS`; commands added with ``add_command``
    are listed beside them.
    """

    lazy_subcommands: dict[str, tuple[str, str, str]] = LAZY_COMMANDS

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy_subcommands:
            return super().get_command(ctx, cmd_name)
        module, attribute, _ = self.lazy_subcommands[cmd_name]
        command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{__name__}.{module}.{attribute} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands and their summaries, as click writes them, without importing a command."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows: list[tuple[str, str]] = []
        for name in names:
            if name in self.lazy_subcommands:
                summary = click.Command(name, help=self.lazy_subcommands[name][2])
                rows.append((name, summary.get_short_help_str(limit)))
                continue
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--share-dir",
    envvar="RXJOBS_SHARE_DIR",
    show_envvar=True,
    metavar="DIR_OR_URL",
    help="The share dir whose jobs to manage (default: the per-user data dir).",
)
@click.option(
    "--share-dir-option", "-o", "share_dir_option", multiple=True, metavar="KEY=VALUE",
    help="An fsspec storage option of an object-store share dir, e.g. endpoint_url=http://... "
         "(repeatable; $RXJOBS_SHARE_DIR_OPTIONS may hold them all as a JSON object).",
)
@click.version_option(__version__, prog_name="rxjobs")
@click.pass_context
def cli(ctx: click.Context, share_dir: str | None, share_dir_option: tuple[str, ...]) -> None:
    """Manage rxjobs jobs: list, status, output, results, wait, cancel, cleanup, du, doctor, ui."""
    options = parse_share_dir_options(share_dir_option, os.environ.get("RXJOBS_SHARE_DIR_OPTIONS"))
    url = normalize_share_dir(share_dir) if share_dir else default_share_dir()
    ctx.obj = ShareDir(url, options)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``rxjobs`` command (the console-script entry point and ``python -m rxjobs``).

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).
    """
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="rxjobs")
    finally:
        _flush_stdout_quietly()


def _flush_stdout_quietly() -> None:
    """Flush stdout now, so that a reader gone away costs no ``Exception ignored`` at exit."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush has nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


__all__ = ["LAZY_COMMANDS", "CliError", "LazyGroup", "ParsedType", "cli", "main"]
