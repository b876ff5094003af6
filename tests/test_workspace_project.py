"""Project naming, branch sanitising and ignore rules (local git, no cluster)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rv_tui.workspace.ignore import IgnoreMatcher, parse_rules
from rv_tui.workspace.project import (NO_GIT_BRANCH, detect_project, project_name, sanitize_branch)
from rv_tui.workspace.sync import list_local_files


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def init_repo(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")


@pytest.mark.parametrize("raw,want", [
    ("main", "main"),
    ("feature/foo", "feature--foo"),
    ("user/feat/x", "user--feat--x"),
    ("fix--already", "fix--already"),
    ("ünïcödé/brånch", "unicode--branch"),
    ("emoji🚀name", "emojiname"),
    ("a b;c$(id)`x`", "abcidx"),
    ("../../etc", "..--..--etc".lstrip(".-")),
])
def test_sanitize_branch(raw: str, want: str) -> None:
    assert sanitize_branch(raw) == want


def test_sanitize_branch_is_path_safe_for_hostile_names() -> None:
    for raw in ("..", ".", "/", "🚀🚀", "-", "'; rm -rf ~; echo '", "a\nb"):
        out = sanitize_branch(raw)
        assert out and out not in (".", "..") and "/" not in out and "\n" not in out
        assert all(c.isalnum() or c in "._-" for c in out)


def test_long_branch_truncated_to_80_and_distinct() -> None:
    a = "feature/" + "x" * 100
    b = "feature/" + "x" * 99 + "y"
    sa, sb = sanitize_branch(a), sanitize_branch(b)
    assert len(sa) == 80 and len(sb) == 80
    assert sa.startswith("feature--xxxx") and sa != sb


def test_git_branch_detached_and_no_git(tmp_path: Path) -> None:
    repo = tmp_path / "myproj"
    init_repo(repo)
    (repo / "a.py").write_text("print(1)\n")
    git(repo, "add", "a.py")
    git(repo, "commit", "-q", "-m", "one")
    git(repo, "checkout", "-q", "-b", "feature/ünï-" + "z" * 100)
    p = detect_project(repo)
    assert p.is_git and p.branch.startswith("feature--uni-zzz") and len(p.branch) == 80
    sha = git(repo, "rev-parse", "--short", "HEAD")
    git(repo, "checkout", "-q", "--detach")
    assert detect_project(repo).branch == f"detached-{sha}"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "requirements.txt").write_text("")
    p2 = detect_project(plain / "requirements.txt")
    assert p2.branch == NO_GIT_BRANCH and not p2.is_git and p2.root == plain.resolve()


def test_same_folder_name_does_not_collide(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "ml", tmp_path / "b" / "ml"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    na, nb = project_name(a), project_name(b)
    assert na != nb and na.startswith("ml-") and nb.startswith("ml-")
    # clones of one remote share a name wherever they live
    assert project_name(a, "git@github.com:x/ml.git") == project_name(b, "git@github.com:x/ml.git")


def test_ignore_rules() -> None:
    m = IgnoreMatcher(parse_rules("*.log\n!keep.log\n/build/\ndata/**/*.csv\nsecret?.txt\n"))
    assert m.ignored("x.log") and m.ignored("sub/y.log") and not m.ignored("keep.log")
    assert m.ignored("build/out.o") and not m.ignored("src/build")
    assert m.ignored("data/a/b/c.csv") and m.ignored("data/c.csv") and not m.ignored("data/c.txt")
    assert m.ignored("secret1.txt") and not m.ignored("secret12.txt")


def test_git_listing_honours_rvignore_and_gitignore(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    init_repo(repo)
    (repo / ".gitignore").write_text("*.tmp\n")
    (repo / ".rvignore").write_text("data/\n*.ckpt\n")
    (repo / "data").mkdir()
    (repo / "data" / "big.csv").write_text("1")
    (repo / "train.py").write_text("x")
    (repo / "model.ckpt").write_text("x")
    (repo / "scratch.tmp").write_text("x")
    (repo / "weights.safetensors").write_text("x")
    (repo / "untracked.py").write_text("x")
    git(repo, "add", "train.py", "model.ckpt", "data/big.csv", ".gitignore", ".rvignore")
    git(repo, "commit", "-q", "-m", "c")
    (repo / "deleted.py").write_text("x")
    git(repo, "add", "deleted.py")
    (repo / "deleted.py").unlink()
    files = set(list_local_files(repo))
    # tracked files matching .rvignore are NOT synced (the original synced them)
    assert files == {".gitignore", ".rvignore", "train.py", "untracked.py"}


def test_non_git_listing_uses_ignore_files(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "sub" / "cache").mkdir(parents=True)
    (root / ".gitignore").write_text("cache/\n")
    (root / "sub" / ".rvignore").write_text("*.out\n")
    (root / "a.py").write_text("x")
    (root / "sub" / "b.py").write_text("x")
    (root / "sub" / "c.out").write_text("x")
    (root / "sub" / "cache" / "d.py").write_text("x")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "a.pyc").write_text("x")
    assert set(list_local_files(root)) == {".gitignore", "a.py", "sub/.rvignore", "sub/b.py"}
