"""The asyncssh pool against the local test cluster's real sshd (plus a few pure unit tests).

Cluster tests are marked ``cluster`` and use the ``slurm_cluster`` fixture from conftest.py.
They only ever kill *this test's own* sshd session (found by its TCP port), never other
sessions on the shared login node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from rv_tui.config import ConnectionConfig
from rv_tui.errors import RvError
from rv_tui.remote import (
    AuthFailed,
    CommandLog,
    CommandTimeout,
    ConnectionEvent,
    ConnectionLost,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    RemoteCommandFailed,
    RemoteFileNotFound,
    RemotePool,
    SshTarget,
    redact,
)


# ----------------------------------------------------------------------------- helpers


def target_for(c: Any, **over: Any) -> SshTarget:
    kw: dict[str, Any] = dict(host=c.host, port=c.port, user=c.user, identity_files=(c.identity_file,),
                              known_hosts=c.known_hosts)
    kw.update(over)
    return SshTarget(**kw)


async def poll(check: Callable[[], Awaitable[bool]], timeout: float = 15.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval)
    return await check()


def kill_own_session(pool: RemotePool) -> list[int]:
    """Kill the sshd processes serving this pool's connection(s) only (found by client port)."""
    pids: set[int] = set()
    for holder in list(pool._conns):
        assert holder.conn is not None
        lport = holder.conn.get_extra_info("sockname")[1]
        out = subprocess.run(["ss", "-Htnp", "state", "established", f"( dport = :{lport} )"],
                             capture_output=True, text=True, check=True).stdout
        pids.update(int(p) for p in re.findall(r"pid=(\d+)", out))
    assert pids, "could not find the server side of our SSH connection"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    return sorted(pids)


@pytest.fixture
async def pool(slurm_cluster: Any) -> AsyncIterator[RemotePool]:
    p = RemotePool(target_for(slurm_cluster), max_channels=8, command_timeout=30)
    await p.connect()
    yield p
    await p.close()


@pytest.fixture
async def workdir(pool: RemotePool, slurm_cluster: Any) -> AsyncIterator[str]:
    d = f"{slurm_cluster.scratch}/rv-pool-tests/{uuid.uuid4().hex[:12]}"
    await pool.run(f"mkdir -p {d}", check=True)
    yield d
    with contextlib.suppress(RvError):
        await pool.run(f"rm -rf {d}")


# ----------------------------------------------------------------------------- pure unit tests


def test_redact_masks_obvious_secrets() -> None:
    assert redact("export HF_TOKEN=hf_abcdefghijkl; run") == "export HF_TOKEN=****; run"
    assert redact("API_KEY='a b c' cmd --password hunter2") == "API_KEY=**** cmd --password ****"
    assert redact('curl -H "Authorization: Bearer abc.def" u') == 'curl -H "Authorization: Bearer ****" u'
    assert "sk-ant-abc123456789" not in redact("echo sk-ant-abc123456789")
    assert redact("squeue -u abc1de -o '%i|%j'") == "squeue -u abc1de -o '%i|%j'"


def test_command_log_bounded_with_listeners() -> None:
    log = CommandLog(maxlen=3)
    seen: list[str] = []
    remove = log.add_listener(lambda r: seen.append(r.command))
    for i in range(5):
        log.record(f"echo {i} TOKEN=x{i}", started_at=0.0, duration=0.1, exit_status=0)
    assert [r.command for r in log.records()] == ["echo 2 TOKEN=****", "echo 3 TOKEN=****", "echo 4 TOKEN=****"]
    assert len(seen) == 5 and log.total == 5
    remove()
    log.record("x", started_at=0.0, duration=0.0, exit_status=1)
    assert len(seen) == 5


def test_target_from_ssh_config(tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    key = tmp_path / "id_test"
    key.write_text("dummy")
    cfg.write_text(
        "Host rivanna\n  HostName login.example.edu\n  Port 2200\n  User someone\n"
        f"  IdentityFile {key}\n  ProxyJump jump@bastion:2201\n  UserKnownHostsFile {tmp_path}/kh\n"
        "Host *\n  Port 2999\n"
    )
    t = SshTarget.from_config(ConnectionConfig(host="rivanna", user="abc1de"), ssh_config=cfg)
    assert (t.host, t.port, t.user) == ("login.example.edu", 2200, "abc1de")  # config.toml user wins
    assert t.identity_files == (str(key),)
    assert t.proxy_jump == "jump@bastion:2201"
    assert t.known_hosts == f"{tmp_path}/kh"
    assert t.alias == "rivanna"
    assert t.known_hosts_name == "[login.example.edu]:2200"
    # explicit config.toml values win over ~/.ssh/config
    t2 = SshTarget.from_config(ConnectionConfig(host="rivanna", user="u", hostname="other.edu", port=22,
                                                identity_file="~/k", known_hosts="/kh2"), ssh_config=cfg)
    assert (t2.host, t2.port, t2.known_hosts, t2.proxy_jump) == ("other.edu", 22, "/kh2", "jump@bastion:2201")
    assert t2.identity_files == (str(Path("~/k").expanduser()),)
    # no ssh config: alias is the host, default known_hosts
    t3 = SshTarget.from_config(ConnectionConfig(host="h.example", user="u"), ssh_config=None)
    assert (t3.host, t3.port, t3.known_hosts, t3.alias) == ("h.example", 22, "~/.ssh/known_hosts", None)


def test_batch_split_is_exact() -> None:
    nonce = "RVBtest"
    out = (b"\nRVBtest:B:0\nhello\n\nRVBtest:E:0:0\n\nRVBtest:B:1\nno-newline\nRVBtest:E:0:0"
           b"\nRVBtest:E:1:3\n\nRVBtest:B:2\npartial")
    err = b"junk\nRVBtest:B:0\n\nRVBtest:E:0\n\nRVBtest:B:1\noops\n\nRVBtest:E:1\n\nRVBtest:B:2\n"
    parts = RemotePool._split_batch(out, err, 4, nonce)
    assert parts[0] == (0, b"hello\n", b"")
    assert parts[1] == (3, b"no-newline\nRVBtest:E:0:0", b"oops\n")
    assert parts[2] == (None, b"partial", b"")
    assert parts[3] == (None, b"", b"")


def test_max_channels_must_stay_below_maxsessions() -> None:
    t = SshTarget(host="x")
    with pytest.raises(ValueError):
        RemotePool(t, max_channels=10)


# ----------------------------------------------------------------------------- cluster tests


@pytest.mark.cluster
async def test_run_basics(pool: RemotePool) -> None:
    records: list[Any] = []
    pool.command_log.add_listener(records.append)
    r = await pool.run("echo out; echo err >&2; exit 3")
    assert (r.exit_status, r.stdout, r.stderr, r.ok) == (3, "out\n", "err\n", False)
    r = await pool.run("cat; printf '|%s' \"$USER\"", stdin="from stdin\n")
    assert r.ok and r.stdout == f"from stdin\n|{pool.target.user}"
    with pytest.raises(RemoteCommandFailed) as ei:
        await pool.run("echo bad thing happened >&2; exit 42", check=True)
    assert ei.value.exit_status == 42 and "bad thing happened" in str(ei.value)
    # a syntax error is reported like ssh would, not swallowed by the pid preamble
    r = await pool.run("if then fi")
    assert r.exit_status != 0 and "syntax error" in r.stderr
    assert [x.exit_status for x in records] == [3, 0, 42, r.exit_status]
    assert records[0].command == "echo out; echo err >&2; exit 3"
    assert pool.open_channels == 0


@pytest.mark.cluster
async def test_fifty_concurrent_runs_stay_under_channel_cap(slurm_cluster: Any) -> None:
    cap = 5
    async with RemotePool(target_for(slurm_cluster), max_channels=cap) as p:
        d = f"{slurm_cluster.scratch}/rv-pool-tests/{uuid.uuid4().hex[:12]}"
        await p.run(f"mkdir -p {d}", check=True)
        p.reset_stats()
        cmds = [
            f'echo "$(date +%s%N) 1" >> {d}/events; sleep 0.2; echo "$(date +%s%N) -1" >> {d}/events; echo {i}'
            for i in range(50)
        ]
        results = await asyncio.gather(*(p.run(c) for c in cmds))
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(50)]
        assert all(r.ok for r in results)
        # the pool's own counter: the cap was reached (50 queued) and never exceeded
        assert p.max_open_channels == cap
        assert p.max_queued >= 50 - cap
        assert p.channels_opened == 50
        assert p.connection_count == 1 and p.connects == 1
        # the remote side's view: how many commands were running at once
        events = (await p.run(f"cat {d}/events", check=True)).stdout.split()
        pairs = sorted((int(events[i]), int(events[i + 1])) for i in range(0, len(events), 2))
        assert len(pairs) == 100
        running = peak = 0
        for _, delta in sorted(pairs, key=lambda e: (e[0], e[1])):  # ends (-1) before starts at ties
            running += delta
            peak = max(peak, running)
        assert 2 <= peak <= cap
        await p.run(f"rm -rf {d}")


@pytest.mark.cluster
async def test_extra_connection_opens_when_cap_binds(slurm_cluster: Any) -> None:
    async with RemotePool(target_for(slurm_cluster), max_channels=2, extra_connections=1) as p:
        results = await asyncio.gather(*(p.run(f"sleep 0.2; echo {i}") for i in range(12)))
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(12)]
        assert p.connection_count == 2
        assert 2 < p.max_open_channels <= 4


@pytest.mark.cluster
async def test_run_many_splits_per_command(pool: RemotePool) -> None:
    big = "x" * 200_000
    cmds = [
        "echo first",
        "false",
        "echo to-stderr >&2; exit 7",
        "printf 'no trailing newline'",
        "printf '\\nRVB0123:E:0:0\\n___RV_DELIM___\\n'",  # delimiter-looking output
        "if then fi",  # syntax error stays confined to this command
        "exit 5",  # exit does not end the batch
        "cd / && pwd",  # cd does not leak into later commands
        "pwd",
        "cat",  # stdin is /dev/null, so this does not hang or eat the script
        f"printf '%s' {big}",
        "printf 'a\\0b\\n'; printf 'e1\\ne2' >&2",
        "head -c 300000 /dev/zero | tr '\\0' y",  # big output
        "",
    ]
    pool.reset_stats()
    rs = await pool.run_many(cmds)
    assert pool.channels_opened == 1  # one channel, one round trip
    assert [r.command for r in rs] == cmds
    assert rs[0].exit_status == 0 and rs[0].stdout == "first\n" and rs[0].stderr == ""
    assert rs[1].exit_status == 1 and rs[1].stdout == ""
    assert rs[2].exit_status == 7 and rs[2].stderr == "to-stderr\n" and rs[2].stdout == ""
    assert rs[3].stdout == "no trailing newline" and rs[3].ok
    assert rs[4].stdout == "\nRVB0123:E:0:0\n___RV_DELIM___\n" and rs[4].ok
    assert rs[5].exit_status not in (0, None) and "syntax error" in rs[5].stderr
    assert rs[6].exit_status == 5
    assert rs[7].stdout == "/\n"
    home = (await pool.run("cd && pwd")).stdout
    assert rs[8].stdout == home
    assert rs[9].ok and rs[9].stdout == ""
    assert rs[10].stdout == big
    assert rs[11].stdout == "a\0b\n" and rs[11].stderr == "e1\ne2"
    assert rs[12].stdout == "y" * 300_000
    assert rs[13].ok
    assert await pool.run_many([]) == []
    # a small batch goes inline as the command string, and behaves the same
    small = await pool.run_many(["echo s1", "exit 9", "printf s3 >&2"])
    assert [(r.exit_status, r.stdout, r.stderr) for r in small] == [(0, "s1\n", ""), (9, "", ""), (0, "", "s3")]
    batch_records = [r for r in pool.command_log.records() if r.kind == "batch"]
    assert [r.exit_status for r in batch_records[-len(cmds) - 3:-3]] == [r.exit_status for r in rs]


@pytest.mark.cluster
async def test_stream_yields_live_lines_and_cancel_kills_tail(pool: RemotePool, workdir: str) -> None:
    log = f"{workdir}/growing.log"
    await pool.run(f": > {log}", check=True)
    got: list[str] = []
    first_two = asyncio.Event()

    async def consume() -> None:
        async for line in pool.stream(f"tail -n0 -F {log}"):
            got.append(line)
            if len(got) == 2:
                first_two.set()

    async def tail_running() -> bool:
        return (await pool.run(f"pgrep -u \"$USER\" -f 'tail -n0 -F {log}'")).ok

    task = asyncio.create_task(consume())
    assert await poll(tail_running), "remote tail never started"
    await pool.run(f"echo one >> {log}", check=True)
    assert await poll(lambda: _true(len(got) >= 1)), "first line not streamed while the file grows"
    assert got == ["one"]  # arrived before the second line was even written
    await pool.run(f"printf 'two\\nthree\\n' >> {log}", check=True)
    await asyncio.wait_for(first_two.wait(), 15)
    assert await poll(lambda: _true(len(got) >= 3))
    assert got == ["one", "two", "three"]
    assert pool.open_channels == 1  # the stream holds one channel
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def tail_gone() -> bool:
        return not await tail_running()

    assert await poll(tail_gone), "cancelling the stream did not kill the remote tail"
    assert pool.open_channels == 0
    # context-manager form, closed early
    await pool.run(f"echo four >> {log}", check=True)
    async with pool.stream(f"tail -n1 -F {log}") as s:
        assert await asyncio.wait_for(s.__anext__(), 15) == "four"
    assert await poll(tail_gone)
    assert pool.open_channels == 0
    kinds = [r.kind for r in pool.command_log.records()]
    assert "stream" in kinds and "kill" in kinds


async def _true(value: bool) -> bool:
    return value


@pytest.mark.cluster
async def test_stream_of_finite_command_ends(pool: RemotePool) -> None:
    lines = [line async for line in pool.stream("printf 'a\\nb\\nc'; echo warn >&2; exit 3")]
    assert lines == ["a", "b", "c"]
    assert pool.open_channels == 0


@pytest.mark.cluster
async def test_sftp_roundtrip_mode_0600(pool: RemotePool, workdir: str) -> None:
    path = f"{workdir}/env/secrets.env"
    data = b"HF_TOKEN=hf_secret\n\x00\xffbinary\n"
    await pool.write_file(path, data, make_parents=True)
    assert await pool.read_file(path) == data
    st = await pool.run(f"stat -c '%a %U' {path}", check=True)
    assert st.stdout.split() == ["600", pool.target.user]
    await pool.write_file(path, "replaced\n", mode=0o640)
    assert await pool.read_file(path) == b"replaced\n"
    assert (await pool.run(f"stat -c %a {path}")).stdout.strip() == "640"
    # temp files never left behind
    listing = (await pool.run(f"ls -A {workdir}/env")).stdout.split()
    assert listing == ["secrets.env"]
    with pytest.raises(RemoteFileNotFound) as ei:
        await pool.read_file(f"{workdir}/missing")
    assert ei.value.path.endswith("missing")
    assert [r.kind for r in pool.command_log.records()].count("sftp") >= 4


@pytest.mark.cluster
async def test_reconnect_after_server_side_kill(slurm_cluster: Any) -> None:
    events: list[ConnectionEvent] = []
    async with RemotePool(target_for(slurm_cluster), connect_timeout=5) as p:
        p.add_listener(events.append)
        assert p.state == "connected"
        kill_own_session(p)
        r = await p.run("echo back")  # waits for the reconnect, or retries once
        assert r.ok and r.stdout == "back\n"
        assert p.state == "connected"
        states = [e.state for e in events]
        assert "reconnecting" in states and states[-1] == "connected"
        assert p.connects == 2

        # an idempotent command in flight when the connection drops is retried once
        marker = uuid.uuid4().hex[:8]
        task = asyncio.create_task(p.run(f"sleep 1.5; echo retried-{marker}"))
        assert await poll(lambda: _true(p.open_channels == 1))
        kill_own_session(p)
        r = await task
        assert r.stdout == f"retried-{marker}\n"

        # a non-idempotent one is not: the caller learns it may or may not have run
        task = asyncio.create_task(p.run("sleep 1.5; echo once", idempotent=False))
        assert await poll(lambda: _true(p.open_channels == 1))
        kill_own_session(p)
        with pytest.raises(ConnectionLost) as ei:
            await task
        assert ei.value.hint and "may or may not have run" in ei.value.hint
        assert (await p.run("echo still-fine")).stdout == "still-fine\n"
        assert p.connects == 4
        assert any(r.error and "connection lost" in r.error for r in p.command_log.records())
    assert events[-1].state == "disconnected"


@pytest.mark.cluster
async def test_command_timeout_kills_and_pool_survives(pool: RemotePool) -> None:
    tag = f"{int(time.time() * 1000) % 100000}.{os.getpid() % 1000}"  # unique sleep argument
    with pytest.raises(CommandTimeout) as ei:
        await pool.run(f"sleep 3{tag}", timeout=0.5)
    assert ei.value.timeout == 0.5 and ei.value.hint

    async def gone() -> bool:
        return not (await pool.run(f"pgrep -u \"$USER\" -f 'sleep 3{tag}'")).ok

    assert await poll(gone), "timed-out remote command still running"
    assert (await pool.run("echo ok")).stdout == "ok\n"
    assert pool.open_channels == 0
    with pytest.raises(CommandTimeout):
        await pool.run_many(["echo a", f"sleep 4{tag}"], timeout=0.5)
    assert (await pool.run_many(["echo b"]))[0].stdout == "b\n"
    assert any(r.error and r.error.startswith("timeout") for r in pool.command_log.records())


async def _expect_connect_error(target: SshTarget, exc_type: type[RvError]) -> tuple[RvError, list[str]]:
    events: list[str] = []
    p = RemotePool(target, connect_timeout=5)
    p.add_listener(lambda e: events.append(e.state))
    try:
        with pytest.raises(exc_type) as ei:
            await p.connect()
        assert p.state == "failed"
        # a command also surfaces the typed error instead of hanging
        with pytest.raises(exc_type):
            await p.run("true")
    finally:
        await p.close()
    assert ei.value.hint, f"{exc_type.__name__} without a hint"
    return ei.value, events


@pytest.mark.cluster
async def test_wrong_host_key_is_changed(slurm_cluster: Any, tmp_path: Path) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[{slurm_cluster.host}]:{slurm_cluster.port} {other[0]} {other[1]}\n")
    before = kh.read_bytes()
    err, events = await _expect_connect_error(target_for(slurm_cluster, known_hosts=str(kh)), HostKeyChanged)
    assert f"ssh-keygen -R '[{slurm_cluster.host}]:{slurm_cluster.port}' -f {kh}" in (err.hint or "")
    assert "ssh-keyscan" in (err.hint or "")
    assert events[:2] == ["connecting", "failed"]
    assert kh.read_bytes() == before  # never accepted silently


@pytest.mark.cluster
async def test_unknown_host_key(slurm_cluster: Any, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    err, _ = await _expect_connect_error(target_for(slurm_cluster, known_hosts=str(kh)), HostKeyUnknown)
    assert f"ssh-keyscan -p {slurm_cluster.port} {slurm_cluster.host} >> {kh}" in (err.hint or "")
    assert kh.read_text() == ""
    # a missing known_hosts file is "unknown" too, never "skip checking"
    await _expect_connect_error(target_for(slurm_cluster, known_hosts=str(tmp_path / "nope")), HostKeyUnknown)


@pytest.mark.cluster
async def test_wrong_user_key_is_auth_failed(slurm_cluster: Any, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    key = tmp_path / "wrong_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(key))
    key.chmod(0o600)
    err, _ = await _expect_connect_error(target_for(slurm_cluster, identity_files=(str(key),)), AuthFailed)
    assert "rv init" in (err.hint or "")


@pytest.mark.cluster
async def test_closed_port_is_unreachable(slurm_cluster: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err, _ = await _expect_connect_error(target_for(slurm_cluster, port=port), HostUnreachable)
    assert "VPN" in (err.hint or "")


@pytest.mark.cluster
async def test_connect_through_ssh_config_alias(slurm_cluster: Any, tmp_path: Path) -> None:
    c = slurm_cluster
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host rv-test-alias\n  HostName {c.host}\n  Port {c.port}\n  IdentityFile {c.identity_file}\n"
                   f"  UserKnownHostsFile {c.known_hosts}\n")
    t = SshTarget.from_config(ConnectionConfig(host="rv-test-alias", user=c.user), ssh_config=cfg)
    async with RemotePool(t) as p:
        assert (await p.run("id -un")).stdout.strip() == c.user


@pytest.mark.cluster
async def test_refused_channels_are_retried_not_failed(slurm_cluster: Any) -> None:
    # sshd frees a session slot slightly after the client sees the channel close, so with 9 of
    # MaxSessions=10 under churn the server refuses some opens; the pool must absorb that.
    async with RemotePool(target_for(slurm_cluster), max_channels=9) as p:
        for _ in range(5):
            rs = await asyncio.gather(*(p.run("true") for _ in range(40)), return_exceptions=True)
            assert [r for r in rs if isinstance(r, BaseException)] == []
            assert all(r.ok for r in rs)  # type: ignore[union-attr]
        assert p.max_open_channels <= 9
