"""Ranking, dominance pruning and the cap.

Ranking: estimated wait first (in 5-minute buckets, so a few seconds never outweigh SUs), then
strategies that need no checkpointing, then SU cost, then fewer nodes.

Pruning (a real rule, unlike the original's no-op): within one GPU type and topology, strategy B
is dropped when another strategy A is at least as good on every metric and strictly better on one:

* estimated wait (lower is better),
* estimated SU (lower is better),
* guaranteed first-allocation time (higher is better: the walltime, or ``--time-min`` /
  the segment length for time-min and checkpoint jobs),
* restarts the program must survive (fewer is better).

So a ``--time-min`` strategy that would not start sooner than the plain job is pruned, and so is
the same job on a partition whose probe answered later.  Equal strategies are all kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rv_tui.allocator.model import Strategy, StrategyKind
from rv_tui.allocator.strategies import CHECKPOINT_BUFFER_S
from rv_tui.gpus import GPU_SPECS

WAIT_BUCKET_S = 300
_TYPE_ORDER = {name: i for i, name in enumerate(GPU_SPECS)}


@dataclass(frozen=True)
class Pruned:
    strategy: Strategy
    reason: str
    by: str  # id of the dominating strategy

    def to_json(self) -> dict:
        return {"id": self.strategy.id, "label": self.strategy.label, "reason": self.reason,
                "by": self.by}


def guaranteed_s(s: Strategy) -> int:
    """Walltime the first allocation is sure to get."""
    if s.kind is StrategyKind.TIMEMIN and s.time_min_s:
        return s.time_min_s
    return s.walltime_s


def restarts(s: Strategy) -> int:
    """Resubmissions the program must survive (0 for a plain job)."""
    if s.kind not in (StrategyKind.CHECKPOINT, StrategyKind.TIMEMIN):
        return 0
    first = guaranteed_s(s)
    if s.total_time_s <= first:
        return 0
    return math.ceil(s.total_time_s / max(first - CHECKPOINT_BUFFER_S, 60)) - 1


def metrics(s: Strategy) -> tuple[float, float, float, float]:
    """Lower is better on every component."""
    return (s.est_wait_s, s.est_su, -float(guaranteed_s(s)), float(restarts(s)))


def dominates(a: Strategy, b: Strategy) -> bool:
    ma, mb = metrics(a), metrics(b)
    return all(x <= y for x, y in zip(ma, mb)) and any(x < y for x, y in zip(ma, mb))


def rank_key(s: Strategy) -> tuple:
    return (math.floor(s.est_wait_s / WAIT_BUCKET_S), restarts(s) > 0, s.est_su, s.nodes,
            _TYPE_ORDER.get(s.gpu_type, 99), s.id)


def rank(strategies: list[Strategy]) -> list[Strategy]:
    return sorted(strategies, key=rank_key)


def prune(strategies: list[Strategy]) -> tuple[list[Strategy], list[Pruned]]:
    """Drop strategies dominated within the same (type, topology); keep rank order."""
    kept: list[Strategy] = []
    pruned: list[Pruned] = []
    for s in strategies:
        rival = next((o for o in strategies if o is not s and o.gpu_type == s.gpu_type
                      and o.topology == s.topology and dominates(o, s)), None)
        if rival is None:
            kept.append(s)
        else:
            pruned.append(Pruned(s, _why(rival, s), rival.id))
    return kept, pruned


def _why(a: Strategy, b: Strategy) -> str:
    bits = []
    if a.est_wait_s < b.est_wait_s:
        bits.append("starts sooner")
    if a.est_su < b.est_su:
        bits.append("costs fewer SUs")
    if guaranteed_s(a) > guaranteed_s(b):
        bits.append("guarantees more time")
    if restarts(a) < restarts(b):
        bits.append("needs fewer restarts")
    return f"{a.id} {' and '.join(bits) or 'is as good'} and is no worse otherwise"


def rank_and_prune(strategies: list[Strategy], max_strategies: int = 16
                   ) -> tuple[list[Strategy], list[Pruned]]:
    """Rank, prune dominated ones, then cap (the capped-off ones are reported as pruned too)."""
    kept, pruned = prune(rank(strategies))
    if max_strategies > 0 and len(kept) > max_strategies:
        for s in kept[max_strategies:]:
            pruned.append(Pruned(s, f"over the cap of {max_strategies} strategies", ""))
        kept = kept[:max_strategies]
    return kept, pruned
