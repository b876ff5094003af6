"""Hypothesis state machine for ``rv sync push`` (issue 12, item 2).

Random trees and random edit / ignore / type-change / job-writes-into-code sequences; after every
push the remote holds exactly the local synced set (content and symlink targets equal), plus
every remote path rv may not delete: files it never synced (job outputs) and files the ignore
rules exclude now -- those keep their content.  The model decides deletions itself (its own
ignore rules for the few patterns it uses), so it checks the plan rather than restating it.

Two runs of the same machine: the many-example one drives the real apply script through a
local shell on a real filesystem (:class:`LocalShellCluster`: same commands, no SSH); the
smaller one runs against the real test cluster's login node over SSH.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from rv_tui.cluster.base import ExecResult
from rv_tui.quoting import q
from rv_tui.workspace import sync

NAMES = ["a", "b", "data", "x.pt", "s p'a\"c e", "ü\nn"]
PATHS = [n for n in NAMES] + [f"{d}/{n}" for d in ("a", "data", "s p'a\"c e") for n in NAMES[:4]] + \
        ["a/b/a", "a/data/x", "data/a/b"]
LINK_TARGETS = ["a", "../b", "missing", "data/a"]
RULES = ["data/", "*.log", "b"]  # the .rvignore lines the machine picks from


class LocalShellCluster:
    """The slice of :class:`Cluster` sync uses, on this machine's shell and filesystem."""

    name = "local-shell"
    is_demo = False

    def __init__(self, scratch: str) -> None:
        self.scratch = scratch
        self.user = os.environ.get("USER", "me")

    async def exec(self, command: str, *, timeout: float | None = None) -> ExecResult:
        proc = await asyncio.create_subprocess_exec("bash", "-c", command, stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        out, errb = await asyncio.wait_for(proc.communicate(), timeout)
        return ExecResult(command, proc.returncode or 0, out.decode(), errb.decode())

    async def write_file(self, path: str, data: bytes | str, mode: int = 0o600) -> None:
        raw = data.encode() if isinstance(data, str) else data
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)

    async def close(self) -> None:
        return None


def model_ignored(rel: str, rules: list[str]) -> bool:
    """The model's own matcher for the machine's patterns (plus rv's default ``*.pt``)."""
    parts = rel.split("/")
    if parts[-1].endswith(".pt"):
        return True
    for rule in rules:
        if rule == "data/" and "data" in parts[:-1]:
            return True
        if rule == "*.log" and parts[-1].endswith(".log"):
            return True
        if rule == "b" and "b" in parts:
            return True
    return False


async def remote_entries(cluster, d: str) -> dict[str, str]:
    """path -> 'f:<sha256>' / 'l:<target>' for every file and symlink under ``d``."""
    script = (f"[ -d {q(d)} ] || exit 0; cd {q(d)} && find . -mindepth 1 \\( -type f -o -type l \\) -printf '%P\\0' | "
              "while IFS= read -r -d '' p; do if [ -L \"$p\" ]; then printf 'l:%s\\0' \"$(readlink -- \"$p\")\"; "
              "else printf 'f:%s\\0' \"$(sha256sum < \"$p\" | cut -d' ' -f1)\"; fi; printf '%s\\0' \"$p\"; done")
    res = await cluster.exec(script)
    assert res.ok, res.stderr
    parts = res.stdout.split("\0")[:-1]
    return {parts[i + 1]: parts[i] for i in range(0, len(parts), 2)}


def local_entry(root: Path, rel: str) -> str:
    p = root / rel
    if p.is_symlink():
        return f"l:{os.readlink(p)}"
    return f"f:{hashlib.sha256(p.read_bytes()).hexdigest()}"


def _clear(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def _make_parents(root: Path, rel: str) -> None:
    cur = root
    for part in rel.split("/")[:-1]:
        cur = cur / part
        if cur.is_symlink() or (cur.exists() and not cur.is_dir()):
            cur.unlink()
        cur.mkdir(exist_ok=True)


class SyncMachine(RuleBasedStateMachine):
    make_cluster = None  # set by the test: () -> (cluster, cleanup)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.cluster, self.cleanup = self.loop.run_until_complete(type(self).make_cluster())
        self.tmp = Path(tempfile.mkdtemp(prefix="rv-sm-"))
        self.root = self.tmp / "proj"
        self.root.mkdir()
        subprocess.run(["git", "init", "-q", "-b", "main", str(self.root)], check=True)
        self.code = f"{self.cluster.scratch}/rv-workspaces/sm-{secrets.token_hex(4)}/main/code"
        self.rules: list[str] = []
        self.synced: set[str] = set()  # what the model says rv has synced
        self.pushes = 0

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    @initialize(files=st.dictionaries(st.sampled_from(PATHS), st.binary(max_size=40), max_size=6))
    def tree(self, files: dict[str, bytes]) -> None:
        for rel, data in sorted(files.items()):
            self.write(rel, data)

    def write(self, rel: str, data: bytes) -> None:
        _make_parents(self.root, rel)
        _clear(self.root / rel)
        (self.root / rel).write_bytes(data)

    @rule(rel=st.sampled_from(PATHS), data=st.binary(max_size=40))
    def edit(self, rel: str, data: bytes) -> None:
        self.write(rel, data)

    @rule(rel=st.sampled_from(PATHS), dest=st.sampled_from(LINK_TARGETS))
    def symlink(self, rel: str, dest: str) -> None:
        _make_parents(self.root, rel)
        _clear(self.root / rel)
        os.symlink(dest, self.root / rel)

    @rule(rel=st.sampled_from(NAMES + ["a/b", "data/a"]))
    def delete(self, rel: str) -> None:
        _clear(self.root / rel)

    @rule(rules=st.lists(st.sampled_from(RULES), unique=True, max_size=3))
    def ignore(self, rules: list[str]) -> None:
        self.rules = rules
        if rules:
            (self.root / ".rvignore").write_text("".join(r + "\n" for r in rules))
        else:
            _clear(self.root / ".rvignore")

    @rule(rel=st.sampled_from(["out/r.txt", "a/job.out", "data/dl.csv", "w.safetensors", "x.pt"]))
    def job_writes(self, rel: str) -> None:
        """A job writes into code/ (a path rv never synced, unless local makes it later)."""
        path = f"{self.code}/{rel}"
        self.run(self.cluster.exec(f"mkdir -p {q(path.rsplit('/', 1)[0])} 2>/dev/null && "
                                   f"[ ! -d {q(path)} ] && printf job > {q(path)} || true"))

    @rule()
    def push(self) -> None:
        before = self.run(remote_entries(self.cluster, self.code))
        local = set(sync.list_local_files(self.root))
        result = self.run(sync.push(self.cluster, self.root, self.code))
        self.pushes += 1
        conflicts = set(getattr(result.plan, "conflicts", ()))
        after = self.run(remote_entries(self.cluster, self.code))
        synced_now = local - conflicts
        # the model's deletions: synced before, gone locally, not ignored now
        must_go = {p for p in before if p in self.synced and p not in local
                   and not model_ignored(p, self.rules)}
        assert set(result.plan.delete) == must_go & set(before)
        kept = {p: v for p, v in before.items() if p not in must_go and p not in synced_now}
        for p in synced_now:
            assert after.get(p) == local_entry(self.root, p), p
        for p, v in kept.items():
            assert after.get(p) == v, f"rv changed or deleted {p!r}, which it must keep"
        assert set(after) == synced_now | set(kept)
        for c in conflicts:  # a conflict is only ever a kept remote path in the way
            assert any(k.startswith(c + "/") or c.startswith(k + "/") for k in kept), c
        self.synced = synced_now

    def teardown(self) -> None:
        try:
            self.run(self.cluster.exec(f"rm -rf {q(self.code.rsplit('/', 2)[0])}"))
            self.run(self.cleanup())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


def test_sync_state_machine_local_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RV_HOME", str(tmp_path / "rv-home"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    async def make():
        async def cleanup() -> None:
            return None
        return LocalShellCluster(str(scratch)), cleanup

    class Local(SyncMachine):
        make_cluster = staticmethod(make)

    Local.TestCase.settings = settings(max_examples=40, stateful_step_count=14, deadline=None,
                                       database=None, suppress_health_check=list(HealthCheck))
    Local.TestCase().runTest()


@pytest.mark.cluster
def test_sync_state_machine_real_cluster(rv_home: Path) -> None:
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config

    async def make():
        c = SshCluster.from_config(load_config())
        await c.connect()
        return c, c.close

    class Real(SyncMachine):
        make_cluster = staticmethod(make)

    Real.TestCase.settings = settings(max_examples=20, stateful_step_count=10, deadline=None,
                                      database=None, suppress_health_check=list(HealthCheck))
    Real.TestCase().runTest()


def test_without_git_gitignore_and_rvignore_keep_remote_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk mode (no git): a folder that .gitignore or .rvignore starts excluding stays remotely."""
    monkeypatch.setenv("RV_HOME", str(tmp_path / "rv-home"))
    cluster = LocalShellCluster(str(tmp_path / "scratch"))
    code = f"{tmp_path}/scratch/rv-workspaces/p/main/code"
    root = tmp_path / "p"
    for rel in ["train.py", "data/a.csv", "logs/x.txt", "gone.py"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    asyncio.run(sync.push(cluster, root, code))
    (root / ".gitignore").write_text("data/\n")
    (root / ".rvignore").write_text("logs/\n")
    shutil.rmtree(root / "logs")
    (root / "gone.py").unlink()
    plan = asyncio.run(sync.push(cluster, root, code)).plan
    assert plan.delete == ["gone.py"]
    got = asyncio.run(remote_entries(cluster, code))
    assert {"data/a.csv", "logs/x.txt", "train.py", ".gitignore", ".rvignore"} == set(got)
    assert stat_mode(f"{tmp_path}/scratch/rv-workspaces") == 0o700


def stat_mode(path: str) -> int:
    return os.stat(path).st_mode & 0o777
