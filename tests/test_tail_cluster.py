"""tail_command over a real SSH channel to the local Slurm cluster's login node.

Proves the path SshCluster.stream_files takes: pool.stream(tail_command(...)) + TailDecoder,
with hostile content, late files, and no tail left behind after the stream or the connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rv_tui.cluster.base import FileLine
from rv_tui.quoting import q
from rv_tui.remote import RemotePool, SshTarget
from rv_tui.slurm.tail import TailDecoder, tail_command

pytestmark = pytest.mark.cluster


def _target(c: Any) -> SshTarget:
    return SshTarget(host=c.host, port=c.port, user=c.user, identity_files=(c.identity_file,),
                     known_hosts=c.known_hosts)


@pytest.fixture
async def pool(slurm_cluster: Any) -> AsyncIterator[RemotePool]:
    p = RemotePool(_target(slurm_cluster), max_channels=8, command_timeout=30)
    await p.connect()
    yield p
    await p.close()


@pytest.fixture
async def workdir(pool: RemotePool, slurm_cluster: Any) -> AsyncIterator[str]:
    d = f"{slurm_cluster.scratch}/rv-tail-tests/{uuid.uuid4().hex[:12]} we'ird $(id)"
    await pool.run(f"mkdir -p {q(d)}", check=True)
    yield d
    await pool.run(f"rm -rf {q(d)}")


async def _collect(pool: RemotePool, paths: list[str], n: int, out: list[FileLine],
                   from_start: bool = True) -> None:
    dec = TailDecoder(paths)
    async with pool.stream(tail_command(paths, from_start=from_start)) as s:
        async for raw in s:
            fl = dec.feed(raw)
            if fl is not None:
                out.append(fl)
                if len(out) >= n:
                    return


async def _tails_alive(pool: RemotePool, marker: str) -> int:
    # "[t]ail" keeps the pattern from matching the shell that runs pgrep itself
    res = await pool.run(f"pgrep -u \"$(id -u)\" -f -- {q('[t]ail -F -n .*' + marker)} | wc -l")
    return int(res.stdout.strip() or 0)


async def _wait_until(check: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return False


async def test_stream_hostile_lines_over_ssh(pool: RemotePool, workdir: str) -> None:
    paths = [f"{workdir}/job-1.node0.out", f"{workdir}/job-1.node1.err"]
    content = ["0:fake", "#", "bar 10%\r bar 20%\r", "'; rm -rf ~; echo '$(id)", "ü" * 3000, ""]
    body = "".join(c + "\n" for c in content)
    await pool.write_file(paths[0], body)
    out: list[FileLine] = []
    task = asyncio.create_task(_collect(pool, paths, len(content) + 1, out))
    await asyncio.sleep(0.5)
    await pool.write_file(paths[1], "late file\n")  # did not exist when the stream started
    await asyncio.wait_for(task, 30)
    assert [fl.line for fl in out if fl.path == paths[0]] == content
    assert [fl.line for fl in out if fl.path == paths[1]] == ["late file"]


async def test_closing_stream_and_dropping_connection_leave_no_tails(
        pool: RemotePool, workdir: str, slurm_cluster: Any) -> None:
    path = f"{workdir}/idle.out"
    await pool.write_file(path, "one\n")
    marker = workdir.split("/")[-1].split(" ")[0]
    # 1) normal close: leave the async-with block
    out: list[FileLine] = []
    await asyncio.wait_for(_collect(pool, [path], 1, out), 20)
    assert out == [FileLine(path, "one")]
    assert await _wait_until(lambda: _zero(pool, marker)), "tail outlived a closed stream"
    # 2) abrupt: the whole connection goes away while the stream is open
    other = RemotePool(_target(slurm_cluster), max_channels=2, command_timeout=30, reconnect=False)
    await other.connect()
    stream = other.stream(tail_command([path]))
    await stream.__aenter__()
    first = await asyncio.wait_for(stream.__anext__(), 20)
    assert first
    assert await _wait_until(lambda: _nonzero(pool, marker))
    for holder in list(other._conns):  # a hard drop: no channel close, no remote kill is sent
        if holder.conn is not None:
            holder.conn.abort()
    with contextlib.suppress(Exception):
        await other.close()
    assert await _wait_until(lambda: _zero(pool, marker)), "tail outlived a dropped connection"


async def _zero(pool: RemotePool, marker: str) -> bool:
    return await _tails_alive(pool, marker) == 0


async def _nonzero(pool: RemotePool, marker: str) -> bool:
    return await _tails_alive(pool, marker) > 0
