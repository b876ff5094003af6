"""The rv dashboard: one Textual app composing the same core the CLI uses.

Threading model (harlequin's discipline): workers in :mod:`rv_tui.tui.workers` call the core and
post :mod:`rv_tui.tui.messages`; the ``on_*`` handlers here update :class:`AppState` and tell the
panes to re-render.  Panes never talk to Slurm or SSH.  A failed poll leaves every pane with its
last data; the status bar shows the age and a banner says we are reconnecting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, TabbedContent, TabPane

from rv_tui.cluster.base import Cluster
from rv_tui.errors import RvError
from rv_tui.tui import messages as m
from rv_tui.tui import lookups, workers
from rv_tui.tui.commands import RvCommands
from rv_tui.tui.clock import local_time
from rv_tui.tui.help import HelpScreen
from rv_tui.tui.keys import letter_actions, typing
from rv_tui.tui.panes import PANES
from rv_tui.tui.panes.cluster import ClusterPane
from rv_tui.tui.panes.commandlog import CommandLogPane
from rv_tui.tui.panes.config import ConfigPane
from rv_tui.tui.panes.env import EnvPane
from rv_tui.tui.panes.jobs import JobsPane
from rv_tui.tui.panes.launch import LaunchPane
from rv_tui.tui.panes.logs import LogsPane
from rv_tui.tui.panes.race import RacePane
from rv_tui.tui.recording import RecordingCluster, command_log_of
from rv_tui.tui.state import AppState
from rv_tui.tui.widgets.statusbar import DemoBanner, ReconnectBanner, StatusBar



class RvApp(App[int]):
    """``rv`` with no arguments."""

    TITLE = "rv"
    CSS_PATH = ["app.tcss"]
    COMMANDS = App.COMMANDS | {RvCommands}
    BINDINGS = [
        *(Binding(key, f"show_pane('{pid}')", title, show=False, id=f"pane-{pid}")
          for pid, title, key in PANES),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit_key", "Quit", show=False),
        Binding("escape", "normal_mode", "Leave field", show=False),
        Binding("ctrl+r", "refresh", "Refresh", id="refresh"),
        Binding("ctrl+q", "quit", "Quit", id="quit"),
    ]

    def __init__(self, cluster: Cluster, *, config_path: Path | None = None,
                 poll_interval: float = 5.0, clock: Callable[[], float] = time.time,
                 probe_windows: bool = True, cwd: Path | None = None) -> None:
        super().__init__()
        self.clock = clock
        #: the local directory a launch syncs from (``rv run``'s cwd); fixed at start-up
        self.cwd = Path(cwd) if cwd is not None else Path.cwd()
        if command_log_of(cluster) is None:
            cluster = RecordingCluster(cluster, clock=clock)  # type: ignore[assignment]
        self.cluster: Any = cluster
        self.command_log = command_log_of(cluster)
        self.config_path = config_path
        self.poll_interval = poll_interval
        self.state = AppState()
        #: every (plan, request) a launch confirmed, in order (what was really submitted)
        self.submitted: list[tuple[Any, Any]] = []
        self._keepalive: Any = None
        self._looked_up: set[str] = set()
        #: final-state lookups started and not answered yet (scenes wait for them)
        self.lookups_pending = 0
        self.poller = workers.Poller(cluster, self, poll_interval,
                                     probe=lookups.backfill_windows if probe_windows else None)
        # sbatch --test-only probes only while the Cluster pane (its backfill column) is showing
        self.poller.backfill_wanted = lambda: (self._q(TabbedContent).active == "cluster"
                                               and self._q(ClusterPane).backfill_on())
        self._log_listener_remove: Callable[[], None] | None = None
        self._conn_listener_remove: Callable[[], None] | None = None

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield StatusBar(id="statusbar")
        banner = DemoBanner(id="demo-banner")
        banner.display = bool(getattr(self.cluster, "is_demo", False))
        yield banner
        reconnect = ReconnectBanner(id="reconnect-banner")
        reconnect.display = False
        yield reconnect
        with TabbedContent(initial="cluster", id="tabs"):
            with TabPane("1 Cluster", id="cluster"):
                yield ClusterPane(id="cluster-pane")
            with TabPane("2 Jobs", id="jobs"):
                yield JobsPane(id="jobs-pane")
            with TabPane("3 Launch", id="launch"):
                yield LaunchPane(id="launch-pane")
            with TabPane("4 Race", id="race"):
                yield RacePane(id="race-pane")
            with TabPane("5 Logs", id="logs"):
                yield LogsPane(id="logs-pane")
            with TabPane("6 Env", id="env"):
                yield EnvPane(id="env-pane")
            with TabPane("7 Config", id="config"):
                yield ConfigPane(id="config-pane", path=self.config_path)
            with TabPane("8 Commands", id="commands"):
                yield CommandLogPane(id="commandlog-pane", time_format=self._format_time)
        yield Footer()

    def _q(self, selector: Any, expect_type: Any = None) -> Any:
        """Query the main screen (``App.query_one`` would search a modal on top of it)."""
        screen = self.screen_stack[0] if self.screen_stack else self.screen
        if expect_type is None:
            return screen.query_one(selector)
        return screen.query_one(selector, expect_type)

    def _shutting_down(self) -> bool:
        """True once the app began closing: workers may still post, but the panes are going away
        (``_running`` turns False before the screens are removed)."""
        return not self.is_running or not self.screen_stack

    def _format_time(self, t: float) -> str:
        return local_time(t, self.clock())

    def on_mount(self) -> None:
        self.title = f"rv · {self.cluster.name}"
        self._render_status()
        if self.command_log is not None:
            self._q(CommandLogPane).add_records(self.command_log.records())
            self._log_listener_remove = self.command_log.add_listener(
                lambda rec: self.post_message(m.CommandRecorded(rec)))
        add_conn = getattr(self.cluster, "add_connection_listener", None)
        if callable(add_conn):  # SshCluster: the pool says "reconnecting" the moment it drops
            self._conn_listener_remove = add_conn(
                lambda ev: self.post_message(m.ConnectionChanged(str(ev.state), str(ev.detail))))
        self.run_worker(self.poller.run(), name="poll", group="poll", exclusive=True,
                        exit_on_error=False)
        self.set_interval(1.0, self._render_status, name="age-tick")
        self._q("#cluster-table").focus()
        self._start_keepalive()

    def _start_keepalive(self) -> None:
        """The once-a-day scratch keepalive (the core's; a detached remote touch), as every CLI
        command starts it: a user who only ever opens the dashboard is protected too."""
        try:
            from rv_tui.workspace.keepalive import maybe_keepalive

            self._keepalive = maybe_keepalive(self.cluster, self.load_config())
        except Exception:  # noqa: BLE001 - a keepalive must never break the dashboard
            self._keepalive = None

    def on_unmount(self) -> None:
        if self._log_listener_remove:
            self._log_listener_remove()
        if self._conn_listener_remove:
            self._conn_listener_remove()

    # ------------------------------------------------------------------ status
    def _render_status(self) -> None:
        if self._shutting_down():  # the age tick can fire while the screens are being removed
            return
        now = self.clock()
        self._q(StatusBar).show(self.cluster.name, self.cluster.user, self.state, now)
        banner = self._q(ReconnectBanner)
        banner.display = self.state.connection in ("reconnecting", "lost")
        if banner.display:
            banner.show(self.state, now)

    # ------------------------------------------------------------------ message handlers
    def on_cluster_polled(self, message: m.ClusterPolled) -> None:
        if self._shutting_down():
            return
        from rv_tui.jobs.notify import ended_jobs  # a started job of yours ended: tell the user

        for job in ended_jobs(self.state.jobs, message.jobs):
            how = f": {job.state.lower()}" if job.is_terminal else ""
            self.notify(f"job {job.job_id} {job.name} ended{how}", title="job ended", timeout=10)
        self.state.record_snapshot(message.snapshot, message.jobs, self.clock(), message.windows)
        self.state.poll_duration = message.duration
        self._q(ClusterPane).refresh_from(self.state)
        self._q(JobsPane).refresh_from(self.state)
        self._q(RacePane).refresh_from(self.state)
        self._render_status()

    def on_poll_failed(self, message: m.PollFailed) -> None:
        if self._shutting_down():
            return
        self.state.record_failure(message.message)
        if self.state.snapshot is None:
            self._q(ClusterPane).refresh_from(self.state)
        self._render_status()

    def on_connection_changed(self, message: m.ConnectionChanged) -> None:
        if self._shutting_down():
            return
        was = self.state.connection
        self.state.record_connection(message.state, message.detail)
        self._render_status()
        if message.state == "connected" and was in ("reconnecting", "lost"):
            self.poller.poke()  # back: refresh the panes now, not at the next interval

    def on_command_recorded(self, message: m.CommandRecorded) -> None:
        if self._shutting_down():
            return
        self._q(CommandLogPane).add_records([message.record])

    def on_operation_failed(self, message: m.OperationFailed) -> None:
        if self._shutting_down():
            return
        text = message.message + (f"\n{message.hint}" if message.hint else "")
        self.notify(text, title=f"{message.what} failed", severity="error", timeout=10)

    def on_jobs_cancelled(self, message: m.JobsCancelled) -> None:
        if self._shutting_down():
            return
        self.notify(f"cancelled {', '.join(message.job_ids)}", title="cancel")
        self.poller.poke()

    # ------------------------------------------------------------------ normal mode
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Digits, ``?`` and ``q`` are text while a field has focus (Escape leaves it first)."""
        if action in letter_actions(self.BINDINGS) and typing(self):
            return False
        return True

    def action_quit_key(self) -> None:
        self.exit()

    def action_normal_mode(self) -> None:
        """Escape: leave the text field or Select for the pane's normal-mode widget, where the
        digits, ``?``, ``q`` and the pane's letters work."""
        if not typing(self):
            return
        pane = self._q(TabbedContent).active
        normal = {"launch": "#launch-plan", "logs": "#log-view", "jobs": "#jobs-table"}
        selector = normal.get(pane)
        if selector is None:
            self._focus_pane(pane)
        else:
            try:
                self._q(selector).focus()
            except Exception:  # noqa: BLE001
                self.screen.set_focus(None)
        if typing(self):
            self.screen.set_focus(None)

    # ------------------------------------------------------------------ actions
    def action_show_pane(self, pane: str) -> None:
        tabs = self._q(TabbedContent)
        tabs.active = pane
        self._focus_pane(pane)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id:
            self._focus_pane(event.pane.id)

    def _focus_pane(self, pane: str) -> None:
        targets = {
            "cluster": "#cluster-table", "jobs": "#jobs-table", "launch": "#launch-command",
            "race": "#race-lanes", "logs": "#log-view", "env": "#env-table",
            "config": "#config-table", "commands": "#commandlog-table",
        }
        selector = targets.get(pane)
        if selector:
            try:
                self._q(selector).focus()
            except Exception:  # pane not mounted yet
                pass

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_refresh(self) -> None:
        self.poller.poke()
        self.notify("refreshing…", timeout=1.5)

    # ------------------------------------------------------------------ services for panes
    def start_worker(self, coro: Any, *, group: str, exclusive: bool = True) -> None:
        """Run a core call as a worker (panes call this; the worker posts the result)."""
        self.run_worker(coro, group=group, exclusive=exclusive, exit_on_error=False)

    def show_error(self, exc: BaseException, what: str = "error") -> None:
        msg, hint = workers.describe_error(exc)
        self.post_message(m.OperationFailed(what, msg, hint))

    def open_logs(self, job_id: str) -> None:
        self.action_show_pane("logs")
        self._q(LogsPane).follow(job_id)

    def jobs_by_id(self) -> dict[str, Any]:
        return {j.job_id: j for j in self.state.jobs}

    def load_config(self) -> Any:
        """The current config (None when there is none or it is broken)."""
        try:
            from rv_tui.config import load_config

            return load_config(self.config_path) if self.config_path else load_config()
        except Exception:  # noqa: BLE001 - the config pane shows config errors
            return None

    def run_pane_action(self, pane: str, action: str) -> None:
        """Switch to ``pane`` and run one of its actions (used by the command palette)."""
        widgets = {"launch": LaunchPane, "jobs": JobsPane, "logs": LogsPane, "env": EnvPane,
                   "config": ConfigPane, "race": RacePane}
        self.action_show_pane(pane)
        widget = self._q(widgets[pane])
        getattr(widget, f"action_{action}")()

    # ------------------------------------------------------------------ race
    def start_race(self, plan: Any, request: Any) -> None:
        self._race_holder: dict[str, Any] = {}
        self.action_show_pane("race")
        # the confirm dialog is still closing and gives focus back to the field it came from
        # (a hidden Launch field would keep the keys): the Race pane takes focus after it
        self.call_after_refresh(self._focus_pane, "race")
        self.submitted.append((plan, request))
        self._q(RacePane).preparing()
        # not exclusive: a new launch must never cancel an earlier request still racing (its
        # worker keeps running; the Race pane shows the newest launch)
        self.start_worker(workers.run_race(self, self.cluster, plan, request, self.load_config(),
                                           self._race_holder, cwd=self.cwd),
                          group="race", exclusive=False)

    def on_launch_note(self, message: m.LaunchNote) -> None:
        if self._shutting_down():
            return
        self._q(RacePane).note(message.text)

    def abort_race(self) -> None:
        race = getattr(self, "_race_holder", {}).get("race")
        if race is None or race.result.outcome != "racing" or race.result.winner_id:
            self.notify("no race in progress", severity="warning")
            return

        async def abort() -> None:
            try:
                ids = await race.abort()
            except Exception as exc:  # noqa: BLE001
                self.show_error(exc, "abort")
                return
            self.post_message(m.JobsCancelled(list(ids)))

        self.start_worker(abort(), group="abort")

    def on_race_started(self, message: m.RaceStarted) -> None:
        if self._shutting_down():
            return
        self._q(RacePane).start(message.group_id, message.strategies)

    def on_race_event_arrived(self, message: m.RaceEventArrived) -> None:
        if self._shutting_down():
            return
        if str(message.event.kind) == "winner":  # also for an earlier launch racing behind
            self.notify(f"{message.event.label} won: job {message.event.job_id}", title="race won")
            self.poller.poke()
        race_pane = self._q(RacePane)
        if message.group_id is not None and race_pane.group_id not in (None, message.group_id):
            return  # an earlier launch, still racing in the background
        race_pane.apply(message.event)

    def on_race_finished(self, message: m.RaceFinished) -> None:
        if self._shutting_down():
            return
        self._q(RacePane).launch_failed()  # no-op unless preparation never got to submit
        self.poller.poke()

    # ------------------------------------------------------------------ attach
    def attach(self, job: Any) -> None:
        """Open a shell on the job's first node (the terminal is handed to ``ssh -t``).

        The remote command comes from the core (:func:`rv_tui.jobs.access.shell_command`, the
        same one ``rv ssh`` runs: rv's env and venv, inside the job's cgroup); a worker builds
        it and posts :class:`AttachReady`, whose handler suspends the screen for ssh."""
        if getattr(self.cluster, "is_demo", False):
            self.notify("the demo cluster has no real nodes to open a shell on", title="attach",
                        severity="warning")
            return
        self.start_worker(workers.attach_argv(self, self.cluster, self.load_config(), job),
                          group="attach", exclusive=True)

    def on_attach_ready(self, message: m.AttachReady) -> None:
        import subprocess

        import sys

        try:
            with self.suspend():
                # a clean terminal for the shell (not the dashboard's last frame behind it)
                sys.stdout.write("\033[H\033[2J")
                sys.stdout.flush()
                subprocess.run(message.argv)
                sys.stdout.write("\033[H\033[2J")  # and none of the shell's left behind
                sys.stdout.flush()
        except Exception as exc:  # noqa: BLE001 - e.g. a terminal that cannot be suspended
            self.show_error(exc, "attach")
        self.refresh(repaint=True, layout=True)
        self.screen.refresh(repaint=True, layout=True)
        self.poller.poke()

    # ------------------------------------------------------------------ lookups
    def lookup_final_states(self, job_ids: list[str]) -> None:
        """Ask the core for the final state and exit code of jobs that left the queue (one
        ``cluster.jobs(ids)`` call: squeue, then scontrol/sacct for the finished ones)."""
        ids = [j for j in job_ids if j and j not in self._looked_up]
        if not ids:
            return
        self._looked_up.update(ids)
        self.lookups_pending += 1
        from rv_tui.tui import lookups

        self.start_worker(lookups.final_states(self, self.cluster, ids), group="lookup",
                          exclusive=False)

    def on_jobs_looked_up(self, message: m.JobsLookedUp) -> None:
        self.lookups_pending = max(0, self.lookups_pending - 1)
        if self._shutting_down():
            return
        for job in message.jobs:
            self.state.final[job.job_id] = job
            self._q(RacePane).job_info(job)
        self._q(RacePane).redraw()
        self._q(JobsPane).refresh_from(self.state)


def run_app(cluster: Cluster, **kwargs: Any) -> int:
    """Run the dashboard until the user quits; RvError at startup is the caller's to print."""
    try:
        app = RvApp(cluster, **kwargs)
    except RvError:
        raise
    result = app.run()
    return int(result or 0)
