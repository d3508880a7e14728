"""Open the page in a browser without putting its token on any command line.

``webbrowser.open(url)`` starts the browser with the URL as an argument,
and every local user can read a process's arguments (``/proc/PID/cmdline``).
So, as Jupyter does, rxjobs writes a small HTML file that redirects to the
page's URL into a directory only the user can enter (mode 0700, the file
0600), and opens *that file*: the command line holds only its path.  The
file is removed when the server stops.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import shutil
import tempfile
import webbrowser
from collections.abc import Iterator
from pathlib import Path


def redirect_html(url: str) -> str:
    """A page that sends the browser on to ``url`` at once (a meta refresh, and a link)."""
    quoted = html.escape(url, quote=True)
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"refresh\" content=\"0;url={quoted}\">\n"
            "<title>rxjobs ui</title></head>\n"
            f"<body><p>Opening <a href=\"{quoted}\">the rxjobs page</a>…</p>\n"
            f"<script>window.location.replace({json.dumps(url)});</script>\n</body></html>\n")


@contextlib.contextmanager
def redirect_file(url: str, where: str | None = None) -> Iterator[Path]:
    """A private file (0600, in a fresh 0700 directory) that redirects to ``url``; removed on exit.

    Parameters
    ----------
    url
        The page's URL, token included.
    where
        The directory to make the private directory in (default: the user's
        runtime dir, ``$XDG_RUNTIME_DIR``, else the temporary directory).
    """
    parent = where or os.environ.get("XDG_RUNTIME_DIR") or None
    if parent is not None and not os.path.isdir(parent):
        parent = None
    private = Path(tempfile.mkdtemp(prefix="rxjobs-ui-", dir=parent))  # 0700
    try:
        path = private / "open.html"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(redirect_html(url))
        yield path
    finally:
        shutil.rmtree(private, ignore_errors=True)


def open_in_browser(path: Path) -> bool:
    """Open the redirect file ``path`` in the user's browser (its ``file://`` URL holds no secret)."""
    return webbrowser.open(path.as_uri())


__all__ = ["open_in_browser", "redirect_file", "redirect_html"]
