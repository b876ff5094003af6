"""The one command rule, shared by ``rv run``, the TUI and the job templates.

Why a module: "what does the job run?" must have one answer everywhere.  The rule:

* several arguments are an **argv** and run exactly as given: they are quoted word by word into
  the shell string the job hands to ``bash -c`` (the first word is always read as a command
  name, never as a keyword such as ``for``/``time`` or an assignment such as ``FOO=1``);
* a single argument is a **shell string** and runs byte for byte under ``bash -c``.

Nothing here rewrites a command.  :func:`command_words` only *reads* a command (to decide whether
it is a python command or runs a project script); its result is never sent anywhere.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from rv_tui.quoting import q

__all__ = ["RESERVED_WORDS", "argv_command", "command_from_words", "command_words", "first_program",
           "is_python_word"]

#: bash reserved words that :func:`rv_tui.quoting.q` leaves unquoted
RESERVED_WORDS = frozenset({
    "case", "coproc", "do", "done", "elif", "else", "esac", "fi", "for", "function", "if", "in",
    "select", "then", "time", "until", "while",
})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")
_PYTHON = re.compile(r"python(?:3(?:\.\d+)?)?")
#: control operators split off by :func:`command_words` (never file names)
SEPARATORS = frozenset({"&&", "||", ";", ";;", "|", "|&", "&", "(", ")", "<", ">", ">>", "<<", "<<<",
                        ">&", "<&", "&>", ">|", "!", "{", "}"})


def _head(word: str) -> str:
    """``q(word)``, but always quoted when bash would read the bare word as a keyword or assignment."""
    quoted = q(word)
    if quoted == word and (word in RESERVED_WORDS or _ASSIGNMENT.match(word)):
        return "'" + word + "'"
    return quoted


def argv_command(argv: Sequence[str]) -> str:
    """The shell string that makes ``bash -c`` run exactly ``argv`` (first word a command name)."""
    if not argv:
        return ""
    return " ".join([_head(argv[0]), *(q(a) for a in argv[1:])])


def command_from_words(words: Sequence[str]) -> str:
    """The command for ``rv run [--] WORDS...``: one word is a shell string, several an argv."""
    words = list(words)
    if words and words[0] == "--":
        words = words[1:]
    if len(words) == 1:
        return words[0]
    return argv_command(words)


def command_words(command: str) -> list[str]:
    """The words of a command as a shell would roughly read them, control operators split off.

    For *reading* only (is it a python command, which local files does it name).  Unbalanced
    quotes fall back to whitespace splitting; heredoc bodies just become more words.
    """
    lex = shlex.shlex(command, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    try:
        return list(lex)
    except ValueError:
        return command.split()


def first_program(words: Sequence[str]) -> str | None:
    """The first word that is neither a ``VAR=value`` assignment nor an operator."""
    for w in words:
        if w in SEPARATORS or _ASSIGNMENT.match(w):
            continue
        return w
    return None


def is_python_word(word: str | None) -> bool:
    """``python``, ``python3``, ``python3.12`` (any directory prefix)."""
    return bool(word) and bool(_PYTHON.fullmatch(word.rsplit("/", 1)[-1]))  # type: ignore[union-attr]
