"""The functional core and the codecs import no I/O (style.md §2, README concurrency rule 8)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "gateway"
FORBIDDEN = {"trio", "anyio", "socket", "serial", "time", "os", "asyncio", "threading", "paho"}
PURE_PACKAGES = ("core", "codecs")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
            if node.module.startswith("gateway.") and node.module.split(".")[1] in (
                "io",
                "app",
                "tools",
            ):
                found.add(node.module)
    return found


MODULES = sorted(p for pkg in PURE_PACKAGES for p in (ROOT / pkg).glob("*.py"))


def test_there_are_pure_modules_to_check() -> None:
    assert len(MODULES) >= 5


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pure_module_imports_no_io(path: Path) -> None:
    imported = _imports(path)
    bad = {m for m in imported if m in FORBIDDEN or m.startswith(("gateway.io", "gateway.app"))}
    assert not bad, f"{path} imports {sorted(bad)}"


def test_detector_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import trio\nfrom gateway.io.journal import run_journal\n")
    assert {"trio", "gateway.io.journal"} <= _imports(bad)
