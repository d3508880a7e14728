"""The command line imports only what the command run uses.

``rxjobs --help`` and ``rxjobs list`` on an empty share dir must start fast:
the root registers its subcommands lazily, and the commands that only read
(``list``, ``status``) print without rich.  These tests run each command in a
fresh interpreter and look at ``sys.modules`` afterwards, so an eager import
added anywhere on the way fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from rxjobs.cli import LAZY_COMMANDS, cli

pytestmark = pytest.mark.timeout(120)

# Never needed to parse arguments and print help, or to list a share dir.
HEAVY = ("rich.console", "rich.table", "rich.progress", "rxjobs.api", "rxjobs.cleanup", "rxjobs.sweep",
         "rxjobs.retention", "rxjobs.usage", "rxjobs.doctor", "rxjobs.ui", "rxjobs.demo",
         "rxjobs.executor", "rxjobs.cli.cleanup", "rxjobs.cli.disk_use", "rxjobs.cli.lifecycle")
# Not even the job services or engines: for --help and a bare import.
SERVICES = ("rxjobs.jobs", "rxjobs.listing", "rxjobs.engines", "rxjobs.store", "rxjobs.cli.listing",
            "rxjobs.cli.maintenance", "rxjobs.cli.serve")

_RUN = """
import json, sys
{code}
print("MODULES=" + json.dumps(sorted(sys.modules)))
"""


def _modules_after(code: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", _RUN.format(code=code)], capture_output=True, text=True,
                          timeout=60, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("MODULES=")), None)
    assert line is not None, done.stderr
    return set(json.loads(line.removeprefix("MODULES=")))


def _cli_run(args: list[str]) -> str:
    return ("from rxjobs.cli import main\n"
            "try:\n"
            f"    main({args!r})\n"
            "except SystemExit as exc:\n"
            "    assert exc.code in (0, None), exc.code\n")


def test_importing_the_cli_imports_no_command_no_rich_and_no_job_service():
    loaded = _modules_after("import rxjobs.cli")
    assert "click" in loaded and "rxjobs.cli" in loaded  # the check sees what was imported
    assert sorted(loaded & {*HEAVY, *SERVICES}) == []


def test_help_imports_no_command_no_rich_and_no_job_service():
    loaded = _modules_after(_cli_run(["--help"]))
    assert sorted(loaded & {*HEAVY, *SERVICES}) == []


# What `rxjobs list` on an empty share dir does without: it lists the names and stops, so
# neither the listing (records, contexts), nor a process table, nor secrets' hashlib.
EMPTY_LIST_DEFERS = ("rxjobs.listing", "rxjobs.records", "rxjobs.contexts", "psutil", "secrets", "hashlib")


@pytest.mark.parametrize("args", [["list"], ["list", "--json"], ["list", "--since", "2h"]],
                         ids=["table", "json", "window"])
def test_list_imports_neither_rich_nor_the_cleanup_nor_the_api(tmp_path: Path, args: list[str]):
    share = tmp_path / "share"
    loaded = _modules_after(_cli_run(["--share-dir", str(share), *args]))
    assert "rxjobs.cli.listing" in loaded and "rxjobs.store.local" in loaded
    assert sorted(loaded & set(HEAVY)) == []
    # An empty share dir has no job to look at: not even the jobs service, the engines
    # or cloudpickle (most of the command's start-up), nor the listing itself.
    assert sorted(loaded & {"rxjobs.jobs", "rxjobs.engines", "cloudpickle", *EMPTY_LIST_DEFERS}) == []


def test_a_list_with_jobs_imports_the_listing(tmp_path: Path):
    """The guard above sees what it guards: with one job there, the listing is imported."""
    from rxjobs.store import open_store

    store = open_store(str(tmp_path / "share"))
    store.ensure_root()
    job_id = "rxJob_20261205000000000000_abcd"
    store.makedir(store.paths(job_id).dir)  # no job.json: debris, not listed, yet looked at
    loaded = _modules_after(_cli_run(["--share-dir", store.url, "list"]))
    assert {"rxjobs.listing", "rxjobs.records", "rxjobs.contexts"} <= loaded


def test_a_commands_own_help_imports_its_module():
    loaded = _modules_after(_cli_run(["du", "--help"]))
    assert "rxjobs.cli.disk_use" in loaded and "rxjobs.cli.lifecycle" not in loaded


@pytest.mark.parametrize("name", sorted(LAZY_COMMANDS))
def test_the_roots_summary_of_each_command_is_its_docstrings_first_paragraph(name: str):
    command = cli.get_command(click.Context(cli), name)
    assert isinstance(command, click.Command) and command.help is not None
    first = command.help.split("\n\n")[0]
    assert " ".join(first.split()) == LAZY_COMMANDS[name][2]
    assert command.name == name


def test_help_lists_every_command_with_its_summary():
    done = subprocess.run([sys.executable, "-m", "rxjobs", "--help"], capture_output=True, text=True,
                          timeout=60, check=True)
    for name in LAZY_COMMANDS:
        assert f"\n  {name} " in done.stdout, done.stdout
    assert "List the jobs of the share dir, oldest first." in done.stdout


def test_du_prints_without_rich(tmp_path: Path):
    loaded = _modules_after(_cli_run(["--share-dir", str(tmp_path / "share"), "du"]))
    assert "rxjobs.cli.disk_use" in loaded and "rxjobs.usage" in loaded
    assert sorted(loaded & {"rich.console", "rich.table", "rich.progress", "rxjobs.api"}) == []
