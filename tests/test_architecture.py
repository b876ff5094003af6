"""The layering promised in CONTRIBUTING.md, checked on the source itself.

The core never imports Textual or the faces; the faces never talk to SSH or build Slurm commands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "rv_tui"
FACES = ("cli", "tui")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(faces: bool) -> list[Path]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).parts
        is_face = rel[0] in FACES or rel == ("__main__.py",)
        if is_face == faces:
            out.append(path)
    return out


@pytest.mark.parametrize("path", _modules(faces=False), ids=lambda p: str(p.relative_to(PKG)))
def test_core_does_not_import_ui(path: Path) -> None:
    bad = {n for n in _imports(path)
           if n == "textual" or n.startswith(("textual.", "rv_tui.cli", "rv_tui.tui"))}
    assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules(faces=True), ids=lambda p: str(p.relative_to(PKG)))
def test_faces_do_not_talk_to_ssh_or_build_slurm_commands(path: Path) -> None:
    bad = {n for n in _imports(path)
           if n == "asyncssh" or n.startswith(("asyncssh.", "rv_tui.slurm", "rv_tui.remote.pool"))}
    assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"


def test_there_are_modules_on_both_sides() -> None:
    assert len(_modules(faces=False)) > 10 and len(_modules(faces=True)) >= 2


@pytest.mark.parametrize("path", sorted((PKG / "tui").rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_tui_does_not_import_the_cli(path: Path) -> None:
    """One face never borrows from the other: the dashboard calls the core the CLI calls.

    (``rv_tui/cli/tui.py`` is the CLI's entry into the dashboard and imports ``rv_tui.tui``.)"""
    bad = {n for n in _imports(path) if n == "rv_tui.cli" or n.startswith("rv_tui.cli.")}
    assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"
