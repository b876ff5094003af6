"""Job scripts on the real local Slurm cluster (over asyncssh via SshCluster).

All jobs are submitted at once by a module fixture and checked by separate tests, so the module
costs about one time limit (~1-1.5 min) of wall time.  What this proves, for real sbatch/srun:
multi-node jobs write per-node logs ``{name}-{id}.node{N}.out`` with the right NODE_RANK,
WORLD_SIZE and MASTER_ADDR; checkpoint segments get SIGUSR1, resubmit themselves and stop at the
total; env values with quotes, ``$``, backticks and newlines arrive intact; a hostile job name
cannot inject; two jobs of one group started together run the command once and the winner
cancels a queued sibling; signed COMPLETED/FAILED/TIMEOUT/RESUBMITTED events reach a local
receiver, and the token never shows in any process's command line.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notify_receiver import NotifyReceiver  # noqa: E402

from rv_tui.allocator.model import Strategy, StrategyKind  # noqa: E402
from rv_tui.cluster.base import JobInfo  # noqa: E402
from rv_tui.config import Config, ConnectionConfig, PathsConfig  # noqa: E402
from rv_tui.jobs.naming import sanitize_job_name  # noqa: E402
from rv_tui.jobs.notify import NotifySettings  # noqa: E402
from rv_tui.jobs.templates import JobContext, build_submission  # noqa: E402
from rv_tui.paths import RemotePaths  # noqa: E402
from rv_tui.quoting import env_assignment, join, q  # noqa: E402

pytestmark = pytest.mark.cluster

WEIRD = "it's \"quoted\" $HOME `id` $(id)\nsecond line\\ end"
HOSTILE_NAME = "x'; touch /tmp/rv-h5-PWNED; $(touch /tmp/rv-h5-PWNED2) `id`"


def _strategy(partition: str, gpu: str, *, nodes: int = 1, gpus: int = 1, walltime: int = 300,
              kind: StrategyKind = StrategyKind.DIRECT, total: int | None = None,
              options: tuple[str, ...] = ()) -> Strategy:
    return Strategy(id=f"{partition}-{nodes}", label="t", gpu_type=gpu, partition=partition, nodes=nodes,
                    gpus_per_node=gpus, kind=kind, walltime_s=walltime, time_min_s=None, est_wait_s=0,
                    est_su=0, mem="4G", cpus_per_task=2, constraint=None, total_time_s=total or walltime,
                    sbatch_options=options)


def _open(info: Any):
    from rv_tui.cluster.ssh import SshCluster
    cfg = Config(connection=ConnectionConfig(host=info.host, user=info.user, hostname=info.host,
                                             port=info.port, identity_file=info.identity_file,
                                             known_hosts=info.known_hosts),
                 paths=PathsConfig(scratch=info.scratch))
    return SshCluster.from_config(cfg)


@dataclass
class Run:
    info: Any
    base: str  # per-run directory on scratch
    receiver: NotifyReceiver
    token: str
    jobs: dict[str, str] = field(default_factory=dict)  # label -> job id
    names: dict[str, str] = field(default_factory=dict)
    ps_samples: list[str] = field(default_factory=list)

    def sh(self, command: str) -> str:
        return asyncio.run(_exec(self.info, command))

    def job(self, label: str) -> JobInfo | None:
        return asyncio.run(_jobs(self.info, [self.jobs[label]]))[0]


async def _exec(info: Any, command: str) -> str:
    c = _open(info)
    await c.connect()
    try:
        return (await c.exec(command, timeout=30)).stdout
    finally:
        await c.close()


async def _jobs(info: Any, ids: list[str]) -> list[JobInfo | None]:
    c = _open(info)
    await c.connect()
    try:
        got = {j.job_id: j for j in await c.jobs(ids)}
        return [got.get(i) for i in ids]
    finally:
        await c.close()


def _poll(what: str, fn, timeout: float = 150.0, every: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def run(slurm_cluster: Any) -> Iterator[Run]:
    info = slurm_cluster
    token = "tok-" + secrets.token_urlsafe(24)
    base = f"{info.scratch}/.rv/test-jobs/{secrets.token_hex(4)}"
    with NotifyReceiver(token) as receiver:
        r = Run(info=info, base=base, receiver=receiver, token=token)
        asyncio.run(_submit_all(r))
        stop = time.monotonic() + 100
        sampler_env = dict(os.environ)

        def sample() -> None:  # nodes are this host: every process's argv is visible here
            while time.monotonic() < stop and not r.jobs.get("_done"):
                out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, env=sampler_env).stdout
                r.ps_samples.append(out)
                time.sleep(0.5)

        import threading
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        yield r
        r.jobs["_done"] = "1"
        ids = [v for k, v in r.jobs.items() if not k.startswith("_")]
        r.sh(join(["scancel", *ids]) + "; " + join(["rm", "-rf", base]))


async def _submit_all(r: Run) -> None:
    info = r.info
    c = _open(info)
    await c.connect()
    try:
        paths = RemotePaths(info.scratch)
        env_file = f"{r.base}/vars.env"
        await c.exec(join(["mkdir", "-p", "-m", "700", r.base, paths.logs_dir]))
        env_text = "\n".join([env_assignment("RV_WEIRD", WEIRD), env_assignment("HF_HOME", f"{r.base}/my-hf"),
                              env_assignment("RV_CKPT_BUFFER", "45")]) + "\n"
        await c.write_file(env_file, env_text, 0o600)
        notify = NotifySettings(url=r.receiver.url, token=r.token, user=info.user, email="rvtest@example.edu")

        def ctx(label: str, command: str | None, *, name: str | None = None, group: str | None = None,
                with_notify: bool = True) -> JobContext:
            n = sanitize_job_name(name or f"h5-{label}")
            r.names[label] = n
            return JobContext(name=n, command=command, scratch=info.scratch,
                              group_id=group or f"h5{label}{secrets.token_hex(3)}", env_file=env_file,
                              work_dir=r.base, notify=notify if with_notify else None)

        subs = []
        labels = []

        def add(label: str, c_: JobContext, s: Strategy) -> None:
            labels.append(label)
            subs.append(build_submission(c_, s))

        add("multi", ctx("multi", 'echo "rank=$NODE_RANK world=$WORLD_SIZE master=$MASTER_ADDR:$MASTER_PORT '
                         'host=$(hostname)"; echo "to-stderr-$NODE_RANK" >&2', with_notify=False),
            _strategy("gpu-a6000", "a6000", nodes=2))
        ck_cmd = (f"trap 'echo usr1 $SLURM_JOB_ID $RV_SEGMENT >> {q(r.base)}/ckpt.log; exit 0' USR1; "
                  f"echo start $SLURM_JOB_ID $RV_TOTAL_ELAPSED >> {q(r.base)}/ckpt.log; "
                  "while :; do sleep 0.5; done")
        add("ckpt", ctx("ckpt", ck_cmd), _strategy("gpu-a40", "a40", walltime=60,
                                                    kind=StrategyKind.CHECKPOINT, total=25))
        add("env", ctx("env", f'printf "%s" "$RV_WEIRD" > {q(r.base)}/weird.out; '
                       f'printf "%s|%s|%s" "$HF_HOME" "$TORCH_HOME" "$PWD" > {q(r.base)}/env.out',
                       name=HOSTILE_NAME), _strategy("gpu-v100", "v100"))
        add("fail", ctx("fail", "echo failing; exit 3"), _strategy("gpu-a100-40", "a100_40"))
        add("timeout", ctx("timeout", "sleep 600"), _strategy("gpu-h200", "h200", walltime=60))
        group = f"h5race{secrets.token_hex(3)}"
        race_cmd = f"echo $SLURM_JOB_ID >> {q(r.base)}/race.log; sleep 3"
        add("race_a", ctx("race", race_cmd, group=group, with_notify=False), _strategy("standard", "a6000", gpus=0))
        add("race_b", ctx("race", race_cmd, group=group, with_notify=False), _strategy("interactive", "a6000", gpus=0))
        add("race_queued", ctx("race", race_cmd, group=group, with_notify=False),
            _strategy("standard", "a6000", gpus=0, options=("--begin", "now+3600")))
        add("hold", ctx("hold", None), _strategy("gpu-a6000", "a6000"))
        results = await c.submit(subs)
        for label, res in zip(labels, results):
            assert res.ok, f"{label}: {res.error}"
            r.jobs[label] = res.job_id
    finally:
        await c.close()


def _read(r: Run, path: str) -> str:
    return r.sh(f"cat {q(path)} 2>/dev/null; true")


def test_multi_node_per_node_logs(run: Run) -> None:
    jid = run.jobs["multi"]
    logs = RemotePaths(run.info.scratch).logs_dir
    name = run.names["multi"]
    outs = _poll("per-node logs", lambda: [o for o in (_read(run, f"{logs}/{name}-{jid}.node{n}.out")
                                                       for n in (0, 1))] if all(
        _read(run, f"{logs}/{name}-{jid}.node{n}.out").strip() for n in (0, 1)) else None)
    info = _poll("multi-node job info", lambda: run.job("multi"))
    assert len(info.nodes) == 2, info
    master = sorted(info.nodes)[0]
    port = 29500 + int(jid) % 1000
    hosts = set()
    for n, text in enumerate(outs):
        line = text.strip().splitlines()[-1]
        assert f"rank={n} world=2 master={master}:{port}" in line, line
        hosts.add(line.split("host=")[1])
        assert _read(run, f"{logs}/{name}-{jid}.node{n}.err").strip() == f"to-stderr-{n}"
    assert hosts == set(info.nodes)


def test_env_values_arrive_intact_and_hostile_name_is_inert(run: Run) -> None:
    weird = _poll("env job output", lambda: _read(run, f"{run.base}/weird.out") or None)
    assert weird == WEIRD
    hf, torch_home, pwd = _read(run, f"{run.base}/env.out").split("|")
    assert hf == f"{run.base}/my-hf"  # the user's value wins over rv's default
    assert torch_home == f"{run.info.scratch}/.cache/torch" and pwd == run.base
    assert run.names["env"] == sanitize_job_name(HOSTILE_NAME)
    assert not Path("/tmp/rv-h5-PWNED").exists() and not Path("/tmp/rv-h5-PWNED2").exists()
    info = _poll("env job info", lambda: run.job("env"))
    assert info.name == run.names["env"]


def test_race_runs_command_once_and_winner_cancels_sibling(run: Run) -> None:
    log = _poll("race winner", lambda: _read(run, f"{run.base}/race.log").split() or None)
    _poll("both racers finished", lambda: all(
        (j := run.job(k)) is not None and j.is_terminal for k in ("race_a", "race_b")), timeout=60)
    assert len(_read(run, f"{run.base}/race.log").split()) == 1
    winner = log[0]
    assert winner in (run.jobs["race_a"], run.jobs["race_b"])
    loser = run.jobs["race_b"] if winner == run.jobs["race_a"] else run.jobs["race_a"]
    queued = _poll("queued sibling cancelled", lambda: (j := run.job("race_queued")) and j.state == "CANCELLED" and j,
                   timeout=30)
    assert queued.state == "CANCELLED"
    logs = RemotePaths(run.info.scratch).logs_dir
    name = run.names["race"]
    loser_out = _read(run, f"{logs}/{name}-{loser}.out")
    if loser_out:
        # it started in the same cycle: it lost the claim, or it deferred to the better-ranked
        # winner already running and was cancelled while waiting; either way it names the winner
        assert (f"[rv] race group already won by job {winner}; exiting" in loser_out
                or f"[rv] deferring to better-ranked sibling(s) already running: {winner}" in loser_out), loser_out


def _events(run: Run, label: str) -> list[dict[str, Any]]:
    jid = run.jobs[label]
    return [b for b in run.receiver.valid_events() if b.get("job_id") == jid]


def test_completed_and_failed_notifications(run: Run) -> None:
    assert run.receiver.wait_for(lambda b: any(x["job_id"] == run.jobs["fail"] for x in b), timeout=120)
    assert run.receiver.wait_for(lambda b: any(x["job_id"] == run.jobs["env"] for x in b), timeout=120)
    fail = _events(run, "fail")
    assert [e["event"] for e in fail] == ["FAILED"] and fail[0]["exit_code"] == 3
    ok = _events(run, "env")
    assert [e["event"] for e in ok] == ["COMPLETED"] and ok[0]["user"] == run.info.user


def test_checkpoint_resubmits_until_total(run: Run) -> None:
    def chain_done() -> list[dict[str, Any]] | None:
        evs = [b for b in run.receiver.valid_events() if b.get("job_name") == run.names["ckpt"]]
        return evs if any(e["event"] in ("TIMEOUT", "FAILED", "COMPLETED") for e in evs) else None
    evs = _poll("checkpoint chain end", chain_done, timeout=170, every=2)
    kinds = [e["event"] for e in evs]
    assert kinds[-1] == "TIMEOUT" and "total requested time reached" in evs[-1]["reason"], evs
    assert kinds.count("RESUBMITTED") >= 1 and set(kinds[:-1]) == {"RESUBMITTED"}
    log = _read(run, f"{run.base}/ckpt.log").splitlines()
    usr1 = [ln for ln in log if ln.startswith("usr1 ")]
    starts = [ln for ln in log if ln.startswith("start ")]
    assert len(usr1) == len(starts) == len(kinds)  # every segment got SIGUSR1
    assert starts[0].split()[1] == run.jobs["ckpt"] and starts[0].split()[2] == "0"
    assert int(starts[1].split()[2]) > 0  # RV_TOTAL_ELAPSED carried to the next segment
    gdir = f"{run.info.scratch}/.rv/groups"
    seg_ids = [ln.split()[1] for ln in starts]
    for ev, sid in zip(evs, seg_ids):
        assert ev["job_id"] == sid
    segs = _read(run, f"{gdir}/{evs[0]['group_id']}/segments").split()
    assert segs == seg_ids
    run.jobs.update({f"ckpt{i}": s for i, s in enumerate(seg_ids)})


def test_timeout_notification(run: Run) -> None:
    assert run.receiver.wait_for(lambda b: any(x["job_id"] == run.jobs["timeout"] for x in b), timeout=170)
    evs = _events(run, "timeout")
    assert [e["event"] for e in evs] == ["TIMEOUT"], evs
    info = _poll("timeout job state", lambda: (j := run.job("timeout")) and j.is_terminal and j, timeout=60)
    assert info.state == "TIMEOUT"


def test_token_never_on_a_command_line_or_in_logs(run: Run) -> None:
    assert len(run.ps_samples) > 5
    assert not any(run.token in s for s in run.ps_samples)
    logs = RemotePaths(run.info.scratch).logs_dir
    out = run.sh(f"grep -rl {q(run.token)} {q(logs)} {q(run.base)} 2>/dev/null; true")
    assert out.strip() == ""


def test_interactive_hold_and_attach_rcfile(run: Run) -> None:
    from rv_tui.jobs.templates import attach_command, attach_rc_path
    jid = run.jobs["hold"]
    ctx = JobContext(name=run.names["hold"], command=None, scratch=run.info.scratch, group_id="x")
    _poll("hold job running", lambda: (j := run.job("hold")) and j.state == "RUNNING", timeout=60)
    # the rcfile lives in the job's group dir; find it through the job's own claim record
    rc = _poll("attach rcfile", lambda: run.sh(
        f"ls {q(run.info.scratch)}/.rv/groups/*/attach-{jid}.rc 2>/dev/null; true").strip() or None, timeout=30)
    assert rc.endswith(attach_rc_path(ctx, jid).rsplit("/", 1)[1])
    assert run.sh(f"stat -c %a {q(rc)}").strip() == "600"
    # what `rv up` runs, minus --pty (no terminal here): the shell sees rv env and the workdir
    argv = attach_command(jid, ctx)
    assert argv[:4] == ["srun", f"--jobid={jid}", "--overlap", "--pty"]
    out = run.sh(join(["srun", f"--jobid={jid}", "--overlap", "-N1", "-n1", "bash", "-c",
                       '. "$1" >/dev/null 2>&1; printf "%s|%s" "$PWD" "$RV_WEIRD"', "x", rc]))
    assert out == f"{run.base}|{WEIRD}"
    run.sh(join(["scancel", jid]))
    _poll("hold job ended", lambda: (j := run.job("hold")) and j.is_terminal, timeout=60)
    time.sleep(0)  # no sleep-as-assertion: the next check is on what already arrived
    assert not [e for e in _events(run, "hold") if e["event"] != "TIMEOUT"]  # no FAILED mail for rv stop
