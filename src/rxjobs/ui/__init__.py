"""``rxjobs ui``: a web page of a share dir's jobs, their output and disk use, with safe cleanup.

A facade, like the command line: every fact and every action comes from the
job services (:mod:`rxjobs.listing`, :mod:`rxjobs.jobs`, :mod:`rxjobs.usage`,
:mod:`rxjobs.retention`, :mod:`rxjobs.cleanup`).  It needs the ``ui`` extra
(``pip install "rxjobs[ui]"``: Starlette, uvicorn, Jinja2); importing this
package does not import them, :mod:`rxjobs.ui.app` and
:mod:`rxjobs.ui.server` do.  See docs/ui.md.
"""

from __future__ import annotations

INSTALL_HINT = 'pip install "rxjobs[ui]"'
REQUIRED = ("starlette", "uvicorn", "jinja2", "multipart")


def missing_dependencies() -> list[str]:
    """The packages of the ``ui`` extra that cannot be imported here."""
    import importlib.util

    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]
