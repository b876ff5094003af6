"""``rv cost`` draws a plotext bar chart of SU per GPU type, only when stdout is a terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from rv_tui.cli.cost import cost_rows, su_chart

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RV = [sys.executable, "-m", "rv_tui.cli.main"]


def test_chart_has_one_bar_per_type_in_its_fixed_colour() -> None:
    rows = cost_rows(1, 10740)
    text = su_chart(rows, 100)
    plain = ANSI.sub("", text).splitlines()
    assert all(len(line) <= 100 for line in plain)
    for r in rows:
        label = f"{r['gpu_type']} " + ("free" if r["free"] else f"{r['total_su']:,.0f} SU")
        assert any(label in line for line in plain), label
    assert "38;2;220;38;38" in text  # a40 is always the same red


@settings(max_examples=30, deadline=None)
@given(gpus=st.integers(1, 8), hours=st.integers(1, 72), width=st.integers(40, 200))
def test_chart_fits_any_width(gpus: int, hours: int, width: int) -> None:
    try:
        rows = cost_rows(gpus, hours * 3600)
    except Exception:  # noqa: BLE001 - no type takes that many GPUs
        return
    text = su_chart(rows, width)
    assert all(len(line) <= width for line in ANSI.sub("", text).splitlines())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["RV_HOME"] = env.get("RV_HOME", "/nonexistent-rv-home")
    env["COLUMNS"] = "100"
    return env


def test_no_chart_when_piped() -> None:
    out = subprocess.run([*RV, "cost", "-g", "2", "--offline"], capture_output=True, text=True,
                         env=_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert "total SU" in out.stdout and "┤" not in out.stdout


def test_chart_on_a_terminal() -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: rv cost with a pty as stdout
        os.execvpe(RV[0], [*RV, "cost", "-g", "2", "--offline"], _env())
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    text = ANSI.sub("", b"".join(chunks).decode(errors="replace"))
    assert "total SU" in text and "┤" in text and "h200" in text
