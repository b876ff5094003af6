"""The job context: what a race group's siblings share (name, command, paths, notifications).

Why its own module: the script templates, the auto-set environment (:mod:`rv_tui.jobs.autoenv`)
and the claim block all read it; kept apart, none of them has to import another to know its shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from rv_tui.jobs.notify import NotifySettings

__all__ = ["JobContext"]


@dataclass(frozen=True)
class JobContext:
    """Everything about a job that is not the strategy (same for every sibling of a race)."""

    name: str  # already sanitised
    command: str | None  # None -> interactive hold: sleep until cancelled/time limit
    scratch: str
    group_id: str
    account: str | None = None
    env_file: str | None = None  # remote path sourced (after rv's defaults) if it exists
    work_dir: str | None = None  # snapshot dir to cd into
    venv: str | None = None  # venv to activate (if it exists)
    setup_snippet: str | None = None  # extra shell run before the command, already quoted
    notify: NotifySettings | None = None
    mail_user: str | None = None  # Slurm mails this address about the winner (notifications.email)
    hf_cache: str | None = None  # shared HF cache overrides the scratch default
    output_paths: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
