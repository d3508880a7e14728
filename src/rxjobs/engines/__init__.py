"""Engine registry: each engine is one module, imported only when it is needed."""

from __future__ import annotations

import importlib

from ..errors import EngineNotInstalledError
from .base import Engine, Handle, SubmittedJob

__all__ = ["Engine", "Handle", "SubmittedJob", "get_engine", "EngineNotInstalledError"]

# engine name -> (module, extra that installs what it needs)
_ENGINES: dict[str, tuple[str, str | None]] = {
    "local": ("rxjobs.engines.local", None),
    "dask": ("rxjobs.engines.dask", "dask"),
    "spark": ("rxjobs.engines.spark", "spark"),
    "slurm": ("rxjobs.engines.slurm", None),
}


def get_engine(name: str) -> Engine:
    """Import the engine module ``name`` lazily and return its engine.

    Raises
    ------
    EngineNotInstalledError
        With the ``pip install "rxjobs[...]"`` line that fixes it.
    ValueError
        For an engine name rxjobs does not know.
    """
    try:
        module_name, extra = _ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(_ENGINES))
        raise ValueError(f"unknown engine {name!r}; known engines: {known}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None or (exc.name or "").startswith("rxjobs"):
            raise
        raise EngineNotInstalledError(
            f"the {name} engine needs packages that are not installed ({exc.name}); "
            f'install them with: pip install "rxjobs[{extra}]"'
        ) from exc
    return module.ENGINE
