"""Slurm command builders: exact argv shapes, hostile values stay inert."""

from __future__ import annotations

import shlex

import pytest

from rv_tui.cluster.base import ProbeSpec
from rv_tui.slurm import builders as b

HOSTILE = ["'; rm -rf ~; echo '", "$(id)", "`id`", "a\nb", 'x" y', "a;b|c&d"]


def argv(cmd: str) -> list[str]:
    return shlex.split(cmd.replace(" 2>&1", ""))


def test_test_only_carries_the_real_request_shape():
    spec = ProbeSpec("gpu-a100-80", "gpu:a100:4", 7200, nodes=2, cpus_per_task=16, mem="732G",
                     constraint="gpupod&a100_80gb", account="mygroup")
    a = argv(b.test_only_command(spec))
    assert a[:2] == ["sbatch", "--test-only"]
    for token in ("-p", "gpu-a100-80", "-N", "2", "--ntasks-per-node=1", "--gres=gpu:a100:4",
                  "02:00:00", "-c", "16", "--mem=732G", "--constraint=gpupod&a100_80gb", "-A",
                  "mygroup", "--wrap", "sleep 1"):
        assert token in a
    assert b.test_only_command(spec).endswith(" 2>&1")


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_values_are_single_words(bad):
    spec = ProbeSpec(bad, f"gpu:{bad}:1", 3600, account=bad, constraint=bad, mem=bad)
    a = argv(b.test_only_command(spec))
    assert a[a.index("-p") + 1] == bad
    assert a[a.index("-A") + 1] == bad
    assert f"--constraint={bad}" in a and f"--mem={bad}" in a
    path = f"/scratch/u/.rv/tmp/{bad}.sh"
    cmd = b.submit_command(path)
    qp = shlex.quote(path)
    assert cmd == f"sbatch --parsable {qp}; rc=$?; rm -f {qp}; exit $rc"


@pytest.mark.parametrize("bad", HOSTILE + ["12 13", "-1", ""])
def test_job_ids_are_validated(bad):
    with pytest.raises(ValueError):
        b.scancel_command([bad])
    with pytest.raises(ValueError):
        b.scontrol_jobs_command(["1", bad])
    with pytest.raises(ValueError):
        b.squeue_jobs_command(None, [bad])


def test_job_id_forms_accepted():
    assert argv(b.scancel_command(["1000013", "1000014_3", "1000015+0"])) == [
        "scancel", "1000013", "1000014_3", "1000015+0"]


def test_sinfo_and_squeue_formats_use_unit_separator():
    a = argv(b.sinfo_nodes_command())
    fmt = a[a.index("-O") + 1]
    assert fmt.count(b.SEP) == len(b.SINFO_FIELDS)
    assert "GresUsed" in fmt and "Gres" in fmt
    q = b.squeue_jobs_command("rvtest")
    fmt = argv(q)[argv(q).index("-o") + 1]
    assert fmt.endswith("%j")  # the free-text name is last
    assert "-u" in argv(q) and "rvtest" in argv(q)
    ids = b.squeue_jobs_command(None, ["1", "2"])
    assert "-j" in ids and "1,2" in ids and "-t all" in ids and ids.endswith("|| true")
    assert "uniq -c" in b.squeue_queue_command()


def test_submit_keeps_sbatch_status_and_removes_file():
    cmd = b.submit_command("~/x y.sh")
    assert cmd.startswith("sbatch --parsable \"$HOME\"/'x y.sh'")
    assert "rm -f" in cmd and cmd.endswith("exit $rc")


def test_mkdir_command():
    assert b.mkdir_command("/scratch/u/.rv/tmp") == "mkdir -p -m 700 /scratch/u/.rv/tmp"
