"""The page lives under a random path prefix, so its cookie is of no use on another port.

Browsers send a host's cookies to every port of that host: a page another
user serves on ``127.0.0.1:OTHER`` would receive the session cookie of
``127.0.0.1:OURS``.  So each ``rxjobs ui`` serves its page under a random
path, ``/<prefix>/``, made at launch, and scopes its cookie to that path: a
browser sends the cookie only with requests for that path, which another
server's pages do not know and cannot read (another port is another origin).
A request outside the prefix is answered 404 before anything else looks at
it.

:class:`PrefixMiddleware` strips the prefix from the path, so the
application behind it is written as if served at ``/``; the ``Location`` of
its redirects gets the prefix back.  Pages spell their links with the
prefix themselves (the template global ``base``).
"""

from __future__ import annotations

import re
import secrets

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_PREFIX_RE = re.compile(r"^/[A-Za-z0-9_-]{16,}$")


def new_prefix() -> str:
    """A fresh random path prefix (``/`` and 128 bits, URL-safe), made at each launch."""
    return "/" + secrets.token_urlsafe(16)


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is one :func:`new_prefix` could have made, or ``""`` (no prefix).

    Raises
    ------
    ValueError
        Anything else (a prefix must not be guessable, nor hold ``/`` or ``..``).
    """
    if prefix and not _PREFIX_RE.match(prefix):
        raise ValueError(f"a page prefix is '/' and at least 16 URL-safe characters, not {prefix!r}")
    return prefix


class PrefixMiddleware:
    """Serves ``app`` under ``prefix`` only; 404 for every other path.

    Parameters
    ----------
    app
        The application, written as if served at ``/``.
    prefix
        ``/`` and the random part (see :func:`new_prefix`).
    """

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = check_prefix(prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == self.prefix:
            path = self.prefix + "/"
        if not path.startswith(self.prefix + "/"):
            await PlainTextResponse("no such page", status_code=404)(scope, receive, send)
            return
        inner = dict(scope)
        inner["path"] = path[len(self.prefix):]
        raw = scope.get("raw_path")
        if isinstance(raw, bytes) and raw.startswith(self.prefix.encode()):
            inner["raw_path"] = raw[len(self.prefix):] or b"/"

        async def send_prefixed(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (name, self._located(value) if name.lower() == b"location" else value)
                    for name, value in message.get("headers", [])]
            await send(message)

        await self.app(inner, receive, send_prefixed)

    def _located(self, value: bytes) -> bytes:
        """A redirect's target with the prefix put back (a path of ours: ``/x``, never ``//x``)."""
        if value.startswith(b"/") and not value.startswith(b"//"):
            return self.prefix.encode() + value
        return value


__all__ = ["PrefixMiddleware", "check_prefix", "new_prefix"]
