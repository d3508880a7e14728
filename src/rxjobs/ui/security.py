"""Who may use the page: a secret token, a cookie, CSRF tokens, Host checks and safe headers.

The server makes a random token at start and prints it in its URL, as
Jupyter does.  A request is let in when it carries that token, as
``?token=`` (the page then sets a cookie and redirects to the same URL
without it), as ``Authorization: Bearer <token>`` (scripts), or as the
cookie.  A request that changes anything is a POST; when it was let in by
the cookie (a browser) it must also carry the CSRF token, which pages embed
in their forms and which a page of another site cannot read.  When the
server listens on loopback only, a request naming another host in its
``Host`` header is refused, so a DNS-rebinding page cannot reach it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
TOKEN_PARAM = "token"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

# The Content-Security-Policy of every response: only our own vendored files run.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def new_token() -> str:
    """A fresh secret token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only reaches this machine."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Secrets:
    """The token of a running server and what is derived from it.

    Parameters
    ----------
    token
        The secret printed in the URL.
    port
        The server's port: the cookie's name carries it, since browsers share
        cookies between the ports of one host.
    prefix
        The random path the page is served under: the cookie is scoped to it,
        so a browser never sends it to a page of another port (docs/security.md).
    """

    token: str
    port: int = 0
    prefix: str = ""

    def _derive(self, purpose: str) -> str:
        return hmac.new(self.token.encode(), purpose.encode(), hashlib.sha256).hexdigest()

    @property
    def cookie_name(self) -> str:
        return f"rxjobs-ui-{self.port}"

    @property
    def cookie_path(self) -> str:
        return f"{self.prefix}/"

    @property
    def cookie_value(self) -> str:
        return self._derive("cookie")

    @property
    def csrf_token(self) -> str:
        return self._derive("csrf")

    def token_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def cookie_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.cookie_value.encode())

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf_token.encode())


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` (or ``token <token>``) header."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() in ("bearer", "token") and value.strip() else None


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


def refused(request: Request, status: int, message: str) -> Response:
    """A refusal, as JSON for the API and as plain text for a browser."""
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return PlainTextResponse(message, status_code=status)


class AccessMiddleware:
    """Lets in only requests that carry the token (URL, header or cookie) and name an allowed host.

    Sets ``request.state.csrf_exempt`` (scope ``state``) for requests let in
    by the token itself rather than by the cookie: a third-party page cannot
    make a browser send the token, only the cookie.

    Parameters
    ----------
    app
        The application behind.
    secrets_
        The server's token and what derives from it.
    allowed_hosts
        The host names a request may name (None: any, for a server that
        was asked to listen beyond loopback).
    """

    def __init__(self, app: ASGIApp, secrets_: Secrets, allowed_hosts: Iterable[str] | None) -> None:
        self.app = app
        self.secrets = secrets_
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts) if allowed_hosts is not None \
            else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self._check(request, scope)
        if response is not None:
            await _with_headers(response)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _check(self, request: Request, scope: Scope) -> Response | None:
        if self.allowed_hosts is not None:
            host = request.headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.strip("[]").lower() not in self.allowed_hosts:
                return PlainTextResponse("refused: this server answers only to loopback host names",
                                         status_code=400)
        state = scope.setdefault("state", {})
        in_url = request.query_params.get(TOKEN_PARAM)
        if self.secrets.token_matches(bearer_token(request)):
            state["csrf_exempt"] = True
            return None
        if in_url is not None:
            if not self.secrets.token_matches(in_url):
                return refused(request, 403, "refused: wrong token")
            if request.method in ("GET", "HEAD"):
                # Into a cookie, and out of the address bar and the history.
                params = [(k, v) for k, v in request.query_params.multi_items() if k != TOKEN_PARAM]
                target = URL(path=request.url.path, query=urlencode(params))
                response = RedirectResponse(str(target), status_code=303)
                response.set_cookie(self.secrets.cookie_name, self.secrets.cookie_value,
                                    httponly=True, samesite="strict", path=self.secrets.cookie_path)
                return response
            state["csrf_exempt"] = True
            return None
        if self.secrets.cookie_matches(request.cookies.get(self.secrets.cookie_name)):
            state["csrf_exempt"] = False
            return None
        return refused(request, 403, "refused: this page needs its token; open the URL that "
                                     "`rxjobs ui` printed (it ends in ?token=...)")


SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}


def _with_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def check_csrf(request: Request, form_value: str | None) -> Response | None:
    """None if a state-changing request may go on, else the refusal.

    A request let in by the cookie must carry the CSRF token (form field
    ``csrf_token`` or header ``X-CSRF-Token``), and an ``Origin`` header, when
    the browser sends one, must be this server's.
    """
    secrets_: Secrets = request.app.state.secrets
    if request.scope.get("state", {}).get("csrf_exempt"):
        return None
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        return refused(request, 403, "refused: the request comes from another site")
    given = form_value if form_value is not None else request.headers.get(CSRF_HEADER)
    if not secrets_.csrf_matches(given):
        return refused(request, 403, "refused: missing or wrong CSRF token; reload the page and try again")
    return None

