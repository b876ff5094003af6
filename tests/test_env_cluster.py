"""`rv env import` against the local cluster: hostile values reach a real job intact; a bad .env
changes nothing; the remote store is 0600."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rv_tui.cluster.ssh import SshCluster
from rv_tui.config import load_config
from rv_tui.paths import RemotePaths
from rv_tui.quoting import q

DOTENV = r'''# hostile values
export RVT_EQ=a=b=c
RVT_SPACES = "  two  spaces  "
RVT_SQ='it''s $HOME `id`'
RVT_DQ="say \"hi\"\nsecond line"
RVT_DOLLAR=$(touch /tmp/rv-env-pwned)
RVT_HASH=value # comment
'''
EXPECTED = {
    "RVT_EQ": "a=b=c",
    "RVT_SPACES": "  two  spaces  ",
    "RVT_DQ": 'say "hi"\nsecond line',
    "RVT_DOLLAR": "$(touch /tmp/rv-env-pwned)",
    "RVT_HASH": "value",
}


def rv(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RV_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "rv_tui", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.cluster
async def test_env_import_round_trips_into_a_job(rv_home: Path, tmp_path: Path, clean_queue: None) -> None:
    # RVT_SQ uses shell-style '' which is not valid .env: first prove a bad file changes nothing
    (tmp_path / "bad.env").write_text(DOTENV)
    cluster = SshCluster.from_config(load_config())
    await cluster.connect()
    try:
        store = RemotePaths(cluster.scratch).env_file
        before = (await cluster.exec(f"cat {q(store)} 2>/dev/null; true")).stdout
        r = rv("env", "import", "bad.env", cwd=tmp_path, home=rv_home)
        assert r.returncode != 0 and "bad.env line 4" in r.stderr
        assert (await cluster.exec(f"cat {q(store)} 2>/dev/null; true")).stdout == before

        good = DOTENV.replace("RVT_SQ='it''s $HOME `id`'", "RVT_SQ='it\"s $HOME `id`'")
        (tmp_path / ".env").write_text(good)
        r = rv("env", "import", cwd=tmp_path, home=rv_home)
        assert r.returncode == 0, r.stderr
        expected = {**EXPECTED, "RVT_SQ": 'it"s $HOME `id`'}
        mode = await cluster.exec(f"stat -c %a {q(store)}")
        assert mode.stdout.strip() == "600"

        keys = list(expected)
        script = ("#!/bin/bash\n"
                  f". {q(store)}\n"
                  "python3 -c 'import json,os,sys; print(json.dumps({k: os.environ.get(k) for k in sys.argv[1:]}))' "
                  + " ".join(keys) + "\n")
        out = f"{cluster.scratch}/env-test-{os.getpid()}.out"
        res = await cluster.exec(f"sbatch --parsable -p standard -t 5 -o {q(out)} --wrap {q(script)}")
        assert res.ok, res.stderr
        job = res.stdout.strip().split(";")[0]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while loop.time() < deadline:
            if not (await cluster.exec(f"squeue -h -j {q(job)} 2>/dev/null")).stdout.strip():
                break
            await asyncio.sleep(0.5)
        got = json.loads((await cluster.read_file(out)).decode().strip().splitlines()[-1])
        assert got == expected
        assert (await cluster.exec("test -e /tmp/rv-env-pwned")).exit_status != 0
        # listing masks nothing here (no secret-looking names) and removes cleanly
        for k in keys:
            assert rv("env", "rm", k, cwd=tmp_path, home=rv_home).returncode == 0
        await cluster.exec(f"rm -f {q(out)}")
    finally:
        await cluster.close()
