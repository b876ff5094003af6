"""Benchmark: 20 backfill probes (`sbatch --test-only`) one by one vs batched vs concurrent.

Why: the allocator probes many (partition, gres, time) combinations before submitting; the
pool's run_many sends a whole batch as one remote shell invocation (one round trip). This
measures what that buys against sequential `run`s (the baseline, measured in the same run)
and against concurrent `run`s on the same connection (channel-capped).

Usage: python bench/bench_probe_batching.py [--rounds N]
Needs the local test cluster: ${RV_TEST_CLUSTER_DIR:-/tmp/rv-test-cluster}/cluster.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rv_tui.remote import RemotePool, SshTarget  # noqa: E402

PROBE = "sbatch --test-only -p gpu-a6000 --gres=gpu:a6000:1 -t 1:00:00 --wrap 'sleep 1'"
N = 20


def load_target() -> SshTarget:
    d = Path(os.environ.get("RV_TEST_CLUSTER_DIR", "/tmp/rv-test-cluster"))
    info = json.loads((d / "cluster.json").read_text())
    return SshTarget(host=info["host"], port=int(info["port"]), user=info["user"],
                     identity_files=(info["identity_file"],), known_hosts=info["known_hosts"])


def check(results: list) -> None:
    bad = [r for r in results if "to start at" not in r.stderr]
    if bad:
        raise SystemExit(f"probe did not answer as expected: exit {bad[0].exit_status}: {bad[0].stderr!r}")


async def main(rounds: int) -> None:
    async with RemotePool(load_target()) as pool:
        await pool.run(PROBE)  # warm up (connection, slurmctld caches)
        seq, batch, conc = [], [], []
        for _ in range(rounds):
            t = time.perf_counter()
            res = [await pool.run(PROBE) for _ in range(N)]
            seq.append(time.perf_counter() - t)
            check(res)

            t = time.perf_counter()
            res = await pool.run_many([PROBE] * N)
            batch.append(time.perf_counter() - t)
            check(res)

            t = time.perf_counter()
            res = await asyncio.gather(*(pool.run(PROBE) for _ in range(N)))
            conc.append(time.perf_counter() - t)
            check(res)
        s, b, c = (statistics.median(x) for x in (seq, batch, conc))
        print(f"{N} probes x {rounds} rounds over one connection (median wall time)")
        print(f"  sequential run():      {s * 1000:8.1f} ms  ({s / N * 1000:.1f} ms/probe)  baseline 1.00x")
        print(f"  run_many (1 channel):  {b * 1000:8.1f} ms  ({b / N * 1000:.1f} ms/probe)  {s / b:.2f}x faster")
        print(f"  concurrent run() x{pool.max_channels}:  {c * 1000:8.1f} ms  ({c / N * 1000:.1f} ms/probe)  "
              f"{s / c:.2f}x faster")
        print(f"  run_many / concurrent wall time: {b / c:.2f} (channels used: run_many 1, concurrent "
              f"{pool.max_open_channels})")

        # the per-command SSH overhead alone (a no-op command), which is what batching removes
        seq_t, batch_t = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(N):
                await pool.run("true")
            seq_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            await pool.run_many(["true"] * N)
            batch_t.append(time.perf_counter() - t)
        s2, b2 = statistics.median(seq_t), statistics.median(batch_t)
        print(f"{N} no-op commands: sequential {s2 * 1000:.1f} ms, run_many {b2 * 1000:.1f} ms "
              f"({s2 / b2:.2f}x); per-command channel overhead ~{(s2 - b2) / N * 1000:.2f} ms")
        print("(loopback: RTT ~0; over a VPN each sequential probe also pays one RTT that run_many pays once)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(ap.parse_args().rounds))
