"""gitignore-style patterns for ``.rvignore`` (both modes) and ``.gitignore`` (without git).

Git itself cannot apply ``.rvignore`` to tracked files, so rv matches patterns itself.  The
semantics follow gitignore: ``#`` comments, ``!`` negation (last match wins), a trailing ``/``
matches directories only, a ``/`` elsewhere anchors the pattern to the ignore file's directory,
``*``/``?``/``[...]`` do not cross ``/`` and ``**`` does.  A file under an ignored directory is
ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: Never synced, whatever the ignore files say (large weights, caches, VCS data).
DEFAULT_EXCLUDES = ("*.bin", "*.safetensors", "*.gguf", "*.pt", "*.pth", "__pycache__/",
                    "node_modules/", ".git/", ".venv/", ".rv-staging*/")


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    base: str  # directory of the ignore file, relative to the root ("" for the root)


def _translate(pat: str) -> str:
    out = []
    i = 0
    while i < len(pat):
        c = pat[i]
        if c == "*":
            if pat[i:i + 2] == "**":
                if pat[i:i + 3] == "**/":
                    out.append("(?:.*/)?")
                    i += 3
                    continue
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pat.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pat[i + 1:j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        elif c == "\\" and i + 1 < len(pat):
            i += 1
            out.append(re.escape(pat[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def parse_rules(text: str, base: str = "") -> list[Rule]:
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:]
        if line.startswith("\\"):
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        line = line.lstrip("/")
        body = _translate(line)
        regex = ("^" if anchored else "^(?:.*/)?") + body + "$"
        rules.append(Rule(re.compile(regex, re.DOTALL), negate, dir_only, base))
    return rules


class IgnoreMatcher:
    """Answers "is this relative path ignored?" for a set of ignore files plus defaults."""

    def __init__(self, rules: list[Rule] | None = None) -> None:
        self.rules = list(rules or [])

    @classmethod
    def with_defaults(cls) -> IgnoreMatcher:
        return cls(parse_rules("\n".join(DEFAULT_EXCLUDES)))

    def add_file(self, root: Path, ignore_file: Path) -> None:
        """Add the rules of one ignore file (its directory is the rules' base)."""
        try:
            text = ignore_file.read_text(errors="replace")
        except OSError:
            return
        rel_dir = ignore_file.parent.relative_to(root).as_posix()
        self.rules.extend(parse_rules(text, "" if rel_dir == "." else rel_dir))

    def _match(self, rel: str, is_dir: bool) -> bool | None:
        verdict: bool | None = None
        for r in self.rules:
            if r.dir_only and not is_dir:
                continue
            path = rel
            if r.base:
                if not rel.startswith(r.base + "/"):
                    continue
                path = rel[len(r.base) + 1:]
            if r.regex.match(path):
                verdict = not r.negate
        return verdict

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        """True if ``rel`` (posix, relative to the root) or any parent directory is ignored."""
        parts = rel.split("/")
        for i in range(1, len(parts)):
            if self._match("/".join(parts[:i]), True):
                return True
        return bool(self._match(rel, is_dir))
