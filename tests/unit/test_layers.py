"""The tree's promise: loxgw/core decides and does no I/O; every module stays small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "loxgw"
IO_MODULES = {"socket", "subprocess", "select", "selectors", "threading", "asyncio", "pyroute2",
              "netfilterqueue", "miniupnpc", "urllib", "http", "shutil"}
MAX_MODULE_LINES = 420
MAX_CLASS_LINES = 260


PURE_PARTS = {"urllib.parse"}  # string functions only


def imported_roots(path: Path) -> set[str]:
    """Top-level packages a module imports (pure submodules of I/O packages left out)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        roots.update(name.split(".")[0] for name in names if name not in PURE_PARTS)
    return roots


CORE = sorted((PACKAGE / "core").glob("*.py"))
ALL = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("module", CORE, ids=lambda p: p.name)
def test_core_imports_no_io(module: Path) -> None:
    assert imported_roots(module) & IO_MODULES == set()


def test_core_imports_no_other_layer() -> None:
    for module in CORE:
        text = module.read_text(encoding="utf-8")
        assert "loxgw.edges" not in text and "loxgw.daemon" not in text, module.name


def test_the_io_check_sees_imports() -> None:
    probe = PACKAGE.parent / "tests" / "unit" / "test_layers.py"
    assert {"ast", "pytest", "pathlib"} <= imported_roots(probe)


@pytest.mark.parametrize("module", ALL, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_classes_stay_small(module: Path) -> None:
    text = module.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            assert (node.end_lineno or 0) - node.lineno <= MAX_CLASS_LINES, node.name
