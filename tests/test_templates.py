"""Job-script templates run for real under bash, with stand-in Slurm tools (no cluster needed).

What this proves: every template variant is valid bash; hostile names/commands/paths/values stay
inert; the first-wins claim lets exactly one of several concurrent copies run the command and the
others exit 0; user env values win over rv's defaults; checkpoint segments resubmit only after
their own timeout and stop on a crash; Slurm's SIGTERM produces a final event.
"""
from __future__ import annotations

import os
import stat
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from rv_tui.allocator.model import Strategy, StrategyKind
from rv_tui.errors import RvError
from rv_tui.jobs.autoenv import AUTO_VARS, auto_env
from rv_tui.jobs.notify import NotifySettings
from rv_tui.jobs.templates import (
    JobContext, attach_command, build_script, build_submission, inject_torchrun_flags, template_kind,
)
from rv_tui.quoting import env_assignment

HOSTILE = ["'; rm -rf ~; echo '", "$(touch PWNED)", "`touch PWNED`", 'a"b\'c', "x\ny; touch PWNED", "\\$HOME"]


def strat(kind: StrategyKind = StrategyKind.DIRECT, nodes: int = 1, walltime: int = 3600,
          total: int | None = None, **kw) -> Strategy:
    return Strategy(id="s1", label="test", gpu_type="a6000", partition="gpu-a6000", nodes=nodes,
                    gpus_per_node=2, kind=kind, walltime_s=walltime, time_min_s=kw.pop("time_min_s", None),
                    est_wait_s=0.0, est_su=0.0, mem="32G", cpus_per_task=8, constraint=None,
                    total_time_s=total or walltime, **kw)


def ctx_for(tmp: Path, command: str | None = "echo hi", **kw) -> JobContext:
    base = dict(name="rv-test", command=command, scratch=str(tmp / "scratch"), group_id="g1")
    base.update(kw)
    return JobContext(**base)


VARIANTS = [
    ("simple", strat(), "echo hi"),
    ("multi_node", strat(nodes=2), "torchrun --nproc_per_node 2 train.py"),
    ("checkpoint", strat(StrategyKind.CHECKPOINT, total=7200), "python train.py"),
    ("checkpoint", strat(StrategyKind.CHECKPOINT, nodes=2, total=7200), "python train.py && echo ok"),
    ("interactive", strat(), None),
    ("interactive", strat(StrategyKind.CHECKPOINT), None),
]


@pytest.mark.parametrize("kind,s,command", VARIANTS)
@pytest.mark.parametrize("notify", [False, True])
def test_every_variant_is_valid_bash(tmp_path: Path, kind: str, s: Strategy, command: str | None, notify: bool) -> None:
    n = NotifySettings(url="http://127.0.0.1:9/x", token="t0k'$(id)", user="rvtest", email="a@b.c") if notify else None
    ctx = ctx_for(tmp_path, command, notify=n, env_file="/s/.rv/env/vars.env", venv="/s/venv",
                  work_dir="/s/code", setup_snippet="echo setup", output_paths=("out", "a b"))
    assert template_kind(ctx, s) == kind
    script = build_script(ctx, s)
    r = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert script.startswith("#!/bin/bash\n#SBATCH -J rv-test\n")
    assert "#SBATCH --comment=rvgroup:g1" in script
    # the claim comes before any environment, setup or command
    assert script.index('mkdir -- "$_rv_claim"') < script.index("export OMP_NUM_THREADS")
    if notify:
        assert script.count("t0k") == 1  # only in the unexported variable, never on a command line


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_values_keep_the_script_valid(tmp_path: Path, hostile: str) -> None:
    ctx = ctx_for(tmp_path, hostile, name=hostile, work_dir=f"/w/{hostile}", venv=f"/v/{hostile}",
                  env_file=f"/e/{hostile}", output_paths=(hostile,),
                  notify=NotifySettings(url=f"http://x/{hostile}", token=hostile, user=hostile, email=hostile))
    for s in (strat(), strat(nodes=2), strat(StrategyKind.CHECKPOINT), strat(StrategyKind.CHECKPOINT, nodes=2)):
        script = build_script(ctx, s)
        assert subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True).returncode == 0
        sbatch_lines = [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]
        assert all("'" not in ln and '"' not in ln and "$" not in ln and "`" not in ln for ln in sbatch_lines)
    sub = build_submission(ctx, strat())
    assert sub.name.replace("-", "").replace(".", "").replace("_", "").isalnum()


def test_unsafe_directive_values_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(RvError):
        build_script(ctx_for(tmp_path, account="acct; rm -rf ~"), strat())
    with pytest.raises(RvError):
        build_script(ctx_for(tmp_path, group_id="../x"), strat())
    with pytest.raises(RvError):
        build_script(JobContext(name="x", command="true", scratch="/scratch/a b", group_id="g"), strat())
    with pytest.raises(RvError):
        build_script(ctx_for(tmp_path, exclude_nodes=("n1 -p x",)), strat())


def test_submission_fields_agree_with_script(tmp_path: Path) -> None:
    s = strat(StrategyKind.CHECKPOINT, walltime=3600, total=7200, time_min_s=1800)
    sub = build_submission(ctx_for(tmp_path, "python t.py"), s)
    assert sub.stdout_path == f"{tmp_path}/scratch/.rv/logs/%x-%j.out"
    assert sub.stderr_path == f"{tmp_path}/scratch/.rv/logs/%x-%j.err"
    assert f"#SBATCH -o {sub.stdout_path}" in sub.script
    assert "#SBATCH -t 01:00:00" in sub.script and "#SBATCH --time-min=00:30:00" in sub.script
    assert sub.checkpoint_total_s == 7200 and sub.group_id == "g1" and sub.command == "python t.py"
    assert sub.meta["template"] == "checkpoint"
    assert "#SBATCH --gres=gpu:a6000:2" in sub.script


def test_extra_sbatch_options_pass_through_but_managed_ones_do_not(tmp_path: Path) -> None:
    s = strat(sbatch_options=("-p", "other", "--qos", "high", "--exclusive", "--gres=gpu:x:9"))
    script = build_script(ctx_for(tmp_path), s)
    assert "#SBATCH --qos=high" in script and "#SBATCH --exclusive" in script
    assert "other" not in script and "gpu:x:9" not in script


def test_torchrun_injection() -> None:
    assert inject_torchrun_flags("torchrun --nproc_per_node 4 t.py", False) == \
        "torchrun --master-port=$MASTER_PORT --nproc_per_node 4 t.py"
    assert inject_torchrun_flags("torchrun --master_port 1234 t.py", False) == "torchrun --master_port 1234 t.py"
    multi = inject_torchrun_flags("NCCL_DEBUG=INFO python -m torch.distributed.run --nnodes 2 t.py", True)
    assert multi.startswith("NCCL_DEBUG=INFO python -m torch.distributed.run --node-rank=$SLURM_PROCID")
    assert "--nnodes=$SLURM_NNODES" not in multi and "--master-addr=$MASTER_ADDR" in multi
    assert inject_torchrun_flags("python train.py", True) == "python train.py"
    assert inject_torchrun_flags("torchrun --standalone t.py", False) == "torchrun --standalone t.py"


def test_attach_command(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path, None)
    argv = attach_command("1000123", ctx, node="udc-an37-1")
    assert argv[:4] == ["srun", "--jobid=1000123", "--overlap", "--pty"]
    assert "--nodelist=udc-an37-1" in argv
    assert argv[-1] == f"{tmp_path}/scratch/.rv/groups/g1/attach-1000123.rc"
    with pytest.raises(RvError):
        attach_command("1; rm -rf ~", ctx)


def test_auto_env_has_the_seed_variables(tmp_path: Path) -> None:
    env = auto_env(ctx_for(tmp_path, hf_cache="/standard/grp/hf"), strat())
    assert set(AUTO_VARS) <= set(env)
    # the shared cache holds model files only; HF_HOME (tokens) stays private (issue 12)
    assert env["HF_HOME"] == f"{tmp_path}/scratch/.cache/huggingface" and env["OMP_NUM_THREADS"] == "8"
    assert env["HF_HUB_CACHE"] == "/standard/grp/hf/hub"
    assert env["RV_CHECKPOINT_DIR"].endswith("/.rv/checkpoints/rv-test")


# ----------------------------------------------------------------------------- running scripts

FAKE_TOOLS = {
    "squeue": '#!/bin/bash\n[ -f "$FAKE/squeue.txt" ] && cat "$FAKE/squeue.txt"\nexit 0\n',
    "scancel": '#!/bin/bash\necho "$@" >> "$FAKE/scancel.log"\n',
    "scontrol": '#!/bin/bash\nhostname\n',
    "sbatch": ('#!/bin/bash\nn=$(cat "$FAKE/next_id" 2>/dev/null || echo 5000)\n'
               'echo "args=$* total=$RV_TOTAL_ELAPSED owner=$RV_CLAIM_OWNER seg=$RV_SEGMENT jobid=${SLURM_JOB_ID:-unset}" >> "$FAKE/sbatch.log"\n'
               'echo $((n+1)) > "$FAKE/next_id"\necho "$n"\n'),
}


@pytest.fixture
def fake_slurm(tmp_path: Path) -> dict[str, str]:
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for name, body in FAKE_TOOLS.items():
        p = bindir / name
        p.write_text(body)
        p.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RV_"))}
    env.update(PATH=f"{bindir}:{env['PATH']}", FAKE=str(tmp_path), HOME=str(tmp_path), USER="rvtest")
    return env


def run_script(tmp_path: Path, script: str, env: dict[str, str], job_id: str, wait: bool = True,
               **extra: str) -> subprocess.Popen[str] | subprocess.CompletedProcess[str]:
    path = tmp_path / f"job-{job_id}.sh"
    path.write_text(script)
    path.chmod(0o700)
    e = dict(env, SLURM_JOB_ID=job_id, SLURM_JOB_NAME="rv-test", **extra)
    if wait:
        return subprocess.run(["bash", str(path)], env=e, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    return subprocess.Popen(["bash", str(path)], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)


def test_hostile_command_runs_verbatim_and_nothing_leaks(tmp_path: Path, fake_slurm: dict[str, str]) -> None:
    out = tmp_path / "out.txt"
    for i, hostile in enumerate(HOSTILE):
        cmd = f"printf '%s' {_sq(hostile)} > {out}"
        ctx = ctx_for(tmp_path, cmd, name=hostile, group_id=f"g{i}", work_dir=str(tmp_path))
        r = run_script(tmp_path, build_script(ctx, strat()), fake_slurm, str(100 + i))
        assert r.returncode == 0, r.stderr
        assert out.read_text() == hostile
    assert not (tmp_path / "PWNED").exists()


def test_hostile_paths_do_not_execute(tmp_path: Path, fake_slurm: dict[str, str]) -> None:
    for i, hostile in enumerate(HOSTILE):
        ctx = ctx_for(tmp_path, "true", group_id=f"h{i}", work_dir=f"{tmp_path}/{hostile}",
                      venv=f"/nonexistent/{hostile}", env_file=f"/nonexistent/{hostile}", output_paths=(hostile,),
                      setup_snippet=None)
        r = run_script(tmp_path, build_script(ctx, strat()), fake_slurm, str(200 + i))
        assert r.returncode == 1 and "[rv] cannot cd to" in r.stderr  # the odd dir does not exist
    assert not (tmp_path / "PWNED").exists()


def _sq(s: str) -> str:
    from rv_tui.quoting import q
    return q(s)


def test_user_env_wins_over_defaults_and_values_arrive_intact(tmp_path: Path, fake_slurm: dict[str, str]) -> None:
    weird = "it's \"$(id)\" `x` $HOME\nline2\\"
    env_file = tmp_path / "vars.env"
    env_file.write_text("\n".join([env_assignment("HF_HOME", "/mine/hf"), env_assignment("OMP_NUM_THREADS", "3"),
                                   env_assignment("WEIRD", weird)]) + "\n")
    env_file.chmod(0o600)
    dump = tmp_path / "dump"
    cmd = f'printf "%s|%s|%s|%s" "$HF_HOME" "$OMP_NUM_THREADS" "$TORCH_HOME" "$RV_OUTPUT_DIR" > {dump}; printf "%s" "$WEIRD" > {dump}.w'
    ctx = ctx_for(tmp_path, cmd, env_file=str(env_file))
    r = run_script(tmp_path, build_script(ctx, strat()), fake_slurm, "300")
    assert r.returncode == 0, r.stderr
    hf, omp, torch_home, outdir = dump.read_text().split("|")
    assert (hf, omp) == ("/mine/hf", "3")
    assert torch_home == f"{tmp_path}/scratch/.cache/torch"
    assert outdir == f"{tmp_path}/scratch/.rv/outputs/rv-test-300" and Path(outdir).is_dir()
    assert Path(f"{dump}.w").read_text() == weird


def test_claim_lets_exactly_one_of_concurrent_jobs_run(tmp_path: Path, fake_slurm: dict[str, str]) -> None:
    marker = tmp_path / "ran"
    ctx = ctx_for(tmp_path, f"echo $SLURM_JOB_ID >> {marker}", group_id="race1")
    script = build_script(ctx, strat())
    (tmp_path / "squeue.txt").write_text("400 rvgroup:race1\n401 rvgroup:race1\n402 rvgroup:race1\n"
                                         "403 rvgroup:race1\n999 rvgroup:other\n")
    procs = [run_script(tmp_path, script, fake_slurm, str(400 + i), wait=False) for i in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    ran = marker.read_text().split()
    assert len(ran) == 1
    winner = ran[0]
    gdir = tmp_path / "scratch/.rv/groups/race1"
    assert (gdir / "claim/owner").read_text().strip() == winner
    assert (gdir / "winner").read_text().strip() == winner
    losers = [o for o, p in zip(outs, procs) if f"race group already won by job {winner}; exiting" in o[0]]
    assert len(losers) == 3
    cancelled = (tmp_path / "scancel.log").read_text().split()
    assert sorted(cancelled) == sorted(str(i) for i in range(400, 404) if str(i) != winner)


def test_client_jobs_file_is_read_for_siblings(tmp_path: Path, fake_slurm: dict[str, str]) -> None:
    gdir = tmp_path / "scratch/.rv/groups/gj"
    gdir.mkdir(parents=True)
    (gdir / "jobs").write_text("700\n701\n702\n")
    r = run_script(tmp_path, build_script(ctx_for(tmp_path, "true", group_id="gj"), strat()), fake_slurm, "701")
    assert r.returncode == 0
    assert sorted((tmp_path / "scancel.log").read_text().split()) == ["700", "702"]


def _ckpt_script(tmp_path: Path, command: str, total: int = 7200) -> str:
    return build_script(ctx_for(tmp_path, command, group_id="ck"),
                        strat(StrategyKind.CHECKPOINT, walltime=60, total=total))


def test_checkpoint_segment_gets_usr1_and_resubmits(tmp_path: Path, fake_slurm: dict[str, str]) -> None:
    got = tmp_path / "got_usr1"
    # a compound command: the trap must reach the program, and the shell must wait for it
    cmd = f"echo start; trap 'echo saved > {got}; exit 0' USR1; while :; do sleep 0.2; done"
    r = run_script(tmp_path, _ckpt_script(tmp_path, cmd), fake_slurm, "500", RV_CKPT_BUFFER="58")
    assert r.returncode == 0, r.stderr
    assert got.read_text().strip() == "saved"
    log = (tmp_path / "sbatch.log").read_text()
    assert "args=--parsable" in log and "owner=500" in log and "seg=2" in log and "jobid=unset" in log
    total = int(log.split("total=")[1].split()[0])
    assert 1 <= total < 60
    assert "resubmitted as job 5000" in r.stdout
    segs = (tmp_path / "scratch/.rv/groups/ck/segments").read_text().split()
    assert segs == ["500", "5000"]


def test_checkpoint_chain_continues_past_its_own_claim(tmp_path: Path, fake_slurm: dict[str, str]) -> None:
    marker = tmp_path / "ran"
    script = _ckpt_script(tmp_path, f"echo $SLURM_JOB_ID >> {marker}")
    assert run_script(tmp_path, script, fake_slurm, "600").returncode == 0
    # the next segment carries the owner marker: it runs despite the taken claim
    r = run_script(tmp_path, script, fake_slurm, "601", RV_CLAIM_OWNER="600", RV_TOTAL_ELAPSED="100")
    assert r.returncode == 0 and "continues as job 601" in r.stdout
    # a stranger with a wrong marker still loses
    r = run_script(tmp_path, script, fake_slurm, "602", RV_CLAIM_OWNER="999")
    assert "already won by job 600" in r.stdout
    assert marker.read_text().split() == ["600", "601"]


def test_checkpoint_crash_does_not_resubmit(tmp_path: Path, fake_slurm: dict[str, str]) -> None:
    r = run_script(tmp_path, _ckpt_script(tmp_path, "exit 3"), fake_slurm, "610")
    assert r.returncode == 3
    assert not (tmp_path / "sbatch.log").exists()


def test_checkpoint_stops_when_total_reached(tmp_path: Path, fake_slurm: dict[str, str]) -> None:
    r = run_script(tmp_path, _ckpt_script(tmp_path, "sleep 30", total=7200), fake_slurm, "620",
                   RV_TOTAL_ELAPSED="7198", RV_CLAIM_OWNER="", RV_CKPT_BUFFER="1")
    assert r.returncode == 0, r.stderr
    assert "total requested time reached" in r.stdout
    assert not (tmp_path / "sbatch.log").exists()


def test_sigterm_reaches_trap_and_kills_command(tmp_path: Path, fake_slurm: dict[str, str]) -> None:
    child_pid = tmp_path / "child"
    ctx = ctx_for(tmp_path, f"echo $$ > {child_pid}; sleep 60")
    p = run_script(tmp_path, build_script(ctx, strat()), fake_slurm, "700", wait=False)
    deadline = time.monotonic() + 20
    while not child_pid.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    p.terminate()
    out, err = p.communicate(timeout=20)
    assert p.returncode == 143
    assert "killed by SIGTERM before the time limit" in err
