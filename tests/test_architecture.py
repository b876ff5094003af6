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


# --- the shape of the tree (issue 16): sizes, cycles, the floors ------------------------------------

MAX_LINES = 600


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth: a lazy import inside a function, or one under
    ``if TYPE_CHECKING:``, still ties the two modules together (and hides a cycle)."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _internal_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The rv_tui modules ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t:
                    out.add(t)
            continue
        if node.level:
            base = name.split(".") if is_pkg else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        for alias in node.names:
            sub = f"{mod}.{alias.name}"
            if sub in modules:
                out.add(sub)
            elif mod in modules:
                out.add(mod)
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _all_modules()
    return {n: _internal_imports(n, p, modules) for n, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sorted(out)


def test_the_graph_sees_relative_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "rv_tui" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "if TYPE_CHECKING:\n    from rv_tui.sub.c import X\n"
        "def f():\n    import rv_tui.sub.d.inner\n    from ..sub.e import Y\n")
    for m in "bcde":
        (pkg / f"{m}.py").write_text("")
    modules = {f"rv_tui.sub.{m}": pkg / f"{m}.py" for m in "abcde"} | {"rv_tui.sub": pkg / "__init__.py"}
    got = _internal_imports("rv_tui.sub.a", pkg / "a.py", modules)
    assert got == {"rv_tui.sub.b", "rv_tui.sub.c", "rv_tui.sub.d", "rv_tui.sub.e"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_no_module_over_600_lines(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PKG)} is {n} lines (max {MAX_LINES}): split it"


@pytest.mark.parametrize("lower, upper", [
    ("rv_tui.allocator.race", "rv_tui.jobs"),
    ("rv_tui.logs", "rv_tui.jobs.store"),
    ("rv_tui.slurm", "rv_tui.cluster"),
])
def test_no_upward_imports(lower: str, upper: str) -> None:
    """A lower floor never imports an upper one: the shared type lives down, or is passed in."""
    bad = {f"{m} -> {t}" for m, targets in _graph().items()
           if m == lower or m.startswith(lower + ".")
           for t in targets if t == upper or t.startswith(upper + ".")}
    assert not bad, sorted(bad)
