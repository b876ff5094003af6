"""The ``rv env`` store: variables injected into every job.

The store lives on the cluster (``RemotePaths.env_file``, mode 0600) rather than on the laptop so
that any machine sees the same variables and a job can source them before it starts its command,
even when it starts the instant it is submitted.  Jobs simply ``source`` the file.

It is treated as a small database, not a guess:

* **Reads tell missing from broken.**  No file is an empty store; any other failure (permission,
  I/O, a directory in its place) is an :class:`EnvError` and nothing is written.
* **Updates never lose a concurrent change.**  Every change is read -> edit -> compare-and-swap
  (:meth:`Cluster.replace_file`: under ``flock`` on the login node, the file is replaced only if
  it still has the bytes the edit was based on); on a conflict the edit is redone on the fresh
  content.  Two TUI workers or two laptops setting keys at once keep every key.
* **Lines rv did not write are kept byte for byte.**  rv owns only the lines it writes
  (``export KEY=<shell-quoted value>``, exactly as :func:`rv_tui.quoting.env_assignment` renders
  them).  A hand-written ``export PATH="$HOME/.local/bin:$PATH"`` stays as written and keeps
  expanding in the job; ``rv env set`` of such a key adds rv's line after it (the later one wins
  when the job sources the file) and ``rv env rm`` leaves it in place and says so.
"""

from __future__ import annotations

import asyncio
import random
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from rv_tui.cluster.base import Cluster
from rv_tui.errors import RvError
from rv_tui.paths import RemotePaths
from rv_tui.quoting import env_assignment
from rv_tui.remote.errors import RemoteFileNotFound

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
    """A fresh store file's text: a header and one rv line per variable (sorted)."""
    return _HEADER + "".join(env_assignment(k, v) + "\n" for k, v in sorted(variables.items()))


# ----------------------------------------------------------------------------- the file format

_ASSIGN_RE = re.compile(r"\A[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)=")
_RV_LINE_RE = re.compile(r"\Aexport ([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z", re.DOTALL)


@dataclass(frozen=True)
class Entry:
    """One logical line of the store file (physical lines joined while a quote is open).

    ``text`` is the exact source, newline included.  ``key`` is set for an assignment;
    ``managed`` when rv wrote it (exactly :func:`env_assignment`'s form), so rv may replace it.
    ``value`` is the literal value, or None when the right-hand side expands something
    (``$HOME``, ``$(...)``), in which case ``expr`` is the right-hand side as written.
    """

    text: str
    line: int
    key: str | None = None
    value: str | None = None
    expr: str = ""
    managed: bool = False

    @property
    def shown(self) -> str:
        """What ``rv env list`` shows: the value, or the expression as written."""
        return self.value if self.value is not None else self.expr


def _scan_word(s: str, i: int) -> tuple[int, str | None]:
    """Scan one shell word of ``s`` from ``i``: (end index, its literal value or None when it
    expands something).  Raises ValueError when the word (a quote) does not end in ``s``."""
    out: list[str] = []
    literal = True
    n = len(s)
    while i < n and s[i] not in " \t\n;&|<>()":
        c = s[i]
        if c == "'":
            j = s.find("'", i + 1)
            if j < 0:
                raise ValueError("open single quote")
            out.append(s[i + 1:j])
            i = j + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise ValueError("open double quote")
                c = s[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n:
                    nxt = s[i + 1]
                    if nxt == "\n":
                        i += 2
                        continue
                    out.append(nxt if nxt in '$`"\\' else c + nxt)
                    i += 2
                    continue
                if c == "\\":
                    raise ValueError("open double quote")
                if c == "`" or (c == "$" and i + 1 < n and (s[i + 1] in "({_?#@*!$-" or s[i + 1].isalnum())):
                    literal = False
                    if c == "`" or s[i + 1] == "(":
                        raise ValueError("command substitution")  # too rich to scan here: not ours
                out.append(c)
                i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise ValueError("trailing backslash")
            if s[i + 1] != "\n":
                out.append(s[i + 1])
            i += 2
        elif c == "`" or c == "$" and i + 1 < n and s[i + 1] == "(":
            raise ValueError("command substitution")
        else:
            if c == "$" and i + 1 < n and (s[i + 1] in "{_?#@*!$-" or s[i + 1].isalnum()):
                literal = False
            if c == "~" and not out:
                literal = False
            out.append(c)
            i += 1
    return i, ("".join(out) if literal else None)


def _complete(chunk: str) -> bool:
    """True when ``chunk`` leaves no quote, ``$(``, backquote or backslash-newline open: the
    end of one logical line (heredocs are not followed: their lines are kept verbatim anyway)."""
    stack: list[str] = []
    i, n = 0, len(chunk)
    while i < n:
        c = chunk[i]
        top = stack[-1] if stack else ""
        if top == "'":
            if c == "'":
                stack.pop()
        elif c == "\\":
            if i + 1 >= n or (chunk[i + 1] == "\n" and i + 2 >= n):
                return False  # a trailing backslash(-newline) continues the line
            i += 1
        elif top == '"':
            if c == '"':
                stack.pop()
            elif c == "`":
                stack.append("`")
            elif c == "$" and chunk[i + 1:i + 2] == "(":
                stack.append("$(")
                i += 1
        elif top == "`":
            if c == "`":
                stack.pop()
        else:  # top level or inside $( ... )
            if c in "'\"`":
                stack.append(c)
            elif c == "$" and chunk[i + 1:i + 2] == "(":
                stack.append("$(")
                i += 1
            elif c == ")" and top == "$(":
                stack.pop()
            elif c == "#" and (i == 0 or chunk[i - 1] in " \t\n;&|()"):
                nl = chunk.find("\n", i)
                if nl < 0:
                    break
                i = nl
                continue
        i += 1
    return not stack


def _classify(text: str, line: int) -> Entry:
    if text == _HEADER:
        return Entry(text, line, managed=True)  # rv's own header line
    body = text[:-1] if text.endswith("\n") else text
    m = _RV_LINE_RE.match(body)
    if m:
        rhs = m.group(2)
        try:
            words = shlex.split(rhs, comments=False, posix=True)
        except ValueError:
            words = []
        if len(words) == 1 and env_assignment(m.group(1), words[0]) == body:
            return Entry(text, line, m.group(1), words[0], rhs, managed=True)
    m = _ASSIGN_RE.match(body)
    if m:
        start = m.end()
        try:
            end, value = _scan_word(body, start)
        except ValueError:
            return Entry(text, line)
        rest = body[end:].strip(" \t")
        if rest and not rest.startswith("#"):
            return Entry(text, line)  # `A=1 cmd`, `A=1; B=2`: a command, not one assignment
        return Entry(text, line, m.group(1), value, body[start:end])
    return Entry(text, line)


def parse_entries(text: str) -> list[Entry]:
    """Split the store into logical lines; joining every ``text`` gives back ``text`` exactly."""
    out: list[Entry] = []
    pending = ""
    first = 1
    lineno = 0
    for phys in text.splitlines(keepends=True) if "\r" not in text else _split_nl(text):
        lineno += 1
        if not pending:
            first = lineno
        pending += phys
        if _complete(pending):
            out.append(_classify(pending, first))
            pending = ""
    if pending:
        out.append(Entry(pending, first))  # an unterminated quote at the end: not ours, keep it
    return out


def _split_nl(text: str) -> list[str]:
    """Lines ending in ``\\n`` only (the shell does not end lines at ``\\r``, ``\\x0b``, ...)."""
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def effective(entries: Iterable[Entry]) -> dict[str, Entry]:
    """Key -> the entry that decides its value when the file is sourced (the last one)."""
    out: dict[str, Entry] = {}
    for e in entries:
        if e.key is not None:
            out[e.key] = e
    return out


def parse_store(text: str) -> dict[str, str]:
    """Key -> value as ``rv env list`` shows it (an expanding hand-written value as written)."""
    return {k: e.shown for k, e in effective(parse_entries(text)).items()}


def apply_changes(text: str, sets: Mapping[str, str] | Iterable[tuple[str, str]] = (),
                  removes: Iterable[str] = ()) -> str:
    """The store text after setting and removing keys; every line rv did not write is kept
    byte for byte, in place.

    A set key's rv line is replaced where it is when nothing after it assigns the key again;
    otherwise (or when it had none) rv's line is added at the end, so it wins when sourced.
    A removed key loses its rv lines only.
    """
    items = list(sets.items()) if isinstance(sets, Mapping) else list(sets)
    new = {validate_key(k): v for k, v in items}
    gone = {validate_key(k) for k in removes} - set(new)
    entries = parse_entries(text) if text else []
    last_any = {e.key: i for i, e in enumerate(entries) if e.key is not None}
    out: list[str] = []
    placed: set[str] = set()
    for i, e in enumerate(entries):
        if e.managed and e.key in gone:
            continue
        if e.managed and e.key in new:
            if last_any[e.key] == i and e.key not in placed:
                out.append(env_assignment(e.key, new[e.key]) + "\n")
                placed.add(e.key)
            continue
        out.append(e.text)
    if not text:
        out.insert(0, _HEADER)
    if out and not out[-1].endswith("\n") and any(k not in placed for k in new):
        out[-1] += "\n"
    for k, v in new.items():
        if k not in placed:
            out.append(env_assignment(k, v) + "\n")
    return "".join(out)


# ----------------------------------------------------------------------------- the store

T = TypeVar("T")
#: Compare-and-swap attempts before giving up (each conflict means someone else's write landed).
MAX_ATTEMPTS = 40


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")  # any bytes round-trip unchanged


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class EnvStore:
    """Read and update the remote store through any :class:`Cluster` (see the module doc)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.path = RemotePaths(cluster.scratch).env_file
        #: compare-and-swap conflicts seen by this store (each was retried on fresh content)
        self.conflicts = 0

    async def read(self) -> bytes | None:
        """The store's bytes, None when it does not exist; any other failure raises EnvError."""
        try:
            return await self.cluster.read_file(self.path)
        except RemoteFileNotFound:
            return None
        except RvError as exc:
            raise EnvError(f"cannot read the env store {self.path}: {exc.message}",
                           hint="nothing was changed; fix its permissions (chmod 600) or move it away"
                           ) from exc
        except OSError as exc:
            raise EnvError(f"cannot read the env store {self.path}: {exc}",
                           hint="nothing was changed") from exc

    async def entries(self) -> list[Entry]:
        data = await self.read()
        return parse_entries(_decode(data)) if data else []

    async def load(self) -> dict[str, str]:
        return {k: e.shown for k, e in effective(await self.entries()).items()}

    async def list(self) -> dict[str, str]:
        return await self.load()

    async def update(self, edit: Callable[[str], tuple[str, T]]) -> T:
        """Read, ``edit(text) -> (new text, result)``, compare-and-swap; redo on conflict."""
        for attempt in range(MAX_ATTEMPTS):
            current = await self.read()
            new_text, result = edit(_decode(current) if current is not None else "")
            new = _encode(new_text)
            if new == current:
                return result  # nothing to change (or our earlier try already landed)
            try:
                swapped = await self.cluster.replace_file(self.path, new, expect=current, mode=0o600)
            except RvError as exc:
                raise EnvError(f"cannot update the env store {self.path}: {exc.message}",
                               hint=exc.hint or "nothing was changed") from exc
            if swapped:
                return result
            self.conflicts += 1
            await asyncio.sleep(random.uniform(0, 0.02 * min(attempt + 1, 10)))
        raise EnvError(f"the env store {self.path} kept changing while rv updated it",
                       hint="another rv is writing it in a loop; try again")

    async def save(self, variables: Mapping[str, str]) -> None:
        """Make rv's variables exactly ``variables`` (hand-written lines are kept)."""
        for key in variables:
            validate_key(key)

        def edit(text: str) -> tuple[str, None]:
            stale = [e.key for e in parse_entries(text) if e.managed and e.key not in variables]
            return apply_changes(text, variables, [k for k in stale if k]), None

        await self.update(edit)

    async def set(self, key: str, value: str) -> None:
        validate_key(key)
        await self.set_many([(key, value)])

    async def set_many(self, items: Iterable[tuple[str, str]]) -> None:
        pairs = [(validate_key(k), v) for k, v in items]
        await self.update(lambda text: (apply_changes(text, pairs), None))

    async def remove(self, key: str) -> bool:
        """Remove rv's line(s) for ``key``; True if one existed.  A hand-written assignment of the
        key stays (see :meth:`hand_written`)."""
        validate_key(key)

        def edit(text: str) -> tuple[str, bool]:
            had = any(e.managed and e.key == key for e in parse_entries(text))
            return (apply_changes(text, removes=[key]) if had else text), had

        return await self.update(edit)

    async def hand_written(self, key: str) -> list[Entry]:
        """Assignments of ``key`` that rv did not write (kept by set/rm; shown to the user)."""
        return [e for e in await self.entries() if e.key == key and not e.managed]

    async def import_dotenv(self, text: str, *, source: str = ".env") -> list[str]:
        """Import every line of a .env file, or nothing at all if any line is bad."""
        lines = parse_dotenv(text, source=source)
        await self.set_many((ln.key, ln.value) for ln in lines)
        return [ln.key for ln in lines]
