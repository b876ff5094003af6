"""Secrets stay private: requirement credentials never become command-line words, the command log
masks URL credentials, AI naming never sends a secret, and Hugging Face tokens stay in the user's
private ``HF_HOME`` when a shared cache is configured (the shared one is only ``HF_HUB_CACHE``).
"""
from __future__ import annotations

import json
import secrets
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rv_tui.cluster.base import ExecResult
from rv_tui.jobs.naming import build_ai_request
from rv_tui.masking import mask_secrets, mask_url_credentials
from rv_tui.remote.commandlog import CommandLog
from rv_tui.workspace.deps import DepsSpec, ensure_venv, install_script, parse_requirements, requirements_text

TOKEN = "s3cr3tT0kenABCDEF"
TOKEN2 = "ghp_abcdefghijklmnop1234"
REQS = f"""--extra-index-url https://alice:{TOKEN}@pkgs.example.com/simple
git+https://{TOKEN2}@github.com/acme/private.git
requests==2.31
"""

# ----------------------------------------------------------------------------- masking

_word = st.text(string.ascii_letters + string.digits + "-_.~%", min_size=1, max_size=12)
_secret = st.text(string.ascii_letters + string.digits, min_size=8, max_size=24)


@given(st.sampled_from(["https", "http", "git+https", "ssh", "s3", "postgresql"]), _word, _secret,
       st.sampled_from(["pkgs.example.com", "10.0.0.1:8080", "h"]), st.sampled_from(["", "/simple", "/a/b.git"]),
       st.sampled_from(["", "pip install --index-url ", "x='", "-i "]))
@settings(max_examples=300, deadline=None)
def test_url_credentials_are_masked(scheme: str, user: str, pw: str, host: str, path: str, prefix: str) -> None:
    for url, want in ((f"{scheme}://{user}:{pw}@{host}{path}", f"{scheme}://{user}:****@{host}{path}"),
                      (f"{scheme}://{pw}@{host}{path}", f"{scheme}://****@{host}{path}")):
        text = f"{prefix}{url} --more"
        assert mask_url_credentials(text) == f"{prefix}{want} --more"
        assert mask_secrets(text).count("****") >= 1
        assert mask_url_credentials(mask_url_credentials(text)) == mask_url_credentials(text)  # idempotent


def test_mask_secrets_rules() -> None:
    s = mask_secrets(f"HF_TOKEN=hf_abcdefghijk OPENAI_API_KEY='sk-proj-12345678' --token {TOKEN} "
                     f"curl -H 'Authorization: Bearer {TOKEN}' glpat-abcdefghijkl https://x:{TOKEN}@h",
                     values=["my-env-value-1", "4"])
    assert TOKEN not in s and "hf_abcdefghijk" not in s and "sk-proj-12345678" not in s and "glpat-abcdefgh" not in s
    assert mask_secrets("echo my-env-value-1 4", ["my-env-value-1", "4"]) == "echo **** 4"  # short values kept
    assert mask_secrets("python train.py --lr 3e-4 https://example.com/x") == \
        "python train.py --lr 3e-4 https://example.com/x"  # nothing secret: untouched


def test_command_log_masks_url_credentials_where_entries_are_recorded() -> None:
    log = CommandLog()
    seen = []
    log.add_listener(seen.append)
    rec = log.record(f"uv pip install --extra-index-url https://alice:{TOKEN}@pkgs.example.com/simple "
                     f"git+https://{TOKEN2}@github.com/acme/x.git", started_at=0, duration=0, exit_status=1,
                     error=f"failed: https://bob:{TOKEN}@h/x")
    for text in (rec.command, rec.error or "", seen[0].command, log.records()[0].command):
        assert TOKEN not in text and TOKEN2 not in text, text
    assert "https://alice:****@pkgs.example.com/simple" in rec.command
    assert "git+https://****@github.com/acme/x.git" in rec.command


# ----------------------------------------------------------------------------- requirements


def spec_of(tmp_path: Path) -> DepsSpec:
    (tmp_path / "requirements.txt").write_text(REQS)
    options, reqs, local = parse_requirements(tmp_path / "requirements.txt", tmp_path)
    return DepsSpec("requirements", "requirements.txt", tuple(options), tuple(reqs), tuple(local))


def test_install_script_holds_no_requirement_text(tmp_path: Path) -> None:
    """What runs on the login node (visible in ``ps``) carries paths and a hash, never the
    index URL or the tokens; those are in the uploaded file, installed with ``-r``."""
    spec = spec_of(tmp_path)
    script = install_script(spec, "/s/.rv/envs/p/main", "/s/code", "/s", "/s/.rv/envs/p/main.req-x.txt")
    assert TOKEN not in script and TOKEN2 not in script and "pkgs.example.com" not in script
    assert 'inst -r "$R"' in script
    text = requirements_text(spec, "/s/code")
    assert f"--extra-index-url https://alice:{TOKEN}@pkgs.example.com/simple\n" in text
    assert f"git+https://{TOKEN2}@github.com/acme/private.git\n" in text


class RecordingCluster:
    """Records what ``ensure_venv`` sends (the SFTP upload and the command)."""

    is_demo = False
    scratch = "/s"

    def __init__(self) -> None:
        self.writes: list[tuple[str, bytes | str, int]] = []
        self.commands: list[str] = []

    async def write_file(self, path: str, data: bytes | str, mode: int = 0o600) -> None:
        self.writes.append((path, data, mode))

    async def exec(self, command: str, *, timeout: float | None = None) -> ExecResult:
        self.commands.append(command)
        return ExecResult(command=command, exit_status=0, stdout="RVDEPS:PYTHON 3.12.1 m /p\nRVDEPS:DONE\n",
                          stderr="")


async def test_ensure_venv_uploads_0600_and_sends_no_secret(tmp_path: Path) -> None:
    c = RecordingCluster()
    res = await ensure_venv(c, spec_of(tmp_path), "/s/.rv/envs/p/main", "/s/code")  # type: ignore[arg-type]
    (path, data, mode), = c.writes
    assert mode == 0o600 and TOKEN in str(data) and path.startswith("/s/.rv/envs/p/main.req-")
    assert all(TOKEN not in cmd and TOKEN2 not in cmd for cmd in c.commands)
    assert path in c.commands[0]
    assert res.python is not None and res.python.version == "3.12.1"


# ----------------------------------------------------------------------------- AI naming


def test_ai_naming_request_masks_every_secret() -> None:
    env_value = "Zx9-private-value-77"
    for key in ("sk-ant-api03-KEYKEYKEYKEY", "sk-proj-KEYKEYKEYKEY"):
        req = build_ai_request(f"HF_TOKEN=hf_abcdefghijklm python train.py --push https://u:{TOKEN}@hub.example "
                               f"--wandb {env_value} --gh {TOKEN2} --key {key}", key, secret_values=[env_value])
        body = req.data.decode() if isinstance(req.data, bytes) else str(req.data)
        prompt = json.loads(body)["messages"][0]["content"]
        for secret in (TOKEN, TOKEN2, env_value, "hf_abcdefghijklm", key):
            assert secret not in prompt, (secret, prompt)
        assert "python train.py --push" in prompt  # the shape of the command is still there


async def test_choose_name_reads_env_values_to_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_launch's naming step passes the ``rv env`` values; an unreadable store means no
    AI call at all (the heuristic name)."""
    from rv_tui.allocator.model import Request
    from rv_tui.config import Config
    from rv_tui.jobs import launch, naming

    sent: list[list[str]] = []

    async def fake_suggest(command, api_key, *, timeout=3.0, base_url=None, secret_values=()):
        sent.append(list(secret_values))
        return "rv-ai-name"

    monkeypatch.setattr(naming, "suggest_ai_name", fake_suggest)

    class Store:
        def __init__(self, cluster):
            self.cluster = cluster

        async def load(self):
            if self.cluster.broken:
                raise OSError("permission denied")
            return {"WANDB_API_KEY": "wandb-secret-123456"}

    import rv_tui.workspace.envstore as envstore
    monkeypatch.setattr(envstore, "EnvStore", Store)
    config = Config()
    config.defaults.ai_naming = True
    config.defaults.ai_api_key = "sk-ant-xxxxxxxxxxxx"

    class C:
        is_demo = False
        broken = False

    assert await launch.choose_name(config, Request(), "python t.py", None, C()) == "rv-ai-name"
    assert sent == [["wandb-secret-123456"]]
    C.broken = True
    assert await launch.choose_name(config, Request(), "python t.py", None, C()) == "rv-t"
    assert len(sent) == 1


# ----------------------------------------------------------------------------- Hugging Face cache


def test_shared_hf_cache_is_only_the_hub_cache(tmp_path: Path) -> None:
    from rv_tui.allocator.model import Strategy, StrategyKind
    from rv_tui.jobs.templates import JobContext, build_script

    s = Strategy(id="s", label="t", gpu_type="a6000", partition="gpu-a6000", nodes=1, gpus_per_node=1,
                 kind=StrategyKind.DIRECT, walltime_s=600, time_min_s=None, est_wait_s=0, est_su=0, mem="8G",
                 cpus_per_task=1, constraint=None, total_time_s=600)
    ctx = JobContext(name="t", command="true", scratch="/scratch/u", group_id="g", hf_cache="/standard/grp/hf")
    script = build_script(ctx, s)
    assert "export HF_HOME=/scratch/u/.cache/huggingface\n" in script
    assert "export HF_HUB_CACHE=/standard/grp/hf/hub\n" in script
    assert "HF_HOME=/standard" not in script


@pytest.mark.cluster
def test_job_gets_private_hf_home_and_shared_hub_cache(capsys, tmp_path, rv_home, own_jobs, slurm_cluster,
                                                        monkeypatch):
    from rv_tui.cli.main import main

    shared = f"{slurm_cluster.scratch}/shared-hf-{secrets.token_hex(3)}"
    cfg = rv_home / "config.toml"
    cfg.write_text(cfg.read_text() + f'\n[shared]\nhf_cache = "{shared}"\n')
    monkeypatch.chdir(tmp_path)
    code = main(["run", "-f", "-g", "1", "-t", "a6000", "--time", "5m", "--",
                 'printf "HF=%s|%s\\n" "$HF_HOME" "$HF_HUB_CACHE"'])
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    assert f"HF={slurm_cluster.scratch}/.cache/huggingface|{shared}/hub" in out.splitlines(), out


@pytest.mark.cluster
async def test_requirement_credentials_never_on_a_command_line(rv_home, tmp_path) -> None:
    """On the real cluster: every command rv sends while installing (raw, before any masking)
    lacks the tokens; the uploaded file is gone afterwards."""
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config
    from rv_tui.quoting import q

    c = SshCluster.from_config(load_config())
    await c.connect()
    log = c.pool.command_log
    log.redactor = None  # see exactly what went over SSH (what `ps` on the login node shows)
    venv = f"{c.scratch}/.rv/envs/secrets-{secrets.token_hex(3)}/main"
    code = f"{c.scratch}/secrets-code-{secrets.token_hex(3)}"
    try:
        await c.exec(f"mkdir -p {q(code)}")
        (tmp_path / "requirements.txt").write_text(f"--no-index\n--extra-index-url https://alice:{TOKEN}@127.0.0.1:9/simple\n"
                                                   f"git+https://{TOKEN2}@127.0.0.1:9/acme/private.git\n")
        o, r, lp = parse_requirements(tmp_path / "requirements.txt", tmp_path)
        spec = DepsSpec("requirements", "requirements.txt", tuple(o), tuple(r), tuple(lp))
        res = await ensure_venv(c, spec, venv, code, timeout=300)
        assert res.status == "installed" and res.deferred  # the fake index cannot serve it: deferred
        sent = [rec.command for rec in log.records()]
        assert any(rec.kind in ("sftp", "write") and ".req-" in rec.command for rec in log.records()), sent
        assert all(TOKEN not in s and TOKEN2 not in s for s in sent), sent
        left = await c.exec(f"ls -d {q(venv)}.req-* 2>/dev/null | wc -l; stat -c %a {q(venv + '/.rv-phase2.txt')}")
        count, mode = left.stdout.split()
        assert count == "0" and mode == "600"
    finally:
        await c.exec(f"rm -rf {q(venv.rsplit('/', 1)[0])} {q(code)}")
        await c.close()
