"""``rv ps`` shows how often Slurm restarted a job (requeue after a node failure or preemption,
``scontrol requeue``): squeue's ``RestartCnt`` (``-o`` has no field for it) rides in the same
round trip as the job listing.  Real cluster: a running job is requeued once and ps says so."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from rv_tui.cli.ps import render


def test_render_marks_restarted_jobs() -> None:
    row = {"job_id": "7", "name": "train", "state": "RUNNING", "gpu_type": "a100", "topology": "1x1",
           "elapsed": "5m", "where": "udc-an36-1", "eta": "", "winner": True, "segment": None,
           "restarts": 2}
    text = render({"groups": [{"name": "train", "state": "RUNNING", "group_id": "g1", "command": "x",
                               "git": "", "jobs": [row]}], "other": [dict(row, job_id="8")]})
    assert text.count("[restarted 2x]") == 2
    assert "restarted" not in render({"groups": [], "other": [dict(row, restarts=0)]})


@pytest.mark.cluster
def test_ps_shows_the_restart_count_of_a_requeued_job(capsys, rv_home, slurm_cluster) -> None:
    from rv_tui.cli.main import main as rv_main
    from rv_tui.cluster import open_cluster
    from rv_tui.config import load_config

    async def submit_and_requeue() -> str:
        c = await open_cluster(load_config())
        try:
            res = await c.exec("sbatch --parsable -p standard -t 5 -J rv-requeue -o /dev/null --wrap 'sleep 120'")
            jid = res.stdout.strip().split(";")[0]
            assert jid.isdigit(), res
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                (info,) = await c.jobs([jid])
                if info.has_started:
                    break
                await asyncio.sleep(0.5)
            r = await c.exec(f"scontrol requeue {jid}")
            assert r.ok, r.stderr
            return jid
        finally:
            await c.close()

    jid = asyncio.run(submit_and_requeue())
    try:
        deadline = time.monotonic() + 30
        row = None
        while time.monotonic() < deadline:
            code = rv_main(["ps", "--json"])
            out, err = capsys.readouterr()
            assert code == 0, err
            rows = {r["job_id"]: r for r in json.loads(out)["other"]}
            row = rows.get(jid)
            if row and row["restarts"] >= 1:
                break
            time.sleep(1)
        assert row is not None and row["restarts"] == 1, row
        code = rv_main(["ps"])
        assert "[restarted 1x]" in capsys.readouterr().out
    finally:
        async def cancel() -> None:
            c = await open_cluster(load_config())
            try:
                await c.cancel([jid])
            finally:
                await c.close()

        asyncio.run(cancel())


def test_render_marks_chain_segments() -> None:
    base = {"name": "train", "state": "RUNNING", "gpu_type": "v100", "topology": "1x1", "elapsed": "1m",
            "where": "n1", "eta": "", "restarts": 0}
    rows = [dict(base, job_id="10", state="COMPLETED", winner=False, segment=1),
            dict(base, job_id="11", winner=True, segment=2)]
    text = render({"groups": [{"name": "train", "state": "RUNNING", "group_id": "g1", "command": "x",
                               "git": "", "jobs": rows}], "other": []})
    assert "[segment 1]" in text and "*11" in text.replace(" ", "") and "[segment 2]" in text
