"""The reservation plan of one pool: where and when a request fits (conservative backfill).

Why its own module: this is the arithmetic every start estimate and every start comes from;
kept pure (nodes and blocks in, a time and hosts out) so it reads and tests on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .layout import SimNode

@dataclass
class _Req:
    gpus: int
    cpus: int
    mem: int


Block = tuple[float, float, int, int, int]  # start, end, gpus, cpus, mem


def _fits(node: SimNode, blocks: list[Block], req: _Req, t0: float, dur: float) -> bool:
    """True if *req* fits on *node* during [t0, t0+dur) given the blocks already placed."""
    end = t0 + dur
    points = [t0]
    points.extend(b[0] for b in blocks if t0 < b[0] < end)
    for p in points:
        g = c = m = 0
        for s, e, bg, bc, bm in blocks:
            if s <= p < e:
                g += bg
                c += bc
                m += bm
        if g + req.gpus > node.gpus or c + req.cpus > node.cpus or m + req.mem > node.mem:
            return False
    return True


def _window_now(node: SimNode, blocks: list[Block], req: _Req, t: float) -> float:
    """Longest duration starting at *t* that fits on *node* (0 if nothing fits now)."""
    if not _fits(node, blocks, req, t, 1e-6):
        return 0.0
    for s in sorted(b[0] for b in blocks if b[0] > t):
        if not _fits(node, blocks, req, t, s - t + 1e-6):
            return s - t
    return math.inf


def _free_at(node: SimNode, blocks: list[Block], t: float) -> int:
    return node.gpus - sum(b[2] for b in blocks if b[0] <= t < b[1])


def earliest(nodes: Sequence[SimNode], blocks: dict[str, list[Block]], count: int, req: _Req,
             t: float, dur: float) -> tuple[float | None, list[SimNode]]:
    """Earliest time >= t at which *count* of *nodes* can each hold *req* for *dur* seconds."""
    nodes = [n for n in nodes if n.gpus >= req.gpus and n.cpus >= req.cpus and n.mem >= req.mem]
    if len(nodes) < count:
        return None, []
    if count == 1:
        best: tuple[float, int, str] | None = None
        best_node = None
        for n in nodes:
            bl = blocks.get(n.name, [])
            for cand in [t] + sorted({b[1] for b in bl if b[1] > t}):
                if best is not None and cand > best[0]:
                    break
                if _fits(n, bl, req, cand, dur):
                    key = (cand, _free_at(n, bl, cand), n.name)  # best fit: fewest free GPUs
                    if best is None or key < best:
                        best, best_node = key, n
                    break
        return (best[0], [best_node]) if best and best_node else (None, [])
    cands = {t}
    for n in nodes:
        cands.update(b[1] for b in blocks.get(n.name, []) if b[1] > t)
    for cand in sorted(cands):
        ok = [n for n in nodes if _fits(n, blocks.get(n.name, []), req, cand, dur)]
        if len(ok) >= count:
            ok.sort(key=lambda n: (_free_at(n, blocks.get(n.name, []), cand), n.name))
            return cand, ok[:count]
    return None, []
