"""One progress display that updates in place while a notebook waits for a job.

:func:`job_progress` is the small API every waiting call uses
(``rx_wait_for_job``, a waiting ``rx_exec``, and ``Executor.map``)::

    with job_progress("job 2026...", total=n_tasks) as bar:
        ...
        bar.update(done, state="running")

Inside an IPython kernel (Jupyter, VS Code, nbclient) it shows one display
(``IPython.display.display(..., display_id=True)``) and replaces its content
on each change (``DisplayHandle.update``): never a flood of lines.
Anywhere else it does nothing at all and imports nothing: IPython is looked
for only in ``sys.modules``, so a script or the CLI never loads it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def in_kernel() -> bool:
    """True when running inside an IPython kernel (a notebook), not a terminal IPython or a script."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # a broken or partial IPython install: behave as outside a notebook
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class _Shown:
    """What the display holds: HTML for a notebook, text for any other front end."""

    def __init__(self, label: str, done: int | None, total: int | None, state: str) -> None:
        self.label, self.done, self.total, self.state = label, done, total, state

    def _repr_html_(self) -> str:
        from .displays import progress_html
        return progress_html(self.label, self.done, self.total, self.state)

    def __repr__(self) -> str:
        from .displays import progress_text
        return progress_text(self.label, self.done, self.total, self.state)


class Progress:
    """A progress display; :meth:`update` redraws it only when something shown changed.

    Outside a notebook it is inert (``shown`` is False) and ``update`` costs a comparison.
    """

    def __init__(self, label: str, total: int | None, handle: Any = None) -> None:
        self.label = label
        self.total = total
        self.done: int | None = 0
        self.state = "queued"
        self._handle = handle
        self.updates = 0  # redraws after the first display (tests and benchmarks read it)

    @property
    def shown(self) -> bool:
        return self._handle is not None

    def update(self, done: int | None = None, total: int | None = None, state: str | None = None) -> None:
        """Set what changed (tasks done, the total if it became known, the state) and redraw."""
        new = (self.done if done is None else done, self.total if total is None else total,
               self.state if state is None else str(state))
        if new == (self.done, self.total, self.state):
            return
        self.done, self.total, self.state = new
        if self._handle is not None:
            self._handle.update(_Shown(self.label, self.done, self.total, self.state))
            self.updates += 1


@contextmanager
def job_progress(label: str, total: int | None = None, state: str = "queued") -> Iterator[Progress]:
    """A progress display for the duration of the ``with`` block; inert outside a notebook.

    Parameters
    ----------
    label
        What is waited for (a job id, ``"map"``): shown before the bar.
    total
        The number of tasks, if known now (``update(total=...)`` can give it later).
    state
        The state shown at first.
    """
    handle = None
    if in_kernel():
        try:
            from IPython.display import display
            handle = display(_Shown(label, 0, total, state), display_id=True)
        except Exception:  # a front end that refuses displays: wait without one
            handle = None
    progress = Progress(label, total, handle)
    progress.state = state
    yield progress
