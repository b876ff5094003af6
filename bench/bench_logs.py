#!/usr/bin/env python3
"""Log merging throughput from 4 nodes and memory held after 1,000,000 lines.

Three figures, each against a baseline measured in the same run:

* merge: lines/s through ``merge_stream`` (path -> node/stream, seq, progress detection) + the
  ring buffer, vs. the bare async iteration of the same FileLines (the cost floor);
* decode: lines/s through ``TailDecoder.feed`` (the SSH framing) vs. ``str.partition``;
* memory: bytes held (tracemalloc) by a LogRing after 1,000,000 lines vs. keeping every line in
  a list (what an unbounded buffer would hold).  5% of lines are tqdm redraws.

Usage: python3 bench/bench_logs.py [--lines 1000000] [--nodes 4]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rv_tui.cluster.base import FileLine  # noqa: E402
from rv_tui.logs import LogRing  # noqa: E402
from rv_tui.logs.events import LogSource  # noqa: E402
from rv_tui.logs.merge import merge_stream  # noqa: E402
from rv_tui.slurm.tail import TailDecoder  # noqa: E402


def make_lines(n: int, nodes: int) -> list[FileLine]:
    paths = [f"/scratch/u/.rv/logs/train-1.node{i}.out" for i in range(nodes)]
    out = []
    for k in range(n):
        p = paths[k % nodes]
        if k % 20 == 0:
            text = f"\r{k % 100:3d}%|{'#' * (k % 10)}{' ' * (10 - k % 10)}| {k}/1000000 [00:01<00:02, 30.1it/s]"
        else:
            text = f"step {k} loss {1.0 / (k + 1):.6f} lr 3e-4 grad_norm 0.93 tokens/s 123456"
        out.append(FileLine(p, text))
    return out


class ReplayCluster:
    """stream_files replays prepared lines (no I/O): isolates the merger's own cost."""

    scratch = "/scratch/u"

    def __init__(self, lines: list[FileLine]) -> None:
        self.lines = lines

    async def stream_files(self, paths: Sequence[str], *, from_start: bool = True) -> AsyncIterator[FileLine]:
        for fl in self.lines:
            yield fl


async def bench_merge(lines: list[FileLine], nodes: int) -> tuple[float, float, LogRing]:
    sources = [LogSource(f"/scratch/u/.rv/logs/train-1.node{i}.out", i, "out") for i in range(nodes)]
    c = ReplayCluster(lines)
    t0 = time.perf_counter()
    n = 0
    async for _ in c.stream_files([]):
        n += 1
    base = time.perf_counter() - t0
    ring = LogRing()
    t0 = time.perf_counter()
    async for line in merge_stream(c, sources):  # type: ignore[arg-type]
        ring.append(line)
    merged = time.perf_counter() - t0
    return n / base, len(lines) / merged, ring


def bench_decode(lines: list[FileLine], nodes: int) -> tuple[float, float]:
    framed = [f"{k % nodes}:{fl.line.replace('%', '%%').replace(chr(13), '%r')}" for k, fl in enumerate(lines)]
    t0 = time.perf_counter()
    for s in framed:
        s.partition(":")
    base = time.perf_counter() - t0
    dec = TailDecoder([fl.path for fl in lines[:nodes]])
    t0 = time.perf_counter()
    for s in framed:
        dec.feed(s)
    took = time.perf_counter() - t0
    return len(framed) / base, len(framed) / took


def bench_memory(lines: list[FileLine], nodes: int) -> tuple[int, int, int]:
    from rv_tui.logs.events import LogLine
    from rv_tui.logs.progress import is_progress

    def as_log(k: int, fl: FileLine) -> LogLine:
        return LogLine(k, k % nodes, "out", fl.line, is_progress(fl.line))

    gc.collect()
    tracemalloc.start()
    ring = LogRing()
    for k, fl in enumerate(lines):
        ring.append(as_log(k, fl))
    ring_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    held = len(ring)
    del ring
    gc.collect()
    tracemalloc.start()
    keep = [as_log(k, fl) for k, fl in enumerate(lines)]
    list_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del keep
    return ring_bytes, list_bytes, held


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--nodes", type=int, default=4)
    a = ap.parse_args()
    lines = make_lines(a.lines, a.nodes)
    base_rate, merge_rate, ring = asyncio.run(bench_merge(lines, a.nodes))
    split_rate, decode_rate = bench_decode(lines, a.nodes)
    ring_bytes, list_bytes, held = bench_memory(lines, a.nodes)
    result = {
        "lines": a.lines, "nodes": a.nodes,
        "merge_lines_per_s": round(merge_rate), "bare_iteration_lines_per_s": round(base_rate),
        "merge_vs_bare": round(merge_rate / base_rate, 3),
        "decode_lines_per_s": round(decode_rate), "partition_lines_per_s": round(split_rate),
        "decode_vs_partition": round(decode_rate / split_rate, 3),
        "ring_lines_held": held, "ring_bytes": ring_bytes, "unbounded_list_bytes": list_bytes,
        "ring_vs_unbounded_memory": round(ring_bytes / list_bytes, 4),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
