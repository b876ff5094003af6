"""The same log follower against the demo cluster (its stream_files simulates per-node files)."""

from __future__ import annotations

import asyncio

from rv_tui.cluster.base import JobSubmission
from rv_tui.cluster.demo import DemoCluster
from rv_tui.logs import JobEnded, JobStatus, LogLine, LogRing, follow, locate_logs

LOGS = "/scratch/demo1a/.rv/logs"


def two_node(command: str, name: str) -> JobSubmission:
    return JobSubmission(script="#!/bin/bash\n", name=name, partition="gpu-a6000", nodes=2,
                         gpus_per_node=2, gpu_type="a6000", walltime_s=3600, command=command,
                         stdout_path=f"{LOGS}/%x-%j.out", stderr_path=f"{LOGS}/%x-%j.err")


async def _run(c: DemoCluster, command: str, name: str) -> tuple[list[object], str]:
    [res] = await c.submit([two_node(command, name)])
    assert res.ok, res.error
    events: list[object] = []

    async def go() -> None:
        async for ev in follow(c, res.job_id, poll=0.05, drain_quiet=0.3, drain_max=3):  # type: ignore[arg-type]
            events.append(ev)

    await asyncio.wait_for(go(), 60)
    return events, res.job_id  # type: ignore[return-value]


async def test_demo_multi_node_failing_job() -> None:
    c = DemoCluster(seed=3, speed=600, background=False)
    try:
        events, jid = await _run(c, "python train.py --fail", "mnfail")
        logs = await locate_logs(c, jid, (await c.jobs([jid]))[0])
    finally:
        await c.close()
    assert logs.nodes == 2
    lines = [e for e in events if isinstance(e, LogLine)]
    nodes = [x.node for x in lines if x.node is not None and x.stream == "out"]
    assert set(nodes) == {0, 1}
    assert sum(1 for a, b in zip(nodes, nodes[1:]) if a != b) >= 2  # interleaved, not file by file
    assert [x.seq for x in lines] == sorted(x.seq for x in lines)
    assert any(x.stream == "err" and "Traceback" in x.text for x in lines)
    assert any(x.node is None and "[rv]" in x.text for x in lines)
    assert any(isinstance(e, JobStatus) for e in events)
    end = events[-1]
    assert isinstance(end, JobEnded) and end.state == "FAILED" and end.exit_code != 0
    ring = LogRing(max_lines=50)
    for x in lines:
        ring.append(x)
    assert len(ring) <= 50


async def test_demo_node_filter_and_success() -> None:
    c = DemoCluster(seed=4, speed=900, background=False)
    try:
        [res] = await c.submit([two_node("python train.py", "mnok")])
        events = [ev async for ev in follow(c, res.job_id, node=1, poll=0.05, drain_quiet=0.3)]  # type: ignore[arg-type]
    finally:
        await c.close()
    lines = [e for e in events if isinstance(e, LogLine)]
    assert lines and {x.node for x in lines} == {1}
    assert any(x.is_progress for x in lines)
    assert events[-1] == JobEnded(res.job_id, "COMPLETED", 0, None)  # type: ignore[arg-type]


async def test_known_info_and_files_are_not_looked_up_again() -> None:
    """``rv logs`` already located the job; ``follow(known=...)`` must not ask the cluster again."""
    c = DemoCluster(seed=3, speed=600, background=False)
    try:
        _events, jid = await _run(c, "python train.py", "known")
        info = (await c.jobs([jid]))[0]
        logs = await locate_logs(c, jid, info)
        calls: list[str] = []
        real_jobs, real_exec = c.jobs, c.exec

        async def jobs(*a, **k):  # type: ignore[no-untyped-def]
            calls.append("jobs")
            return await real_jobs(*a, **k)

        async def exec_(*a, **k):  # type: ignore[no-untyped-def]
            calls.append("exec")
            return await real_exec(*a, **k)

        c.jobs, c.exec = jobs, exec_  # type: ignore[method-assign]
        got = [ev async for ev in follow(c, jid, known=(info, logs))]
    finally:
        await c.close()
    assert info.is_terminal
    assert any(isinstance(ev, LogLine) for ev in got) and isinstance(got[-1], JobEnded)
    assert calls == []
