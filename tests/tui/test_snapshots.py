"""SVG snapshot tests: one per pane, on the seeded demo cluster with a frozen clock.

The scenes (rv_tui/tui/scenes.py) are the same ones scripts/screenshots.py renders, so the
README's screenshots and these snapshots cannot drift apart.  Update after inspecting the
report: ``pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rv_tui.tui import scenes


@pytest.mark.parametrize("name", list(scenes.SCENES))
def test_pane_snapshot(name: str, snap_compare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RV_HOME", str(tmp_path))
    app = scenes.scene_app(tmp_path / "home", patch=monkeypatch.setattr)  # undone after the test
    assert snap_compare(app, terminal_size=scenes.SIZE, run_before=scenes.SCENES[name])
