"""Accounting without a cluster: sacct/sacctmgr parsers on recorded output (tests/fixtures/slurm/
sacct_*.txt, recorded on the local test cluster with slurmdbd), property tests for the parsers and
the command builder, the per-user limit exclusion, max/job over the whole job, final-state texts,
rv ps without accounting (history limited, from rv's own records), and the demo's answers."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rv_tui.allocator.model import Request
from rv_tui.allocator.probe import limit_exclusion
from rv_tui.allocator.strategies import shapes_for, static_exclusion
from rv_tui.cluster.base import History, JobInfo
from rv_tui.gpus import GPU_SPECS
from rv_tui.jobs.reasons import final_text, reason_text
from rv_tui.slurm import accounting as acct

FIX = Path(__file__).parent / "fixtures" / "slurm"
TZ = ZoneInfo("America/New_York")


def fixture(name: str) -> str:
    return (FIX / name).read_text()


# --------------------------------------------------------------------------- recorded sacct


def test_recorded_final_states_are_told_apart():
    """FAILED exit 3, killed by SIGKILL, CANCELLED, TIMEOUT, over --mem (OverMemoryKill: FAILED
    by signal 9 here, no cgroups) and a requeued job, as sacct -X -D printed them."""
    jobs = acct.parse_sacct(fixture("sacct_final_states.txt"), TZ)
    by_name = {j.name: j for j in jobs.values()}
    failed = by_name["rec-failed"]
    assert (failed.state, failed.exit_code, failed.exit_signal) == ("FAILED", 3, None)
    assert failed.from_accounting and failed.work_dir == "/scratch/rvtest/acct-rec"
    killed = by_name["rec-killed"]
    assert (killed.state, killed.exit_code, killed.exit_signal) == ("FAILED", 137, 9)
    assert by_name["rec-cancel"].state == "CANCELLED"  # "CANCELLED by 0" in the raw text
    assert by_name["rec-cancel"].stdout_path == (
        f"/scratch/rvtest/acct-rec/rec-cancel-{by_name['rec-cancel'].job_id}.log")
    timeout = by_name["rec-timeout"]  # recorded as root (other sessions' clean_queue spares it)
    assert timeout.state == "TIMEOUT" and timeout.exit_code == 124
    assert timeout.stdout_path == f"/tmp/t-{timeout.job_id}.out"
    assert timeout.gres == "gpu:h200:1" and timeout.partition == "gpu-h200"
    assert by_name["rec-mem"].exit_signal == 9
    requeued = by_name["rec-requeue"]
    assert requeued.restart_count == 1 and requeued.state == "CANCELLED"
    assert len({final_text(j.state, j.exit_code, j.exit_signal) for j in
                (failed, killed, by_name["rec-cancel"], timeout)}) == 4


def test_out_of_memory_line():
    """OUT_OF_MEMORY needs cgroup memory enforcement, which the fake nodes do not have (task/none):
    this line is in the exact sacct format of the recorded ones, state as 22.05 writes it."""
    line = acct.SEP.join(["1000700", "train", "rvtest", "OUT_OF_MEMORY", "0:125", "gpu-a6000", "1",
                          "udc-an37-1", "billing=4,cpu=4,gres/gpu:a6000=1,gres/gpu=1,mem=16G,node=1",
                          "", "42", "60", "2026-12-01T18:00:00", "2026-12-01T18:00:01",
                          "2026-12-01T18:00:43", "None", "/scratch/rvtest", "sbatch job.sh"])
    (job,) = acct.parse_sacct(line + "\n", TZ).values()
    assert job.state == "OUT_OF_MEMORY" and job.exit_signal == 125 and job.exit_code
    assert job.gres == "gpu:a6000:1"
    assert final_text(job.state, job.exit_code, job.exit_signal).startswith("ran out of memory")


def test_multi_node_never_started_and_separator_in_name():
    jobs = acct.parse_sacct(fixture("sacct_final_states.txt"), TZ)
    (pend,) = [j for j in jobs.values() if j.name.startswith("rec name")]
    assert pend.name == "rec name|with sep" and pend.state == "CANCELLED"  # before it started
    assert pend.num_nodes == 2 and pend.gres == "gpu:a6000:2" and pend.nodes == ()
    assert pend.reason == "cancelled by uid 0" and pend.stdout_path is None


def test_disabled_accounting_is_a_note_not_an_error():
    assert acct.history_unavailable(fixture("sacct_disabled_stderr.txt")) == acct.LIMITED_NOTE
    assert acct.history_unavailable(fixture("sacctmgr_qos_disabled_stderr.txt")) == acct.LIMITED_NOTE
    assert acct.history_unavailable("sacct: error: Problem talking to the database: "
                                    "Connection refused") == acct.UNREACHABLE_NOTE
    assert acct.history_unavailable("") is None


def test_recorded_qos_limits():
    limits = acct.cluster_limits(fixture("sacctmgr_qos.txt"), fixture("scontrol_partitions.txt"))
    assert limits is not None
    assert limits.user_limit("gpu-h200", "h200") == 4
    assert limits.user_limit("gpu", "h200") == 4 and limits.user_limit("gpu", "a6000") == 32
    assert limits.user_limit("interactive-rtx3090", "rtx3090") == 2
    assert limits.user_limit("standard", "h200") is None  # no QOS on the CPU partitions
    assert acct.cluster_limits("", fixture("scontrol_partitions.txt")) is None


# --------------------------------------------------------------------------- properties

_ids = st.from_regex(r"\A[1-9]\d{0,7}(_\d{1,3})?\Z")


@given(st.lists(_ids, min_size=1, max_size=20))
def test_sacct_command_is_one_batched_quoted_call(ids):
    cmd = acct.sacct_command(ids)
    assert cmd.count("sacct ") == 1 and ",".join(ids) in cmd and "-D" in cmd and "-X" in cmd


@given(st.text(min_size=1, max_size=40))
def test_sacct_command_refuses_anything_but_job_ids(junk):
    if acct._ID_RE.match(junk):
        return
    with pytest.raises(ValueError):
        acct.sacct_command([junk])


def test_array_and_het_ids_reach_sacct():
    cmd = acct.sacct_command(["123_[1-5]", "5+1", "7_3"])
    assert "'123_[1-5],5+1,7_3'" in cmd
    assert acct.is_job_id("123_[1-5,9]") and not acct.is_job_id("12-3") and not acct.is_job_id("")


@pytest.mark.parametrize("hostile", ["'; rm -rf ~; echo '", "$(id)", "`id`", "1\n2", "1;2"])
def test_sacct_command_hostile_ids(hostile):
    with pytest.raises(ValueError):
        acct.sacct_command(["1000001", hostile])


_free = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x1f\n"),
                max_size=30)
_states = st.sampled_from(["COMPLETED", "FAILED", "CANCELLED by 1001", "TIMEOUT", "OUT_OF_MEMORY",
                           "NODE_FAIL", "PREEMPTED", "REQUEUED", "RUNNING", "PENDING"])


@given(st.lists(st.tuples(_ids, _free, _states, st.integers(0, 255), st.integers(0, 64), _free,
                          st.text(max_size=60)), min_size=1, max_size=8))
@settings(max_examples=200)
def test_sacct_round_trip(rows):
    """Records rendered as sacct prints them parse back: the last record per id wins, its state
    and exit code survive, a submit line with separators/newlines stays one record."""
    text = ""
    for jid, name, state, code, sig, workdir, submit in rows:
        text += acct.SEP.join([jid, name, "rvtest", state, f"{code}:{sig}", "standard", "1", "n1",
                               "cpu=1,gres/gpu:a40=2", "", "5", "60", "2026-12-01T10:00:00",
                               "2026-12-01T10:00:01", "2026-12-01T10:00:06", "None", workdir,
                               submit]) + "\n"
    jobs = acct.parse_sacct(text, TZ)
    last = {r[0]: r for r in rows}
    assert set(jobs) == set(last)
    for jid, (_, name, state, code, sig, workdir, _) in last.items():
        j = jobs[jid]
        assert j.state == state.split()[0] and j.name == name
        assert j.exit_signal == (sig or None)
        if j.is_terminal:
            assert j.exit_code is not None
            assert (j.exit_code == 0) == (state == "COMPLETED" and code == 0 and sig == 0)
        assert j.restart_count == sum(1 for r in rows if r[0] == jid and r[2] == "REQUEUED")
        assert j.gres == "gpu:a40:2"


@given(st.text(max_size=300))
def test_parsers_never_crash(text):
    acct.parse_sacct(text, TZ)
    acct.parse_qos(text)
    acct.parse_partition_qos(text)
    acct.output_paths(text, "/w", "1", "n", "u")


@given(st.sampled_from(["-o", "--output"]), st.from_regex(r"\A[\w./%-]{1,30}\Z"))
def test_output_path_from_submit_line(flag, path):
    line = f"sbatch -p gpu --gres=gpu:a6000:1 {flag} {path} --wrap 'echo -o x'"
    out, _ = acct.output_paths(line, "/work/dir", "123", "nm", "me")
    expected = (path.replace("%%", "\0").replace("%j", "123").replace("%A", "123")
                .replace("%x", "nm").replace("%u", "me").replace("%a", "").replace("\0", "%"))
    if not expected.startswith("/"):
        expected = "/work/dir/" + expected
    assert out == expected


def test_output_path_ignores_wrapped_command_and_script_args():
    assert acct.output_paths("sbatch --wrap 'prog -o out.txt'", "/w", "1", "n", "u") == (None, None)
    assert acct.output_paths("sbatch job.sh -o x", "/w", "1", "n", "u") == (None, None)
    assert acct.output_paths("sbatch -p gpu -e e-%j.err job.sh", "/w", "7", "n", "u") == (
        None, "/w/e-7.err")


# --------------------------------------------------------------------------- limits


def _job(user: str, gres: str, state: str = "RUNNING", nodes: int = 1) -> JobInfo:
    return JobInfo(job_id="1", name="x", user=user, state=state, partition="gpu-h200", gres=gres,
                   num_nodes=nodes)


def test_gpu_use_counts_running_and_pending_of_the_user_only():
    jobs = [_job("me", "gpu:h200:2"), _job("me", "gpu:h200:1", "PENDING"),
            _job("me", "gpu:a6000:4", nodes=2), _job("other", "gpu:h200:8"),
            _job("me", "gpu:h200:4", "COMPLETED")]
    assert acct.gpu_use_by_type(jobs, "me") == {"h200": 3, "a6000": 8}


def test_user_at_h200_limit_is_excluded_with_the_reason():
    why = limit_exclusion(Request(gpus=2, gpu_type="h200"), "h200", {"h200": (4, 0)}, None)
    assert why and why.startswith("you already use 4 of 4 H200 GPUs (Rivanna's")
    assert limit_exclusion(Request(gpus=2), "h200", {"h200": (2, 0)}, None) is None
    assert limit_exclusion(Request(gpus=3), "h200", {"h200": (2, 0)}, None)
    why = limit_exclusion(Request(gpus=1), "h200", {"h200": (2, 2)}, None)
    assert why and why.startswith("you already use 2 of 4 H200 GPUs (+2 queued)")
    assert limit_exclusion(Request(gpus=2), "a6000", {"h200": (4, 0)}, None) is None
    stated = acct.ClusterLimits(per_user={"gpu-h200": {"h200": 1}})
    why = limit_exclusion(Request(gpus=1), "h200", {"h200": (1, 0)}, stated)
    assert why and "1 of 1 H200" in why and "cluster's" in why


@given(st.sampled_from(sorted(GPU_SPECS)), st.integers(1, 64), st.booleans())
def test_no_shape_ever_exceeds_max_per_job(gtype, n, single):
    spec = GPU_SPECS[gtype]
    req = Request(gpus=n, gpu_type=gtype, single_node=single)
    shapes = shapes_for(req, spec)
    assert all(s.nodes * s.gpus_per_node <= spec.max_per_job for s in shapes)
    if n > spec.max_per_job:
        assert shapes == [] and static_exclusion(req, spec)


def test_sixteen_a6000_is_not_a_2x8_job():
    req = Request(gpus=16, gpu_type="a6000")
    assert shapes_for(req, GPU_SPECS["a6000"]) == []
    assert "at most 8 GPUs per job" in (static_exclusion(req, GPU_SPECS["a6000"]) or "")


def test_qos_reasons_in_plain_words():
    assert "per-user GPU limit" in reason_text("QOSMaxGRESPerUser")
    assert "never start" in reason_text("QOSMaxGRESPerJob")
    assert "never start" in reason_text("QOSMaxFooPerJob")


# --------------------------------------------------------------------------- without accounting


class _NoAccounting:
    """A cluster whose sacct says accounting is disabled: the queue knows only live jobs."""

    name, user, scratch, is_demo = "fake", "rvtest", "/scratch/rvtest", False

    def __init__(self, live: list[JobInfo]) -> None:
        self.live = live
        self.history_calls = 0

    async def jobs(self, job_ids=None, *, all_users=False):
        return [j for j in self.live if job_ids is None or j.job_id in job_ids]

    async def history(self, job_ids):
        self.history_calls += 1
        note = acct.history_unavailable(fixture("sacct_disabled_stderr.txt"))
        return History(available=False, note=note)

    async def now(self):
        raise RuntimeError("no clock")

    async def exec(self, command, *, timeout=None):
        raise RuntimeError("no remote records here")


def test_ps_all_without_accounting_uses_rv_records_and_says_history_is_limited(tmp_path):
    from rv_tui.cli.ps import collect, render
    from rv_tui.jobs.store import GroupJob, GroupRecord, GroupStore

    store = GroupStore(tmp_path)
    store.save(GroupRecord(id="g1", kind="run", name="train", command="python t.py",
                           created_at="2026-12-01T10:00:00Z", winner="1000001", state="won",
                           jobs=(GroupJob("1000001", "a6000-1x1", "A6000 1x1", "a6000",
                                          "gpu-a6000", 1, 1),)))
    live = _job("rvtest", "gpu:h200:1")
    cluster = _NoAccounting([JobInfo(**{**live.__dict__, "job_id": "1000002"})])
    data = asyncio.run(collect(cluster, store, True))
    (group,) = data["groups"]
    assert group["jobs"][0]["state"] == "GONE" and group["jobs"][0]["exit_code"] is None
    assert group["jobs"][0]["gpu_type"] == "a6000"  # from rv's own record
    assert data["history_note"] == acct.LIMITED_NOTE
    assert "history is limited" in render(data)
    assert [r["job_id"] for r in data["other"]] == ["1000002"]


# --------------------------------------------------------------------------- demo


def test_demo_history_and_limits_match_the_real_shapes():
    from rv_tui.allocator.plan import NoStrategyError, make_plan
    from rv_tui.cluster.demo import DemoCluster

    async def go() -> None:
        demo = DemoCluster(seed=3)
        try:
            limits = await demo.gpu_limits()
            assert limits.user_limit("gpu-h200", "h200") == 4
            plan_ok = await make_plan(demo, Request(gpus=2, gpu_type="h200"))
            assert plan_ok.strategies
            assert any(s.gpu_type == "h200" for s in plan_ok.strategies)
            from rv_tui.cluster.base import JobSubmission
            held = await demo.submit([JobSubmission(
                script="#!/bin/sh\nsleep 3600\n", name="hold", partition="gpu-h200", nodes=1,
                gpus_per_node=4, gpu_type="h200", walltime_s=3600, command="sleep 3600")])
            assert held[0].ok
            with pytest.raises(NoStrategyError) as ei:
                await make_plan(demo, Request(gpus=2, gpu_type="h200"))
            assert re.match(r"you already use [0-4] of 4 H200 GPUs", ei.value.excluded["h200"])
            await demo.cancel([held[0].job_id])
            hist = await demo.history([held[0].job_id, "999"])
            assert hist.available and list(hist.jobs) == [held[0].job_id]
            assert hist.jobs[held[0].job_id].state == "CANCELLED"
            assert hist.jobs[held[0].job_id].from_accounting
        finally:
            await demo.close()

    asyncio.run(go())
