"""Everything ``rv run`` (and the TUI's launch flow) does before submitting: "smart execution".

Given the local directory and the user's command it decides the project, branch and entry file,
pushes the code, installs dependencies (phase 1), snapshots ``code/`` for this job, and returns
the rewritten command plus the :class:`~rv_tui.jobs.templates.JobContext` fields that make the
job ``cd`` into its snapshot, activate the venv and run phase 2.

Rules (original-rv 6.5, with its bugs fixed): the first argument that is an existing local
``.py``/``.sh``/``.bash`` file is the entry point; the project root is the git root (else the
nearest directory with a project marker); the file is rewritten to its root-relative path (a
leading file becomes ``python rel.py`` / ``bash rel.sh``; a launcher prefix such as
``torchrun --nproc_per_node=4`` is kept).  Without an entry file the current directory is synced
if it is a project, and dependencies are managed only for ``python``/``python3`` commands; a
single shell string (``"make train"``) never gets dependency management.  The venv is activated
whenever dependencies were managed.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rv_tui.cluster.base import Cluster
from rv_tui.paths import RemotePaths
from rv_tui.quoting import join
from rv_tui.workspace import snapshots, sync
from rv_tui.workspace.deps import DepsSpec, VenvResult, detect_deps, ensure_venv, phase2_snippet
from rv_tui.workspace.project import PROJECT_MARKERS, Project, detect_project, find_root

ENTRY_SUFFIXES = (".py", ".sh", ".bash")
PYTHON_WORDS = ("python", "python3")


@dataclass
class WorkspacePlan:
    """The decisions (and, after :func:`prepare_workspace`, the results) for one launch."""

    command: str  # what the job runs (rewritten to root-relative paths)
    project: Project | None = None  # None: not a project, the job runs in $HOME
    entry: str | None = None  # root-relative entry file, if one was found
    manage_deps: bool = False
    deps: DepsSpec | None = None
    code_dir: str | None = None
    snapshot: str | None = None
    venv: str | None = None
    setup_snippet: str | None = None
    sync_result: sync.SyncResult | None = None
    venv_result: VenvResult | None = None
    notes: list[str] = field(default_factory=list)

    def job_context_fields(self) -> dict[str, object]:
        """Keyword arguments for ``JobContext`` (work_dir, venv, setup_snippet, command)."""
        return {"command": self.command, "work_dir": self.snapshot, "venv": self.venv,
                "setup_snippet": self.setup_snippet}


def _split(command: str | list[str]) -> tuple[list[str], bool]:
    """(argv, was_a_single_shell_string)."""
    if isinstance(command, str):
        try:
            return shlex.split(command), True
        except ValueError:
            return [command], True
    if len(command) == 1:
        try:
            return shlex.split(command[0]), True
        except ValueError:
            return list(command), True
    return list(command), False


def plan_command(local_dir: str | Path, command: str | list[str]) -> WorkspacePlan:
    """Decide entry file, project and the rewritten command (local only, no cluster)."""
    cwd = Path(local_dir).resolve()
    argv, single_string = _split(command)
    original = command if isinstance(command, str) else (command[0] if len(command) == 1 else join(command))
    entry_idx = None
    for i, word in enumerate(argv):
        if word.startswith("-"):
            continue
        p = (cwd / word)
        if p.suffix in ENTRY_SUFFIXES and p.is_file():
            entry_idx = i
            break
    if entry_idx is not None:
        entry_path = (cwd / argv[entry_idx]).resolve()
        root = find_root(entry_path) or entry_path.parent
        project = detect_project(root, root=root)
        rel = entry_path.relative_to(root).as_posix()
        rest = argv[entry_idx + 1:]
        if entry_idx == 0:
            launcher = ["python"] if entry_path.suffix == ".py" else ["bash"]
            new = launcher + [rel] + rest
        else:
            new = argv[:entry_idx] + [rel] + rest
        first = argv[0].rsplit("/", 1)[-1]
        manage = entry_path.suffix == ".py" and (entry_idx == 0 or first in PYTHON_WORDS
                                                 or first in ("torchrun", "accelerate", "deepspeed"))
        plan = WorkspacePlan(command=join(new), project=project, entry=rel, manage_deps=manage)
    else:
        root = find_root(cwd)
        is_project = root is not None and (root == cwd or any((cwd / m).exists() for m in PROJECT_MARKERS)
                                           or (root / ".git").exists())
        first = argv[0].rsplit("/", 1)[-1] if argv else ""
        plan = WorkspacePlan(command=original, manage_deps=first in PYTHON_WORDS)
        if is_project and root is not None:
            plan.project = detect_project(root, root=root)
            plan.notes.append(f"no local entry file in the command: syncing {root} and running it as given")
        else:
            plan.manage_deps = False
            plan.notes.append("not in a project: no sync, the job runs in your home directory")
    if single_string and plan.entry is None and (not argv or argv[0].rsplit("/", 1)[-1] not in PYTHON_WORDS):
        plan.manage_deps = False  # opaque shell strings own their environment
    if plan.project is not None and plan.manage_deps:
        plan.deps = detect_deps(plan.project.root)
        if plan.deps is None:
            plan.manage_deps = False
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
    else:
        say(f"syncing {pr.root} -> {plan.code_dir}")
        plan.sync_result = await sync.push(cluster, pr.root, plan.code_dir, progress=progress)
        say(f"synced: {plan.sync_result.plan.summary()}")
        if plan.venv is not None and plan.deps is not None:
            say(f"dependencies ({plan.deps.file}) -> {plan.venv}")
            plan.venv_result = await ensure_venv(cluster, plan.deps, plan.venv, plan.code_dir)
            if plan.venv_result.deferred:
                say("deferred to the compute node: " + ", ".join(plan.venv_result.deferred))
        await snapshots.prune_snapshots(cluster, snaps_dir)
        plan.snapshot = await snapshots.create_snapshot(cluster, plan.code_dir, snaps_dir, job_name)
    parts = [snapshots.job_snippet(plan.snapshot)]
    if plan.venv is not None and plan.deps is not None:
        parts.append(phase2_snippet(plan.venv, cluster.scratch,
                                    python_path=bool(plan.deps.local_paths)))
    plan.setup_snippet = "\n".join(parts)
    return plan


__all__ = ["WorkspacePlan", "plan_command", "prepare_workspace"]
