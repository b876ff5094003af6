#!/usr/bin/env python3
"""Probe wall time and round trips for all GPU types, batched vs one command at a time.

Runs make_plan's probe (ladder + refinement, every compatible type/partition/topology) through
SshCluster (batched: each round is one round trip, chunks run concurrently), then the same probe
specs one ``sbatch --test-only`` per pool.run call (the original rv's per-command style, but over
the same persistent connection).  Reports the ratio measured in the same run.

Usage: python3 bench/bench_probe.py [--gpus 4] [--repeat 3]   (needs the local test cluster)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rv_tui.allocator.model import Request  # noqa: E402
from rv_tui.allocator.probe import ladder, plan_targets, probe, probe_spec  # noqa: E402
from rv_tui.cluster.ssh import SshCluster  # noqa: E402
from rv_tui.config import Config, ConnectionConfig, PathsConfig  # noqa: E402
from rv_tui.slurm.builders import test_only_command  # noqa: E402


def config() -> Config:
    info = json.loads(Path("/tmp/rv-test-cluster/cluster.json").read_text())
    return Config(connection=ConnectionConfig(
        host=info["host"], user=info["user"], port=info["port"],
        identity_file=info["identity_file"], known_hosts=info["known_hosts"]),
        paths=PathsConfig(scratch=info["scratch"]))


async def run(gpus: int, repeat: int) -> dict:
    cluster = SshCluster.from_config(config())
    await cluster.connect()
    try:
        req = Request(gpus=gpus, account=cluster.user, time_s=8 * 3600, command="x")
        snap = await cluster.snapshot()
        batched, rts, n = [], 0, 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = await probe(cluster, req, snap)
            batched.append(time.perf_counter() - t0)
            rts, n = out.stats.round_trips, out.stats.probes
        targets, _ = plan_targets(req, snap)
        cmds = [test_only_command(probe_spec(req, t, w)) for t in targets
                for w in ladder(req, t.gpu_type)]
        serial = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for c in cmds:
                await cluster.pool.run(c)
            serial.append(time.perf_counter() - t0)
    finally:
        await cluster.close()
    b, s = statistics.median(batched), statistics.median(serial)
    return {"gpus": gpus, "probes_batched": n, "round_trips_batched": rts,
            "batched_s": round(b, 3), "probes_serial_round1_only": len(cmds),
            "round_trips_serial": len(cmds), "serial_s": round(s, 3),
            "speedup": round(s / b, 2) if b else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpus", type=int, nargs="*", default=[1, 4])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    for g in a.gpus:
        print(json.dumps(asyncio.run(run(g, a.repeat))))


if __name__ == "__main__":
    main()
