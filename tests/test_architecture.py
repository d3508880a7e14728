"""Gates no linter states for us: no module imports another module's private names, and no
module outside ``store/`` asks which kind of store it has.

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


STORE_KINDS = frozenset({"is_local", "LocalStore", "FsspecStore"})


def _store_kind_checks(path: Path) -> list[str]:
    """Reads of ``is_local`` and names of a store's class (``isinstance(s, LocalStore)``,
    ``type(s) is FsspecStore``, their imports) in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in STORE_KINDS:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in STORE_KINDS:
            found.append(f"line {node.lineno}: {node.id}")
        elif isinstance(node, ast.ImportFrom):
            found += [f"line {node.lineno}: import {alias.name}" for alias in node.names
                      if alias.name in STORE_KINDS]
    return found


OUTSIDE_STORE = [p for p in MODULES if "store" not in p.relative_to(SRC).parts[:1]]


@pytest.mark.parametrize("path", OUTSIDE_STORE, ids=[_module_name(p) for p in OUTSIDE_STORE])
def test_no_module_outside_the_store_asks_which_kind_of_store_it_has(path):
    assert _store_kind_checks(path) == [], (
        f"{_module_name(path)} asks which kind of store it has: ask the Store a capability instead")


def test_the_check_sees_store_kind_checks(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from .store.local import LocalStore\n"
                      "def f(store):\n    if store.is_local:\n        return isinstance(store, LocalStore)\n"
                      "    return type(store) is rxjobs.store.remote.FsspecStore\n")
    assert len(_store_kind_checks(sample)) == 4
    assert OUTSIDE_STORE and all("store" not in p.parts[-2:-1] for p in OUTSIDE_STORE)


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
