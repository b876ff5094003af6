"""One launch assembly for both faces: allocation plan -> workspace -> job context -> race entries.

Why one function: ``rv run``, ``rv up`` and the TUI's launch form must submit byte-identical jobs
for the same request (same snapshot, venv, env file, claim, name).  Faces only render; they call
:func:`prepare_launch`, hand ``launch.entries`` to :class:`~rv_tui.allocator.race.Race`, and after
submission call :meth:`Launch.record_jobs` so snapshot pruning never removes the code a pending
job is going to run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rv_tui.allocator.model import Request, Strategy
from rv_tui.allocator.race import RaceEntry
from rv_tui.cluster.base import Cluster
from rv_tui.config import Config
from rv_tui.groupstore import new_group_id
from rv_tui.paths import RemotePaths

Say = Callable[[str], None]


@dataclass
class Launch:
    """Everything a face needs to show (dry run) or race (real run) one request."""

    request: Request  # command rewritten by the workspace (root-relative entry file)
    plan: Any  # rv_tui.allocator.plan.AllocationPlan
    workspace: Any | None  # rv_tui.workspace.prepare.WorkspacePlan; None for interactive holds
    context: Any  # rv_tui.jobs.templates.JobContext (shared by every sibling)
    entries: list[RaceEntry]
    group_id: str
    kind: str  # "run" | "up"
    dry_run: bool = False
    preflight: Any | None = None  # rv_tui.jobs.preflight.PreflightReport (>= 4 GPUs, local .py entry)

    @property
    def name(self) -> str:
        return str(self.context.name)

    @property
    def snapshot(self) -> str | None:
        return getattr(self.workspace, "snapshot", None) if self.workspace is not None else None

    async def record_jobs(self, cluster: Cluster, job_ids: Iterable[str]) -> str | None:
        """Note submitted ids in the snapshot (prune keeps it while any is queued).

        Best effort: returns an error message instead of raising, because the jobs are already
        submitted and each job also records its own id when it starts.
        """
        ids = list(job_ids)
        if self.dry_run or self.snapshot is None or cluster.is_demo or not ids:
            return None
        from rv_tui.workspace.snapshots import record_jobs

        try:
            await record_jobs(cluster, self.snapshot, ids)
        except Exception as exc:  # noqa: BLE001 - see docstring
            return f"could not record jobs in {self.snapshot}: {exc}"
        return None

    def to_json(self) -> dict[str, object]:
        ws = self.workspace
        sync_plan = ws.sync_result.plan.to_json() if ws is not None and ws.sync_result is not None else None
        return {
            "name": self.name, "kind": self.kind, "command": self.request.command,
            "group_id": None if self.dry_run else self.group_id,
            "preflight": self.preflight.to_json() if self.preflight is not None else None,
            "workspace": None if ws is None else {
                "project": ws.project.name if ws.project else None,
                "branch": ws.project.branch if ws.project else None,
                "root": str(ws.project.root) if ws.project else None,
                "entry": ws.entry, "code_dir": ws.code_dir, "snapshot": ws.snapshot, "venv": ws.venv,
                "subdir": getattr(ws, "subdir", ""), "work_dir": getattr(ws, "work_dir", ws.snapshot),
                "deps_reason": getattr(ws, "deps_reason", None),
                "python": ws.python.to_json() if getattr(ws, "python", None) is not None else None,
                "manage_deps": ws.manage_deps, "deps_file": ws.deps.file if ws.deps else None,
                "notes": list(ws.notes), "sync": sync_plan,
            },
        }


def _mail_user(config: Config | None) -> str | None:
    from rv_tui.jobs.notify import mail_user

    return mail_user(config)


def notify_settings(cluster: Cluster, config: Config | None) -> Any | None:
    """The job's notification target when notifications are configured (else None)."""
    n = config.notifications if config is not None else None
    if n is None or not n.enabled or not n.url or not n.token:
        return None
    from rv_tui.jobs.notify import NotifySettings

    return NotifySettings(url=n.url, token=n.token, user=cluster.user, email=n.email)


def job_context(cluster: Cluster, config: Config | None, request: Request, group_id: str, *,
                name: str | None = None, workspace: Any | None = None) -> Any:
    """The per-request part of every sibling's script (``JobContext``), with the workspace's
    snapshot dir, venv and setup snippet when there is one."""
    from rv_tui.jobs.naming import heuristic_name, sanitize_job_name
    from rv_tui.jobs.templates import JobContext

    job_name = name or request.name or (heuristic_name(request.command) if request.command else "rv-interactive")
    fields: dict[str, Any] = {"command": request.command}
    if workspace is not None and request.command is not None:
        fields.update(workspace.job_context_fields())
    return JobContext(
        name=sanitize_job_name(job_name), scratch=cluster.scratch, group_id=group_id,
        account=request.account, env_file=RemotePaths(cluster.scratch).env_file,
        hf_cache=config.shared.hf_cache if config is not None else None,
        exclude_nodes=tuple(request.exclude_nodes), notify=notify_settings(cluster, config),
        mail_user=_mail_user(config),
        **fields,
    )


def entries_for_context(ctx: Any, strategies: Sequence[Strategy]) -> list[RaceEntry]:
    """One submission per strategy, built by the job templates (with the on-cluster claim)."""
    from rv_tui.jobs.templates import build_submission

    return [RaceEntry(submission=build_submission(ctx, s), strategy=s) for s in strategies]


def build_entries(cluster: Cluster, config: Config | None, request: Request, strategies: Sequence[Strategy],
                  group_id: str, kind: str = "run", *, workspace: Any | None = None,
                  name: str | None = None) -> list[RaceEntry]:
    """Entries without workspace preparation (previews, ``rv up``, already-prepared workspaces)."""
    ctx = job_context(cluster, config, request, group_id, name=name, workspace=workspace)
    return entries_for_context(ctx, strategies)


async def choose_name(config: Config | None, request: Request, command: str | None, explicit: str | None,
                      cluster: Cluster | None = None) -> str:
    """``--name``, else an AI name when enabled, else the heuristic (never fails).

    The AI provider sees the command with the ``rv env`` values (read from ``cluster``) and other
    secrets masked; if the env store cannot be read the heuristic is used instead."""
    from rv_tui.jobs.naming import choose_job_name

    if command is None:
        from rv_tui.jobs.naming import sanitize_job_name

        return sanitize_job_name(explicit or request.name or "rv-interactive")
    d = config.defaults if config is not None else None
    ai = bool(d and d.ai_naming and d.ai_api_key) and not (explicit or request.name)
    values: list[str] = []
    if ai and cluster is not None and not cluster.is_demo:
        try:
            from rv_tui.workspace.envstore import EnvStore

            values = list((await EnvStore(cluster).load()).values())
        except Exception:  # noqa: BLE001 - cannot mask what we cannot read: no AI naming
            ai = False
    return await choose_job_name(command, explicit=explicit or request.name, ai_naming=ai,
                                 api_key=d.ai_api_key if d else None, secret_values=values)


async def prepare_launch(cluster: Cluster, config: Config | None, request: Request, command: str | None = None,
                         *, cwd: str | Path | None = None, name: str | None = None, dry_run: bool = False,
                         say: Say | None = None, progress: Callable[[int, int], None] | None = None,
                         plan: Any | None = None, max_strategies: int = 16, group_id: str | None = None,
                         workspace: bool = True) -> Launch:
    """Plan (unless given), prepare the workspace (sync, deps, snapshot; a preview when
    ``dry_run``), and build the race entries.

    ``command`` None (or ``request.command`` None) means an interactive hold (``rv up``): no
    workspace.  ``workspace=False`` runs the command as given in ``$HOME`` (no sync).  The plan is
    made first so an unsatisfiable request fails before any upload.  Requests of >= 4 GPUs with a
    local ``.py`` entry get the preflight first (:mod:`rv_tui.jobs.preflight`): its warnings are
    said, and an inference-only script races single-node strategies only.
    """
    command = command if command is not None else request.command
    if command is not None and request.command != command:
        request = request.with_(command=command)
    from rv_tui.jobs.preflight import apply_preflight, run_preflight

    report = run_preflight(request, command, cwd if cwd is not None else Path.cwd())
    for warning in report.warnings:
        if say is not None:
            say(f"warning: {warning}")
    if report.single_node_reason:
        request = apply_preflight(request, report)
        if say is not None:
            say(f"note: {report.single_node_reason}")
    if plan is not None and request.single_node and any(s.multi_node for s in plan.strategies):
        single = [s for s in plan.strategies if not s.multi_node]
        plan = replace(plan, request=request, strategies=single) if single else None
    if plan is None:
        from rv_tui.allocator.plan import make_plan

        plan = await make_plan(cluster, request, max_strategies=max_strategies)
    job_name = await choose_name(config, request, command, name, cluster)
    gid = group_id or new_group_id()
    ws = None
    if command is not None and workspace:
        from rv_tui.workspace.prepare import prepare_workspace

        ws = await prepare_workspace(cluster, local_dir=Path(cwd) if cwd is not None else Path.cwd(),
                                     command=command, job_name=job_name, dry_run=dry_run,
                                     progress=progress, say=say)
        request = request.with_(command=ws.command)
    ctx = job_context(cluster, config, request, gid, name=job_name, workspace=ws)
    entries = entries_for_context(ctx, list(plan.strategies))
    return Launch(request=request, plan=plan, workspace=ws, context=ctx, entries=entries, group_id=gid,
                  kind="run" if command is not None else "up", dry_run=dry_run,
                  preflight=report if report.entry is not None else None)


def with_strategies(launch: Launch, strategies: Sequence[Strategy]) -> Launch:
    """The same launch racing a different subset of strategies (the TUI's lane picker)."""
    return replace(launch, entries=entries_for_context(launch.context, list(strategies)))


__all__ = ["Launch", "build_entries", "choose_name", "entries_for_context", "job_context",
           "notify_settings", "prepare_launch", "with_strategies"]
