"""Strategy generation, ranking and pruning: every GPU type, counts 1..max, MIG, rtx3090, checkpoint.

Windows are built from the real recorded node layout (h3_sinfo_idle.txt) with synthetic probe
answers, so these tests need no cluster.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from rv_tui.allocator.model import Request, Strategy, StrategyKind
from rv_tui.allocator.plan import NoStrategyError, make_plan, request_from_args
from rv_tui.allocator.probe import (
    ProbeTarget, _apply_queue_window, fits_now, ladder, plan_targets, queue_horizon, refine,
)
from rv_tui.allocator.rank import dominates, prune, rank, rank_and_prune
from rv_tui.allocator.strategies import (
    INSTANT_S, Shape, Window, default_mem, generate, mem_to_mb, shapes_for, static_exclusion,
)
from rv_tui.cluster.base import ClusterSnapshot, JobInfo, NodeState, ProbeResult
from rv_tui.config import Config, DefaultsConfig
from rv_tui.errors import RvError
from rv_tui.gpus import GPU_SPECS
from rv_tui.slurm.parsers import parse_sinfo_nodes

FIX = Path(__file__).parent / "fixtures" / "slurm"
NOW = datetime(2026, 11, 23, 6, 42, 53, tzinfo=timezone.utc)
SNAP = ClusterSnapshot(taken_at=NOW, nodes=tuple(parse_sinfo_nodes((FIX / "h3_sinfo_idle.txt").read_text())))


def windows(request: Request, window_s: int | None = None, late_s: float = 4 * 3600) -> list[Window]:
    """Probe answers for every target: everything starts now (window_s None), or only walltimes
    up to window_s start now and longer ones start after late_s."""
    targets, _ = plan_targets(request, SNAP)
    out = []
    for t in targets:
        waits: dict[int, float | None] = {}
        for w in ladder(request, t.gpu_type):
            waits[w] = 0.0 if window_s is None or w <= window_s else late_s
        if window_s is not None and window_s not in waits and window_s < request.time_s:
            waits[window_s] = 0.0
        out.append(Window(t.gpu_type, t.partition, t.shape, waits, {}, t.sharing))
    return out


ALL_COUNTS = [(name, n) for name, spec in GPU_SPECS.items() for n in range(1, spec.max_per_user + 1)]


@pytest.mark.parametrize("gtype,n", ALL_COUNTS)
def test_every_type_and_count(gtype, n):
    spec = GPU_SPECS[gtype]
    req = Request(gpus=n, gpu_type=gtype, command="python train.py")
    _, excluded = plan_targets(req, SNAP)  # static limits + the recorded cluster's node count
    reason = excluded.get(gtype)
    strategies = generate(req, windows(req))
    if reason:
        assert strategies == []
        assert reason
        return
    assert strategies, f"{gtype} x{n} produced nothing"
    for s in strategies:
        assert s.total_gpus == n, "never over- or under-allocate"
        assert s.gpus_per_node <= spec.per_node
        assert s.gpu_type == gtype
        assert f"--gres=gpu:{spec.gres_type}:{s.gpus_per_node}" in s.sbatch_options
        assert ("-N", str(s.nodes)) == (s.sbatch_options[2], s.sbatch_options[3])
        if spec.constraint:
            assert f"--constraint={spec.constraint}" in s.sbatch_options
        assert s.kind in (StrategyKind.BACKFILL, StrategyKind.MIG, StrategyKind.INTERACTIVE)
        assert s.est_su == pytest.approx(spec.su_per_gpu_hour * n * req.time_s / 3600, abs=0.01)
    if n <= min(spec.max_per_job, spec.per_node):
        assert any(s.nodes == 1 for s in strategies)
    ids = [s.id for s in strategies]
    assert len(ids) == len(set(ids))


def test_odd_counts_never_overallocate():
    req = Request(gpus=5, gpu_type="a6000")
    assert [sh.label for sh in shapes_for(req, GPU_SPECS["a6000"])] == ["1x5"]
    req = Request(gpus=6, gpu_type="a6000")
    assert [sh.label for sh in shapes_for(req, GPU_SPECS["a6000"])] == ["1x6", "2x3", "3x2"][:3]
    # 5 V100s: over V100's max/job of 4, which counts the whole job (all nodes): no 5x1 either.
    req = Request(gpus=5, gpu_type="v100")
    assert shapes_for(req, GPU_SPECS["v100"]) == []
    assert "at most 4 GPUs per job" in static_exclusion(req, GPU_SPECS["v100"])
    # 6 V100s: also over max/job, so never 2x3 or 3x2
    req = Request(gpus=6, gpu_type="v100")
    assert shapes_for(req, GPU_SPECS["v100"]) == []
    req = Request(gpus=12, gpu_type="a6000")
    assert all(sh.nodes * sh.gpus_per_node == 12 for sh in shapes_for(req, GPU_SPECS["a6000"]))


def test_single_node_removes_multi_node():
    req = Request(gpus=8, single_node=True, command="x")
    strategies = generate(req, windows(req))
    assert strategies and all(s.nodes == 1 for s in strategies)
    assert any(s.nodes > 1 for s in generate(req.with_(single_node=False),
                                             windows(req.with_(single_node=False))))
    why = static_exclusion(Request(gpus=8, single_node=True), GPU_SPECS["v100"])
    assert "single-node" in why


def test_mig_special_case():
    req = Request(gpus=1)
    mig = [s for s in generate(req, windows(req)) if s.gpu_type == "mig"]
    assert len(mig) == 1
    s = mig[0]
    assert s.kind is StrategyKind.MIG and s.est_su == 0 and s.mem == "16G" and s.cpus_per_task == 1
    assert "MIG" in static_exclusion(Request(gpus=2), GPU_SPECS["mig"])


def test_rtx3090_interactive_special_case():
    req = Request(gpus=2, gpu_type="rtx3090")
    (s,) = generate(req, windows(req))
    assert s.kind is StrategyKind.INTERACTIVE and s.partition == "interactive-rtx3090"
    assert "at most 2" in static_exclusion(Request(gpus=3), GPU_SPECS["rtx3090"])
    # longer than the 12 h limit: excluded with a reason, never silently capped
    assert "12:00:00" in static_exclusion(Request(gpus=1, time_s=13 * 3600, command="x"),
                                          GPU_SPECS["rtx3090"])


def test_checkpoint_and_timemin_when_window_shorter():
    req = Request(gpus=4, gpu_type="a6000", time_s=24 * 3600, command="python train.py")
    strategies = generate(req, windows(req, window_s=3 * 3600))
    one = [s for s in strategies if s.topology == "1x4"]
    kinds = {s.kind for s in one}
    assert kinds == {StrategyKind.DIRECT, StrategyKind.TIMEMIN, StrategyKind.CHECKPOINT}
    tm = next(s for s in one if s.kind is StrategyKind.TIMEMIN)
    assert tm.time_min_s == 3 * 3600 and tm.walltime_s == 24 * 3600
    assert "--time-min=03:00:00" in tm.sbatch_options and "may get only" in tm.label
    ck = next(s for s in one if s.kind is StrategyKind.CHECKPOINT)
    assert ck.walltime_s == 3 * 3600 and ck.total_time_s == 24 * 3600 and ck.time_min_s is None
    assert ck.est_wait_s <= INSTANT_S
    direct = next(s for s in one if s.kind is StrategyKind.DIRECT)
    assert direct.est_wait_s >= 4 * 3600
    assert ck.est_su > direct.est_su  # restart buffers cost something


def test_no_checkpoint_for_interactive_but_timemin_is_labelled():
    req = Request(gpus=4, gpu_type="a6000", time_s=24 * 3600)  # rv up: command None
    kinds = {s.kind for s in generate(req, windows(req, window_s=3 * 3600))}
    assert StrategyKind.CHECKPOINT not in kinds and StrategyKind.TIMEMIN in kinds


def test_no_checkpoint_when_window_fits():
    req = Request(gpus=4, gpu_type="a6000", time_s=2 * 3600, command="x")
    kinds = {s.kind for s in generate(req, windows(req, window_s=3 * 3600))}
    assert kinds == {StrategyKind.BACKFILL}


def test_longer_than_max_walltime_only_checkpoint():
    req = Request(gpus=1, gpu_type="a40", time_s=5 * 86400, command="x")
    strategies = generate(req, windows(req))
    assert strategies and all(s.kind is StrategyKind.CHECKPOINT for s in strategies)
    assert all(s.walltime_s <= GPU_SPECS["a40"].max_walltime_s for s in strategies)
    assert "interactive" in static_exclusion(req.with_(command=None), GPU_SPECS["a40"])


def test_default_memory_is_the_proportional_share_and_packs():
    cases = {("a6000", 1): "30G", ("a6000", 4): "120G", ("a6000", 8): "240G",
             ("a100_40", 1): "60G", ("a100_40", 8): "480G", ("a100_80", 1): "118G",
             ("a100_80", 4): "472G", ("h200", 4): "708G", ("v100", 1): "90G",
             ("v100", 4): "360G", ("rtx3090", 2): "120G", ("mig", 1): "16G"}
    for (t, g), mem in cases.items():
        assert default_mem(GPU_SPECS[t], g) == mem, (t, g)
    for name, spec in GPU_SPECS.items():
        if name == "mig":
            continue
        per_gpu = mem_to_mb(default_mem(spec, 1))
        for g in range(1, spec.per_node + 1):
            mb = mem_to_mb(default_mem(spec, g))
            # never above the share (the original asked 1.5x), so the node's other GPUs stay usable
            assert mb <= spec.node_memory_mb * g / spec.per_node, (name, g)
            assert mb == max(per_gpu * g, 16 * 1024), (name, g)
        # a full node fits Slurm's RealMemory (the test cluster accepts at most floor(MB/1024) G)
        assert mem_to_mb(default_mem(spec, spec.per_node)) <= spec.node_memory_mb // 1024 * 1024


def test_mem_too_big_excludes_type():
    assert "node memory" in static_exclusion(Request(mem="600G"), GPU_SPECS["a6000"])
    assert static_exclusion(Request(mem="600G"), GPU_SPECS["a100_80"]) is None


def _s(**kw) -> Strategy:
    base = dict(id="x", label="x", gpu_type="a6000", partition="gpu-a6000", nodes=1, gpus_per_node=4,
                kind=StrategyKind.DIRECT, walltime_s=10740, time_min_s=None, est_wait_s=100.0,
                est_su=1000.0, mem="187G", cpus_per_task=16, constraint=None, total_time_s=10740)
    base.update(kw)
    return Strategy(**base)


def test_pruning_removes_dominated_and_keeps_tradeoffs():
    fast = _s(id="a6000-1x4-direct", est_wait_s=60)
    slow_dup = _s(id="a6000@gpu-1x4-direct", partition="gpu", est_wait_s=3600)
    timemin_late = _s(id="a6000-1x4-timemin", kind=StrategyKind.TIMEMIN, time_min_s=3600,
                      walltime_s=10740, est_wait_s=600)
    other_topo = _s(id="a6000-2x2-direct", nodes=2, gpus_per_node=2, est_wait_s=9000)
    cheaper_slower = _s(id="v100-1x4-direct", gpu_type="v100", est_wait_s=5000, est_su=100)
    kept, pruned = prune(rank([fast, slow_dup, timemin_late, other_topo, cheaper_slower]))
    assert {p.strategy.id for p in pruned} == {"a6000@gpu-1x4-direct", "a6000-1x4-timemin"}
    assert all(p.by == "a6000-1x4-direct" for p in pruned)
    assert "starts sooner" in pruned[0].reason
    assert {s.id for s in kept} == {"a6000-1x4-direct", "a6000-2x2-direct", "v100-1x4-direct"}


def test_tradeoff_not_pruned():
    direct = _s(id="d", est_wait_s=4 * 3600)
    tm = _s(id="t", kind=StrategyKind.TIMEMIN, time_min_s=3600, est_wait_s=0)
    assert not dominates(direct, tm) and not dominates(tm, direct)
    equal = _s(id="e", est_wait_s=4 * 3600)
    assert not dominates(direct, equal)


def test_rank_prefers_soon_then_cheap_and_caps():
    a = _s(id="a", gpu_type="h200", est_wait_s=0, est_su=9000)
    b = _s(id="b", gpu_type="v100", est_wait_s=0, est_su=200)
    c = _s(id="c", gpu_type="a40", est_wait_s=7200, est_su=100)
    assert [s.id for s in rank([a, b, c])] == ["b", "a", "c"]
    kept, pruned = rank_and_prune([a, b, c], max_strategies=2)
    assert [s.id for s in kept] == ["b", "a"] and pruned[-1].strategy.id == "c"
    assert "cap" in pruned[-1].reason


def test_refinement_points_between_cliff():
    req = Request(gpus=4, gpu_type="a6000", time_s=24 * 3600, command="x")
    w = Window("a6000", "gpu-a6000", Shape(1, 4), {3600: 0.0, 7200: 0.0, 10740: 5000.0,
                                                    86400: 5000.0}, {})
    pts = refine(w, req)
    assert pts and all(7200 < p < 10740 and p % 300 == 0 for p in pts)
    assert refine(Window("a6000", "gpu-a6000", Shape(1, 4), {3600: 0.0, 86400: 0.0}, {}), req) == []


def test_strategy_ids_are_short_and_stable():
    req = Request(gpus=4, command="x")
    first = [s.id for s in generate(req, windows(req))]
    assert first == [s.id for s in generate(req, windows(req))]
    assert "a6000-1x4-backfill" in first and all(len(i) < 32 for i in first)


# --------------------------------------------------------------------------- make_plan on a fake


class ScriptedCluster:
    """Just enough of the Cluster protocol for make_plan: recorded nodes, scripted probe answers."""

    name, user, scratch, is_demo = "scripted", "u", "/scratch/u", True

    def __init__(self, window_s: int | None = None):
        self.window_s = window_s
        self.calls = 0

    async def snapshot(self):
        return SNAP

    async def test_only(self, specs):
        self.calls += 1
        from datetime import timedelta

        out = []
        for s in specs:
            late = self.window_s is not None and s.walltime_s > self.window_s
            out.append(ProbeResult(s, NOW + timedelta(hours=5 if late else 0)))
        return out


async def test_make_plan_round_trips_and_json():
    cl = ScriptedCluster(window_s=2 * 3600 + 1200)
    plan = await make_plan(cl, Request(gpus=2, time_s=8 * 3600, command="x"))
    assert cl.calls == 2  # ladder + refinement
    assert plan.stats.round_trips == 3  # + the snapshot
    js = plan.to_json()
    assert js["strategies"][0]["sbatch_options"] and js["windows"] and js["availability"]
    a6 = next(w for w in plan.windows if w.gpu_type == "a6000" and w.shape.label == "1x2")
    assert 7200 < a6.window_s < 10740  # refined inside the cliff


async def test_make_plan_no_strategy_lists_every_type():
    with pytest.raises(NoStrategyError) as ei:
        await make_plan(ScriptedCluster(), Request(gpus=40))
    assert set(ei.value.excluded) == set(GPU_SPECS)
    assert "h200" in ei.value.message and "at most 4" in ei.value.message


# --------------------------------------------------------------------------- request_from_args


def ns(**kw) -> argparse.Namespace:
    base = dict(gpu=None, type=None, time=None, mem=None, single_node=False, name=None, mig=False,
                account=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_request_uses_config_defaults():
    cfg = Config(defaults=DefaultsConfig(account="grp", gpu_type="a100", time="4h",
                                         partition="gpu-a100-80"))
    r = request_from_args(ns(), cfg)
    assert (r.gpu_type, r.time_s, r.account, r.partition, r.gpus) == ("a100_80", 14400, "grp",
                                                                     "gpu-a100-80", 1)
    r = request_from_args(ns(type="a6000", time="30m", account="other"), cfg)
    assert (r.gpu_type, r.time_s, r.account, r.partition) == ("a6000", 1800, "other", None)
    r = request_from_args(ns(type="any"), Config())
    assert r.gpu_type is None and r.time_s == 10740


def test_request_validation():
    with pytest.raises(RvError) as ei:
        request_from_args(ns(mem="200GB"))
    assert "did you mean 200G" in ei.value.hint
    assert request_from_args(ns(mem="64g")).mem == "64G"
    with pytest.raises(RvError) as ei:
        request_from_args(ns(type="a9000"))
    assert "a6000" in ei.value.hint and "3090" in ei.value.hint
    with pytest.raises(RvError):
        request_from_args(ns(time="soon"))
    with pytest.raises(RvError):
        request_from_args(ns(gpu=0))
    r = request_from_args(ns(mig=True))
    assert (r.gpu_type, r.gpus) == ("mig", 1)
    with pytest.raises(RvError, match="--mig"):  # a conflicting -g is refused, not dropped
        request_from_args(ns(mig=True, gpu=4))
    assert request_from_args(ns(type="3090")).gpu_type == "rtx3090"
    assert request_from_args(ns(type="a100-40", time="1-12:00:00")).time_s == 36 * 3600


# --------------------------------------------------------------------------- queue-derived windows


def _busy_snapshot() -> ClusterSnapshot:
    """a100_40: udc-an34-1 has 4 GPUs free, udc-an34-2 is full; 2 jobs pending in gpu-a100-40."""
    nodes = []
    for n in SNAP.nodes:
        if n.name == "udc-an34-1":
            n = replace(n, gpus_used=4, cpus_alloc=16)
        elif n.name == "udc-an34-2":
            n = replace(n, gpus_used=8, cpus_alloc=32)
        nodes.append(n)
    from rv_tui.cluster.base import PartitionQueue
    return ClusterSnapshot(taken_at=NOW, nodes=tuple(nodes),
                           queues={"gpu-a100-40": PartitionQueue("gpu-a100-40", 2, 2, 16)})


def _pending(jid: str, part: str, gres: str, start_in: float | None) -> JobInfo:
    start = None if start_in is None else NOW + timedelta(seconds=start_in)
    return JobInfo(jid, "x", "rvother", "PENDING", part, gres=gres, start_time=start)


def test_queue_horizon_is_the_earliest_planned_start_that_can_use_the_nodes():
    snap = _busy_snapshot()
    t1 = ProbeTarget("a100_40", "gpu-a100-40", Shape(1, 4), ("gpu",))
    t2 = ProbeTarget("a100_40", "gpu-a100-40", Shape(2, 2), ("gpu",))
    req = Request(gpus=4, gpu_type="a100_40", time_s=8 * 3600, command="x")
    assert fits_now(req, t1, snap) and not fits_now(req, t2, snap)
    jobs = [_pending("1", "gpu-a100-40", "gpu:a100:8", 3600),
            _pending("2", "gpu-a6000", "gpu:a6000:8", 60),       # other partition's nodes
            _pending("3", "gpu", "gres:gpu:a6000:8", 120),       # shared partition, other type
            _pending("4", "gpu-a100-40", "gpu:a100:8", None),    # not planned by backfill
            JobInfo("5", "x", "rvother", "RUNNING", "gpu-a100-40", start_time=NOW)]
    assert queue_horizon(t1, snap, jobs, NOW) == 3600
    jobs.append(_pending("6", "gpu,gpu-a40", "gpu:8", 2400))     # untyped GRES on a shared partition
    assert queue_horizon(t1, snap, jobs, NOW) == 2400
    assert queue_horizon(t1, snap, jobs[1:4], NOW) is None


def test_queue_window_marks_walltimes_up_to_the_horizon():
    req = Request(gpus=4, gpu_type="a100_40", time_s=8 * 3600, command="x")
    t = ProbeTarget("a100_40", "gpu-a100-40", Shape(1, 4))
    late = 3 * 3600.0
    waits: dict[int, float | None] = {w: late for w in ladder(req, "a100_40")}
    changed = _apply_queue_window(req, t, waits, 3600)
    assert changed == (1800, 3300) and waits[3300] == 0.0 and waits[3600] == late
    w = Window("a100_40", "gpu-a100-40", Shape(1, 4), waits, {}, (), changed)
    assert w.window_s == 3300
    strategies = generate(req, [w])
    kinds = {s.kind: s for s in strategies}
    assert kinds[StrategyKind.TIMEMIN].time_min_s == 3300
    assert kinds[StrategyKind.CHECKPOINT].walltime_s == 3300
    # too close, or not longer than what --test-only already found: unchanged
    assert _apply_queue_window(req, t, {1800: late}, 500) == ()
    assert _apply_queue_window(req, t, {1800: 0.0, 3600: late}, 1900) == ()
    # a horizon beyond the request: the whole request starts now
    waits = {w: late for w in ladder(req, "a100_40")}
    _apply_queue_window(req, t, waits, 9 * 3600)
    assert waits[req.time_s] == 0.0


def test_sharing_note_once_per_type_in_render_plan():
    from rv_tui.allocator.plan import AllocationPlan
    from rv_tui.cli.plan_view import render_plan

    req = Request(gpus=4, gpu_type="a6000", time_s=3600, command="x")
    ws = windows(req)
    strategies = generate(req, ws)
    assert len(strategies) >= 2 and all(
        not any("reachable" in n for n in s.notes) for s in strategies)
    text = render_plan(AllocationPlan(req, SNAP, ws, strategies))
    assert text.count("also reachable via") == 1, text
    assert "a6000: also reachable via gpu (same nodes as gpu-a6000)" in text
