"""``rv cost`` (pure, from the GPU table) and the dry-run renderer."""

from __future__ import annotations

import json

from rv_tui.cli.main import main as rv_main


def test_cost_all_types_sorted(capsys):
    assert rv_main(["cost", "-g", "1", "--time", "2h", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    totals = [t["total_su"] for t in data["types"]]
    assert totals == sorted(totals)
    assert data["types"][0]["gpu_type"] == "mig" and data["types"][0]["free"]
    v100 = next(t for t in data["types"] if t["gpu_type"] == "v100")
    assert v100["total_su"] == 41.92  # 20.96 x 1 x 2 h


def test_cost_excludes_types_that_cannot_take_the_count(capsys):
    assert rv_main(["cost", "-g", "8", "--json"]) == 0
    names = {t["gpu_type"] for t in json.loads(capsys.readouterr().out)["types"]}
    assert "mig" not in names and "h200" not in names and "a100_80" in names


def test_cost_alias_and_text(capsys):
    assert rv_main(["cost", "-g", "4", "-t", "a100", "--time", "1.5d"]) == 0
    out = capsys.readouterr().out
    assert "a100_80" in out and "4 GPU(s) for 1-12:00:00" in out
    assert "73,280.16" in out  # 508.89 x 4 x 36 h


def test_cost_errors_are_clear(capsys):
    assert rv_main(["cost", "-t", "a9000"]) == 2
    err = capsys.readouterr().err
    assert "unknown GPU type" in err and "a6000" in err
    assert rv_main(["cost", "--time", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err
    assert rv_main(["cost", "-g", "2", "-t", "mig"]) == 2
