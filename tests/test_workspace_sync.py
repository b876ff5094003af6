"""Sync and snapshots end to end against the local Slurm cluster's login node."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rv_tui.cluster.base import Cluster
from rv_tui.cluster.ssh import SshCluster
from rv_tui.config import load_config
from rv_tui.quoting import q
from rv_tui.workspace import snapshots, sync
from rv_tui.workspace.sync import compute_plan, LocalFile, RemoteFile

pytestmark = []


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
async def cluster(rv_home: Path) -> AsyncIterator[Cluster]:
    c = SshCluster.from_config(load_config())
    await c.connect()
    yield c
    await c.close()


@pytest.fixture
async def workspace(cluster: Cluster) -> AsyncIterator[str]:
    ws = f"{cluster.scratch}/rv-workspaces/test-{secrets.token_hex(4)}/main"
    yield ws
    await cluster.exec(f"rm -rf {q(ws.rsplit('/', 1)[0])}")


async def remote_tree(cluster: Cluster, d: str) -> dict[str, str]:
    """path -> sha256 of every file under d."""
    res = await cluster.exec(f"cd {q(d)} && find . -type f -printf '%P\\0' | sort -z | "
                             "xargs -0 -r sha256sum --")
    assert res.ok, res.stderr
    out = {}
    for line in res.stdout.splitlines():
        digest, name = line.split("  ", 1)
        out[name] = digest
    return out


def local_tree(root: Path, names: set[str]) -> dict[str, str]:
    import hashlib
    return {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in names}


def make_repo(root: Path) -> None:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "train.py").write_text("print('v1')\n")
    (root / "src" / "pkg" / "__init__.py").write_text("X = 1\n")
    (root / "odd name; $(id) `x`.txt").write_text("hostile\n")
    (root / "ünï.txt").write_text("unicode\n")
    (root / ".gitignore").write_text("*.log\n")
    (root / ".rvignore").write_text("private/\n")
    (root / "private").mkdir()
    (root / "private" / "secret.txt").write_text("no\n")
    (root / "run.log").write_text("no\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")


@pytest.mark.cluster
async def test_push_edit_delete_push_keeps_snapshot(cluster: Cluster, workspace: str, tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make_repo(root)
    code = f"{workspace}/code"
    snaps = f"{workspace}/snapshots"

    # dry run first: nothing changes remotely, and it previews exactly what the push does
    dry = await sync.push(cluster, root, code, dry_run=True)
    assert (await cluster.exec(f"test -e {q(code)}")).exit_status != 0
    first = await sync.push(cluster, root, code)
    assert sorted(f.rel for f in first.plan.upload) == sorted(f.rel for f in dry.plan.upload)
    expected = set(sync.list_local_files(root))
    assert "private/secret.txt" not in expected and "run.log" not in expected
    assert await remote_tree(cluster, code) == local_tree(root, expected)

    snap = await snapshots.create_snapshot(cluster, code, snaps, "job; $(id)")
    before = await remote_tree(cluster, snap)

    # edit in the same second with the same size, delete, add a new untracked file
    (root / "train.py").write_text("print('v2')\n")
    (root / "src" / "pkg" / "__init__.py").unlink()
    (root / "new.py").write_text("new\n")
    dry2 = await sync.push(cluster, root, code, dry_run=True)
    assert {f.rel for f in dry2.plan.upload} == {"train.py", "new.py"}
    assert dry2.plan.delete == ["src/pkg/__init__.py"]
    second = await sync.push(cluster, root, code)
    assert {f.rel for f in second.plan.upload} == {"train.py", "new.py"}
    expected = set(sync.list_local_files(root))
    assert await remote_tree(cluster, code) == local_tree(root, expected)
    empty_dir = await cluster.exec(f"test -d {q(code + '/src/pkg')}")
    assert empty_dir.exit_status != 0  # emptied directories go too

    # the snapshot taken before the second push is unchanged (no in-place writes)
    assert await remote_tree(cluster, snap) == before
    # and a third push with nothing changed sends nothing
    third = await sync.push(cluster, root, code)
    assert third.plan.empty and third.bytes_sent == 0 and third.round_trips == 1


@pytest.mark.cluster
async def test_pull_file_and_dir(cluster: Cluster, workspace: str, tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make_repo(root)
    code = f"{workspace}/code"
    await sync.push(cluster, root, code)
    await cluster.exec(f"mkdir -p {q(code + '/out')} && printf 'r1' > {q(code + '/out/res.txt')}")
    dest = tmp_path / "pulled"
    names = await sync.pull(cluster, "out", dest, base=code)
    assert names == ["out/res.txt"] and (dest / "out" / "res.txt").read_text() == "r1"
    await sync.pull(cluster, f"{code}/train.py", dest)
    assert (dest / "train.py").read_text() == "print('v1')\n"


@pytest.mark.cluster
async def test_prune_keeps_old_snapshot_of_live_job(cluster: Cluster, workspace: str, tmp_path: Path,
                                                    clean_queue: None) -> None:
    root = tmp_path / "proj"
    make_repo(root)
    code = f"{workspace}/code"
    snaps = f"{workspace}/snapshots"
    await sync.push(cluster, root, code)
    old_ms = int(time.time() * 1000) - 8 * 86400_000
    in_use = await snapshots.create_snapshot(cluster, code, snaps, "live", epoch_ms=old_ms)
    unused = await snapshots.create_snapshot(cluster, code, snaps, "dead", epoch_ms=old_ms + 1)
    fresh = await snapshots.create_snapshot(cluster, code, snaps, "fresh")
    script = f"#!/bin/bash\n{snapshots.job_snippet(in_use)}\nsleep 300\n"
    res = await cluster.exec(f"cd {q(in_use)} && sbatch --parsable -p standard -t 10 "
                             f"-o /dev/null --wrap {q(script)}")
    assert res.ok, res.stderr
    job_id = res.stdout.strip().split(";")[0]
    await snapshots.record_jobs(cluster, in_use, [job_id])
    result = await snapshots.prune_snapshots(cluster, snaps)
    assert unused in result.removed and in_use in result.kept_in_use
    listing = (await cluster.exec(f"ls {q(snaps)}")).stdout.split()
    assert sorted(listing) == sorted(p.rsplit("/", 1)[1] for p in (in_use, fresh))
    await cluster.cancel([job_id])


def test_plan_detects_same_second_same_size_edit(tmp_path: Path) -> None:
    local = {"a": LocalFile("a", 3, 1_700_000_000_500_000_000)}
    remote = {"a": RemoteFile("a", 3, 1_700_000_000, "f"), "gone": RemoteFile("gone", 1, 1, "f")}
    # the remote matches, and the file is as pushed last time -> nothing to do but the delete
    plan = compute_plan(tmp_path, "/c", local, remote, {"a": (3, 1_700_000_000_500_000_000)},
                        synced={"a", "gone"})
    assert not plan.upload and plan.delete == ["gone"]
    # a remote file rv never synced is never deleted
    plan = compute_plan(tmp_path, "/c", local, remote, {"a": (3, 1_700_000_000_500_000_000)})
    assert not plan.upload and plan.delete == []
    # rewritten locally within the same second, same size -> upload
    plan = compute_plan(tmp_path, "/c", local, remote, {"a": (3, 1_700_000_000_100_000_000)})
    assert [f.rel for f in plan.upload] == ["a"]


def test_apply_command_quotes_hostile_paths() -> None:
    cmd = sync.apply_command("/s/w", "/s/w/code; rm -rf ~", "/s/w/.st $(id)", ["/s/w/.st $(id).0.tar"],
                             prune_dirs=True)
    assert "'/s/w/code; rm -rf ~'" in cmd and "'/s/w/.st $(id).0.tar'" in cmd


@pytest.mark.cluster
def test_rv_sync_cli_dry_run_then_push(rv_home: Path, tmp_path: Path, slurm_cluster) -> None:
    import json
    import sys

    root = tmp_path / f"cli-{secrets.token_hex(3)}"
    make_repo(root)
    env = {**os.environ, "RV_HOME": str(rv_home)}

    def rv(*args: str) -> dict:
        r = subprocess.run([sys.executable, "-m", "rv_tui", "sync", *args, "--json"], cwd=root,
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    dry = rv("push", "--dry-run")
    real = rv("push")
    assert dry["dry_run"] and not real["dry_run"]
    assert sorted(dry["upload"]) == sorted(real["upload"]) and "train.py" in real["upload"]
    assert real["code_dir"].endswith(f"/{real['project']}/main/code")
    assert rv("push")["upload"] == []
    (root / "out").mkdir()
    pulled = subprocess.run([sys.executable, "-m", "rv_tui", "sync", "pull", "train.py", "out"], cwd=root,
                            capture_output=True, text=True, env=env, timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    assert (root / "out" / "train.py").read_text() == "print('v1')\n"
    c = slurm_cluster
    subprocess.run(["ssh", "-p", str(c.port), "-i", c.identity_file, "-o", f"UserKnownHostsFile={c.known_hosts}",
                    "-o", "BatchMode=yes", f"{c.user}@{c.host}", f"rm -rf {q(real['code_dir'].rsplit('/', 2)[0])}"],
                   timeout=60)


@pytest.mark.cluster
async def test_rv_sync_watch_pushes_edits(rv_home: Path, tmp_path: Path, cluster: Cluster) -> None:
    import asyncio
    import sys

    from rv_tui.paths import RemotePaths
    from rv_tui.workspace.project import detect_project

    root = tmp_path / f"watch-{secrets.token_hex(3)}"
    make_repo(root)
    pr = detect_project(root)
    code = RemotePaths(cluster.scratch).code_dir(pr.name, pr.branch)
    env = {**os.environ, "RV_HOME": str(rv_home)}
    proc = subprocess.Popen([sys.executable, "-m", "rv_tui", "sync", "watch"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    async def remote_text(path: str, want: str, seconds: float = 60) -> str:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        got = ""
        while loop.time() < end and proc.poll() is None:
            got = (await cluster.exec(f"cat {q(code + '/' + path)} 2>/dev/null; true")).stdout
            if got == want:
                break
            await asyncio.sleep(0.3)
        return got

    try:
        assert await remote_text("train.py", "print('v1')\n") == "print('v1')\n"
        (root / "train.py").write_text("print('watched')\n")
        (root / "fresh.py").write_text("fresh\n")
        assert await remote_text("train.py", "print('watched')\n") == "print('watched')\n"
        assert await remote_text("fresh.py", "fresh\n") == "fresh\n"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        await cluster.exec(f"rm -rf {q(code.rsplit('/', 2)[0])}")
