"""``rxjobs ui``: serve the web page of a share dir with uvicorn until Ctrl-C.

The page is served on a loopback TCP port, or on a Unix socket (for an SSH
tunnel), under a random path prefix made at launch (:mod:`rxjobs.ui.prefix`);
its URL carries a random token (:mod:`rxjobs.ui.security`).  The browser is
opened through a private redirect file (:mod:`rxjobs.ui.opener`), so the
token is on no command line.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .opener import open_in_browser, redirect_file
from .prefix import new_prefix
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


def bind_unix(path: str) -> socket.socket:
    """A listening Unix socket at ``path`` that only its owner may connect to (mode 0600).

    Raises
    ------
    FileExistsError
        Something is at ``path`` already (a stale socket is not removed for
        you: it may be another server's).
    """
    if os.path.lexists(path):
        kind = "a socket" if stat.S_ISSOCK(os.lstat(path).st_mode) else "something"
        raise FileExistsError(f"--unix-socket {path}: {kind} is there already; remove it if it is "
                              "a stale one of yours, or choose another path")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is made 0600: no window in which others may connect
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    try:
        os.chmod(path, 0o600)
        sock.listen(128)
    except OSError:
        sock.close()
        os.unlink(path)
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
          echo: Callable[[str], None] = print, unix_socket: str | None = None) -> None:
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
        Open the page in a browser once the server listens (through a private
        redirect file: the token is on no command line).
    echo
        Prints the URL and messages.
    unix_socket
        Listen on a Unix socket at this path (mode 0600) instead of a TCP
        port, for a browser that reaches it through ``ssh -L``; no browser is
        opened.

    Raises
    ------
    ValueError
        ``host`` is not loopback and ``allow_remote`` is not set.
    OSError
        The address cannot be bound (a port in use, a path taken, say).
    """
    import uvicorn

    from .app import create_app

    loopback = unix_socket is not None or is_loopback(host)
    if not loopback and not allow_remote:
        raise ValueError(f"--host {host} would let other machines reach the page: pass --allow-remote "
                         "as well if that is what you want (the token is still required)")
    if unix_socket is not None:
        unix_socket = os.path.abspath(unix_socket)
        sock = bind_unix(unix_socket)
        port = 0
    else:
        sock = bind(host, port)
        port = sock.getsockname()[1]
    token, prefix = new_token(), new_prefix()
    app = create_app(share_dir, options, token, port,
                     allowed_hosts=LOOPBACK_HOSTS | {host} if loopback else None, prefix=prefix)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           server_header=False))
    echo(f"rxjobs ui: the jobs of {share_dir}")
    if unix_socket is not None:
        url = f"http://localhost:PORT{prefix}/?token={token}"
        echo(f"    listening on {unix_socket} (only you can connect); from your machine run")
        echo(f"    ssh -N -L PORT:{unix_socket} {socket.getfqdn()}")
        echo("    (PORT: any free port of yours), then open")
        echo(f"    {url}")
        open_browser = False
    else:
        url = f"http://{url_host(host)}:{port}{prefix}/?token={token}"
        echo(f"    {url}")
    if not loopback:
        echo("rxjobs ui: warning: listening beyond loopback without TLS; anyone who sees the URL "
             "(token included) can use the page")
    echo("Press Ctrl-C to stop.")
    with contextlib.ExitStack() as stack:
        if open_browser:
            opener = stack.enter_context(redirect_file(url))
            threading.Thread(target=_open_when_started, args=(server, opener), daemon=True).start()
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            if unix_socket is not None:
                with contextlib.suppress(OSError):
                    os.unlink(unix_socket)
    echo("rxjobs ui: stopped")


def _open_when_started(server: Any, opener: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if server.started:
        open_in_browser(opener)
