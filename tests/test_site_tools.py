"""UVA site tools (``allocations``, ``hdquota``): parsers, ``rv status`` / ``rv cost`` sections on
the demo and on the real local cluster (whose stand-in tools print Rivanna's format), and a
cluster without the tools (plain Slurm) leaving the sections out without an error."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rv_tui.cli.main import main as rv_main
from rv_tui.cli.status import render_site
from rv_tui.cluster.base import ExecResult
from rv_tui.account import fetch_site_info, format_size
from rv_tui.slurm.site import (
    SITE_COMMAND, SITE_DELIMITER, SiteInfo, allocation_accounts, parse_allocations, parse_hdquota,
    parse_site_output,
)

ALLOCATIONS = """Account                      Balance        Reserved       Available
-----------------          ---------       ---------       ---------
rvtest                        100000               0           87654
rvtest_lab                     50000            1200           41000

for more information about a specific allocation,
run: 'allocations -a <allocation name>'
"""

HDQUOTA = """Storage Type                    Location                 Size       Used      Avail   Use%
--------------------------------------------------------------------------------------------
Home Directory                  /home/rvtest            200 GB    12.5 GB   187.5 GB     6%
Scratch Directory               /scratch/rvtest          10 TB     1.2 TB     8.8 TB    12%
Project Storage (Group)         /project/my_lab         1.5 TB     1.4 TB     0.1 TB    93%
"""


def test_parse_allocations_rows_and_numbers() -> None:
    rows = parse_allocations(ALLOCATIONS)
    assert [(a.account, a.balance_su, a.reserved_su, a.available_su) for a in rows] == [
        ("rvtest", 100000, 0, 87654), ("rvtest_lab", 50000, 1200, 41000)]
    assert rows[0].used_su == 100000 - 87654
    assert allocation_accounts(ALLOCATIONS) == ["rvtest", "rvtest_lab"]
    assert parse_allocations("") == []
    # thousands separators and fractional SUs
    assert parse_allocations("lab  1,000,000.5  0  999,999.25\n")[0].available_su == 999999.25


def test_parse_allocations_ignores_noise() -> None:
    noise = ("bash: allocations: command not found\nAccount Balance Reserved Available\n"
             "x'; rm -rf ~  1 2 3\n$(id) 1 2 3\nrun: 'allocations -a <allocation name>'\n"
             "lab 1 2\n")
    assert parse_allocations(noise) == []


def test_init_uses_the_shared_parser() -> None:
    import rv_tui.workspace.init as init

    assert init.parse_allocations is allocation_accounts  # one parser, not a copy
    assert init.parse_allocations(ALLOCATIONS) == ["rvtest", "rvtest_lab"]


def test_parse_hdquota_multiword_types_units_levels() -> None:
    rows = parse_hdquota(HDQUOTA)
    assert [r.storage_type for r in rows] == ["Home Directory", "Scratch Directory", "Project Storage (Group)"]
    home, scratch, project = rows
    assert home.location == "/home/rvtest" and home.size_bytes == 200 * 1024 ** 3
    assert home.used_bytes == int(12.5 * 1024 ** 3) and home.use_percent == 6
    assert scratch.size_bytes == 10 * 1024 ** 4
    assert (home.level, scratch.level, project.level) == ("green", "green", "red")
    assert parse_hdquota("x  /y  1G  700M  300M  65%\n")[0].level == "yellow"  # compact sizes
    assert parse_hdquota("Storage Type Location Size Used Avail Use%\n") == []
    assert format_size(home.used_bytes, home.size_bytes) == "12.5 GB"
    assert format_size(scratch.size_bytes) == "10 TB"


def test_site_output_split_and_missing_tools() -> None:
    info = parse_site_output(f"{ALLOCATIONS}{SITE_DELIMITER}\n{HDQUOTA}")
    assert info.account().account == "rvtest" and info.account("rvtest_lab").available_su == 41000
    assert info.account("nope").account == "rvtest"  # an unknown configured account: the first row
    assert len(info.storage) == 3
    empty = parse_site_output(f"{SITE_DELIMITER}\n")  # plain Slurm: both tools missing
    assert empty == SiteInfo() and empty.account() is None
    assert parse_site_output("garbage") == SiteInfo()
    assert render_site({"account": None, "allocations": [], "storage": []}) == []


class _FailingCluster:
    async def exec(self, command: str, *, timeout: float | None = None) -> ExecResult:
        raise ConnectionError("connection lost")


async def test_fetch_never_raises() -> None:
    info = await fetch_site_info(_FailingCluster())  # type: ignore[arg-type]
    assert info.allocations == () and info.storage == () and "connection lost" in (info.error or "")


def test_status_render_colours_storage_levels() -> None:
    st = {**SiteInfo(tuple(parse_allocations(ALLOCATIONS)), tuple(parse_hdquota(HDQUOTA))).to_json("rvtest_lab")}
    lines = render_site(st, colour=True)
    assert lines[0] == "Account rvtest_lab | 41,000 SUs remaining"
    text = "\n".join(lines)
    assert "\x1b[31m93%\x1b[0m" in text and "\x1b[32m6%\x1b[0m" in text
    assert "\x1b[" not in "\n".join(render_site(st, colour=False))
    assert "12.5 GB/200 GB" in text and "1.2 TB/10 TB" in text


@pytest.fixture
def demo_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RV_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def test_demo_status_and_cost_show_balance(capsys, demo_home) -> None:
    assert rv_main(["--demo", "--seed", "1", "status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["account"]["available_su"] > 0 and st["storage"]
    assert rv_main(["--demo", "--seed", "1", "status"]) == 0
    out = capsys.readouterr().out
    assert f"Account {st['account']['account']} | " in out and "SUs remaining" in out
    assert "/scratch/" in out
    assert rv_main(["--demo", "--seed", "1", "cost", "-g", "8", "-t", "a100_80", "--time", "1d", "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert cost["balance"]["available_su"] == st["account"]["available_su"]
    assert cost["types"][0]["fits_balance"] is (cost["types"][0]["total_su"] <= cost["balance"]["available_su"])


def test_cost_without_a_cluster_asks_nothing(capsys, demo_home) -> None:
    assert rv_main(["cost", "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["balance"] is None and data["balance_error"] is None
    assert all(t["fits_balance"] is None for t in data["types"])
    assert "demo" not in captured.err  # no demo cluster was opened behind the user's back


# ----------------------------------------------------------------------------- real cluster


@pytest.fixture
async def cluster(rv_home: Path) -> AsyncIterator:
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config

    c = SshCluster.from_config(load_config())
    await c.connect()
    yield c
    await c.close()


def _site_file(slurm_cluster, tool: str) -> str:
    return (Path(slurm_cluster.state_dir) / "site" / f"{tool}.txt").read_text()


@pytest.mark.cluster
async def test_site_tools_on_the_cluster_and_without_them(cluster, slurm_cluster) -> None:
    info = await fetch_site_info(cluster)
    assert info.allocations == tuple(parse_allocations(_site_file(slurm_cluster, "allocations")))
    assert info.storage == tuple(parse_hdquota(_site_file(slurm_cluster, "hdquota")))
    assert info.allocations and info.storage
    # a plain Slurm cluster: the tools are not on PATH; the same command is quiet and succeeds
    res = await cluster.exec("PATH=/usr/bin:/bin; " + SITE_COMMAND)
    assert res.ok and res.stderr == ""
    assert parse_site_output(res.stdout) == SiteInfo()


@pytest.mark.cluster
def test_status_and_cost_on_the_cluster(rv_home, slurm_cluster, capsys) -> None:
    expected = {a.account: a for a in parse_allocations(_site_file(slurm_cluster, "allocations"))}
    mine = expected[slurm_cluster.user]  # rv_home's config: defaults.account = the user
    assert rv_main(["status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["connection"]["ok"] and st["account"]["account"] == slurm_cluster.user
    assert st["account"]["available_su"] == mine.available_su
    assert {s["location"] for s in st["storage"]} >= {f"/scratch/{slurm_cluster.user}"}
    assert rv_main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"Account {slurm_cluster.user} | {mine.available_su:,.0f} SUs remaining" in out
    assert "Scratch Directory" in out
    assert rv_main(["cost", "-g", "1", "-t", "v100", "--time", "1h", "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert cost["balance"]["account"] == slurm_cluster.user and cost["types"][0]["fits_balance"] is True
    assert rv_main(["cost", "-g", "1", "-t", "v100", "--offline", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["balance"] is None
