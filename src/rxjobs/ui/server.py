"""``rxjobs ui``: serve the web page of a share dir with uvicorn until Ctrl-C."""

from __future__ import annotations

import socket
import threading
import time
import webbrowser
from collections.abc import Callable
from typing import Any

from .security import is_loopback, new_token

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_host(host: str) -> str:
    """``host`` as a URL spells it (IPv6 addresses in brackets; a wildcard as this host's name)."""
    if host in ("0.0.0.0", "::", ""):
        return socket.getfqdn()
    return f"[{host}]" if ":" in host else host


def serve(share_dir: str, options: dict[str, Any] | None = None, host: str = "127.0.0.1",
          port: int = 0, allow_remote: bool = False, open_browser: bool = True,
          echo: Callable[[str], None] = print) -> None:
    """Serve the page of ``share_dir`` until interrupted (Ctrl-C stops it cleanly).

    Parameters
    ----------
    share_dir, options
        The share dir and its fsspec storage options.
    host, port
        Where to listen (port 0: any free port).  Loopback by default.
    allow_remote
        Required to listen on an address other than loopback; the token is
        needed all the same, and the traffic is not encrypted.
    open_browser
        Open the page in a browser once the server listens.
    echo
        Prints the URL and messages.

    Raises
    ------
    ValueError
        ``host`` is not loopback and ``allow_remote`` is not set.
    OSError
        The address cannot be bound (a port in use, say).
    """
    import uvicorn

    from .app import create_app

    loopback = is_loopback(host)
    if not loopback and not allow_remote:
        raise ValueError(f"--host {host} would let other machines reach the page: pass --allow-remote "
                         "as well if that is what you want (the token is still required)")
    sock = bind(host, port)
    port = sock.getsockname()[1]
    token = new_token()
    app = create_app(share_dir, options, token, port,
                     allowed_hosts=LOOPBACK_HOSTS | {host} if loopback else None)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           server_header=False))
    url = f"http://{url_host(host)}:{port}/?token={token}"
    echo(f"rxjobs ui: the jobs of {share_dir}")
    echo(f"    {url}")
    if not loopback:
        echo("rxjobs ui: warning: listening beyond loopback without TLS; anyone who sees the URL "
             "(token included) can use the page")
    echo("Press Ctrl-C to stop.")
    if open_browser:
        threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    echo("rxjobs ui: stopped")


def _open_when_started(server: Any, url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if server.started:
        webbrowser.open(url)
