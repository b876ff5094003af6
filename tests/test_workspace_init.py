"""rv init, cache symlink migration and scratch keepalive against the local cluster's login node."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rv_tui.cluster.base import Cluster
from rv_tui.cluster.ssh import SshCluster
from rv_tui.config import ConfigDocument, load_config
from rv_tui.quoting import q
from rv_tui.workspace import keepalive
from rv_tui.workspace.caches import ensure_remote_setup, link_script
from rv_tui.workspace.init import parse_allocations

ALLOCATIONS = """Account                      Balance        Reserved       Available
-----------------          ---------       ---------       ---------
mygroup                       100000               0           87654
other_lab                      50000            1200           41000

for more information about a specific allocation,
run: 'allocations -a <allocation name>'
"""


def test_parse_allocations() -> None:
    assert parse_allocations(ALLOCATIONS) == ["mygroup", "other_lab"]
    assert parse_allocations("") == []


def test_link_script_quotes_hostile_names() -> None:
    s = link_script("x'; rm -rf ~; echo '", "/s/$(id)")
    assert "'x'\"'\"'; rm -rf ~; echo '\"'\"''" in s and "'/s/$(id)'" in s


def test_keepalive_due_and_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RV_HOME", str(tmp_path))
    assert keepalive.due()
    keepalive.stamp_path().write_text("1000\n")
    assert keepalive.due(now=1000 + 86400) and not keepalive.due(now=1000 + 3600)
    cmd = keepalive.keepalive_command("/scratch/a b", "/standard/g/$(x)")
    assert cmd.startswith("nohup sh -c ") and cmd.endswith("&")


@pytest.fixture
async def cluster(rv_home: Path) -> AsyncIterator[Cluster]:
    c = SshCluster.from_config(load_config())
    await c.connect()
    yield c
    await c.close()


HF_FILES = {
    "hub/models--x/blobs/abc": "weights",
    "hub/models--x/snapshots/1/config.json": "{}",
    ".hidden/token": "t",
    "name with spaces/ünï $(id).txt": "u",
    "conflict.txt": "from-home",
}


@pytest.mark.cluster
async def test_cache_migration_keeps_every_file_and_is_idempotent(cluster: Cluster) -> None:
    target = f"{cluster.scratch}/.cache/huggingface"
    setup = ["rm -rf \"$HOME/.cache/huggingface\"", f"rm -rf {q(target)}", f"mkdir -p {q(target)}",
             f"printf scratch-version > {q(target + '/conflict.txt')}"]
    for rel, data in HF_FILES.items():
        path = f"$HOME/.cache/huggingface/{rel}"
        d = path.rsplit("/", 1)[0]
        setup.append(f"mkdir -p \"$HOME\"/{q(d[6:])} && printf %s {q(data)} > \"$HOME\"/{q(path[6:])}")
    setup.append("ln -s hub/models--x/blobs/abc \"$HOME/.cache/huggingface/link\"")
    res = await cluster.exec(" && ".join(setup))
    assert res.ok, res.stderr

    links = {c.name: c for c in await ensure_remote_setup(cluster)}
    assert links["huggingface"].action == "migrated", links["huggingface"]
    assert set(links) == {"huggingface", "uv", "pip", "wandb", "triton", "torch"}
    check = await cluster.exec("readlink \"$HOME/.cache/huggingface\"")
    assert check.stdout.strip() == target
    for rel, data in HF_FILES.items():
        got = await cluster.exec(f"cat \"$HOME/.cache/huggingface/\"{q(rel)}")
        assert got.stdout == data, rel
    # the scratch copy that was there before is kept as a numbered backup, not lost
    backup = await cluster.exec(f"cat {q(target + '/conflict.txt.~1~')}")
    assert backup.stdout == "scratch-version"
    link = await cluster.exec(f"readlink {q(target + '/link')}")
    assert link.stdout.strip() == "hub/models--x/blobs/abc"

    again = {c.name: c.action for c in await ensure_remote_setup(cluster)}
    assert set(again.values()) == {"ok"}


@pytest.mark.cluster
async def test_keepalive_touches_scratch_in_background(cluster: Cluster, rv_home: Path) -> None:
    marker = f"{cluster.scratch}/.rv/keepalive-probe"
    res = await cluster.exec(f"mkdir -p {q(cluster.scratch + '/.rv')} && touch {q(marker)} && "
                             f"touch -a -d '2001-01-01' {q(marker)} && stat -c %X {q(marker)}")
    old = int(res.stdout.strip())
    config = load_config()
    config.scratch_keepalive.enabled = False
    assert keepalive.maybe_keepalive(cluster, config) is None
    config.scratch_keepalive.enabled = True
    task = keepalive.maybe_keepalive(cluster, config)
    assert task is not None
    await task
    assert keepalive.maybe_keepalive(cluster, config) is None  # once a day
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while loop.time() < deadline:
        now = int((await cluster.exec(f"stat -c %X {q(marker)}")).stdout.strip())
        if now > old:
            break
        await asyncio.sleep(0.3)
    assert now > old


@pytest.mark.cluster
def test_rv_init_non_interactive_is_idempotent(rv_home: Path, slurm_cluster) -> None:
    cfg = rv_home / "config.toml"
    doc = ConfigDocument.load(cfg)
    doc.unset("defaults.account")
    doc.save()
    env = {**os.environ, "RV_HOME": str(rv_home)}
    cmd = [sys.executable, "-m", "rv_tui", "init", "--any-user", "-y", "--json"]
    r1 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r1.returncode == 0, r1.stderr
    out = json.loads(r1.stdout)
    assert out["account"] == slurm_cluster.user  # first row of `allocations`
    assert set(out["caches"]) == {"huggingface", "uv", "pip", "wandb", "triton", "torch"}
    first = ConfigDocument.load(cfg)
    token = first.get("notifications.token")
    assert token and len(token) > 20
    assert first.get("connection.known_hosts") == slurm_cluster.known_hosts  # hand settings kept
    assert oct(cfg.stat().st_mode & 0o777) == "0o600"
    r2 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r2.returncode == 0, r2.stderr
    assert ConfigDocument.load(cfg).get("notifications.token") == token
    assert {v["action"] for v in json.loads(r2.stdout)["caches"].values()} == {"ok"}
    assert token not in r1.stdout + r1.stderr + r2.stdout + r2.stderr
