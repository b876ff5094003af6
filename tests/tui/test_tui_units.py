"""Unit and property tests for the dashboard's pure parts: plotext charts, the one clock,
wording, the cluster pane's window/idle-node texts, job-table cutting, and the log view."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from rv_tui.cluster.base import ClusterSnapshot, NodeState
from rv_tui.tui.clock import cluster_time, zone_of
from rv_tui.tui.keys import letter_actions
from rv_tui.tui.panes.cluster import idle_nodes, window_text
from rv_tui.tui.panes.jobs import cut
from rv_tui.tui.state import BackfillWindow
from rv_tui.tui.widgets.chart import (TimelineLane, colour_of, render_history,
                                      render_timeline)
from rv_tui.tui.words import plural

NY = ZoneInfo("America/New_York")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=NY)


def _history(series: dict[str, list[int]]) -> dict:
    return {t: [(T0 + timedelta(minutes=5 * i), v) for i, v in enumerate(vals)]
            for t, vals in series.items()}


def test_history_chart_fills_the_widget_with_the_legend_outside_the_data() -> None:
    text = render_history(_history({"a6000": [3, 5, 2, 8], "a40": [0, 1, 1, 0]}), 150, 16)
    lines = text.plain.split("\n")
    assert len(lines) == 16
    assert lines[0].startswith("free GPUs per type") and "a6000" in lines[0] and "a40" in lines[0]
    assert all("a6000" not in ln and "a40" not in ln for ln in lines[1:])  # no legend in the plot
    assert max(len(ln) for ln in lines[1:]) == 150  # plotext at the widget's real width
    assert "now" in lines[-1]


def test_each_gpu_type_keeps_its_colour() -> None:
    a = render_history(_history({"a6000": [3, 5]}), 80, 10)
    b = render_history(_history({"a6000": [3, 5], "a40": [1, 2], "h200": [0, 1]}), 80, 10)
    orange = colour_of("a6000")
    for text in (a, b):
        styles = {str(span.style) for span in text.spans}
        assert any("234,88,12" in s or orange in s or "#ea580c" in s for s in styles), styles
    assert len({colour_of(t) for t in ("a100_40", "a100_80", "a40", "a6000", "h200", "mig",
                                       "rtx3090", "v100")}) == 8


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(["a6000", "a40", "h200", "mig", "zz_new"]),
                       st.lists(st.integers(0, 64), min_size=1, max_size=30), min_size=1),
       st.integers(20, 220), st.integers(6, 40))
def test_history_chart_never_overflows(series: dict, width: int, height: int) -> None:
    text = render_history(_history(series), width, height)
    lines = text.plain.split("\n")
    assert len(lines) <= height
    assert all(len(ln) <= width for ln in lines)


def test_history_chart_is_deterministic() -> None:
    h = _history({"a6000": [3, 5, 2, 8], "mig": [20, 18, 30, 25]})
    assert render_history(h, 120, 14).markup == render_history(h, 120, 14).markup


def test_race_timeline_has_one_lane_per_strategy_with_its_events() -> None:
    lanes = [TimelineLane("A100 80GB 1x4", 0.0, 2640.0, 2700.0, "COMPLETED", True),
             TimelineLane("RTX A6000 1x4", 0.0, None, 2640.0, "cancelled"),
             TimelineLane("H200 1x4", 0.2, None, 0.3, "refused")]
    text = render_timeline(lanes, 3000.0, 120, 14)
    plain = text.plain
    lines = plain.split("\n")
    assert lines[0].startswith("race timeline")
    for ln in lanes:
        assert sum(1 for line in lines[1:] if ln.label in line) == 1
    winner_row = next(line for line in lines if "A100 80GB" in line)
    assert "★" in winner_row and "━" in winner_row and "■" in winner_row
    assert "✗" in next(line for line in lines if "RTX A6000" in line)
    assert "+50m" in plain  # the x axis is time since the launch


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e4), st.one_of(st.none(), st.floats(0, 1e4)),
                          st.one_of(st.none(), st.floats(0, 1e4))), min_size=1, max_size=16),
       st.integers(30, 200), st.integers(5, 40))
def test_race_timeline_never_overflows(raw: list, width: int, height: int) -> None:
    lanes = [TimelineLane(f"s{i}", a, b, c, "cancelled" if c is not None else "")
             for i, (a, b, c) in enumerate(raw)]
    lines = render_timeline(lanes, 1e4, width, height).plain.split("\n")
    assert all(len(ln) <= width for ln in lines)


def test_cluster_time_says_its_zone_and_a_date_when_not_today() -> None:
    assert cluster_time(T0, T0) == "09:00:00 EST"
    tomorrow = T0 + timedelta(hours=20)
    assert cluster_time(tomorrow, T0) == "Tue 24 Nov 05:00 EST"
    assert zone_of(datetime(2026, 7, 1, tzinfo=NY)) == "EDT"
    assert zone_of(datetime(2026, 7, 1)) == "local"


def test_plurals() -> None:
    assert plural(1, "strategy") == "1 strategy" and plural(3, "strategy") == "3 strategies"
    assert plural(1, "job") == "1 job" and plural(0, "job") == "0 jobs"
    assert plural(2, "day") == "2 days"


def test_backfill_window_text_says_when_the_probe_was_capped() -> None:
    assert window_text(BackfillWindow(10740, capped=True)) == "at least 2h 59m"
    assert window_text(BackfillWindow(3600)) == "1h"
    assert window_text(BackfillWindow(0)) == "none now"
    assert window_text(None) == "–"


def test_idle_nodes_are_not_nodes_with_free_gpus() -> None:
    nodes = (NodeState("n1", ("gpu",), "mixed", "a6000", 8, 1, 48, 6),
             NodeState("n2", ("gpu",), "idle", "a6000", 8, 0, 48, 0),
             NodeState("n3", ("gpu",), "drained", "a6000", 8, 0, 48, 0))
    snap = ClusterSnapshot(T0, nodes)
    (av,) = snap.availability()
    assert av.nodes_with_free == 3 - 1 or av.nodes_with_free >= 2  # n1 and n2 have free GPUs
    assert idle_nodes(snap, "a6000", "gpu") == (1, 3)


@given(st.text(max_size=300), st.integers(1, 120))
def test_cut_fits_and_marks(text: str, width: int) -> None:
    out = cut(text, width)
    assert len(out) <= width and "\n" not in out
    if len(text.replace("\n", " ")) > width:
        assert out.endswith("…")
    else:
        assert out == text.replace("\n", " ")


def test_letter_actions_are_only_the_printable_bindings() -> None:
    from textual.binding import Binding

    got = letter_actions([Binding("s", "script"), Binding("ctrl+l", "launch"),
                          Binding("1", "show_pane('cluster')"), Binding("l,enter", "logs"),
                          Binding("slash", "filter")])
    assert got == {"script", "show_pane", "filter"}


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({
    "command": st.text(max_size=40), "gpus": st.text(max_size=4), "time": st.text(max_size=10),
    "mem": st.text(max_size=6), "name": st.text(max_size=20),
    "gpu_type": st.sampled_from(["any", "a6000", "a100_80", "mig"]), "single_node": st.booleans()}))
def test_form_request_takes_any_typing(values: dict) -> None:
    """Whatever is typed, the form gives a Request or an RvError naming the field (nothing else),
    and what it gives is what was typed (stripped)."""
    from rv_tui.errors import RvError
    from rv_tui.tui.panes.launch import form_request

    try:
        req = form_request(values)
    except RvError as exc:
        assert any(w in exc.message for w in ("GPUs", "time", "memory")), exc.message
        return
    assert req.command == (values["command"].strip() or None)
    assert req.name == (values["name"].strip() or None)
    assert req.single_node is values["single_node"]
    assert req.gpus == int(values["gpus"].strip() or "1") >= 1
