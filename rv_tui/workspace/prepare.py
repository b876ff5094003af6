"""Everything ``rv run`` (and the TUI's launch flow) does before submitting: "smart execution".

Given the local directory and the user's command it decides the project, branch and working
directory, pushes the code, installs dependencies (phase 1), snapshots ``code/`` for this job,
and returns the :class:`~rv_tui.jobs.templates.JobContext` fields that make the job ``cd`` into
its snapshot, activate the venv and run phase 2.

The command is never rewritten (:mod:`rv_tui.jobs.command`): one argument is a shell string run
byte for byte under ``bash -c``, several are an argv run exactly as given.  Running from a
sub-directory of the project makes the job start in the same sub-directory of its snapshot, so
relative paths mean what they meant locally.  The project is the one containing the current
directory (the git root, else the nearest directory with a project marker); outside any project
nothing is synced and the job runs in ``$HOME``.

Dependencies and the venv (the seeds' rule, original-rv 6.5): a command starting with
``python``/``python3`` gets both; any other command (argv or shell string) gets them only when the
project has a dependency file and the command names one of the project's scripts (``.py``,
``.sh``, ``.bash``: ``bash job.sh``, ``./job.sh``, ``torchrun ... train.py``), and the plan says
which; everything else (``make train``) is opaque and owns its environment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rv_tui.cluster.base import Cluster
from rv_tui.errors import RvError
from rv_tui.jobs.command import SEPARATORS, command_from_words, command_words, first_program, is_python_word
from rv_tui.masking import mask_secrets
from rv_tui.paths import RemotePaths
from rv_tui.quoting import q
from rv_tui.workspace import snapshots, sync
from rv_tui.workspace.deps import (
    ClusterPython, DepsSpec, VenvResult, cluster_python, detect_deps, ensure_venv, phase2_snippet,
)
from rv_tui.workspace.project import Project, detect_project, find_root

ENTRY_SUFFIXES = (".py", ".sh", ".bash")


@dataclass
class WorkspacePlan:
    """The decisions (and, after :func:`prepare_workspace`, the results) for one launch."""

    command: str  # what the job runs under bash -c: exactly what was typed
    project: Project | None = None  # None: not a project, the job runs in $HOME
    entry: str | None = None  # root-relative project script the command names, if any
    manage_deps: bool = False
    deps: DepsSpec | None = None
    code_dir: str | None = None
    snapshot: str | None = None
    venv: str | None = None
    setup_snippet: str | None = None
    sync_result: sync.SyncResult | None = None
    venv_result: VenvResult | None = None
    notes: list[str] = field(default_factory=list)
    subdir: str = ""  # the local directory relative to the project root ("" = the root)
    deps_reason: str | None = None  # why dependencies/venv are managed (or why not)
    python: ClusterPython | None = None  # the cluster Python the venv uses (or would be created with)

    @property
    def work_dir(self) -> str | None:
        """Where the job starts: the snapshot, or the same sub-directory inside it."""
        if self.snapshot is None:
            return None
        return f"{self.snapshot}/{self.subdir}" if self.subdir else self.snapshot

    def job_context_fields(self) -> dict[str, object]:
        """Keyword arguments for ``JobContext`` (work_dir, venv, setup_snippet, command)."""
        return {"command": self.command, "work_dir": self.work_dir, "venv": self.venv,
                "setup_snippet": self.setup_snippet}


def _as_text(command: str | list[str]) -> str:
    return command if isinstance(command, str) else command_from_words(list(command))


def _named_scripts(words: list[str], cwd: Path) -> list[tuple[str, Path]]:
    """(word, resolved path) for each word naming an existing local script, in order."""
    found = []
    for w in words:
        if not w or w in SEPARATORS or w.startswith("-"):
            continue
        try:
            p = cwd / w
            if p.suffix in ENTRY_SUFFIXES and p.is_file():
                found.append((w, p.resolve()))
        except (OSError, ValueError):  # too long, NUL, unreadable: not a script of ours
            continue
    return found


def plan_command(local_dir: str | Path, command: str | list[str]) -> WorkspacePlan:
    """Decide project, working sub-directory, entry script and dependency handling (local only).

    ``command`` is a shell string, or a list of words (one word: a shell string; several: an argv).
    """
    cwd = Path(local_dir).resolve()
    text = _as_text(command)
    words = command_words(text)
    plan = WorkspacePlan(command=text)
    root = find_root(cwd)
    scripts = _named_scripts(words, cwd)
    if root is None:
        if scripts:
            other = find_root(scripts[0][1])
            if other is not None:
                raise RvError(f"{scripts[0][0]} is in the project {other}, but you are outside it ({cwd})",
                              hint=f"cd {other} and run the command from there: paths in the command "
                                   "are run as typed, from the same directory inside the project's snapshot")
        plan.notes.append("not in a project: no sync, the job runs in your home directory")
        return plan
    plan.project = detect_project(root, root=root)
    rel = cwd.relative_to(root).as_posix()
    plan.subdir = "" if rel == "." else rel
    inside = [(w, p) for w, p in scripts if p.is_relative_to(root)]
    for w, p in scripts:
        if not p.is_relative_to(root):
            plan.notes.append(f"{w} is outside the project {root}: it is not synced")
        elif Path(w).is_absolute():
            plan.notes.append(f"{w} is a local absolute path: it does not exist on the cluster "
                              "(name it relative to the current directory)")
    if inside:
        plan.entry = inside[0][1].relative_to(root).as_posix()
    head = first_program(words)
    if head is not None and "/" not in head and any(w == head for w, _ in inside):
        plan.notes.append(f"`{head}` is looked up on PATH, as in your shell; write ./{head} "
                          f"(or python/bash {head}) to run the local file")
    where = f"{plan.subdir}/ of the snapshot" if plan.subdir else "the snapshot"
    plan.notes.append(f"syncing {root}; the job runs the command as typed in {where}")
    if is_python_word(head):
        why = f"the command starts with {head.rsplit('/', 1)[-1]}"  # type: ignore[union-attr]
    elif plan.entry is not None:
        why = f"the command runs the project script {plan.entry}"
    else:
        plan.deps_reason = "an opaque command: not python and naming no project script, so no dependencies or venv"
        return plan
    try:
        plan.deps = detect_deps(root)
    except RvError:
        raise
    if plan.deps is None:
        plan.deps_reason = f"{why}, but the project has no requirements.txt / pyproject.toml: no venv"
        return plan
    plan.manage_deps = True
    plan.deps_reason = f"{why}: dependencies from {plan.deps.file}, venv activated"
    return plan


async def prepare_workspace(cluster: Cluster, local_dir: str | Path, command: str | list[str], *,
                            job_name: str = "job", dry_run: bool = False,
                            progress: sync.Progress | None = None,
                            say: Callable[[str], None] | None = None) -> WorkspacePlan:
    """Sync, install (phase 1), snapshot; returns the plan with the JobContext fields filled."""
    plan = plan_command(local_dir, command)
    say = say or (lambda _m: None)
    if plan.project is None:
        return plan
    paths = RemotePaths(cluster.scratch)
    pr = plan.project
    plan.code_dir = paths.code_dir(pr.name, pr.branch)
    snaps_dir = paths.snapshots_dir(pr.name, pr.branch)
    if plan.manage_deps and plan.deps is not None:
        plan.venv = paths.venv(pr.name, pr.branch)
    if dry_run or cluster.is_demo:
        plan.sync_result = await sync.push(cluster, pr.root, plan.code_dir, dry_run=True)
        plan.snapshot = f"{snaps_dir}/{snapshots.snapshot_name(job_name)}"
        if plan.venv is not None and not cluster.is_demo:
            plan.python = await cluster_python(cluster, plan.venv)
    else:
        say(f"syncing {pr.root} -> {plan.code_dir}")
        plan.sync_result = await sync.push(cluster, pr.root, plan.code_dir, progress=progress)
        say(f"synced: {plan.sync_result.plan.summary()}")
        if plan.venv is not None and plan.deps is not None:
            say(f"dependencies ({plan.deps.file}) -> {plan.venv}")
            plan.venv_result = await ensure_venv(cluster, plan.deps, plan.venv, plan.code_dir)
            plan.python = plan.venv_result.python
            if plan.python is not None:
                say(f"venv python: {plan.python.describe()}")
            old = plan.venv_result.recreated
            if old:
                say("venv re-created (" + ("its python no longer ran" if old == "broken" else
                    f"it had Python {old}, the cluster's is {plan.python.version if plan.python else '?'}") + ")")
            if plan.venv_result.deferred:
                say("deferred to the compute node: " + mask_secrets(", ".join(plan.venv_result.deferred)))
        await snapshots.prune_snapshots(cluster, snaps_dir)
        plan.snapshot = await snapshots.create_snapshot(cluster, plan.code_dir, snaps_dir, job_name)
        if plan.subdir:  # git does not track empty directories: make sure the job can cd there
            await cluster.exec(f"mkdir -p -- {q(plan.snapshot + '/' + plan.subdir)}")
    parts = [snapshots.job_snippet(plan.snapshot)]
    if plan.venv is not None and plan.deps is not None:
        parts.append(phase2_snippet(plan.venv, cluster.scratch, python_path=bool(plan.deps.local_paths),
                                    root=plan.snapshot))
    plan.setup_snippet = "\n".join(parts)
    return plan


__all__ = ["WorkspacePlan", "plan_command", "prepare_workspace"]
