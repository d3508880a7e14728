"""The command line's shared parameters: the share dir, parsed types and the common options.

Cheap to import (only leaf modules): the root group and every subcommand use them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import click

from ..durations import parse_size
from ..options import REDACTED, has_redacted_value, storage_options
from ..status import RxRemoteJobStatus
from ..times import parse_age, parse_time

if TYPE_CHECKING:
    from ..store import Store

T = TypeVar("T")


@dataclass(frozen=True)
class ShareDir:
    """The share dir a command works on: its URL and the storage options that reach it."""

    url: str
    options: dict[str, Any] | None = None

    def store(self) -> Store:
        """Open the share dir's store (imported here: ``--help`` needs no store)."""
        from ..store import open_store

        return open_store(self.url, self.options)


def parse_share_dir_options(pairs: Sequence[str], from_env: str | None) -> dict[str, Any] | None:
    """``$RXJOBS_SHARE_DIR_OPTIONS`` (a JSON object), then each ``KEY=VALUE`` over it.

    A VALUE that is JSON (``true``, ``3``, ``{"region_name": "eu-west-1"}``) is
    taken as such; anything else is a string.
    """
    options: dict[str, Any] = {}
    if from_env:
        try:
            loaded = json.loads(from_env)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"$RXJOBS_SHARE_DIR_OPTIONS is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("$RXJOBS_SHARE_DIR_OPTIONS must be a JSON object")
        options.update(loaded)
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, not {pair!r}",
                                     param_hint="'--share-dir-option'")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        options[key.strip()] = value
    redacted = has_redacted_value(options)
    if redacted is not None:
        raise click.BadParameter(
            f"the value of {redacted!r} is {REDACTED!r}, the placeholder rxjobs writes instead of a "
            "credential: give the real value, or leave credentials to the environment",
            param_hint="'--share-dir-option'")
    frozen = storage_options(options) if options else None
    return frozen.to_dict() if frozen is not None else None


class ParsedType(click.ParamType, Generic[T]):
    """A click parameter read by a parse function that raises ValueError on bad text.

    Parameters
    ----------
    name
        The metavar shown in help (``TIME``, ``DURATION``, ``SIZE``).
    parse
        Turns the text into the value; its ValueError becomes a usage error.
    kind
        A value already of this type (a default, or a call from Python) is taken as is.
    """

    def __init__(self, name: str, parse: Callable[[str], T], kind: type[T]) -> None:
        self.name = name
        self.parse = parse
        self.kind = kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> T:
        if isinstance(value, self.kind):
            return value
        try:
            return self.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIME = ParsedType("TIME", parse_time, datetime)
# --older-than: a duration that still counts back to a date.
AGE = ParsedType("DURATION", parse_age, timedelta)
SIZE = ParsedType("SIZE", parse_size, int)
STATE_CHOICE = click.Choice([s.value for s in RxRemoteJobStatus], case_sensitive=False)

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def state_option(help_text: str) -> Decorator:
    """``--state``, repeatable: one of the job states."""
    return click.option("--state", "states", multiple=True, type=STATE_CHOICE, help=help_text)


def json_option(help_text: str = "Print JSON for scripts.") -> Decorator:
    """``--json``: print JSON for scripts instead of text."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)
