"""Logs: the merged per-node tail of one job, with node filter, search and follow/pause.

The follower (:mod:`rv_tui.logs`) does the merging; a worker batches its lines (at most every
50 ms) into :class:`LogBatch` messages so a job printing thousands of lines per second costs the
UI a handful of messages per second, and :class:`LogView` renders only the visible rows.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Static

from rv_tui.tui import messages as m
from rv_tui.tui.keys import KeyGuard
from rv_tui.tui.widgets.logview import LogView


class LogsPane(KeyGuard, Vertical):
    BINDINGS = [
        Binding("f", "toggle_follow", "Follow/pause"),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("n", "next_node", "Node filter"),
        Binding("e", "toggle_stderr", "stderr only"),
        Binding("end", "end", "End", show=False),
        Binding("escape", "clear_search", "Clear search", show=False),
    ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.job_id: str | None = None
        self.nodes: set[int] = set()
        self.ended: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="logs-header"):
            yield Static("no job selected: pick one in Jobs (2) and press l", id="logs-title",
                         classes="pane-title")
            yield Static("", id="logs-status")
        yield LogView(id="log-view")
        search = Input(placeholder="search (enter to apply, esc to clear)", id="logs-search")
        search.display = False
        yield search

    # ------------------------------------------------------------------ following
    def follow(self, job_id: str) -> None:
        """Start following ``job_id`` (replaces any previous follow)."""
        from rv_tui.tui import workers

        self.job_id = job_id
        self.nodes = set()
        self.ended = None
        view = self.query_one(LogView)
        view.clear_lines()
        view.node_filter = None
        view.stderr_only = False
        view.search = ""
        view.resume()  # a pause was for the previous job: the next one is followed
        self._render_header()
        job = self.app.jobs_by_id().get(job_id)
        self.app.start_worker(workers.follow_logs(self, self.app.cluster, job_id, job),
                              group="logs", exclusive=True)

    def on_log_batch(self, message: m.LogBatch) -> None:
        if message.job_id != self.job_id:
            return
        for e in message.entries:
            if e.node is not None:
                self.nodes.add(e.node)
        self.query_one(LogView).append(message.entries)
        self._render_header()

    def on_log_ended(self, message: m.LogEnded) -> None:
        if message.job_id == self.job_id:
            self.ended = message.reason or "ended"
            self._render_header()

    def _render_header(self) -> None:
        view = self.query_one(LogView)
        title = self.query_one("#logs-title", Static)
        status = self.query_one("#logs-status", Static)
        if self.job_id is None:
            return
        parts: list[tuple[str, str] | str] = [("job ", "bold"), (self.job_id, "bold")]
        if self.nodes:
            parts += ["  nodes ", (" ".join(f"node{n}" for n in sorted(self.nodes)), "")]
        if view.node_filter is not None:
            parts += ["  ", (f"showing node{view.node_filter} only", "bold cyan")]
        if view.stderr_only:
            parts += ["  ", ("stderr only", "bold red")]
        if view.search:
            parts += ["  ", (f"/{view.search}  {len(view.rows)} match(es)", "bold magenta")]
        title.update(Text.assemble(*parts))
        state = Text()
        if view.follow:
            state.append("● following", style="bold green")
        else:
            state.append("❚❚ paused", style="bold yellow")
            if view.pending:
                state.append(f"  +{view.pending} new lines (f to follow)", style="bold yellow")
        state.append(f"  {view.total} lines", style="dim")
        if self.ended:
            state.append(f"  [{self.ended}]", style="dim")
        status.update(state)

    # ------------------------------------------------------------------ actions
    def action_toggle_follow(self) -> None:
        view = self.query_one(LogView)
        if view.follow:
            view.pause()
        else:
            view.resume()
        self._render_header()

    def action_end(self) -> None:
        self.query_one(LogView).resume()
        self._render_header()

    def action_search(self) -> None:
        box = self.query_one("#logs-search", Input)
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "logs-search":
            return
        event.stop()
        self.query_one(LogView).set_filter(search=event.value)
        self.query_one(LogView).focus()
        self._render_header()

    def action_clear_search(self) -> None:
        box = self.query_one("#logs-search", Input)
        box.value = ""
        box.display = False
        self.query_one(LogView).set_filter(search="")
        self.query_one(LogView).focus()
        self._render_header()

    def action_next_node(self) -> None:
        view = self.query_one(LogView)
        nodes = sorted(self.nodes)
        if not nodes:
            return
        if view.node_filter is None:
            nxt: int | None = nodes[0]
        else:
            later = [n for n in nodes if n > view.node_filter]
            nxt = later[0] if later else None
        view.set_filter(node=nxt)
        self._render_header()

    def action_toggle_stderr(self) -> None:
        view = self.query_one(LogView)
        view.set_filter(stderr_only=not view.stderr_only)
        if view.stderr_only and not any(e.stream == "err" for e in view.entries):
            self.app.notify(f"job {self.job_id or '?'} has written nothing to stderr (yet)",
                            title="stderr only", timeout=4)
        self._render_header()

    def on_mount(self) -> None:
        self.set_interval(0.5, self._tick)

    def _tick(self) -> None:
        if self.job_id is not None and self.app.is_running:  # not while tearing down
            self._render_header()
