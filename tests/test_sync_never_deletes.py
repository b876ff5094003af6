"""Sync never deletes what it did not sync (issue 12, item 2), on the real cluster's login node.

* a folder that becomes ignored stays remotely (rsync without --delete-excluded keeps it);
* weights the default excludes keep local (``*.pt``, ``*.safetensors``, ``*.bin``) stay remotely;
* files a job wrote into ``code/`` stay;
* a path that changes type (file <-> directory <-> symlink) does not wedge later pushes;
* names with spaces, quotes, newlines and unicode round-trip;
* ``rv sync watch`` arms its watcher before its first push (an edit landing right after the first
  push is pushed).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rv_tui.cluster.base import Cluster
from rv_tui.cluster.ssh import SshCluster
from rv_tui.config import load_config
from rv_tui.quoting import q
from rv_tui.workspace import sync


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(root: Path, files: dict[str, str]) -> None:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")


@pytest.fixture
async def cluster(rv_home: Path) -> AsyncIterator[Cluster]:
    c = SshCluster.from_config(load_config())
    await c.connect()
    yield c
    await c.close()


@pytest.fixture
async def code(cluster: Cluster) -> AsyncIterator[str]:
    ws = f"{cluster.scratch}/rv-workspaces/nodelete-{secrets.token_hex(4)}/main"
    yield f"{ws}/code"
    await cluster.exec(f"rm -rf {q(ws.rsplit('/', 1)[0])}")


async def remote_entries(cluster: Cluster, d: str) -> dict[str, str]:
    """path -> 'f:<sha256>' / 'l:<target>' for every file and symlink under ``d`` (NUL safe)."""
    script = (f"cd {q(d)} && find . -mindepth 1 \\( -type f -o -type l \\) -printf '%P\\0' | "
              "while IFS= read -r -d '' p; do if [ -L \"$p\" ]; then printf 'l:%s\\0' \"$(readlink -- \"$p\")\"; "
              "else printf 'f:%s\\0' \"$(sha256sum < \"$p\" | cut -d' ' -f1)\"; fi; printf '%s\\0' \"$p\"; done")
    res = await cluster.exec(script)
    assert res.ok, res.stderr
    parts = res.stdout.split("\0")[:-1]
    return {parts[i + 1]: parts[i] for i in range(0, len(parts), 2)}


def local_entries(root: Path) -> dict[str, str]:
    out = {}
    for rel, lf in sync.list_local_files(root).items():
        p = root / rel
        out[rel] = f"l:{os.readlink(p)}" if lf.is_link else f"f:{hashlib.sha256(p.read_bytes()).hexdigest()}"
    return out


@pytest.mark.cluster
async def test_ignoring_a_synced_folder_keeps_it_remotely(cluster: Cluster, code: str, tmp_path: Path) -> None:
    root = tmp_path / "p"
    make_repo(root, {"train.py": "x\n", "data/a.csv": "1,2\n", "data/sub/b.csv": "3\n"})
    await sync.push(cluster, root, code)
    assert set(await remote_entries(cluster, code)) == {"train.py", "data/a.csv", "data/sub/b.csv"}
    (root / ".rvignore").write_text("data/\n")
    dry = await sync.push(cluster, root, code, dry_run=True)
    assert dry.plan.delete == []
    await sync.push(cluster, root, code)
    got = await remote_entries(cluster, code)
    assert {"data/a.csv", "data/sub/b.csv", "train.py", ".rvignore"} <= set(got)
    # and deleting the ignored folder locally still does not delete it remotely
    shutil.rmtree(root / "data")
    await sync.push(cluster, root, code)
    assert {"data/a.csv", "data/sub/b.csv"} <= set(await remote_entries(cluster, code))


@pytest.mark.cluster
async def test_remote_weights_and_job_outputs_stay(cluster: Cluster, code: str, tmp_path: Path) -> None:
    root = tmp_path / "p"
    make_repo(root, {"train.py": "x\n", "sub/m.py": "m\n"})
    await sync.push(cluster, root, code)
    made = ["model.pt", "w.safetensors", "sub/x.bin", "outputs/result.txt"]
    res = await cluster.exec(" && ".join(f"mkdir -p {q(code + '/' + m.rsplit('/', 1)[0]) if '/' in m else q(code)} && "
                                         f"printf w > {q(code + '/' + m)}" for m in made))
    assert res.ok, res.stderr
    # the same weights exist locally too (excluded by the default ignore list), then go away
    (root / "model.pt").write_text("local weights\n")
    (root / "train.py").write_text("y\n")
    await sync.push(cluster, root, code)
    (root / "model.pt").unlink()
    await sync.push(cluster, root, code)
    got = await remote_entries(cluster, code)
    assert set(made) <= set(got), sorted(got)
    assert got["train.py"] == local_entries(root)["train.py"]
    # a previously synced file deleted locally is still deleted remotely
    (root / "sub" / "m.py").unlink()
    plan = (await sync.push(cluster, root, code)).plan
    assert plan.delete == ["sub/m.py"]
    got = await remote_entries(cluster, code)
    assert "sub/m.py" not in got and "sub/x.bin" in got


def _replace(path: Path, kind: str, target: str = "") -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    if kind == "file":
        path.write_text(f"file {secrets.token_hex(2)}\n")
    elif kind == "dir":
        path.mkdir()
        (path / "inner.py").write_text("inner\n")
        (path / "deep").mkdir()
        (path / "deep" / "x.txt").write_text("deep\n")
    else:
        os.symlink(target, path)


@pytest.mark.cluster
async def test_type_changes_never_wedge(cluster: Cluster, code: str, tmp_path: Path) -> None:
    root = tmp_path / "p"
    make_repo(root, {"keep.py": "k\n", "other/o.txt": "o\n"})
    p = root / "thing"
    _replace(p, "dir")
    await sync.push(cluster, root, code)
    for kind, target in [("link", "other"), ("dir", ""), ("file", ""), ("link", "keep.py"), ("file", ""),
                         ("dir", ""), ("link", "other"), ("link", "missing-target"), ("dir", "")]:
        _replace(p, kind, target)
        await sync.push(cluster, root, code)  # raises SyncError if the apply script fails
        assert await remote_entries(cluster, code) == local_entries(root), (kind, target)


HOSTILE = ["with space.txt", "quote'single.txt", 'quote"double.txt', "new\nline.txt", "\nleading-newline",
           "ünïcödé/日本語.txt", "$(id) `id`;.txt", "-dash-first.txt", "back\\slash.txt", "tab\there.txt",
           "dir with space/inner 'q'.txt", "RVSYNCED", "f 1 2 x"]


@pytest.mark.cluster
async def test_hostile_names_round_trip_and_delete(cluster: Cluster, code: str, tmp_path: Path) -> None:
    root = tmp_path / "p"
    make_repo(root, {n: f"content of {n!r}\n" for n in HOSTILE})
    await sync.push(cluster, root, code)
    assert await remote_entries(cluster, code) == local_entries(root)
    for n in HOSTILE[::2]:
        (root / n).unlink()
    plan = (await sync.push(cluster, root, code)).plan
    assert sorted(plan.delete) == sorted(HOSTILE[::2])
    assert await remote_entries(cluster, code) == local_entries(root)
    assert (await sync.push(cluster, root, code)).plan.empty


@pytest.mark.cluster
async def test_watch_arms_before_first_push(cluster: Cluster, rv_home: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit landing right after the first push (before any change event) is still pushed."""
    from rv_tui.cli import sync as cli_sync

    root = tmp_path / f"watch-{secrets.token_hex(3)}"
    make_repo(root, {"train.py": "print('v1')\n"})
    code = f"{cluster.scratch}/rv-workspaces/watchrace-{secrets.token_hex(3)}/main/code"
    real_push = sync.push
    calls: list[int] = []

    async def push_then_edit(*args, **kwargs):
        result = await real_push(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:  # the worst moment: just after the first push
            (root / "train.py").write_text("print('edited')\n")
        return result

    monkeypatch.setattr(sync, "push", push_then_edit)
    task = asyncio.create_task(cli_sync.watch_and_push(cluster, root, code, report=lambda r: None))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        got = ""
        while loop.time() < deadline and not task.done():
            got = (await cluster.exec(f"cat {q(code + '/train.py')} 2>/dev/null; true")).stdout
            if got == "print('edited')\n":
                break
            await asyncio.sleep(0.2)
        assert got == "print('edited')\n"
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await cluster.exec(f"rm -rf {q(code.rsplit('/', 2)[0])}")


@pytest.mark.cluster
async def test_push_into_a_full_scratch_fails_cleanly_then_recovers(cluster: Cluster, tmp_path: Path,
                                                                     slurm_cluster) -> None:
    """A push that cannot be applied leaves no partial upload and forgets nothing it synced."""
    import pwd

    ws = Path(slurm_cluster.scratch) / "rv-workspaces" / f"full-{secrets.token_hex(4)}"
    ws.mkdir(parents=True)
    pw = pwd.getpwnam(slurm_cluster.user)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=256k,mode=0700,uid={pw.pw_uid},gid={pw.pw_gid}",
                    "tmpfs", str(ws)], check=True)
    code = f"{ws}/main/code"
    try:
        root = tmp_path / "p"
        make_repo(root, {"train.py": "x\n", "old.py": "o\n"})
        await sync.push(cluster, root, code)
        (root / "old.py").unlink()
        (root / "big.dat").write_bytes(os.urandom(400 * 1024))
        with pytest.raises(sync.SyncError) as info:
            await sync.push(cluster, root, code)
        assert str(ws) in info.value.message
        leftovers = [p.name for p in (ws / "main").iterdir() if p.name.startswith(".rv-staging")]
        assert leftovers == []
        # room again: the push completes, and old.py (synced by the first push) is deleted
        subprocess.run(["mount", "-o", "remount,size=4m", str(ws)], check=True)
        result = await sync.push(cluster, root, code)
        assert result.plan.delete == ["old.py"]
        assert await remote_entries(cluster, code) == local_entries(root)
    finally:
        subprocess.run(["umount", str(ws)], check=False)
        if os.path.ismount(ws):
            subprocess.run(["umount", "-l", str(ws)], check=False)
        shutil.rmtree(ws, ignore_errors=True)


@pytest.mark.cluster
async def test_local_file_where_a_job_made_a_folder_is_a_reported_conflict(cluster: Cluster, code: str,
                                                                           tmp_path: Path) -> None:
    root = tmp_path / "p"
    make_repo(root, {"train.py": "x\n"})
    await sync.push(cluster, root, code)
    assert (await cluster.exec(f"mkdir -p {q(code + '/out')} && printf r > {q(code + '/out/r.txt')}")).ok
    (root / "out").write_text("a local file named like the job's folder\n")
    (root / "train.py").write_text("y\n")
    plan = (await sync.push(cluster, root, code)).plan  # does not fail, does not delete out/r.txt
    assert plan.conflicts == ["out"] and "conflict" not in plan.summary() and "not sent" in plan.summary()
    got = await remote_entries(cluster, code)
    assert "out/r.txt" in got and got["train.py"] == local_entries(root)["train.py"]
    (root / "out").unlink()
    again = (await sync.push(cluster, root, code)).plan
    assert again.conflicts == [] and again.delete == [] and "out/r.txt" in await remote_entries(cluster, code)
