"""The ``rv env`` store: variables injected into every job.

The store lives on the cluster (``RemotePaths.env_file``, mode 0600) rather than on the laptop so
that any machine sees the same variables and a job can source them before it starts its command,
even when it starts the instant it is submitted.  The file is a sequence of
``export KEY='value'`` lines: jobs simply ``source`` it, and :func:`parse_store` reads it back
with :mod:`shlex`, so values with quotes, ``$``, backticks and newlines survive both ways.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rv_tui.cluster.base import Cluster
from rv_tui.errors import RvError
from rv_tui.paths import RemotePaths
from rv_tui.quoting import env_assignment, q

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_HINTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "PRIVATE")
_HEADER = "# rv env store: sourced by every rv job. Managed by `rv env`; edits by hand are kept.\n"


class EnvError(RvError):
    """A bad variable name, a malformed .env line, or an unreadable store."""


@dataclass(frozen=True)
class DotenvLine:
    key: str
    value: str
    line: int


def is_secret(key: str) -> bool:
    """Keys that look like credentials are masked everywhere rv shows them."""
    upper = key.upper()
    return any(h in upper for h in _SECRET_HINTS)


def mask(value: str, *, key: str | None = None) -> str:
    """Mask a value for display: the first 4 characters of long secrets, stars for the rest."""
    if key is not None and not is_secret(key):
        return value
    if len(value) <= 4:
        return "*" * len(value)
    return value[:4] + "*" * min(len(value) - 4, 12)


def validate_key(key: str) -> str:
    if not KEY_RE.match(key):
        raise EnvError(f"{key!r} is not a valid variable name",
                       hint="use letters, digits and underscores, not starting with a digit")
    return key


def parse_dotenv(text: str, *, source: str = ".env") -> list[DotenvLine]:
    """Parse a ``.env`` file; any malformed line raises naming the line and nothing is returned.

    Accepts ``KEY=value``, ``export KEY=value``, single- or double-quoted values (double quotes
    understand ``\\n``, ``\\"`` and ``\\\\``), inline `` # comments`` after unquoted values,
    and blank/comment lines.
    """
    out: list[DotenvLine] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        if "=" not in line:
            # the line may be a secret with a typo (``HF_TOKEN: hf_...``): show it masked
            raise EnvError(f"{source} line {lineno}: expected KEY=value, got {mask(raw.strip())!r}",
                           hint="fix that line (nothing was imported)")
        key, value = line.split("=", 1)
        key = key.strip()
        if not KEY_RE.match(key):
            raise EnvError(f"{source} line {lineno}: {key!r} is not a valid variable name",
                           hint="use letters, digits and underscores, not starting with a digit")
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = _closing_quote(value, quote)
            if end < 0:
                raise EnvError(f"{source} line {lineno}: unterminated {quote} quote in {key}")
            rest = value[end + 1:].strip()
            if rest and not rest.startswith("#"):
                raise EnvError(f"{source} line {lineno}: unexpected text after the quoted value of {key}")
            inner = value[1:end]
            if quote == '"':
                inner = (inner.replace("\\\\", "\x00").replace("\\n", "\n")
                         .replace('\\"', '"').replace("\x00", "\\"))
            value = inner
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
        out.append(DotenvLine(key, value, lineno))
    return out


def _closing_quote(value: str, quote: str) -> int:
    i = 1
    while i < len(value):
        if value[i] == "\\" and quote == '"':
            i += 2
            continue
        if value[i] == quote:
            return i
        i += 1
    return -1


def render_store(variables: Mapping[str, str]) -> str:
    """The store file's text: a header and one ``export KEY='value'`` line per variable."""
    return _HEADER + "".join(env_assignment(k, v) + "\n" for k, v in sorted(variables.items()))


def parse_store(text: str) -> dict[str, str]:
    """Read a store file back (the inverse of :func:`render_store`)."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    out: dict[str, str] = {}
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise EnvError(f"the env store is malformed: {exc}",
                       hint="fix or remove it with `rv exec`; nothing was changed") from exc
    for tok in tokens:
        if tok == "export":
            continue
        if "=" not in tok:
            raise EnvError(f"the env store has an unexpected entry {tok[:30]!r}")
        k, v = tok.split("=", 1)
        if KEY_RE.match(k):
            out[k] = v
    return out


class EnvStore:
    """Read and update the remote store through any :class:`Cluster` (atomic, 0600 writes)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.path = RemotePaths(cluster.scratch).env_file

    async def load(self) -> dict[str, str]:
        result = await self.cluster.exec(f"cat {q(self.path)} 2>/dev/null || true")
        return parse_store(result.stdout)

    async def save(self, variables: Mapping[str, str]) -> None:
        for key in variables:
            validate_key(key)
        await self.cluster.exec(f"mkdir -p {q(RemotePaths(self.cluster.scratch).env_dir)} && "
                                f"chmod 700 {q(RemotePaths(self.cluster.scratch).env_dir)}")
        await self.cluster.write_file(self.path, render_store(variables), mode=0o600)

    async def list(self) -> dict[str, str]:
        return await self.load()

    async def set(self, key: str, value: str) -> None:
        validate_key(key)
        current = await self.load()
        current[key] = value
        await self.save(current)

    async def set_many(self, items: Iterable[tuple[str, str]]) -> None:
        current = await self.load()
        for key, value in items:
            current[validate_key(key)] = value
        await self.save(current)

    async def remove(self, key: str) -> bool:
        current = await self.load()
        if key not in current:
            return False
        del current[key]
        await self.save(current)
        return True

    async def import_dotenv(self, text: str, *, source: str = ".env") -> list[str]:
        """Import every line of a .env file, or nothing at all if any line is bad."""
        lines = parse_dotenv(text, source=source)
        await self.set_many((ln.key, ln.value) for ln in lines)
        return [ln.key for ln in lines]
