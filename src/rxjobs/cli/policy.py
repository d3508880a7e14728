"""The retention options that choose jobs among all those of a share dir (``cleanup`` and ``du``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import click

from ..retention import RetentionPolicy, load_policy
from ..status import RxRemoteJobStatus
from .params import AGE, SIZE, state_option


def retention_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --state, --older-than, --max-total-size, --keep-last, --policy and --force to ``command``."""
    for option in reversed([
        state_option("Only jobs in this state (repeatable)."),
        click.option("--older-than", type=AGE,
                     help="Jobs submitted longer ago than this (e.g. 7d)."),
        click.option("--max-total-size", type=SIZE, metavar="SIZE",
                     help="Remove the oldest jobs the cleanup rules allow until the share dir "
                          "holds at most SIZE (e.g. 50G, 500MiB); never a job the rules keep "
                          "without --force."),
        click.option("--keep-last", type=click.IntRange(min=0), metavar="N",
                     help="Never remove the N newest jobs."),
        click.option("--policy", "policy_file", type=click.Path(dir_okay=False), metavar="FILE",
                     help="A TOML retention policy (keys: older_than, max_total_size, keep_last, "
                          "states, force); options given here win over its keys."),
        click.option("--force", is_flag=True,
                     help="Also remove un-retrieved results and running jobs (canceled first)."),
    ]):
        command = option(command)
    return command


def policy_from(policy_file: str | None, states: tuple[str, ...], older_than: timedelta | None,
                max_total_size: int | None, keep_last: int | None, force: bool) -> RetentionPolicy:
    """The policy of ``--policy FILE`` with the options given on the command line over its keys."""
    policy = load_policy(policy_file) if policy_file else RetentionPolicy()
    return policy.merged(
        older_than=older_than, max_total_size=max_total_size, keep_last=keep_last,
        states=frozenset(RxRemoteJobStatus.parse(s) for s in states) if states else None,
        force=True if force else None)
