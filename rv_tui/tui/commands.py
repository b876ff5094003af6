"""Command palette provider: our own commands (panes, refresh, launch, cancel, themes...)."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


def _commands(app) -> list[tuple[str, str, object]]:
    from rv_tui.tui.panes import PANES

    out: list[tuple[str, str, object]] = []
    for pid, title, key in PANES:
        out.append((f"Go to {title}", f"show the {title.lower()} pane (key {key})",
                    partial(app.action_show_pane, pid)))
    out += [
        ("Refresh now", "poll the cluster immediately (ctrl+r)", app.action_refresh),
        ("Help", "keys and what each pane does (?)", app.action_help),
        ("Launch: preview strategies", "dry-run the launch form (every strategy, wait, SU)",
         partial(app.run_pane_action, "launch", "preview")),
        ("Launch: start race", "submit every strategy; first to run wins",
         partial(app.run_pane_action, "launch", "launch")),
        ("Jobs: cancel selected (with siblings)", "cancel the job under the cursor and its race group",
         partial(app.run_pane_action, "jobs", "cancel")),
        ("Jobs: open logs", "follow the merged logs of the selected job",
         partial(app.run_pane_action, "jobs", "logs")),
        ("Logs: follow / pause", "toggle following the log tail",
         partial(app.run_pane_action, "logs", "toggle_follow")),
        ("Env: add variable", "add an rv env variable injected into every job",
         partial(app.run_pane_action, "env", "add")),
        ("Env: import .env file", "import every variable of a local .env file",
         partial(app.run_pane_action, "env", "import")),
        ("Config: reload from disk", "re-read config.toml",
         partial(app.run_pane_action, "config", "reload")),
        ("Change theme", "pick a Textual theme (rv follows it; light and dark both readable)",
         app.action_change_theme),
    ]
    return out


class RvCommands(Provider):
    """rv's actions in the ctrl+p palette."""

    async def discover(self) -> Hits:
        for name, help_text, callback in _commands(self.app):
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in _commands(self.app):
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
