"""No strategy promises what its script does not do (issue 11, item 6).

Every strategy the generator can produce, for requests and probe windows drawn by hypothesis, is
turned into its real job script; the script's ``#SBATCH`` lines and body are parsed and checked
against the strategy's label and notes, both ways: a note saying rv resubmits needs a script that
resubmits (``timeout --signal=USR1`` and ``sbatch "$0"``), and a script that resubmits needs a
note saying so; ``--time-min`` in the label needs the directive; a multi-node note needs one task
per node through ``srun``; an interactive session never resubmits.
"""
from __future__ import annotations

import re
import subprocess

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rv_tui.allocator.model import Request, Strategy, StrategyKind
from rv_tui.allocator.strategies import generate
from rv_tui.durations import format_slurm
from rv_tui.gpus import GPU_SPECS
from rv_tui.jobs.templates import JobContext, build_script, template_kind
from test_strategies import windows

RESUBMITS = re.compile(r'sbatch --parsable "\$0"')


def directives(script: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in script.splitlines():
        if not line.startswith("#SBATCH "):
            continue
        opt = line[len("#SBATCH "):].strip()
        key, _, val = opt.partition("=") if opt.startswith("--") else opt.partition(" ")
        out.setdefault(key, []).append(val)
    return out


def check(s: Strategy, command: str | None) -> None:
    ctx = JobContext(name="rv-check", command=command, scratch="/scratch/u", group_id="gcheck")
    script = build_script(ctx, s)
    d = directives(script)
    notes = " | ".join(s.notes)
    says_resubmit = "resubmit" in notes
    resubmits = bool(RESUBMITS.search(script))
    where = f"{s.id} ({template_kind(ctx, s)}): {s.label} / {notes}"
    assert says_resubmit == resubmits, where
    if resubmits:
        assert "timeout --signal=USR1" in script, where  # the program gets its SIGUSR1 warning
    assert d["-t"] == [format_slurm(s.walltime_s)], where
    assert d["-p"] == [s.partition], where
    assert d["-N"] == [str(s.nodes)], where
    if "--time-min" in s.label or "--time-min" in notes:
        assert d.get("--time-min") == [format_slurm(s.time_min_s or 0)], where
    else:
        assert "--time-min" not in d, where
    if s.time_min_s:  # a job Slurm may cut short: its script reads its real end, not -t
        assert "squeue -h -j \"$SLURM_JOB_ID\" -o '%e'" in script, where
    if "nodes: one task per node" in notes:
        assert d.get("--ntasks-per-node") == ["1"], where
        if command is not None:  # the command runs once per node (a hold is a shell on node 0)
            assert f"srun --nodes={s.nodes}" in script, where
    if s.gpus_per_node:
        gres = d["--gres"][0]
        assert gres.endswith(f":{s.gpus_per_node}") and GPU_SPECS[s.gpu_type].gres_type in gres, where
    if command is None:
        assert "sleep infinity" in script and not resubmits, where
        if s.kind is StrategyKind.TIMEMIN:
            assert "session may end after the window" in notes, where
    m = re.search(r"checkpoint (\S+) segments", s.label)
    if m:
        assert resubmits and s.kind is StrategyKind.CHECKPOINT, where
    assert d["--open-mode"] == ["append"], where
    r = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert r.returncode == 0, (where, r.stderr)


TYPES = [t for t in GPU_SPECS]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gtype=st.sampled_from(TYPES), gpus=st.integers(1, 8),
       hours=st.sampled_from([0.5, 2, 2.99, 8, 24, 60, 100]),
       window_h=st.one_of(st.none(), st.sampled_from([0.5, 1, 3, 6])),
       batch=st.booleans())
def test_every_generated_strategy_script_matches_its_note(gtype, gpus, hours, window_h, batch) -> None:
    spec = GPU_SPECS[gtype]
    gpus = min(gpus, spec.max_per_user)
    command = "python train.py --epochs 3" if batch else None
    req = Request(gpus=gpus, gpu_type=gtype, time_s=int(hours * 3600), command=command)
    try:
        wins = windows(req, None if window_h is None else int(window_h * 3600))
    except Exception:  # a shape the test fixture's cluster cannot hold
        return
    for s in generate(req, wins):
        check(s, command)


def test_timemin_batch_strategy_resubmits_as_its_note_says() -> None:
    """The case that was wrong: a --time-min batch strategy said 'rv resubmits the rest' while
    its script was the plain one (killed at TIMEOUT when Slurm granted only the window)."""
    req = Request(gpus=4, gpu_type="a6000", time_s=24 * 3600, command="python train.py")
    tm = [s for s in generate(req, windows(req, window_s=3 * 3600)) if s.kind is StrategyKind.TIMEMIN]
    assert tm
    for s in tm:
        check(s, req.command)
        script = build_script(JobContext(name="x", command=req.command, scratch="/s", group_id="g"), s)
        assert RESUBMITS.search(script)
