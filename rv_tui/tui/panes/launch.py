"""Launch (keyboard only): request form, dry-run preview of every strategy, fan-out on confirm.

The form becomes a :class:`rv_tui.allocator.model.Request`; ``ctrl+t`` asks the allocator for a
plan (every strategy with its estimated wait and SU cost); ``s`` shows the exact sbatch script of
the highlighted strategy; ``ctrl+l`` confirms and starts the race (the Race pane takes over).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.widgets import Checkbox, DataTable, Input, Label, Select, Static

from rv_tui.allocator.model import Request
from rv_tui.durations import format_human, parse_duration
from rv_tui.errors import RvError
from rv_tui.gpus import GPU_SPECS, resolve_gpu_type
from rv_tui.tui import messages as m
from rv_tui.tui.widgets.dialogs import ConfirmScreen, TextScreen


def form_request(values: dict[str, Any]) -> Request:
    """Turn form values into a Request; raises RvError naming the bad field."""
    try:
        gpus = int(str(values.get("gpus") or "1").strip())
        if gpus < 1:
            raise ValueError
    except ValueError:
        raise RvError(f"GPUs: {values.get('gpus')!r} is not a positive whole number",
                      hint="e.g. 1, 2, 4, 8") from None
    gtype = values.get("gpu_type") or "any"
    gpu_type = None if gtype in ("any", Select.BLANK) else resolve_gpu_type(str(gtype))
    time_text = str(values.get("time") or "2:59:00").strip()
    try:
        time_s = parse_duration(time_text)
    except (RvError, ValueError) as exc:
        hint = getattr(exc, "hint", None) or "use 2h, 30m, 1.5d or HH:MM:SS"
        raise RvError(f"time: {time_text!r} is not a duration", hint=hint) from None
    mem = str(values.get("mem") or "").strip() or None
    if mem and not mem[:-1].isdigit() and not mem.isdigit():
        raise RvError(f"memory: {mem!r} is not a Slurm size", hint="e.g. 64G, 200G, 4000M")
    command = str(values.get("command") or "").strip() or None
    name = str(values.get("name") or "").strip() or None
    return Request(gpus=gpus, gpu_type=gpu_type, time_s=time_s, mem=mem,
                   single_node=bool(values.get("single_node")), command=command, name=name)


def workspace_summary(launch: Any) -> Text:
    """What the launch will do with the local directory: sync plan, snapshot, venv (or why not)."""
    out = Text()
    ws = getattr(launch, "workspace", None)
    if launch is None:
        return out
    if ws is None:
        out.append("\nworkspace: none (interactive allocation)", style="dim")
        return out
    for note in ws.notes:
        out.append(f"\nnote: {note}", style="dim")
    if ws.project is None:
        return out
    pr = ws.project
    out.append("\nsync ", style="bold")
    out.append(f"{pr.name} ({pr.branch})", style="bold")
    sync = ws.sync_result.plan if ws.sync_result is not None else None
    if sync is not None:
        out.append(f": {sync.summary()}")
    out.append(f" → {ws.code_dir}, the job runs in a fresh snapshot of it", style="dim")
    if ws.venv:
        out.append(f" · venv from {ws.deps.file if ws.deps else '?'}", style="dim")
    return out


class LaunchPane(Vertical):
    BINDINGS = [
        Binding("ctrl+t", "preview", "Preview strategies"),
        Binding("s", "script", "sbatch script"),
        Binding("ctrl+l", "launch", "Launch race"),
    ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.plan: Any = None
        self.launch: Any = None  # the dry-run Launch (plan + workspace preview + scripts)
        self.request: Request | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("New request ", "bold"),
                                   ("tab between fields · ctrl+t preview · s script · ctrl+l launch",
                                    "dim")), classes="pane-title")
        with Grid(id="launch-form"):
            yield Label("command")
            yield Input(placeholder="python train.py  (empty: interactive allocation)",
                        id="launch-command", compact=True)
            yield Label("GPUs")
            yield Input("1", id="launch-gpus", restrict=r"[0-9]*", compact=True)
            yield Label("type")
            yield Select([("any", "any")] + [(f"{k} ({s.label})", k) for k, s in GPU_SPECS.items()],
                         value="any", allow_blank=False, id="launch-type", compact=True)
            yield Label("time")
            yield Input("2:59:00", id="launch-time", compact=True)
            yield Label("memory")
            yield Input(placeholder="per node, e.g. 64G (empty: proportional)", id="launch-mem", compact=True)
            yield Label("name")
            yield Input(placeholder="job name (empty: automatic)", id="launch-name", compact=True)
            yield Label("")
            yield Checkbox("single node only", id="launch-single", compact=True)
        yield Static("", id="launch-status")
        table: DataTable = DataTable(id="launch-plan", cursor_type="row", zebra_stripes=True)
        for col in ("#", "strategy", "type", "partition", "nodes×GPUs", "kind", "est. wait", "SU",
                    "notes"):
            table.add_column(col, key=col)
        yield table

    def values(self) -> dict[str, Any]:
        return {
            "command": self.query_one("#launch-command", Input).value,
            "gpus": self.query_one("#launch-gpus", Input).value,
            "gpu_type": self.query_one("#launch-type", Select).value,
            "time": self.query_one("#launch-time", Input).value,
            "mem": self.query_one("#launch-mem", Input).value,
            "name": self.query_one("#launch-name", Input).value,
            "single_node": self.query_one("#launch-single", Checkbox).value,
        }

    def _status(self, text: Text | str) -> None:
        self.query_one("#launch-status", Static).update(text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_preview()

    def action_preview(self) -> None:
        from rv_tui.tui import workers

        try:
            self.request = form_request(self.values())
        except RvError as exc:
            self._status(Text(f"✗ {exc.message}" + (f" — {exc.hint}" if exc.hint else ""),
                              style="bold red"))
            return
        self.plan = None
        self.launch = None
        self._status(Text("planning… (probing the cluster)", style="italic"))
        self.app.start_worker(workers.make_launch(self, self.app.cluster, self.app.load_config(),
                                                  self.request, self.app.cwd),
                              group="plan", exclusive=True)

    def on_plan_ready(self, message: m.PlanReady) -> None:
        self.plan = message.plan
        self.launch = message.launch
        table = self.query_one("#launch-plan", DataTable)
        table.clear()
        for i, s in enumerate(self.plan.strategies, 1):
            table.add_row(str(i), s.label, s.gpu_type, s.partition, s.topology, str(s.kind),
                          format_human(s.est_wait_s), "free" if s.est_su == 0 else f"{s.est_su:.0f}",
                          "; ".join(s.notes), key=s.id)
        excluded = getattr(self.plan, "excluded", {}) or {}
        text = Text.assemble((f"{len(self.plan.strategies)} strategies", "bold green"),
                             " will race (s: sbatch script of the highlighted one, ctrl+l: launch)")
        if excluded:
            text.append("\nexcluded: " + "; ".join(f"{k}: {v}" for k, v in sorted(excluded.items())),
                        style="dim")
        text.append_text(workspace_summary(self.launch))
        self._status(text)
        if table.row_count:
            table.focus()

    def on_operation_failed(self, message: m.OperationFailed) -> None:
        # errors of this pane's own workers show in place as well as in a notification
        if message.what == "plan":
            self._status(Text(f"✗ {message.message}" + (f"\n{message.hint}" if message.hint else ""),
                              style="bold red"))
            message.stop()
            self.app.post_message(m.OperationFailed("plan", message.message, message.hint))

    def _selected_strategy(self) -> Any:
        if self.plan is None:
            return None
        table = self.query_one("#launch-plan", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((s for s in self.plan.strategies if s.id == key), None)

    def action_script(self) -> None:
        strategy = self._selected_strategy()
        if strategy is None:
            self.app.notify("preview first (ctrl+t)", severity="warning")
            return
        entry = next((e for e in getattr(self.launch, "entries", ()) if e.strategy.id == strategy.id), None)
        if entry is None:
            self.app.notify("preview again (ctrl+t)", severity="warning")
            return
        script = entry.submission.script
        self.app.push_screen(TextScreen(f"sbatch script: {strategy.label}", script))

    def action_launch(self) -> None:
        if self.plan is None or not self.plan.strategies:
            self.app.notify("preview first (ctrl+t)", severity="warning")
            return
        n = len(self.plan.strategies)
        body = "\n".join(f"• {s.label}  (~{format_human(s.est_wait_s)}, "
                         f"{'free' if s.est_su == 0 else f'{s.est_su:.0f} SU'})"
                         for s in self.plan.strategies[:12])
        if n > 12:
            body += f"\n… and {n - 12} more"
        body += "\n\nThe first to run wins; the others are cancelled."

        def done(ok: bool | None) -> None:
            if ok:
                self.app.start_race(self.plan, self.request)

        self.app.push_screen(ConfirmScreen(f"Submit {n} jobs?", body, yes="Launch", no="Back"),
                             done)
