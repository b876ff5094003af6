"""The demo cluster's remote filesystem and its (deliberately tiny) login shell.

Files live in memory.  Each file keeps its bytes (for :meth:`read_file`) and its complete lines
tagged with a global write sequence number, so a follower of several files can replay lines of
different nodes in the order they were written.  The "shell" understands only what rv's core
sends for bookkeeping (``mkdir -p``, ``chmod``, ``cat``, ``rm -f``, ``touch``, ``echo``, ``date``,
``hostname``, ``whoami``, joined by ``;``, ``&&``, ``||``); anything else answers with a friendly
"not available" and status 127 rather than pretending to be a real shell.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime

from rv_tui.remote.errors import RemoteFileNotFound

LOGIN_HOST = "udc-ba35-37"
NOT_AVAILABLE = "demo cluster: command not available"


class DemoFileNotFound(RemoteFileNotFound, FileNotFoundError):
    """A missing demo file: catchable as rv's RemoteFileNotFound or Python's FileNotFoundError."""

    def __init__(self, path: str) -> None:
        RemoteFileNotFound.__init__(self, f"no such file on the demo cluster: {path}", path=path)


@dataclass
class MemFile:
    data: bytearray = field(default_factory=bytearray)
    mode: int = 0o644
    lines: list[tuple[int, str]] = field(default_factory=list)  # (write seq, line without \n)
    generation: int = 0  # bumped when the file is replaced (followers start over)


class MemFS:
    """Path -> file, plus the directories that exist."""

    def __init__(self) -> None:
        self.files: dict[str, MemFile] = {}
        self.dirs: set[str] = {"/"}
        self.seq = 0

    def _mkdirs(self, path: str) -> None:
        while path and path not in self.dirs:
            self.dirs.add(path)
            path = posixpath.dirname(path)

    def append_line(self, path: str, text: str) -> None:
        """Append one complete line (the simulated jobs write whole lines)."""
        f = self.files.get(path)
        if f is None:
            self._mkdirs(posixpath.dirname(path))
            f = self.files[path] = MemFile()
        self.seq += 1
        f.data += text.encode() + b"\n"
        f.lines.append((self.seq, text))

    def write(self, path: str, data: bytes | str, mode: int = 0o600) -> None:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self._mkdirs(posixpath.dirname(path))
        old = self.files.get(path)
        f = MemFile(bytearray(raw), mode, generation=(old.generation + 1) if old else 0)
        for text in raw.decode(errors="replace").split("\n")[:-1]:
            self.seq += 1
            f.lines.append((self.seq, text))
        self.files[path] = f

    def read(self, path: str) -> bytes:
        f = self.files.get(path)
        if f is None:
            raise DemoFileNotFound(path)
        return bytes(f.data)


_REDIR_SPACE = re.compile(r"([12]?>{1,2})\s+(?=/dev/null)")
_REDIRS = {">/dev/null": "out", "1>/dev/null": "out", ">>/dev/null": "out", "2>/dev/null": "err",
           "2>>/dev/null": "err"}
_OPS = {";", "&&", "||"}


class MiniShell:
    """Runs the handful of commands rv's core sends; see the module docstring."""

    def __init__(self, fs: MemFS, user: str, home: str) -> None:
        self.fs = fs
        self.user = user
        self.home = home

    def run(self, command: str, now: datetime) -> tuple[int, str, str]:
        try:
            lexer = shlex.shlex(_REDIR_SPACE.sub(r"\1", command), posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError:
            return 127, "", f"{NOT_AVAILABLE} (cannot parse the command)\n"
        out: list[str] = []
        err: list[str] = []
        status = 0
        op = ";"
        argv: list[str] = []
        for tok in tokens + [";"]:
            if tok in _OPS or (set(tok) <= set(";&|") and tok):
                if tok not in _OPS:
                    return 127, "", f"{NOT_AVAILABLE}: pipes and background jobs (try a real cluster)\n"
                if argv and (op == ";" or (op == "&&" and status == 0) or (op == "||" and status != 0)):
                    status = self._one(argv, now, out, err)
                argv, op = [], tok
            else:
                argv.append(tok.replace("${HOME}", self.home).replace("$HOME", self.home)
                            .replace("${USER}", self.user).replace("$USER", self.user))
        return status, "".join(out), "".join(err)

    def _one(self, argv: list[str], now: datetime, out: list[str], err: list[str]) -> int:
        quiet = {_REDIRS[a] for a in argv if a in _REDIRS}
        argv = [a for a in argv if a not in _REDIRS and a != "2>&1"]
        if not argv:
            return 0
        sink_out: list[str] = []
        sink_err: list[str] = []
        status = self._builtin(argv, now, sink_out, sink_err)
        if "out" not in quiet:
            out.extend(sink_out)
        if "err" not in quiet:
            err.extend(sink_err)
        return status

    def _builtin(self, argv: list[str], now: datetime, out: list[str], err: list[str]) -> int:
        name, args = argv[0], argv[1:]
        if name == "true":
            return 0
        if name == "false":
            return 1
        if name == "echo":
            newline = True
            if args[:1] == ["-n"]:
                newline, args = False, args[1:]
            out.append(" ".join(args) + ("\n" if newline else ""))
            return 0
        if name == "date":
            fmt = next((a[1:] for a in args if a.startswith("+")), "%a %b %d %H:%M:%S %Z %Y")
            out.append(now.strftime(fmt.replace("%s", str(int(now.timestamp())))) + "\n")
            return 0
        if name == "hostname":
            out.append(LOGIN_HOST + "\n")
            return 0
        if name == "whoami":
            out.append(self.user + "\n")
            return 0
        paths = [a for a in args if not a.startswith("-")]
        if name == "mkdir":
            skip_next = False
            for a in args:
                if skip_next:
                    skip_next = False
                    continue
                if a == "-m":
                    skip_next = True
                    continue
                if not a.startswith("-"):
                    self.fs._mkdirs(posixpath.normpath(a))
            return 0
        if name == "chmod":
            for p in paths[1:]:
                if p in self.fs.files:
                    try:
                        self.fs.files[p].mode = int(paths[0], 8)
                    except ValueError:
                        pass
            return 0
        if name == "touch":
            for p in paths:
                if p not in self.fs.files:
                    self.fs.write(p, b"", 0o644)
            return 0
        if name == "rm":
            for p in paths:
                self.fs.files.pop(p, None)
            return 0
        if name == "cat":
            status = 0
            for p in paths:
                f = self.fs.files.get(p)
                if f is None:
                    err.append(f"cat: {p}: No such file or directory\n")
                    status = 1
                else:
                    out.append(f.data.decode(errors="replace"))
            return status
        err.append(f"{NOT_AVAILABLE}: {name}\n")
        return 127
