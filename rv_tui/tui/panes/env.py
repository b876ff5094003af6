"""Env editor: the ``rv env`` variables injected into every job.

The store lives on the cluster (:class:`rv_tui.workspace.envstore.EnvStore`); every change is a
worker call and the table re-renders from the reloaded store.  Secret-looking values are masked
(:func:`envstore.mask`) unless the user asks to reveal them with ``r``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from rv_tui.tui import messages as m
from rv_tui.tui.widgets.dialogs import ConfirmScreen, PromptScreen


class EnvPane(Vertical):
    BINDINGS = [
        Binding("a", "add", "Add"),
        Binding("e,enter", "edit", "Edit"),
        Binding("d,delete", "remove", "Remove"),
        Binding("r", "reveal", "Reveal"),
        Binding("i", "import", "Import .env"),
    ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.variables: dict[str, str] = {}
        self.reveal = False
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Static("loading env store…", id="env-title", classes="pane-title")
        table: DataTable = DataTable(id="env-table", cursor_type="row")
        table.add_column("variable", key="key")
        table.add_column("value", key="value")
        yield table

    def on_mount(self) -> None:
        self.reload()

    # ------------------------------------------------------------------ worker plumbing
    def _store(self):
        from rv_tui.workspace.envstore import EnvStore

        return EnvStore(self.app.cluster)

    def _run(self, what: str, op) -> None:
        """Run ``op(store)`` in a worker, then reload; errors become notifications."""

        async def work() -> None:
            try:
                store = self._store()
                result = await op(store) if op is not None else None
                variables = await store.list()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                self.app.show_error(exc, f"env {what}")
                return
            self.post_message(m.EnvLoaded(variables))
            if isinstance(result, list) and result:
                self.app.notify(f"imported {len(result)} variable(s): {', '.join(result)}",
                                title="env")

        self.app.start_worker(work(), group="env", exclusive=False)

    def reload(self) -> None:
        self._run("load", None)

    def on_env_loaded(self, message: m.EnvLoaded) -> None:
        self.variables = dict(message.variables)
        self.loaded = True
        self.render_table()

    def render_table(self) -> None:
        from rv_tui.workspace.envstore import is_secret, mask

        table = self.query_one("#env-table", DataTable)
        row = table.cursor_row
        table.clear()
        for key in sorted(self.variables):
            value = self.variables[key]
            secret = is_secret(key)
            shown = value if (self.reveal or not secret) else mask(value, key=key)
            shown = shown.replace("\n", "⏎")
            table.add_row(Text(key, style="bold"),
                          Text(shown, style="yellow" if secret and not self.reveal else ""), key=key)
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))
        self.query_one("#env-title", Static).update(Text.assemble(
            (f"{len(self.variables)} variable(s) injected into every job", "bold"),
            ("   a add · e edit · d remove · r reveal · i import .env", "dim"),
            ("   values revealed" if self.reveal else "", "bold yellow")))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """enter on a row (the table's own binding) = edit."""
        event.stop()
        self.action_edit()

    def _selected(self) -> str | None:
        table = self.query_one("#env-table", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    # ------------------------------------------------------------------ actions
    def action_add(self) -> None:
        from rv_tui.workspace.envstore import EnvError, validate_key

        def check_key(k: str) -> str | None:
            try:
                validate_key(k.strip())
            except EnvError as exc:
                return exc.message + (f" ({exc.hint})" if exc.hint else "")
            return None

        def got_key(key: str | None) -> None:
            if key:
                self._ask_value(key.strip(), "")

        self.app.push_screen(PromptScreen("New variable name", placeholder="HF_TOKEN",
                                          validate=check_key), got_key)

    def _ask_value(self, key: str, current: str) -> None:
        from rv_tui.workspace.envstore import is_secret

        def got_value(value: str | None) -> None:
            if value is not None:
                self._run("set", lambda store: store.set(key, value))

        self.app.push_screen(PromptScreen(f"Value of {key}", current,
                                          password=is_secret(key) and not self.reveal,
                                          help_text="stored on the cluster, mode 0600"), got_value)

    def action_edit(self) -> None:
        key = self._selected()
        if key:
            self._ask_value(key, self.variables.get(key, ""))

    def action_remove(self) -> None:
        key = self._selected()
        if not key:
            return

        def done(ok: bool | None) -> None:
            if ok:
                self._run("remove", lambda store: store.remove(key))

        self.app.push_screen(ConfirmScreen(f"Remove {key}?", "Jobs submitted from now on won't see it.",
                                           yes="Remove", no="Keep"), done)

    def action_reveal(self) -> None:
        self.reveal = not self.reveal
        self.render_table()

    def action_import(self) -> None:
        from rv_tui.workspace.envstore import EnvError, parse_dotenv

        def check(path: str) -> str | None:
            p = Path(path).expanduser()
            try:
                parse_dotenv(p.read_text(encoding="utf-8"), source=str(p))
            except OSError as exc:
                return f"cannot read {p}: {exc.strerror or exc}"
            except EnvError as exc:
                return exc.message + (f" ({exc.hint})" if exc.hint else "")
            return None

        def done(path: str | None) -> None:
            if path:
                p = Path(path).expanduser()
                text = p.read_text(encoding="utf-8")
                self._run("import", lambda store: store.import_dotenv(text, source=str(p)))

        self.app.push_screen(PromptScreen("Import a .env file", ".env",
                                          help_text="every line is imported, or none if one is bad",
                                          validate=check), done)
