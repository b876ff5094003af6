"""Bounded memory for logs and pulls: ``--tail N`` reads only the tail on the cluster, pulls stream
to disk, and ``rv logs --pull 12345`` pulls job 12345 whatever the flag order.

Cluster tests fabricate a finished job's logs in a private scratch (``<scratch>/.rv/logs/
bench-<id>.out``, an id Slurm does not know: ``rv logs`` finds it by listing the logs directory),
so no job has to run and no other session's files are touched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rv_tui
from rv_tui.cli.logs import resolve_pull_args
from rv_tui.cli.main import build_parser
from rv_tui.errors import RvError
from rv_tui.paths import RemotePaths
from rv_tui.quoting import q
from rv_tui.slurm import files as f

CODE = Path(rv_tui.__file__).resolve().parent.parent  # the tree under test (for subprocesses)
HOSTILE = "a dir 'with' $(touch pwned) `id`;"

# ----------------------------------------------------------------------------- the tail command


def _tail(path: str, n: int, cap: int = 1 << 20) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", f.tail_command(path, n, max_bytes=cap)], capture_output=True)


def test_tail_command_reads_the_last_lines_of_a_hostile_path(tmp_path) -> None:
    d = tmp_path / HOSTILE
    d.mkdir()
    log = d / "train-1.out"
    log.write_text("".join(f"line {i}\n" for i in range(1000)) + "partial")
    res = _tail(str(log), 3)
    assert res.returncode == 0 and res.stdout == b"line 998\nline 999\npartial"
    assert _tail(str(d / "missing"), 3).returncode == f.TAIL_MISSING
    assert _tail(str(d), 3).returncode == f.TAIL_UNREADABLE
    assert not (tmp_path / "pwned").exists()


def test_tail_command_is_capped_in_bytes_even_without_newlines(tmp_path) -> None:
    log = tmp_path / "bar.out"
    log.write_bytes(b"\r" + b"=" * 3_000_000)  # one endless progress-bar line
    res = _tail(str(log), 100, cap=4096)
    assert res.returncode == 0 and len(res.stdout) == 4096


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400).map(lambda b: b.replace(b"\x00", b"")) | st.lists(
           st.sampled_from([b"a", b"\n", b"\r", b"line", b"\xe2\x82\xac", b"  "]), max_size=60).map(b"".join),
       n=st.integers(0, 6), cap=st.integers(1, 64))
def test_property_demo_tail_file_is_real_tail(tmp_path, data: bytes, n: int, cap: int) -> None:
    """The demo's tail_file gives byte for byte what the real command gives on the login node."""
    import asyncio

    from rv_tui.cluster.demo import DemoCluster

    log = tmp_path / "x.out"
    log.write_bytes(data)
    real = _tail(str(log), n, cap)
    assert real.returncode == 0
    demo = DemoCluster(seed=1, speed=0, background=False)
    demo.sim.fs.write("/scratch/d/x.out", data, 0o600)
    assert asyncio.run(demo.tail_file("/scratch/d/x.out", n, max_bytes=cap)) == real.stdout


async def test_demo_tail_file_matches_tail() -> None:
    from rv_tui.cluster.demo import DemoCluster

    c = DemoCluster(seed=1, speed=0, background=False)
    await c.write_file("/scratch/x/a.out", "".join(f"{i}\n" for i in range(10)))
    assert await c.tail_file("/scratch/x/a.out", 2) == b"8\n9\n"
    assert await c.tail_file("/scratch/x/a.out", 0) == b""
    await c.write_file("/scratch/x/b.out", "x\ny")
    assert await c.tail_file("/scratch/x/b.out", 1) == b"y"


# ----------------------------------------------------------------------------- --pull JOBID


@pytest.mark.parametrize("argv,want", [
    (["logs", "--pull", "12345"], ("12345", ".")),
    (["logs", "--pull", "12345", "out"], ("12345", "out")),
    (["logs", "12345", "--pull"], ("12345", ".")),
    (["logs", "12345", "--pull", "out"], ("12345", "out")),
    (["logs", "--pull", "out", "12345"], ("12345", "out")),
    (["logs", "--pull", "./12345"], (None, "./12345")),
    (["logs", "--pull"], (None, ".")),
    (["logs", "--err", "--pull", "77_3"], ("77_3", ".")),
])
def test_pull_takes_the_job_id_whatever_the_flag_order(argv: list[str], want) -> None:
    args = build_parser().parse_args(argv)
    assert resolve_pull_args(args.job_id, args.pull) == want


def test_two_job_ids_with_pull_are_refused() -> None:
    with pytest.raises(RvError) as err:
        resolve_pull_args("12345", "678")
    assert "./678" in (err.value.hint or "")


# ----------------------------------------------------------------------------- the real cluster


@pytest.fixture
async def private(rv_home: Path) -> AsyncIterator[tuple[Path, str]]:
    """(RV_HOME whose paths.scratch is a private directory, that directory); removed after."""
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config

    cfg = rv_home / "config.toml"
    root = f"{load_config().scratch}/logsb-{uuid.uuid4().hex[:10]}"
    text, n = re.subn(r'^scratch = ".*"$', f'scratch = "{root}"', cfg.read_text(), flags=re.M)
    assert n == 1
    cfg.write_text(text)
    yield rv_home, root
    c = SshCluster.from_config(load_config())
    try:
        await c.exec(f"rm -rf {q(root)}")
    finally:
        await c.close()


async def _cluster():
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config

    c = SshCluster.from_config(load_config())
    await c.connect()
    return c


def _rv(home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RV_HOME": str(home), "PYTHONPATH": str(CODE)}
    return subprocess.run([sys.executable, "-m", "rv_tui", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, stdin=subprocess.DEVNULL, timeout=180)


async def _fake_job(c, root: str, mb: int) -> tuple[str, str]:
    """A finished job's .out of about ``mb`` MB (numbered lines) and a small .err; its id."""
    job_id = str(9_000_000 + uuid.uuid4().int % 900_000)
    logs = RemotePaths(root).logs_dir
    out = f"{logs}/bench-{job_id}.out"
    res = await c.exec(f"mkdir -p {q(logs)} && seq 1 {mb * 150_000} | sed 's/^/line /' > {q(out)} && "
                       f"printf 'warn 1\\nwarn 2\\n' > {q(logs + f'/bench-{job_id}.err')}", timeout=120)
    assert res.ok, res.stderr
    return job_id, out


@pytest.mark.cluster
async def test_tail_reads_only_the_tail_on_the_cluster(private) -> None:
    from rv_tui.logs import follow
    from rv_tui.logs.events import LogLine

    _home, root = private
    c = await _cluster()
    try:
        job_id, out = await _fake_job(c, root, 20)
        got = [ev.text for ev in [e async for e in follow(c, job_id, last=3, streams=("out",))]
               if isinstance(ev, LogLine)]
        assert got == [f"line {n}" for n in (2_999_998, 2_999_999, 3_000_000)]
        # no --tail (the TUI, rv run -f of a finished job): a bounded backlog, also read remotely
        from rv_tui.logs.merge import BACKLOG_LINES

        backlog = [ev.text for ev in [e async for e in follow(c, job_id, streams=("out",))]
                   if isinstance(ev, LogLine)]
        assert len(backlog) == BACKLOG_LINES and backlog[-1] == "line 3000000"
        sftp = [r.command for r in c.pool.command_log.records() if r.command.startswith("sftp read")]
        assert not any(out in cmd for cmd in sftp), sftp  # the 20 MB file never went over SFTP
    finally:
        await c.close()


@pytest.mark.cluster
async def test_rv_logs_tail_and_pull_by_job_id_on_the_cluster(private, tmp_path) -> None:
    home, root = private
    c = await _cluster()
    try:
        job_id, _ = await _fake_job(c, root, 1)
    finally:
        await c.close()
    r = _rv(home, "logs", job_id, "--tail", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["line 149999", "line 150000", "[stderr] warn 1", "[stderr] warn 2"]
    work = tmp_path / "work"
    work.mkdir()
    r = _rv(home, "logs", "--pull", job_id, cwd=work)
    assert r.returncode == 0, r.stderr
    assert not (work / job_id).exists()  # not a folder named after the job id
    assert sorted(p.name for p in work.iterdir()) == [f"bench-{job_id}.err", f"bench-{job_id}.out"]
    text = (work / f"bench-{job_id}.out").read_text()
    assert text.startswith("line 1\n") and text.endswith("line 150000\n")
    assert oct((work / f"bench-{job_id}.out").stat().st_mode & 0o777) == "0o600"
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.cluster
async def test_pulls_stream_to_disk_never_read_whole(private, tmp_path, monkeypatch) -> None:
    """sync pull and logs --pull go through download_file, never read_file (the whole file in memory)."""
    from rv_tui.cli.logs import _pull
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.workspace import sync

    async def no_whole_reads(self, path: str) -> bytes:
        raise AssertionError(f"read the whole of {path} into memory")

    monkeypatch.setattr(SshCluster, "read_file", no_whole_reads)
    _home, root = private
    c = await _cluster()
    try:
        job_id, out = await _fake_job(c, root, 3)
        data_dir = f"{root}/results dir"
        assert (await c.exec(f"mkdir -p {q(data_dir + '/sub')} && head -c 5000000 /dev/urandom > "
                             f"{q(data_dir + '/sub/blob.bin')} && echo hi > {q(data_dir + '/a b.txt')}")).ok
        digest = (await c.exec(f"sha256sum < {q(data_dir + '/sub/blob.bin')}")).stdout.split()[0]
        names = await sync.pull(c, data_dir, tmp_path / "pulled")
        assert sorted(names) == ["results dir/a b.txt", "results dir/sub/blob.bin"]
        import hashlib

        blob = tmp_path / "pulled" / "results dir" / "sub" / "blob.bin"
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest
        assert await _pull(c, job_id, tmp_path / "logs", True) == 0
        assert (tmp_path / "logs" / f"bench-{job_id}.out").stat().st_size > 3_000_000
        assert not (await c.exec(f"ls {q(root + '/.rv')} | grep -q '^pull-'")).ok  # remote temp removed
    finally:
        await c.close()
