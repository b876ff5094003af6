"""Launch (keyboard only): request form, dry-run preview of every strategy, fan-out on confirm.

The form becomes a :class:`rv_tui.allocator.model.Request`; ``ctrl+t`` asks the allocator for a
plan (every strategy with its estimated wait and SU cost); ``s`` shows the exact sbatch script of
the highlighted strategy; ``ctrl+l`` confirms and starts the race (the Race pane takes over).

A launch cannot surprise: the preview belongs to the request it was made for, so any edit of
the form marks it stale, and ``ctrl+l`` re-plans from what the form says *now* (or refuses,
saying which field is wrong) before the confirm dialog, which shows the command, name, time,
GPUs x type and every strategy with its SU; its default button is "Back".
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.content import Content
from textual.widgets import Checkbox, DataTable, Input, Label, Select, Static

from rv_tui.allocator.model import Request
from rv_tui.durations import format_human, format_slurm, parse_duration
from rv_tui.errors import RvError
from rv_tui.gpus import GPU_SPECS, resolve_gpu_type
from rv_tui.tui import messages as m
from rv_tui.tui.keys import KeyGuard
from rv_tui.tui.widgets.dialogs import ConfirmScreen, TextScreen
from rv_tui.tui.words import plural


def form_request(values: dict[str, Any], config: Any = None) -> Request:
    """Turn form values into a Request; raises RvError naming the bad field.  The form has no
    account/partition fields: the config's ``defaults.account`` and ``defaults.partition`` fill
    them (the partition only when it serves the chosen type), as for ``rv run``."""
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
    defaults = getattr(config, "defaults", None)
    partition = getattr(defaults, "partition", None) or None
    if partition and gpu_type:
        from rv_tui.allocator.plan import _partition_serves

        partition = partition if _partition_serves(partition, gpu_type) else None
    return Request(gpus=gpus, gpu_type=gpu_type, time_s=time_s, mem=mem,
                   single_node=bool(values.get("single_node")), command=command, name=name,
                   account=getattr(defaults, "account", None), partition=partition)


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


class TickBox(Checkbox):
    """A checkbox that looks unticked when it is: ``[x]`` / ``[ ]`` (the stock compact one
    shows ``▐X▌`` in both states, told apart only by colour)."""

    @property
    def _button(self) -> Content:
        style = self.get_visual_style("toggle--label")
        return Content.assemble(("[x]" if self.value else "[ ]", style))


def confirm_body(request: Request, launch: Any, plan: Any) -> str:
    """What the confirm dialog shows: everything that will be submitted, and what it may cost."""
    gtype = request.gpu_type or "any type"
    name = getattr(launch, "name", None) or request.name or "(automatic)"
    lines = [
        f"command: {request.command or '(none: an interactive allocation)'}",
        f"name:    {name}",
        f"time:    {format_slurm(request.time_s)}",
        f"GPUs:    {request.gpus} x {gtype}" + (" · single node" if request.single_node else "")
        + (f" · {request.mem} per node" if request.mem else ""),
        "",
        f"{plural(len(plan.strategies), 'strategy')} will race:",
    ]
    strategies = list(plan.strategies)
    for s in strategies[:12]:
        su = "free" if s.est_su == 0 else f"{s.est_su:.0f} SU"
        lines.append(f"  • {s.label}  (~{format_human(s.est_wait_s)}, {su})")
    if len(strategies) > 12:
        lines.append(f"  … and {len(strategies) - 12} more")
    worst = max((s.est_su for s in strategies), default=0.0)
    lines += ["", f"at most {worst:.0f} SU: the first to run wins, the others are cancelled"
                  " before they start."]
    return "\n".join(lines)


#: The form's input widgets (an edit of any of them makes the preview stale).
FORM_IDS = ("launch-command", "launch-gpus", "launch-type", "launch-time", "launch-mem",
            "launch-name", "launch-single")


class LaunchPane(KeyGuard, Vertical):
    BINDINGS = [
        Binding("ctrl+t", "preview", "Preview strategies"),
        Binding("s", "script", "sbatch script"),
        Binding("ctrl+l", "launch", "Launch race"),
    ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.plan: Any = None
        self.launch: Any = None  # the dry-run Launch (plan + workspace preview + scripts)
        self.request: Request | None = None  # the request the preview was made for
        self._confirm_when_planned = False  # ctrl+l asked for a (re-)plan, then the dialog

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("New request ", "bold"),
                                   ("tab between fields · esc leaves a field · ctrl+t preview · "
                                    "s script · ctrl+l launch", "dim")), classes="pane-title")
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
            yield TickBox("single node only", id="launch-single", compact=True)
        yield Static("", id="launch-status")
        table: DataTable = DataTable(id="launch-plan", cursor_type="row", zebra_stripes=True)
        for col in ("#", "strategy", "type", "partition", "nodes×GPUs", "kind", "est. wait", "SU",
                    "notes"):
            table.add_column(col, key=col)
        yield table

    def on_mount(self) -> None:
        """Start from the config's defaults (``defaults.time``, ``defaults.gpu_type``)."""
        config = self.app.load_config() if hasattr(self.app, "load_config") else None
        defaults = getattr(config, "defaults", None)
        if defaults is None:
            return
        time_text = str(getattr(defaults, "time", "") or "").strip()
        if time_text:
            self.query_one("#launch-time", Input).value = time_text
        gtype = str(getattr(defaults, "gpu_type", "") or "any").strip()
        try:
            key = "any" if gtype in ("", "any") else resolve_gpu_type(gtype)
        except RvError:
            key = "any"
        if key == "any" or key in GPU_SPECS:
            self.query_one("#launch-type", Select).value = key

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

    def is_stale(self) -> bool:
        """The preview no longer matches the form (or there is none)."""
        if self.plan is None or self.request is None:
            return True
        try:
            return form_request(self.values(), self.app.load_config()) != self.request
        except RvError:
            return True

    # ------------------------------------------------------------------ edits
    def _form_changed(self, widget_id: str | None) -> None:
        if widget_id not in FORM_IDS or self.plan is None:
            return
        if self.is_stale():
            self._status(Text.assemble(
                ("preview is stale: ", "bold yellow"),
                ("the form changed since it was made; ctrl+t previews again, ctrl+l re-plans "
                 "from the form before asking", "yellow")))
            self.query_one("#launch-plan", DataTable).add_class("stale")
        else:  # edited back to what was previewed
            self.query_one("#launch-plan", DataTable).remove_class("stale")
            self._show_plan_status()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._form_changed(event.input.id)

    def on_select_changed(self, event: Select.Changed) -> None:
        self._form_changed(event.select.id)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._form_changed(event.checkbox.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_preview()

    # ------------------------------------------------------------------ planning
    def _parse_form(self) -> Request | None:
        try:
            return form_request(self.values(), self.app.load_config())
        except RvError as exc:
            text = exc.message + (f" — {exc.hint}" if exc.hint else "")
            self._status(Text(f"✗ {text}", style="bold red"))
            if self._confirm_when_planned:
                self.app.notify(text, title="not launched", severity="error")
            self._confirm_when_planned = False
            return None

    def action_preview(self) -> None:
        self._confirm_when_planned = False
        self._plan()

    def _plan(self) -> None:
        from rv_tui.tui import workers

        request = self._parse_form()
        if request is None:
            return
        self.request = request
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
        table.remove_class("stale")
        for i, s in enumerate(self.plan.strategies, 1):
            table.add_row(str(i), s.label, s.gpu_type, s.partition, s.topology, str(s.kind),
                          format_human(s.est_wait_s), "free" if s.est_su == 0 else f"{s.est_su:.0f}",
                          "; ".join(s.notes), key=s.id)
        if self.is_stale():  # the form was edited while the plan was being made
            self._form_changed("launch-command")
            if self._confirm_when_planned:
                self._confirm_when_planned = False
                self._plan_then_confirm()
            return
        self._show_plan_status()
        if self._confirm_when_planned:
            self._confirm_when_planned = False
            self._confirm()
        elif table.row_count and not self._focus_is_in_form():
            table.focus()

    def _focus_is_in_form(self) -> bool:
        focused = self.app.focused
        return focused is not None and focused.id in FORM_IDS

    def _show_plan_status(self) -> None:
        if self.plan is None:
            return
        excluded = getattr(self.plan, "excluded", {}) or {}
        text = Text.assemble((plural(len(self.plan.strategies), "strategy"), "bold green"),
                             " will race (s: sbatch script of the highlighted one, ctrl+l: launch)")
        if not self.plan.strategies:
            text = Text("no strategy can run this request", style="bold red")
        if excluded:
            text.append("\nexcluded: " + "; ".join(f"{k}: {v}" for k, v in sorted(excluded.items())),
                        style="dim")
        text.append_text(workspace_summary(self.launch))
        self._status(text)

    def on_operation_failed(self, message: m.OperationFailed) -> None:
        # errors of this pane's own workers show in place as well as in a notification
        if message.what == "plan":
            self._confirm_when_planned = False
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
        if self.is_stale():
            self.app.notify("the form changed since the preview: preview again (ctrl+t)",
                            severity="warning")
            return
        entry = next((e for e in getattr(self.launch, "entries", ()) if e.strategy.id == strategy.id), None)
        if entry is None:
            self.app.notify("preview again (ctrl+t)", severity="warning")
            return
        script = entry.submission.script
        self.app.push_screen(TextScreen(f"sbatch script: {strategy.label}", script))

    # ------------------------------------------------------------------ launching
    def action_launch(self) -> None:
        """Confirm and race what the form says now: re-plan first when the preview is stale."""
        if self.is_stale():
            self._plan_then_confirm()
            return
        self._confirm()

    def _plan_then_confirm(self) -> None:
        self._confirm_when_planned = True
        self._plan()
        if self._confirm_when_planned:
            self._status(Text("re-planning from the form before launching…", style="italic"))

    def _confirm(self) -> None:
        plan, request, launch = self.plan, self.request, self.launch
        if plan is None or request is None:
            return
        if not plan.strategies:
            excluded = getattr(plan, "excluded", {}) or {}
            why = "; ".join(f"{k}: {v}" for k, v in sorted(excluded.items())) or "no strategy fits"
            self.app.notify(f"nothing to launch: {why}", title="not launched", severity="error")
            return
        n = len(plan.strategies)
        # nothing keeps focus behind the dialog: when it closes the screen would give it back to
        # the field it came from, which (hidden behind the Race pane) would swallow every key
        before = self.app.focused
        self.app.screen.set_focus(None)

        def done(ok: bool | None) -> None:
            if not ok:
                if before is not None and before.is_attached:
                    self.app.call_after_refresh(before.focus)
                return
            if self.plan is not plan or self.is_stale():  # cannot happen behind a modal; be sure
                self.app.notify("the form changed: not launched", severity="warning")
                return
            self.app.start_race(plan, request)

        self.app.push_screen(ConfirmScreen(f"Submit {plural(n, 'job')}?",
                                           confirm_body(request, launch, plan),
                                           yes="Launch", no="Back"), done)
