"""``srun --overlap`` job steps into a running allocation, and the parsers of what they print.

Why a module of its own: ``rv gpu``, ``rv forward --auto`` and ``rv ssh`` all run something *on one
node of a running job*.  The original rv forgot ``--nodelist`` for its shell (``rv ssh --node`` was
ignored) and matched ports with ``grep :<port>`` (8000 matched 18000); building every step here,
through :mod:`rv_tui.quoting`, with exact parsing next to it, fixes both in one place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rv_tui.errors import RvError
from rv_tui.quoting import join

_JOB_ID = re.compile(r"\d+(?:_\d+)?")
# Slurm node names: letters, digits, - _ . (no brackets: one node, already expanded)
_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

#: exit status of a step whose program was not found (``env`` / the shell say 127)
NOT_FOUND_STATUS = 127


def _check(job_id: str, node: str) -> None:
    if not _JOB_ID.fullmatch(job_id):
        raise RvError(f"not a Slurm job id: {job_id!r}")
    if not _NODE.fullmatch(node):
        raise RvError(f"not a node name: {node!r}")


def step_argv(job_id: str, node: str, argv: Sequence[str], *, pty: bool = False) -> list[str]:
    """argv of one task on exactly ``node`` inside job ``job_id`` (shares the job's resources)."""
    _check(job_id, node)
    out = ["srun", f"--jobid={job_id}", "--overlap", f"--nodelist={node}", "-N1", "-n1"]
    if pty:
        out.append("--pty")
    return out + list(argv)


def step_command(job_id: str, node: str, argv: Sequence[str]) -> str:
    """:func:`step_argv` as one quoted shell command (non-interactive)."""
    return join(step_argv(job_id, node, argv))


def gpu_command(job_id: str, node: str, program: str = "nvidia-smi") -> str:
    """``nvidia-smi`` on ``node`` with every GPU of the job visible (CUDA_VISIBLE_DEVICES unset)."""
    return step_command(job_id, node, ["env", "-u", "CUDA_VISIBLE_DEVICES", program])


def listening_command(job_id: str, node: str) -> str:
    """Listening TCP sockets on ``node`` (``ss -Htln``: no header, numeric)."""
    return step_command(job_id, node, ["ss", "-Htln"])


@dataclass(frozen=True)
class ListenSocket:
    address: str  # as ss prints it without brackets: 0.0.0.0, *, ::, 127.0.0.1, ...
    port: int

    @property
    def loopback_only(self) -> bool:
        """Bound to loopback: reachable from the node itself only, not from the login node."""
        return self.address.startswith("127.") or self.address in ("::1", "localhost")


def parse_listening(text: str) -> list[ListenSocket]:
    """Parse ``ss -Htln`` (or ``ss -tln`` with its header): exact ports, never substrings."""
    out: list[ListenSocket] = []
    seen: set[tuple[str, int]] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] in ("State", "Netid"):
            continue
        local = fields[3]  # State Recv-Q Send-Q Local:Port Peer:Port
        addr, sep, port = local.rpartition(":")
        if not sep or not port.isdigit():
            continue
        addr = addr.strip("[]")
        addr = addr.split("%", 1)[0]  # 0.0.0.0%lo -> 0.0.0.0
        key = (addr, int(port))
        if key not in seen:
            seen.add(key)
            out.append(ListenSocket(addr, int(port)))
    return out


def program_missing(exit_status: int, stderr: str, program: str) -> bool:
    """True when a step failed because ``program`` does not exist on the node."""
    if exit_status == 0:
        return False
    if exit_status == NOT_FOUND_STATUS:
        return True
    low = stderr.lower()
    return program.lower() in low and ("no such file" in low or "not found" in low)


__all__ = [
    "ListenSocket", "NOT_FOUND_STATUS", "gpu_command", "listening_command", "parse_listening",
    "program_missing", "step_argv", "step_command",
]
