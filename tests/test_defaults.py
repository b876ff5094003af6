"""Every config default the seeds list is used where its flag is missing; ``paths.home`` is dropped.

The seeds' table: ``defaults.account``, ``defaults.gpu_type``, ``defaults.time``,
``defaults.partition`` -- "default values used when flags are not specified on the command line".
``rv cost`` ignored all but the account (always 2:59:00, every type).  ``paths.home`` was read
nowhere: it is dropped (every remote command runs in the login shell, whose ``$HOME`` is right),
and configs that still carry it (the seeds' own example) load without a warning.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from rv_tui.cli.main import main as rv_main
from rv_tui.config import ConfigDocument, ConfigError, load_config, write_default_config

SEEDS_EXAMPLE = """\
[connection]
host = "rivanna"
user = "abc1de"
hostname = "rivanna.hpc.virginia.edu"
[defaults]
account = "mygroup"
gpu_type = "a6000"
time = "2:59:00"
partition = "gpu-a6000"
ai_naming = true
ai_api_key = "sk-..."
[paths]
scratch = "/scratch/abc1de"
home = "/home/abc1de"
[notifications]
enabled = true
email = "abc1de@virginia.edu"
token = "..."
[scratch_keepalive]
enabled = true
[shared]
hf_cache = "/standard/mygroup/.cache/huggingface"
"""


def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, defaults: str) -> Path:
    home = tmp_path / "rv-home"
    home.mkdir(parents=True)
    (home / "config.toml").write_text(f'[connection]\nhost = "h"\nuser = "u1"\n\n[defaults]\n{defaults}\n')
    (home / "config.toml").chmod(0o600)
    monkeypatch.setenv("RV_HOME", str(home))
    return home


def _cost(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert rv_main(["cost", "--offline", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_cost_uses_defaults_time(tmp_path, monkeypatch, capsys) -> None:
    _home(tmp_path, monkeypatch, 'time = "1:00:00"')
    data = _cost(capsys)
    assert data["time_s"] == 3600
    v100 = next(t for t in data["types"] if t["gpu_type"] == "v100")
    assert v100["total_su"] == 20.96  # one hour, not 2:59:00
    assert _cost(capsys, "--time", "2h")["time_s"] == 7200  # the flag wins


def test_cost_uses_defaults_gpu_type_and_the_flag_wins(tmp_path, monkeypatch, capsys) -> None:
    _home(tmp_path, monkeypatch, 'gpu_type = "a6000"\ntime = "30m"')
    data = _cost(capsys, "-g", "2")
    assert [t["gpu_type"] for t in data["types"]] == ["a6000"] and data["time_s"] == 1800
    assert [t["gpu_type"] for t in _cost(capsys, "-t", "v100")["types"]] == ["v100"]


def test_cost_with_gpu_type_any_lists_what_defaults_partition_serves(tmp_path, monkeypatch, capsys) -> None:
    _home(tmp_path, monkeypatch, 'gpu_type = "any"\npartition = "gpu-a100-80"')
    assert [t["gpu_type"] for t in _cost(capsys)["types"]] == ["a100_80"]
    _home(tmp_path / "b", monkeypatch, 'partition = "gpu"')  # the shared partition: its types only
    names = {t["gpu_type"] for t in _cost(capsys)["types"]}
    assert names == {"a6000", "a40", "a100_40", "a100_80", "v100", "h200"}


def test_cost_without_config_keeps_the_builtin_defaults(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RV_HOME", str(tmp_path / "none"))
    data = _cost(capsys)
    assert data["time_s"] == 10740 and len(data["types"]) > 1


def test_run_and_up_requests_take_every_seeds_default() -> None:
    from rv_tui.allocator.plan import request_from_args
    from rv_tui.config import parse_config_text

    config = parse_config_text(SEEDS_EXAMPLE)
    req = request_from_args(argparse.Namespace(), config)
    assert (req.gpu_type, req.time_s, req.account, req.partition) == ("a6000", 10740, "mygroup", "gpu-a6000")
    req = request_from_args(argparse.Namespace(type="v100", time="1h", account="other"), config)
    assert (req.gpu_type, req.time_s, req.account, req.partition) == ("v100", 3600, "other", None)


def test_paths_home_is_dropped_but_the_seeds_example_still_loads(tmp_path) -> None:
    p = tmp_path / "config.toml"
    p.write_text(SEEDS_EXAMPLE)
    p.chmod(0o600)
    c = load_config(p)
    assert c is not None and c.warnings == []  # no nag for a key the seeds themselves show
    assert not hasattr(c.paths, "home") and not hasattr(c, "remote_home")
    doc = ConfigDocument.load(p)
    with pytest.raises(ConfigError) as err:
        doc.set("paths.home", "/home/x")
    assert "$HOME" in err.value.message and "paths.home" in (err.value.hint or "")
    assert doc.unset("paths.home") is True
    assert "home" not in doc.save().paths.__dict__
    fresh = write_default_config("abc1de", path=tmp_path / "new.toml")
    assert "home =" not in (tmp_path / "new.toml").read_text() and fresh.scratch == "/scratch/abc1de"


def test_tui_launch_form_takes_account_and_partition_from_the_config() -> None:
    from rv_tui.config import parse_config_text
    from rv_tui.tui.panes.launch import form_request

    config = parse_config_text(SEEDS_EXAMPLE)
    req = form_request({"gpus": "2", "gpu_type": "a6000", "time": "1h"}, config)
    assert (req.account, req.partition, req.gpu_type, req.time_s) == ("mygroup", "gpu-a6000", "a6000", 3600)
    req = form_request({"gpus": "1", "gpu_type": "v100", "time": "1h"}, config)
    assert (req.account, req.partition) == ("mygroup", None)  # gpu-a6000 does not serve v100
    assert form_request({"gpus": "1"}).account is None  # no config: nothing invented
