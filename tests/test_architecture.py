"""Gates no linter states for us: no module imports another module's private names.

The layers themselves are import-linter contracts (pyproject.toml, run by
``make test``); mypy checks the types.  This test reads every module's
imports, those inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "rxjobs"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _private_imports(path: Path) -> list[str]:
    """``from X import _name`` and imports of ``_module``s, in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            module = node.module or ""
            if any(part.startswith("_") and not part.startswith("__") for part in module.split(".")):
                found.append(f"line {node.lineno}: from {'.' * node.level}{module} import ...")
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"line {node.lineno}: from {'.' * node.level}{module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(p.startswith("_") and not p.startswith("__") for p in alias.name.split(".")):
                    found.append(f"line {node.lineno}: import {alias.name}")
    return found


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[_module_name(p) for p in MODULES])
def test_no_module_imports_another_modules_private_names(path):
    assert _private_imports(path) == [], f"{_module_name(path)} imports private names"


def test_the_check_sees_private_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from .store import _secret\nimport rxjobs.engines._launch\n"
                      "def f():\n    from .x._y import z\n")
    assert len(_private_imports(sample)) == 3


def _declared_markers() -> list[str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    with open(SRC.parent.parent / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["tool"]["pytest"]["ini_options"]["markers"]
    return [line.split(":", 1)[0].strip() for line in declared]


@pytest.mark.parametrize("marker", _declared_markers())
def test_every_declared_pytest_marker_marks_some_test(marker):
    tests = Path(__file__).resolve().parent
    users = [p for p in tests.rglob("*.py") if f"mark.{marker}" in p.read_text()]
    assert users, f"the {marker!r} marker of pyproject.toml marks no test: use it or remove it"
