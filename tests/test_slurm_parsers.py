"""Slurm parsers on outputs recorded from the real test cluster (tests/fixtures/slurm/h3_*.txt)."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from rv_tui.slurm import parsers as p
from rv_tui.slurm.builders import SEP

FIX = Path(__file__).parent / "fixtures" / "slurm"


def fx(name: str) -> str:
    return (FIX / name).read_text()


@pytest.fixture
def clock() -> p.ClusterClock:
    return p.parse_clock(fx("h3_clock.txt"))


@pytest.fixture(params=["UTC", "Asia/Tokyo", "America/Los_Angeles", "Europe/Berlin"])
def laptop_tz(request, monkeypatch):
    """Run the test as if the laptop were in another zone (the cluster is America/New_York)."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def test_clock_uses_cluster_zone(clock, laptop_tz):
    assert clock.now.utcoffset().total_seconds() == -5 * 3600
    assert str(clock.tz) == "America/New_York"
    assert clock.now.astimezone(timezone.utc) == datetime(2026, 11, 23, 11, 42, 53, tzinfo=timezone.utc)


def test_clock_falls_back_to_fixed_offset_when_zone_disagrees():
    c = p.parse_clock("2026-07-01T10:00:00+0530\nAmerica/New_York\n")
    assert c.now.utcoffset().total_seconds() == 5.5 * 3600
    assert c.localize(datetime(2026, 7, 1, 12)).astimezone(timezone.utc).hour == 6


def test_clock_dst_correct_with_named_zone(clock):
    # A start time in July (EDT, -4) read with the zone from a November (-5) clock.
    t = p.parse_slurm_datetime("2027-07-01T12:00:00", clock.tz)
    assert t.utcoffset().total_seconds() == -4 * 3600


def test_sinfo_nodes_deduplicated_and_exact(laptop_tz):
    nodes = {n.name: n for n in p.parse_sinfo_nodes(fx("h3_sinfo_busy.txt"))}
    raw_rows = [ln for ln in fx("h3_sinfo_busy.txt").splitlines() if ln]
    assert len(raw_rows) > len(nodes)  # sinfo lists nodes once per partition
    assert len(nodes) == 18
    a = nodes["udc-an37-1"]
    assert set(a.partitions) == {"gpu", "gpu-a6000"}
    assert (a.gpu_type, a.gpus_total, a.gpus_used, a.gpus_free) == ("a6000", 8, 3, 5)
    assert a.state == "mixed" and a.cpus_alloc == 1 and a.cpus_total == 48
    assert nodes["udc-an37-2"].gpus_free == 0
    assert nodes["udc-an34-1"].gpu_type == "a100_40"
    assert nodes["udc-an36-1"].gpu_type == "a100_80"
    assert nodes["udc-an36-1"].features == ("gpupod", "a100_80gb")
    assert nodes["udc-an26-1"].gpu_type == "mig" and nodes["udc-an26-1"].gpus_total == 56
    assert nodes["udc-ba30-1"].gpu_type is None and nodes["udc-ba30-1"].gpus_total == 0
    assert "standard" in nodes["udc-ba30-1"].partitions  # default-partition '*' stripped


def test_sinfo_drained_node_has_no_free_gpus():
    line = next(ln for ln in fx("h3_sinfo_busy.txt").splitlines() if ln.startswith("udc-an37-1"))
    fields = line.split(SEP)
    fields[2] = "drained*"
    (node,) = p.parse_sinfo_nodes(SEP.join(fields))
    assert node.state == "drained" and not node.usable and node.gpus_free == 0


def test_sinfo_pipe_recording_of_helper1_is_not_misparsed():
    # helper-1 recorded with '|' separators; our parser must not invent nodes from it.
    assert p.parse_sinfo_nodes(fx("sinfo_node_O_pipe.txt")) == []


def test_queue_counts():
    q = p.parse_queue_counts(fx("h3_squeue_queue.txt"))
    assert q["gpu-a6000"].running_jobs == 2
    assert q["gpu-a6000"].pending_jobs == 1
    assert q["gpu-a6000"].pending_gpus == 16  # 2 nodes x 8
    assert q["gpu-v100"].running_jobs == 1 and q["gpu-v100"].pending_jobs == 0


def test_queue_counts_multi_partition_pending():
    text = f"      3 gpu-a6000,gpu{SEP}PENDING{SEP}1{SEP}gres:gpu:a6000:2\n"
    q = p.parse_queue_counts(text)
    assert q["gpu"].pending_jobs == 3 and q["gpu-a6000"].pending_gpus == 6


def test_squeue_jobs(clock, laptop_tz):
    jobs = {j.job_id: j for j in p.parse_squeue_jobs(fx("h3_squeue_jobs.txt"), clock.tz)}
    ids = json.loads(fx("h3_ids.txt"))
    run = jobs[ids["running"]]
    assert run.name == "rv rec|job 'q'"  # hostile name survives (free text is the last field)
    assert run.state == "RUNNING" and run.nodes == ("udc-an37-1",) and run.gres == "gpu:a6000:3"
    assert run.time_limit_s == 3600 and run.reason is None
    two = jobs[ids["two_node"]]
    assert two.nodes == ("udc-an37-2", "udc-an37-3") and two.num_nodes == 2
    pend = jobs[ids["pending"]]
    assert pend.state == "PENDING" and pend.reason == "Resources" and pend.nodes == ()
    # estimated start 08:42:54 New York == 13:42:54 UTC whatever the laptop's zone
    assert pend.start_time.astimezone(timezone.utc) == datetime(2026, 11, 23, 13, 42, 54,
                                                                tzinfo=timezone.utc)
    assert jobs[ids["timeout"]].time_limit_s == 60


def test_scontrol_exit_codes_never_fake_success(clock):
    ids = json.loads(fx("h3_ids.txt"))
    jobs = {j.job_id: j for j in p.parse_scontrol_jobs(fx("h3_scontrol_jobs.txt"), clock.tz)}
    assert "999" not in jobs  # the "Invalid job id" line is skipped
    assert (jobs[ids["ok"]].state, jobs[ids["ok"]].exit_code) == ("COMPLETED", 0)
    assert (jobs[ids["exit3"]].state, jobs[ids["exit3"]].exit_code) == ("FAILED", 3)
    sig = jobs[ids["signal"]]
    assert sig.exit_signal == 9 and sig.exit_code == 137
    tmo = jobs[ids["timeout"]]
    assert tmo.state == "TIMEOUT" and tmo.exit_code != 0 and tmo.exit_signal == 15
    canc = jobs[ids["running"]]
    assert canc.state == "CANCELLED" and canc.exit_code != 0
    assert canc.name == "rv rec|job 'q'"
    assert canc.nodes == ("udc-an37-1",)  # NodeList, not ReqNodeList=(null)
    assert canc.stdout_path == "/dev/null"
    assert canc.gres == "gpu:a6000:3"


def test_effective_exit_rules():
    assert p.effective_exit("TIMEOUT", 0, 0) == 124
    assert p.effective_exit("FAILED", 0, 0) == 1
    assert p.effective_exit("COMPLETED", 0, 0) == 0
    assert p.effective_exit("FAILED", 2, 0) == 2
    assert p.effective_exit("CANCELLED", 0, 15) == 143


def test_scontrol_record_keeps_spaces_in_values():
    rec = p.parse_scontrol_record("JobId=5 JobName=a b c UserId=x(1) ReqNodeList=(null) NodeList=n[1-2]")
    assert rec["JobName"] == "a b c" and rec["NodeList"] == "n[1-2]" and rec["ReqNodeList"] == "(null)"


def test_test_only_answers(clock, laptop_tz):
    ok = p.parse_test_only(fx("h3_test_only_constraint.txt"), clock.tz)
    assert ok.error is None and ok.partition == "gpu-a100-80" and ok.nodes == "udc-an36-1"
    assert ok.start.astimezone(timezone.utc) == datetime(2026, 11, 23, 11, 43, 1, tzinfo=timezone.utc)
    # Starts "now" relative to the cluster clock regardless of the laptop's zone (original bug 7)
    assert abs((ok.start - clock.now).total_seconds()) < 60
    later = p.parse_test_only(fx("h3_test_only_later.txt"), clock.tz)
    assert later.nodes == "udc-an37-[1-2]" and (later.start - clock.now).total_seconds() > 3 * 3600
    bad = p.parse_test_only(fx("h3_test_only_badconf.txt"), clock.tz)
    assert bad.start is None and bad.error == "Requested node configuration is not available"
    assert "time limit" in p.parse_test_only(fx("h3_test_only_badtime.txt"), clock.tz).error
    h1 = p.parse_test_only(fx("sbatch_test_only_later.txt"), clock.tz)
    assert h1.partition == "gpu-h200"


def test_sbatch_parsable():
    assert p.parse_sbatch_parsable(fx("sbatch_parsable.txt")) == "1000054"
    assert p.parse_sbatch_parsable("1000013;rivanna\n") == "1000013"
    assert p.parse_sbatch_parsable("Submitted batch job 77\n") == "77"
    assert p.parse_sbatch_parsable("sbatch: error: Batch job submission failed\n") is None


def test_scancel_errors():
    assert p.scancel_errors("scancel: error: Kill job error on job id 5: Job/step already "
                            "completing or completed\n") == []
    assert p.scancel_errors("scancel: error: Invalid job id 99\n") == []
    assert p.scancel_errors("scancel: error: Unable to contact slurm controller\n")


@pytest.mark.parametrize("text,expected", [
    ("udc-an37-[2-3]", ("udc-an37-2", "udc-an37-3")),
    ("a[1-2],b3", ("a1", "a2", "b3")),
    ("n[01-03,7]", ("n01", "n02", "n03", "n7")),
    ("r[1-2]n[1-2]", ("r1n1", "r1n2", "r2n1", "r2n2")),
    ("(null)", ()),
    ("", ()),
])
def test_expand_nodelist(text, expected):
    assert p.expand_nodelist(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("gpu:a6000:8(S:0-47)", {"a6000": 8}),
    ("gpu:a6000:3(IDX:0-2,5)", {"a6000": 3}),
    ("gpu:a100:4(S:0),gpu:a100:2(S:1)", {"a100": 6}),
    ("gres:gpu:v100:1", {"v100": 1}),
    ("gres/gpu:a40=2", {"a40": 2}),
    ("gpu:0", {"": 0}),
    ("(null)", {}),
])
def test_parse_gres(text, expected):
    assert p.parse_gres(text) == expected


def test_fixture_zone_is_independent_of_process_tz(monkeypatch):
    """The same recorded line gives the same instant under any laptop zone."""
    seen = set()
    for zone in ("UTC", "Asia/Kolkata", "Pacific/Auckland"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        c = p.parse_clock(fx("h3_clock.txt"))
        seen.add(p.parse_test_only(fx("h3_test_only_ok.txt"), c.tz).start.timestamp())
    monkeypatch.delenv("TZ")
    time.tzset()
    assert len(seen) == 1
    assert os.environ.get("TZ") is None
