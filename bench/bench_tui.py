#!/usr/bin/env python3
"""TUI responsiveness: time to first paint, and frame time while the log pane ingests 10k lines/s.

Everything is measured in one run on the same machine, headless (``App.run_test``), against the
seeded demo cluster with a frozen clock:

* first paint: app start until the cluster table shows the first poll; the baseline is a bare
  Textual app with one Static, started the same way (ratio = rv / bare);
* frame time: a 60 Hz timer records how late each tick fires (event-loop lag, which includes
  every render the app does in between) and a keypress (a Key event posted as the driver does, until its binding's handler ran) is timed,
  first idle, then while LogBatch messages bring 10,000 lines/s (500 lines every 50 ms, what the
  log worker posts) for the same duration; reported as ratios loaded / idle.

Usage: python bench/bench_tui.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual import events  # noqa: E402
from textual.app import App, ComposeResult  # noqa: E402
from textual.widgets import Static  # noqa: E402

from rv_tui.tui import messages as m  # noqa: E402
from rv_tui.tui.panes.logs import LogsPane  # noqa: E402
from rv_tui.tui.scenes import SIZE, scene_app  # noqa: E402
from rv_tui.tui.widgets.logview import LogView  # noqa: E402


class Bare(App):
    def compose(self) -> ComposeResult:
        yield Static("hello")


async def first_paint_bare() -> float:
    t0 = time.perf_counter()
    app = Bare()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        return time.perf_counter() - t0


async def first_paint_rv(workdir: Path) -> float:
    t0 = time.perf_counter()
    app = scene_app(workdir)
    async with app.run_test(size=SIZE) as pilot:
        while app.query_one("#cluster-table").row_count == 0:  # type: ignore[attr-defined]
            await asyncio.sleep(0.005)
        await pilot.pause()
        return time.perf_counter() - t0


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


async def frame_times(workdir: Path, seconds: float) -> dict[str, dict[str, float]]:
    app = scene_app(workdir)
    out: dict[str, dict[str, float]] = {}
    async with app.run_test(size=SIZE) as pilot:
        while app.state.snapshot is None:
            await asyncio.sleep(0.01)
        await pilot.press("5")
        pane = app.query_one(LogsPane)
        pane.job_id = "bench"
        app.query_one(LogView).focus()
        view = app.query_one(LogView)
        period = 1 / 60

        async def measure(label: str, load: bool) -> None:
            lags: list[float] = []
            keys: list[float] = []
            last = [time.perf_counter()]

            def tick() -> None:
                now = time.perf_counter()
                lags.append(max(0.0, now - last[0] - period))
                last[0] = now

            timer = app.set_interval(period, tick)
            stop = time.perf_counter() + seconds
            n = 0

            async def feeder() -> None:
                nonlocal n
                start = time.perf_counter()
                k = 0
                while time.perf_counter() < stop:
                    batch = [m.LogEntry(i % 4, "err" if i % 17 == 0 else "out",
                                        f"step {n + i} loss {1.0 / (n + i + 1):.5f} lr 3e-4 "
                                        "tokens/s 51234 " + "x" * (i % 40))
                             for i in range(500)]
                    n += 500
                    pane.post_message(m.LogBatch("bench", batch))
                    k += 1  # keep the rate on a fixed beat, whatever the batch cost
                    await asyncio.sleep(max(0.0, start + k * 0.05 - time.perf_counter()))

            task = asyncio.create_task(feeder()) if load else None
            handled = asyncio.Event()
            original = pane.action_toggle_follow

            def toggle() -> None:  # the key's handler: record when it ran
                original()
                handled.set()

            pane.action_toggle_follow = toggle  # type: ignore[method-assign]
            while time.perf_counter() < stop:
                handled.clear()
                t = time.perf_counter()
                app.post_message(events.Key("f", "f"))  # as the driver delivers a keypress
                await asyncio.wait_for(handled.wait(), 10)
                keys.append(time.perf_counter() - t)
                await asyncio.sleep(0.1)
            pane.action_toggle_follow = original  # type: ignore[method-assign]
            if task:
                await task
            await pilot.pause()
            timer.stop()
            out[label] = {"lag_mean_ms": statistics.fmean(lags) * 1000,
                          "lag_p95_ms": pct(lags, 0.95) * 1000,
                          "key_p50_ms": statistics.median(keys) * 1000,
                          "key_p95_ms": pct(keys, 0.95) * 1000,
                          "lines": float(n), "rate": n / seconds}

        await measure("idle", load=False)
        await measure("ingest", load=True)
        out["ingest"]["kept_lines"] = float(len(view.entries))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bare = min(asyncio.run(first_paint_bare()) for _ in range(3))
        rv = min(asyncio.run(first_paint_rv(Path(tmp) / f"fp{i}")) for i in range(3))
        ft = asyncio.run(frame_times(Path(tmp) / "ft", args.seconds))
    idle, ingest = ft["idle"], ft["ingest"]
    print(f"first paint: rv {rv * 1000:.0f} ms (to first poll shown), bare Textual app {bare * 1000:.0f} ms, "
          f"ratio {rv / bare:.2f}x")
    print(f"log ingest: {ingest['rate']:.0f} lines/s for {args.seconds:.0f}s "
          f"({ingest['lines']:.0f} lines, {ingest['kept_lines']:.0f} kept)")
    for k in ("lag_mean_ms", "lag_p95_ms", "key_p50_ms", "key_p95_ms"):
        ratio = ingest[k] / idle[k] if idle[k] > 0 else float("inf")
        print(f"  {k:11s} idle {idle[k]:7.2f}  ingesting {ingest[k]:7.2f}  ratio {ratio:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
