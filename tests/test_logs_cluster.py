"""rv logs end to end on the local Slurm cluster: a real 2-node job writing per-node files.

The job's nodes print interleaved numbered lines with sleeps; node 1 then writes to stderr and
exits 3.  The core follower and the real ``rv logs`` CLI (a subprocess) follow it at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator

import pytest

from rv_tui.cluster.base import JobSubmission
from rv_tui.config import load_config
from rv_tui.logs import JobEnded, LogLine, follow
from rv_tui.paths import RemotePaths
from rv_tui.quoting import q

pytestmark = pytest.mark.cluster

LINES = 6


@pytest.fixture
async def ssh_cluster(slurm_cluster, rv_home) -> AsyncIterator[object]:
    from rv_tui.cluster.ssh import SshCluster

    c = SshCluster.from_config(load_config())
    await c.connect()
    yield c
    await c.close()


def two_node_script(logs: str, name: str, fail_node1: bool) -> str:
    body = (f'for i in $(seq 1 {LINES}); do echo "n$SLURM_NODEID line $i"; sleep 0.4; done; '
            'printf "progress 10%%|#|\\r progress 100%%|##|\\n"; ')
    if fail_node1:
        body += 'if [ "$SLURM_NODEID" = 1 ]; then echo "node1 exploded" >&2; exit 3; fi; '
    body += "true"
    return "\n".join([
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        "#SBATCH --partition=standard",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --time=00:05:00",
        f"#SBATCH --output={logs}/%x-%j.out",
        f"#SBATCH --error={logs}/%x-%j.err",
        'echo "batch script on $(hostname)"',
        f"srun --output={q(logs + '/%x-%j.node%t.out')} --error={q(logs + '/%x-%j.node%t.err')}"
        f" bash -c {q(body)}",
    ]) + "\n"


async def submit(cluster, name: str, fail_node1: bool) -> str:  # type: ignore[no-untyped-def]
    logs = RemotePaths(cluster.scratch).logs_dir
    await cluster.exec(f"mkdir -p {q(logs)}")
    sub = JobSubmission(script=two_node_script(logs, name, fail_node1), name=name, partition="standard",
                        nodes=2, gpus_per_node=0, gpu_type="none", walltime_s=300, command="x")
    [res] = await cluster.submit([sub])
    assert res.ok, res.error
    return res.job_id  # type: ignore[return-value]


async def run_cli(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rv_tui.cli.main", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ))
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_two_node_job_followed_live_merged_and_failing(ssh_cluster) -> None:
    name = f"rvlogs-{uuid.uuid4().hex[:6]}"
    job_id = await submit(ssh_cluster, name, fail_node1=True)

    events: list[object] = []

    async def core() -> None:
        async for ev in follow(ssh_cluster, job_id, poll=0.5, drain_quiet=2.0):
            events.append(ev)

    cli = asyncio.create_task(run_cli("logs", job_id))  # follows the same job through the CLI
    await asyncio.wait_for(core(), 180)
    code, out, err = await cli

    lines = [e for e in events if isinstance(e, LogLine)]
    for n in (0, 1):
        mine = [x.text for x in lines if x.node == n and x.stream == "out"]
        assert mine[:LINES] == [f"n{n} line {i}" for i in range(1, LINES + 1)], mine
    # interleaved by arrival, not file by file: node 1's first line precedes node 0's last line
    seq0 = [x.seq for x in lines if x.node == 0 and x.stream == "out"]
    seq1 = [x.seq for x in lines if x.node == 1 and x.stream == "out"]
    assert min(seq1) < max(seq0) and min(seq0) < max(seq1)
    assert [x.text for x in lines if x.node == 1 and x.stream == "err"] == ["node1 exploded"], (events, )
    assert any(x.node is None and "batch script" in x.text for x in lines)
    prog = [x for x in lines if x.is_progress]
    assert prog and all(x.display == " progress 100%|##|" for x in prog)
    end = events[-1]
    assert isinstance(end, JobEnded) and end.state == "FAILED" and end.exit_code == 3

    assert code == 3, (out, err)
    assert "[node1] [stderr] node1 exploded" in out
    assert "[node0] n0 line 1" in out and "[node1] n1 line 6" in out
    assert "progress 10%" not in out  # collapsed to the bar's latest state
    assert "FAILED" in err

    # --node 1 --json on the finished job: only node 1, stable fields
    code, out, err = await run_cli("logs", job_id, "--node", "1", "--json")
    assert code == 0, err
    objs = [json.loads(x) for x in out.splitlines()]
    lines_json = [o for o in objs if "seq" in o]
    assert lines_json and {o["node"] for o in lines_json} == {1}
    assert set(lines_json[0]) == {"seq", "node", "stream", "line"}
    assert objs[-1] == {"end": True, "job_id": job_id, "state": "FAILED", "exit_code": 3}


async def test_pull_downloads_every_node_file(ssh_cluster, tmp_path) -> None:
    name = f"rvpull-{uuid.uuid4().hex[:6]}"
    job_id = await submit(ssh_cluster, name, fail_node1=False)
    ended = None
    async for ev in follow(ssh_cluster, job_id, poll=0.5, drain_quiet=0.5):
        if isinstance(ev, JobEnded):
            ended = ev
    # (not asserting COMPLETED: a concurrent test's clean_queue may cancel it on a shared dev box)
    assert ended is not None and (ended.exit_code == 0) == (ended.state == "COMPLETED")
    dest = tmp_path / "pulled"
    dest.mkdir()
    code, out, err = await run_cli("logs", job_id, "--pull", str(dest), "--json")
    assert code == 0, err
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted([f"{name}-{job_id}.out", f"{name}-{job_id}.err"]
                           + [f"{name}-{job_id}.node{n}.{s}" for n in (0, 1) for s in ("out", "err")])
    assert json.loads(out)["job_id"] == job_id
    assert (dest / f"{name}-{job_id}.node1.out").read_text().startswith("n1 line 1\n")
