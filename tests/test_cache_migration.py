"""Cache migration that cannot lose data, and a shared HF cache that never gets tokens (issue 12).

Against the real test cluster's login node (this host, user rvtest), with a private fake
``$HOME`` and scratch per test so the real ``~/.cache`` of rvtest (other tests use it) is never
touched.  The full-scratch case mounts a real 128 KiB tmpfs as the cache target.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rv_tui.cluster.ssh import SshCluster
from rv_tui.config import load_config
from rv_tui.quoting import q
from rv_tui.workspace import caches
from rv_tui.workspace.caches import link_script
from rv_tui.workspace.init import remote_setup

USER = "rvtest"  # tests/cluster/cluster.py: the test user's files live on this host


class HomeCluster:
    """The real cluster, with ``$HOME`` (and scratch) pointed at a test directory."""

    is_demo = False

    def __init__(self, inner: SshCluster, home: str, scratch: str) -> None:
        self.inner, self.home, self.scratch = inner, home, scratch

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def exec(self, command: str, *, timeout: float | None = None):
        return await self.inner.exec(f"export HOME={q(self.home)}; cd; {command}", timeout=timeout)


def chown_tree(path: Path) -> None:
    pw = pwd.getpwnam(USER)
    for dirpath, dirnames, filenames in os.walk(path):
        for n in [dirpath, *[os.path.join(dirpath, x) for x in dirnames + filenames]]:
            os.lchown(n, pw.pw_uid, pw.pw_gid)


def tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(root).as_posix()
            out[rel] = f"l:{os.readlink(p)}" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def base(slurm_cluster) -> Iterator[Path]:
    """A directory on the login node's scratch owned by the test user (removed afterwards)."""
    d = Path(slurm_cluster.scratch) / f"rvt-cache-{secrets.token_hex(4)}"
    d.mkdir(mode=0o700)
    chown_tree(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def ssh(rv_home: Path) -> AsyncIterator[SshCluster]:
    c = SshCluster.from_config(load_config())
    await c.connect()
    yield c
    await c.close()


def fill_home_cache(hf: Path, *, newline_name: bool = True) -> None:
    (hf / "hub" / "models--org--m" / "blobs").mkdir(parents=True)
    (hf / "hub" / "models--org--m" / "snapshots" / "r1").mkdir(parents=True)
    (hf / "hub" / "models--org--m" / "blobs" / "abc").write_bytes(os.urandom(200 * 1024))  # 200 KB model
    os.symlink("../../blobs/abc", hf / "hub" / "models--org--m" / "snapshots" / "r1" / "model.bin")
    (hf / "hub" / ".locks").mkdir()
    (hf / "hub" / ".locks" / "x.lock").write_text("")
    (hf / "token").write_text("hf_SECRETTOKEN")
    (hf / "stored_tokens").write_text("[default]\nhf_token = hf_SECRETTOKEN\n")
    os.chmod(hf / "token", 0o600)
    os.chmod(hf / "stored_tokens", 0o600)
    (hf / "name with spaces").mkdir()
    (hf / "name with spaces" / "ünï 'q' $(id).txt").write_text("u")
    if newline_name:
        (hf / "new\nline.txt").write_text("n")


def test_migration_script_uses_mktemp_not_a_predictable_name() -> None:
    s = link_script("huggingface", "/scratch/x/.cache/huggingface")
    assert "$$" not in s and "/tmp/rvcache." not in s.replace("rvcache.XXXXXXXX", "")
    assert 'mktemp "${TMPDIR:-/tmp}/rvcache.XXXXXXXX"' in s and 'mktemp -d "$t/.rv-migrate.XXXXXXXX"' in s


@pytest.mark.cluster
async def test_full_scratch_keeps_both_copies_then_migrates(ssh: SshCluster, base: Path) -> None:
    home = base / "home"
    hf = home / ".cache" / "huggingface"
    hf.mkdir(parents=True)
    fill_home_cache(hf, newline_name=False)
    target = base / "full scratch 'q' $(id)"
    target.mkdir()
    (target / "keep.txt").write_text("already on scratch")
    chown_tree(base)
    before = tree_digest(hf)
    pw = pwd.getpwnam(USER)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=128k,mode=0700,uid={pw.pw_uid},gid={pw.pw_gid}",
                    "tmpfs", str(target)], check=True)
    try:
        (target / "keep.txt").write_text("already on scratch")
        os.lchown(target / "keep.txt", pw.pw_uid, pw.pw_gid)
        cluster = HomeCluster(ssh, str(home), str(base / "scratch"))
        res = await cluster.exec(link_script("huggingface", str(target)))
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RVCACHE"))
        assert line.startswith("RVCACHE failed"), line
        assert "No space left on device" in line and str(target) in line and "nothing was removed" in line
        # the home copy is intact (still a real directory, every byte), the scratch side holds
        # only what it had: no truncated model file, no staging directory
        assert hf.is_dir() and not hf.is_symlink()
        assert tree_digest(hf) == before
        assert sorted(os.listdir(target)) == ["keep.txt"]
        assert (target / "keep.txt").read_text() == "already on scratch"

        # the same event twice: still nothing lost
        res = await cluster.exec(link_script("huggingface", str(target)))
        assert "RVCACHE failed" in res.stdout and tree_digest(hf) == before

        # room on scratch again -> it migrates, every file matches, the old scratch file stays
        subprocess.run(["mount", "-o", "remount,size=4m", str(target)], check=True)
        stale = target / ".rv-migrate.stale1"  # what a killed run would leave: cleaned after an hour
        stale.mkdir()
        (stale / "partial").write_bytes(b"x" * 10)
        os.lchown(stale, pw.pw_uid, pw.pw_gid)
        os.lchown(stale / "partial", pw.pw_uid, pw.pw_gid)
        os.utime(stale, (1, 1))
        res = await cluster.exec(link_script("huggingface", str(target)))
        assert "RVCACHE migrated" in res.stdout, res.stdout + res.stderr
        assert hf.is_symlink() and os.readlink(hf) == str(target)
        got = tree_digest(target)
        assert got.pop("keep.txt") and got == before
        assert not stale.exists()
        assert not [n for n in os.listdir(home / ".cache") if n.startswith(".rv-old")]
        assert stat.S_IMODE((target / "token").stat().st_mode) == 0o600
    finally:
        subprocess.run(["umount", str(target)], check=False)
        if os.path.ismount(target):
            subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.mark.cluster
async def test_shared_hf_cache_gets_models_only_and_keeps_its_mode(ssh: SshCluster, base: Path,
                                                                    rv_home: Path) -> None:
    home = base / "home"
    hf = home / ".cache" / "huggingface"
    hf.mkdir(parents=True)
    fill_home_cache(hf)
    before = tree_digest(hf)
    shared = base / "group $(id) dir" / ".cache" / "hugging 'face'"
    shared.mkdir(parents=True)
    (shared / "hub" / "models--other--kept").mkdir(parents=True)
    (shared / "hub" / "models--other--kept" / "w").write_text("a colleague's model")
    scratch = base / "scratch"
    scratch.mkdir(mode=0o700)
    chown_tree(base)
    os.chmod(shared, 0o2775)
    os.chmod(shared / "hub", 0o2775)

    config = load_config()
    config.shared.hf_cache = str(shared)
    cluster = HomeCluster(ssh, str(home), str(scratch))
    links = await remote_setup(cluster, config)
    by_name = {c.name: c for c in links}
    assert by_name["huggingface"].action == "migrated", links

    # the shared directory: mode untouched, no token anywhere, the model copied group-readable
    assert stat.S_IMODE(shared.stat().st_mode) == 0o2775
    assert stat.S_IMODE((shared / "hub").stat().st_mode) == 0o2775
    names = {n for _d, dirs, files in os.walk(shared) for n in dirs + files}
    assert "token" not in names and "stored_tokens" not in names and ".locks" not in names
    assert not [n for n in names if n.startswith(".rv-share")]
    blob = shared / "hub" / "models--org--m" / "blobs" / "abc"
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == before["hub/models--org--m/blobs/abc"]
    assert os.readlink(shared / "hub" / "models--org--m" / "snapshots" / "r1" / "model.bin") == "../../blobs/abc"
    assert blob.stat().st_mode & 0o040, oct(blob.stat().st_mode)
    assert (shared / "hub" / "models--other--kept" / "w").read_text() == "a colleague's model"
    assert by_name[caches.SHARED].action == "shared", links

    # ~/.cache/huggingface -> the PRIVATE scratch cache, which holds the token (0600)
    private = scratch / ".cache" / "huggingface"
    assert os.readlink(hf) == str(private)
    assert (private / "token").read_text() == "hf_SECRETTOKEN"
    assert stat.S_IMODE((private / "token").stat().st_mode) == 0o600
    assert tree_digest(private) == before
    # rv's own directories are 0700
    for d in [".rv", ".rv/logs", ".rv/envs", ".rv/env", "rv-workspaces", ".cache", ".cache/uv", ".cache/huggingface"]:
        assert stat.S_IMODE((scratch / d).stat().st_mode) == 0o700, d

    # again: idempotent, the mode still 2775, a token a previous version left there is reported
    (shared / "token").write_text("leaked")
    chown_tree(shared)
    again = await remote_setup(cluster, config)
    assert {c.name: c.action for c in again}["huggingface"] == "ok"
    assert any(c.name == caches.SHARED_TOKEN and c.action == "warning" and str(shared / "token") in c.detail
               for c in again), again
    assert stat.S_IMODE(shared.stat().st_mode) == 0o2775


@pytest.mark.cluster
async def test_shared_cache_created_2775_when_missing(ssh: SshCluster, base: Path, rv_home: Path) -> None:
    home = base / "home"
    (home / ".cache").mkdir(parents=True)
    scratch = base / "scratch"
    scratch.mkdir(mode=0o700)
    chown_tree(base)
    shared = base / "grp" / "hf"
    config = load_config()
    config.shared.hf_cache = str(shared)
    await remote_setup(HomeCluster(ssh, str(home), str(scratch)), config)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o2775
    assert stat.S_IMODE((shared / "hub").stat().st_mode) & 0o2770 == 0o2770
    assert caches.shared_hub_dir(str(shared)) == str(shared / "hub")
