"""Login-node file commands that must not move whole files: a bounded ``tail`` and a locked swap.

Why here: ``Cluster`` implementations over SSH build these strings, and every remote command is
built through :mod:`rv_tui.quoting` in one place that tests can feed hostile paths.

* :func:`tail_command` reads only the end of a log on the login node (``tail -n``), so
  ``rv logs --tail 100`` of a multi-GB file moves a few KB, never the file; the output is capped
  at ``max_bytes`` too, so a file without newlines cannot be sent whole either.
* :func:`replace_command` is a compare-and-swap under ``flock``: the new content and the SHA-256
  of the content the caller based it on arrive on *stdin* (secrets never on a command line); under
  an exclusive lock on ``<path>.lock`` the file is replaced (temp file + rename, mode set first)
  only if it still hashes to that value.  Two clients editing the env store at once therefore
  never lose an update: the loser is told (exit :data:`CONFLICT`) and re-reads.
"""

from __future__ import annotations

import hashlib
import posixpath

from rv_tui.quoting import q

#: Exit status of :func:`replace_command` when the file changed since the caller read it.
CONFLICT = 75
#: Exit status when the lock was not granted within the wait.
LOCK_TIMEOUT = 74
#: Exit status when the current file exists but cannot be read (nothing is written).
UNREADABLE = 73
#: Exit status when the new file cannot be written (nothing is replaced).
UNWRITABLE = 72
#: Exit statuses of :func:`tail_command` for a missing / unreadable file.
TAIL_MISSING = 44
TAIL_UNREADABLE = 45
#: What stands for "the file does not exist" in place of a hash on replace's first stdin line.
ABSENT = "absent"
#: Seconds :func:`replace_command` waits for the lock.
LOCK_WAIT_S = 30


def content_token(data: bytes | None) -> str:
    """The first stdin line of :func:`replace_command`: SHA-256 hex of ``data``, or ``absent``."""
    return ABSENT if data is None else hashlib.sha256(data).hexdigest()


def replace_payload(data: bytes, expect: bytes | None) -> bytes:
    """What :func:`replace_command` reads on stdin: the expected token line, then the new bytes."""
    return content_token(expect).encode() + b"\n" + data


def replace_command(path: str, *, mode: int = 0o600, dir_mode: int = 0o700,
                    lock_wait_s: int = LOCK_WAIT_S) -> str:
    """Atomically replace ``path`` with stdin's content iff it is unchanged (see module doc).

    Exit 0: replaced; :data:`CONFLICT`: it changed (nothing written); :data:`UNREADABLE`: it
    exists but cannot be read; :data:`UNWRITABLE`, :data:`LOCK_TIMEOUT`; 127: no ``flock``.
    The parent directory is created with ``dir_mode`` if missing.
    """
    directory, name = posixpath.split(path)
    directory = directory or "."
    m, dm = f"{mode:o}", f"{dir_mode:o}"
    return (
        f"f={q(path)}; d={q(directory)}; umask 077; "
        f"command -v flock >/dev/null 2>&1 || {{ echo 'rv: flock(1) is not installed on the login node' >&2; exit 127; }}; "
        # a store the user symlinked elsewhere is updated where it points (the link stays)
        f"if [ -L \"$f\" ]; then f=$(readlink -f -- \"$f\") && d=$(dirname -- \"$f\") || exit {UNWRITABLE}; "
        f"name=$(basename -- \"$f\"); else name={q(name)}; fi; "
        f"if [ ! -d \"$d\" ]; then mkdir -p \"$d\" && chmod {dm} \"$d\" || exit {UNWRITABLE}; fi; "
        f"exec 9>>\"$f.lock\" || exit {UNWRITABLE}; "
        f"flock -w {int(lock_wait_s)} 9 || {{ echo 'rv: timed out waiting for the lock on '\"$f\" >&2; exit {LOCK_TIMEOUT}; }}; "
        f"IFS= read -r want || exit {UNWRITABLE}; "
        f"t=$(mktemp \"$d/.$name.rv-XXXXXXXX\") || exit {UNWRITABLE}; "
        f"if ! {{ chmod {m} \"$t\" && cat >\"$t\"; }}; then rm -f \"$t\"; exit {UNWRITABLE}; fi; "
        f"if [ -e \"$f\" ] || [ -L \"$f\" ]; then "
        f"have=$(sha256sum <\"$f\") || {{ rm -f \"$t\"; exit {UNREADABLE}; }}; have=${{have%% *}}; "
        f"else have={ABSENT}; fi; "
        f"if [ \"$have\" != \"$want\" ]; then rm -f \"$t\"; exit {CONFLICT}; fi; "
        f"mv -f \"$t\" \"$f\" || {{ rm -f \"$t\"; exit {UNWRITABLE}; }}"
    )


def tail_command(path: str, lines: int, *, max_bytes: int) -> str:
    """The last ``lines`` lines of ``path`` (at most ``max_bytes`` bytes of them), read on the
    login node.  Exit :data:`TAIL_MISSING` / :data:`TAIL_UNREADABLE` instead of printing nothing."""
    n, cap = max(0, int(lines)), max(1, int(max_bytes))
    return (
        f"f={q(path)}; "
        f"if [ ! -e \"$f\" ]; then echo \"rv: no such file: $f\" >&2; exit {TAIL_MISSING}; fi; "
        f"if [ -d \"$f\" ] || [ ! -r \"$f\" ]; then echo \"rv: cannot read $f\" >&2; exit {TAIL_UNREADABLE}; fi; "
        f"tail -n {n} -- \"$f\" | tail -c {cap}"
    )
