"""The ``ssh -t`` argv that hands a local terminal to a shell inside a job.

Why it lives in the core: ``rv up``, ``rv ssh`` and the dashboard's attach key all open the same
interactive shell (an ``srun --overlap --pty`` step built by :mod:`rv_tui.jobs.access` /
:mod:`rv_tui.jobs.templates`) through the system OpenSSH client with exactly the connection
settings of rv's own asyncssh pool.  Building that argv is pure; spawning it is each face's job
(the CLI waits on a subprocess, the TUI suspends its screen first).
"""

from __future__ import annotations

from rv_tui.config import Config
from rv_tui.errors import RvError


def ssh_argv(config: Config | None, remote_command: str) -> list[str]:
    """``ssh -t`` to the login node with exactly the pool's connection settings."""
    if config is None or config.connection is None:
        raise RvError("no cluster configured to attach to", hint="run `rv init`")
    from rv_tui.remote.target import SshTarget

    t = SshTarget.from_config(config.connection)
    argv = ["ssh", "-t", "-p", str(t.port), "-o", f"UserKnownHostsFile={t.known_hosts_path}",
            "-o", "StrictHostKeyChecking=yes"]
    for ident in t.identity_files:
        argv += ["-i", ident, "-o", "IdentitiesOnly=yes"]
    if t.proxy_jump:
        argv += ["-J", t.proxy_jump]
    argv += [f"{t.user}@{t.host}" if t.user else t.host, remote_command]
    return argv


__all__ = ["ssh_argv"]
