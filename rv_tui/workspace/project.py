"""Which project and branch a local directory is, and the names they get on the cluster.

Remote workspaces and venvs are keyed by ``{project}/{branch}``.  Two things the original got
wrong are fixed here: two projects whose folders share a name (``~/a/ml`` and ``~/b/ml``) no
longer share a workspace and venv (the name carries a short hash of the git remote URL, or of the
absolute path when there is none), and ``feature/foo`` really becomes ``feature--foo`` (the
original collapsed it to ``feature-foo``).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

#: Files that mark a project root when walking up from an entry file (original-rv 6.5).
PROJECT_MARKERS = ("pyproject.toml", "requirements.txt", "setup.py", "setup.cfg", ".git")
NO_GIT_BRANCH = "_default"
MAX_BRANCH_LEN = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def sanitize_branch(branch: str) -> str:
    """A branch name safe as one path component.

    ``/`` becomes ``--``; accents are folded (``ü`` -> ``u``) and any other character outside
    ``[A-Za-z0-9._-]`` is stripped; leading dots/dashes are trimmed (no hidden or ``..`` names).
    Names longer than 80 characters are cut to 80, the last 9 of which are ``-`` plus a hash of
    the full name, so two long branches that share a prefix do not share a workspace.
    """
    folded = unicodedata.normalize("NFKD", branch)
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    parts = [_UNSAFE.sub("", p) for p in folded.split("/")]
    name = "--".join(p for p in parts if p)
    name = name.lstrip(".-").rstrip("-")
    if not name:
        name = "branch-" + hashlib.sha1(branch.encode()).hexdigest()[:8]
    if len(name) > MAX_BRANCH_LEN:
        digest = hashlib.sha1(branch.encode()).hexdigest()[:8]
        name = name[: MAX_BRANCH_LEN - 9].rstrip("-.") + "-" + digest
    return name


def sanitize_name(name: str) -> str:
    """A folder name reduced to safe characters (used for the readable part of project names)."""
    folded = unicodedata.normalize("NFKD", name)
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    out = re.sub(r"-{2,}", "-", _UNSAFE.sub("-", folded)).strip(".-")
    return out[:60] or "project"


def project_name(root: Path, remote_url: str | None = None) -> str:
    """``{folder}-{hash6}``: readable, and distinct for same-named folders.

    The hash is of the ``origin`` remote URL when there is one (so clones of one repository on two
    laptops share a workspace), else of the absolute path.
    """
    key = (remote_url or "").strip() or str(root.resolve())
    return f"{sanitize_name(root.resolve().name)}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"


def _git(root: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


@dataclass(frozen=True)
class Project:
    """A local project: where it is, what it is called remotely, which branch it is on."""

    root: Path
    name: str
    branch: str  # sanitised
    raw_branch: str | None  # as git says it (None outside git)
    is_git: bool
    commit: str | None = None
    dirty: bool = False


def git_root(path: Path) -> Path | None:
    out = _git(path if path.is_dir() else path.parent, "rev-parse", "--show-toplevel")
    return Path(out) if out else None


def find_root(start: Path) -> Path | None:
    """The git root containing ``start``, else the nearest directory with a project marker."""
    start = start.resolve()
    g = git_root(start)
    if g is not None:
        return g
    cur = start if start.is_dir() else start.parent
    for d in (cur, *cur.parents):
        if any((d / m).exists() for m in PROJECT_MARKERS):
            return d
    return None


def current_branch(root: Path) -> tuple[str | None, str]:
    """(raw branch, sanitised branch); detached HEAD gives ``detached-{hash}``."""
    if _git(root, "rev-parse", "--git-dir") is None:
        return None, NO_GIT_BRANCH
    raw = _git(root, "symbolic-ref", "--quiet", "--short", "HEAD")
    if raw:
        return raw, sanitize_branch(raw)
    short = _git(root, "rev-parse", "--short", "HEAD")
    if short:
        return None, f"detached-{short}"
    return None, NO_GIT_BRANCH  # a repository without commits: no branch to speak of yet


def detect_project(path: str | Path, *, root: Path | None = None) -> Project:
    """Describe the project containing ``path`` (a directory or a file in it)."""
    p = Path(path).resolve()
    if root is None:
        root = find_root(p) or (p if p.is_dir() else p.parent)
    is_git = _git(root, "rev-parse", "--git-dir") is not None
    raw, branch = current_branch(root)
    remote = _git(root, "config", "--get", "remote.origin.url") if is_git else None
    commit = _git(root, "rev-parse", "--short", "HEAD") if is_git else None
    dirty = bool(_git(root, "status", "--porcelain")) if is_git else False
    return Project(root=root, name=project_name(root, remote), branch=branch, raw_branch=raw,
                   is_git=is_git, commit=commit, dirty=dirty)
