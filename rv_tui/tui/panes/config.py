"""Config editor: every known ``config.toml`` key, edited with validation, saved with comments.

All edits go through :class:`rv_tui.config.ConfigDocument`: ``set`` refuses an invalid value
with the reason (shown in the prompt, which stays open), ``save`` validates the whole file and
writes it atomically keeping the user's comments and layout.  The right side shows the file as
it is on disk so the user sees their comments survive.
"""

from __future__ import annotations

from pathlib import Path

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from rv_tui.config import ConfigDocument, ConfigError, config_path, is_secret_key, known_keys
from rv_tui.tui.widgets.dialogs import PromptScreen


def _show(value: object, secret: bool, reveal: bool) -> Text:
    if value is None:
        return Text("unset", style="dim italic")
    if secret and not reveal:
        return Text("****", style="yellow")
    if isinstance(value, bool):
        return Text("true" if value else "false", style="cyan")
    return Text(str(value))


class ConfigPane(Vertical):
    """Key table on the left, the file on the right."""

    BINDINGS = [
        Binding("enter,e", "edit", "Edit"),
        Binding("x", "unset", "Unset"),
        Binding("r", "reveal", "Reveal"),
        Binding("ctrl+r", "reload", "Reload"),
    ]

    def __init__(self, *args, path: Path | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.path = path or config_path()
        self.doc: ConfigDocument | None = None
        self.reveal = False
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="config-title", classes="pane-title")
        with Horizontal():
            table: DataTable = DataTable(id="config-table", cursor_type="row")
            table.add_column("key", key="key")
            table.add_column("value", key="value")
            yield table
            with VerticalScroll(id="config-file"):
                yield Static("", id="config-text")

    def on_mount(self) -> None:
        self.load()

    def load(self) -> None:
        try:
            self.doc = ConfigDocument.load(self.path) if self.path.exists() else ConfigDocument.new(self.path)
            self.error = None
        except ConfigError as exc:
            self.doc = None
            self.error = exc.message + (f" — {exc.hint}" if exc.hint else "")
        self.render_doc()

    def render_doc(self) -> None:
        title = self.query_one("#config-title", Static)
        table = self.query_one("#config-table", DataTable)
        text = self.query_one("#config-text", Static)
        if self.doc is None:
            title.update(Text(f"{self.path}: {self.error}", style="bold red"))
            return
        title.update(Text.assemble((_display_path(self.path), "bold"),
                                   ("   enter edit · x unset · r reveal secrets", "dim")))
        row = table.cursor_row
        table.clear()
        for key in known_keys():
            table.add_row(key, _show(self.doc.get(key), is_secret_key(key), self.reveal), key=key)
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))
        shown = self.doc.as_string()
        if not self.reveal:
            shown = _mask_secrets(shown)
        text.update(Syntax(shown, "toml", theme="ansi_dark", background_color="default",
                           word_wrap=True))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """enter on a row (the table's own binding) = edit."""
        event.stop()
        self.action_edit()

    def _current_key(self) -> str | None:
        table = self.query_one("#config-table", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def apply(self, key: str, value: str | None) -> str | None:
        """Set (or unset, value None) and save; returns the refusal reason, or None on success."""
        if self.doc is None:
            return self.error or "the config file could not be read"
        before = self.doc.as_string()
        try:
            self.doc.set(key, value)
            self.doc.save()
        except ConfigError as exc:
            # keep what is on disk: re-read it so the in-memory document matches the file
            try:
                self.doc = ConfigDocument.load(self.path) if self.path.exists() else ConfigDocument.new(self.path)
            except ConfigError:
                pass
            del before
            return exc.message + (f" ({exc.hint})" if exc.hint else "")
        self.render_doc()
        return None

    def action_edit(self) -> None:
        key = self._current_key()
        if key is None or self.doc is None:
            return
        current = self.doc.get(key)
        secret = is_secret_key(key)
        shown = "" if current is None else ("true" if current is True else "false" if current is False else str(current))

        def validate(value: str) -> str | None:
            return self.apply(key, value if value.strip() else None)

        def done(result: str | None) -> None:
            if result is not None:
                self.app.notify(f"saved {key}", title="config")

        self.app.push_screen(PromptScreen(
            f"Set {key}", shown, password=secret and not self.reveal,
            help_text="empty = unset; saved at once, comments kept", validate=validate), done)

    def action_unset(self) -> None:
        key = self._current_key()
        if key is None:
            return
        reason = self.apply(key, None)
        if reason:
            self.app.notify(reason, title="config", severity="error")

    def action_reveal(self) -> None:
        self.reveal = not self.reveal
        self.render_doc()

    def action_reload(self) -> None:
        self.load()


def _mask_secrets(text: str) -> str:
    import re

    return re.sub(r'(?m)^(\s*(?:ai_api_key|token)\s*=\s*)(["\']).*?\2', r"\1\2****\2", text)


def _display_path(path: Path) -> str:
    """``~/.rv/config.toml`` or ``$RV_HOME/config.toml`` rather than a long absolute path."""
    import os

    home = os.environ.get("RV_HOME")
    if home and path.parent == Path(home).expanduser():
        return f"$RV_HOME/{path.name}"
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)
