"""The ``?`` help screen: what each pane does and its keys."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Markdown

HELP = """\
## Panes
| key | pane | what it shows |
|---|---|---|
| `1` | Cluster | free/total GPUs per type and partition, queue depth, backfill window, SU/hr; history chart |
| `2` | Jobs | your jobs grouped by request; pending reason in plain words, ETA, elapsed |
| `3` | Launch | request form; dry-run preview of every strategy and its sbatch script; launch the race |
| `4` | Race | one lane per strategy; the winner lights up, losers are cancelled; event timeline |
| `5` | Logs | merged per-node log tail; node filter, search, follow/pause |
| `6` | Env | `rv env` variables injected into every job (secrets masked) |
| `7` | Config | `config.toml` fields, validated; saving keeps your comments |
| `8` | Commands | every remote command rv ran, with duration and exit status |

## Everywhere
`ctrl+p` command palette · `ctrl+r` refresh now · `?` this help · `tab`/`shift+tab` move focus ·
`q` or `ctrl+q` quit

`esc` leaves a text field or list (normal mode): digits, `?`, `q` and the one-letter keys are
text while a field has focus and never fire there.

## Cluster
`b` show/hide the backfill column (it costs `sbatch --test-only` probes, so it is off on a real
cluster until asked for; re-probed only when older than 60 s)

## Jobs
`enter` details · `l` logs · `c` cancel (with the other jobs of its race; default: keep) ·
`a` attach (shell on the node) · `/` filter as you type (`esc` clears)

## Launch
`tab` between fields · `ctrl+t` (or enter) preview strategies · `s` sbatch script of the highlighted strategy ·
`ctrl+l` launch the race: re-plans first when the form changed since the preview, then asks
(command, name, time, GPUs, every strategy's SU; the default is Back)

## Race
`l` the winner's logs · `x` abort (only while racing)

## Logs
`f` follow/pause · `/` search · `n` node filter · `e` stderr only · `end` jump to the end

## Env
`a` add · `e`/`enter` edit · `d` remove · `r` reveal values · `i` import a `.env` file

## Config
`enter` edit · `x` unset · `r` reveal secrets · `ctrl+r` reload
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide", id="help"):
            yield Label("rv — keys", classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Markdown(HELP)

    def action_close(self) -> None:
        self.dismiss(None)
