"""``rxjobs ui`` (the web page) and ``rxjobs demo`` (a job followed through its life)."""

from __future__ import annotations

import click

from .boundary import CliError
from .params import ShareDir


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on; anything but loopback also needs --allow-remote.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="The port to listen on (0: a free one).")
@click.option("--allow-remote", is_flag=True,
              help="Allow a --host other than loopback (the token is still required; no TLS).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser; just print the URL.")
@click.option("--unix-socket", metavar="PATH", type=click.Path(dir_okay=False, path_type=str),
              help="Listen on a Unix socket (mode 0600) instead of a port, for a browser that "
                   "reaches it through `ssh -L PORT:PATH host`.")
@click.pass_obj
def ui(share: ShareDir, host: str, port: int, allow_remote: bool, no_browser: bool,
       unix_socket: str | None) -> None:
    """Serve a web page of the share dir's jobs, their output and disk use, with safe cleanup.

    Prints the page's URL, which carries a secret token and a random path,
    and serves until Ctrl-C.  The browser is opened through a private file,
    so the token is on no command line.  Needs the ui extra: pip install
    "rxjobs[ui]".  See docs/ui.md.
    """
    from ..ui import INSTALL_HINT, missing_dependencies

    missing = missing_dependencies()
    if missing:
        raise CliError(f"the web page needs {', '.join(missing)}: {INSTALL_HINT}")
    from ..ui.security import is_loopback
    from ..ui.server import serve

    if not is_loopback(host) and not allow_remote:
        raise click.UsageError(f"--host {host} lets other machines reach the page: add --allow-remote "
                               "if you mean it (the token is still required)")
    share.store().list_job_ids()  # a wrong --share-dir fails here, in one line, not in the page
    if unix_socket is not None and (allow_remote or port):
        raise click.UsageError("--unix-socket listens on a socket, not a port: drop --port/--allow-remote")
    try:
        serve(share.url, share.options, host=host, port=port, allow_remote=allow_remote,
              open_browser=not no_browser, echo=click.echo, unix_socket=unix_socket)
    except FileExistsError as exc:
        raise CliError(str(exc)) from None


@click.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Run a small job without waiting and follow it through its whole life.

    It uses the share dir given to rxjobs (default: the per-user one) and
    removes its job at the end.
    """
    from ..demo import run_demo

    ctx.exit(run_demo(share_dir=ctx.obj.url, echo=click.echo, share_dir_options=ctx.obj.options))
