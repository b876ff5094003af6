"""Small modal dialogs: a validated prompt, a yes/no confirm, a read-only text viewer.

The prompt takes a ``validate`` callback returning the reason a value is refused (or None), so
invalid values are refused in place with the reason, and the dialog stays open to fix them.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class PromptScreen(ModalScreen[str | None]):
    """Ask for one value; ``validate(value)`` returns a refusal reason or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, value: str = "", *, placeholder: str = "",
                 password: bool = False, help_text: str = "",
                 validate: Callable[[str], str | None] | None = None) -> None:
        super().__init__()
        self._title = title
        self._value = value
        self._placeholder = placeholder
        self._password = password
        self._help = help_text
        self._validate = validate

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title")
            if self._help:
                yield Static(self._help, classes="dialog-help")
            yield Input(self._value, placeholder=self._placeholder, password=self._password,
                        id="prompt-input")
            yield Static("", id="prompt-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def _submit(self) -> None:
        value = self.query_one(Input).value
        reason = self._validate(value) if self._validate else None
        if reason:
            self.query_one("#prompt-error", Static).update(f"✗ {reason}")
            return
        self.dismiss(value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no; ``y`` confirms, ``n``/escape refuse, enter presses the focused button, which is
    the safe one ("No") unless ``default="yes"``: a stray Enter never launches or cancels."""

    BINDINGS = [Binding("y", "yes", "Yes"), Binding("n,escape", "no", "No")]

    def __init__(self, title: str, body: str = "", *, yes: str = "Yes", no: str = "No",
                 default: str = "no") -> None:
        super().__init__()
        self._title, self._body, self._yes, self._no = title, body, yes, no
        self._default = default

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title")
            if self._body:  # plain text: a command may hold [brackets]
                yield Static(self._body, classes="dialog-help", markup=False, id="confirm-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self._yes} (y)", variant="error", id="yes")
                yield Button(f"{self._no} (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#yes" if self._default == "yes" else "#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)


class TextScreen(ModalScreen[None]):
    """A scrollable read-only text (an sbatch script, the help)."""

    BINDINGS = [Binding("escape,q", "close", "Close")]

    def __init__(self, title: str, text: str, *, markup: bool = False) -> None:
        super().__init__()
        self._title, self._text, self._markup = title, text, markup

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide"):
            yield Label(self._title, classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Static(self._text, markup=self._markup, id="text-body")
            yield Static("esc to close", classes="dialog-help")

    def action_close(self) -> None:
        self.dismiss(None)
