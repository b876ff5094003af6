"""Bad input through the real ``rv`` CLI: a clear error, no traceback, nothing of the user's lost.

Why: the standard is "say what is wrong and where, never overwrite user files with partial
writes", and "every remote command is quoted, secrets are never printed, host keys are verified".
These tests run ``python -m rv_tui ...`` as a user would (subprocess, ``RV_HOME`` pointing at a
temp dir), against hand-made broken configs and the real local Slurm cluster.  Cluster tests get
their own remote scratch root (``paths.scratch``), so the env store they change is their own and
other sessions sharing the cluster are not touched; they cancel only jobs they submitted.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import asyncssh
import pytest

REPO = Path(__file__).resolve().parent.parent

#: A config that loads but points at nothing (commands must fail before or at connecting).
OFFLINE_CONFIG = """\
# hand-written: comments must survive every failure
[connection]
host = "rv-hpc"
hostname = "127.0.0.1"
user = "abc1de"
port = {port}

[defaults]
gpu_type = "any"
time = "2:59:00"

[scratch_keepalive]
enabled = false
"""


# ----------------------------------------------------------------------------- helpers


def rv(home: Path, *args: str, cwd: Path | None = None, timeout: float = 180,
       wrapper: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess with ``RV_HOME=home`` (no tty on stdin)."""
    env = {**os.environ, "RV_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("RV_DEBUG", None)
    argv = [*(wrapper or []), sys.executable, "-m", "rv_tui", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd or home,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    for stream in (r.stdout, r.stderr):
        assert "Traceback" not in stream, stream
        assert "rv: internal error" not in stream, stream


def user_error(r: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> str:
    """Assert a clean user error (exit ``code``, ``rv: error:`` naming every needle); stderr."""
    no_traceback(r)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "rv: error:" in r.stderr, r.stderr
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)
    return r.stderr


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under ``roots`` (or the file itself) -> its bytes (to prove nothing changed)."""
    out: dict[str, bytes] = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in paths:
            out[str(p)] = p.read_bytes()
    return out


def closed_port() -> int:
    """A local TCP port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "config.toml"
    cfg.write_text(text)
    cfg.chmod(0o600)
    return cfg


def edit_config(cfg: Path, pattern: str, replacement: str) -> None:
    text = cfg.read_text()
    new, n = re.subn(pattern, replacement, text, flags=re.M)
    assert n == 1, (pattern, text)
    cfg.write_text(new)


@pytest.fixture
def offline_home(tmp_path: Path) -> Path:
    """RV_HOME whose config.toml points at a closed local port."""
    home = tmp_path / "rv-home"
    write_config(home, OFFLINE_CONFIG.format(port=closed_port()))
    return home


@pytest.fixture
def qa_home(rv_home: Path) -> Path:
    """The cluster's rv_home with a private remote scratch root (its own env store and groups)."""
    scratch = f"/scratch/rvtest/qa-bad-input-{uuid.uuid4().hex[:10]}"
    edit_config(rv_home / "config.toml", r'^scratch = ".*"$', f'scratch = "{scratch}"')
    yield rv_home
    rv(rv_home, "exec", "--", "rm", "-rf", scratch, timeout=60)


# ----------------------------------------------------------------------------- config.toml


@pytest.mark.parametrize("pattern, replacement, needles", [
    (r"^port = \d+$", "port = 22 x", ["config.toml line 6", "TOML syntax error"]),
    (r'^time = ".*"$', 'time = "abc"', ["config.toml line 10", 'defaults.time = "abc"', "not a duration",
                                        "2h, 30m"]),
    (r"^port = \d+$", "port = 70000", ["config.toml line 6", "connection.port = 70000", "1-65535"]),
    (r'^gpu_type = ".*"$', 'gpu_type = "b200"', ["config.toml line 9", 'defaults.gpu_type = "b200"',
                                                  "a100_80", "h200", "mig"]),
])
@pytest.mark.parametrize("command", [["ps"], ["status"], ["run", "--dry-run", "echo", "hi"]])
def test_broken_config_is_a_clear_error_and_left_alone(offline_home: Path, pattern: str, replacement: str,
                                                       needles: list[str], command: list[str]) -> None:
    cfg = offline_home / "config.toml"
    edit_config(cfg, pattern, replacement)
    before = snapshot(offline_home)
    r = rv(offline_home, *command)
    err = user_error(r, *needles, f"hint: edit {cfg}")
    assert "Connection FAILED" not in err  # a config error is not a connection failure
    assert snapshot(offline_home) == before


def test_broken_config_does_not_stop_the_demo(offline_home: Path) -> None:
    cfg = offline_home / "config.toml"
    edit_config(cfg, r'^time = ".*"$', 'time = "abc"')
    before = snapshot(offline_home)
    r = rv(offline_home, "--demo", "ps", "--json")
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    assert "ignoring the config for --demo" in r.stderr and "config.toml line 10" in r.stderr
    json.loads(r.stdout)
    assert snapshot(cfg) == {str(cfg): before[str(cfg)]}


def test_unknown_config_key_is_a_warning_and_the_command_works(rv_home: Path) -> None:
    cfg = rv_home / "config.toml"
    edit_config(cfg, r'^time = "(.*)"$', r'time = "\1"\ncolour = "blue"')
    cfg.write_text(cfg.read_text() + "\n[extras]\nfoo = 1\n")
    before = snapshot(rv_home)
    r = rv(rv_home, "ps", "--json")
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)
    assert re.search(r"rv: warning: config\.toml line \d+: unknown key defaults\.colour \(ignored\)", r.stderr)
    assert "unknown section or key 'extras'" in r.stderr
    assert snapshot(rv_home) == before


def test_config_that_is_a_directory(tmp_path: Path) -> None:
    home = tmp_path / "rv-home"
    (home / "config.toml").mkdir(parents=True)
    r = rv(home, "ps")
    user_error(r, str(home / "config.toml"), "is a directory", "hint: move it away")
    assert (home / "config.toml").is_dir()


def _without_dac_override() -> list[str]:
    """Run as this user but unable to bypass file permissions (root included)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("what", ["file", "dir"])
def test_unreadable_config(offline_home: Path, what: str) -> None:
    cfg = offline_home / "config.toml"
    before = snapshot(offline_home)
    target = cfg if what == "file" else offline_home
    target.chmod(0)
    try:
        r = rv(offline_home, "ps", wrapper=_without_dac_override())
    finally:
        target.chmod(0o600 if what == "file" else 0o700)
    user_error(r, f"cannot read {cfg}", "permission denied", "chmod 600")
    assert snapshot(offline_home) == before


# ----------------------------------------------------------------------------- flags


@pytest.mark.parametrize("command", [["up", "--dry-run"], ["run", "--dry-run"], ["cost"]])
def test_unknown_gpu_type_lists_the_valid_ones(offline_home: Path, command: list[str]) -> None:
    r = rv(offline_home, *command, "-t", "b200", *(["echo", "hi"] if command[0] == "run" else []))
    user_error(r, "unknown GPU type 'b200'", "valid types:", "a6000", "a100_80", "h200", "mig")
    assert "cannot reach" not in r.stderr  # refused before connecting


@pytest.mark.parametrize("flags, needles", [
    (["--time", "3x"], ["--time", "'3x' is not a duration", "hint: use 2h"]),
    (["--time", "0"], ["--time", "'0' is not a positive duration"]),
    (["--mem", "200GB"], ["--mem '200GB'", "did you mean 200G?"]),
    (["-g", "0"], ["--gpu must be at least 1 (got 0)"]),
    (["-t", "h200", "-g", "99"], ["h200 allows at most 4 GPUs per user (requested 99)"]),
    (["--mig", "-g", "2"], ["--mig", "-g 2"]),
    (["--mig", "-t", "a100"], ["--mig", "-t a100"]),
    (["--wait-timeout", "soon"], ["--wait-timeout", "'soon' is not a duration"]),
    (["--max-strategies", "0"], ["--max-strategies must be at least 1"]),
])
@pytest.mark.parametrize("command", ["up", "run"])
def test_bad_request_flags_fail_before_connecting(offline_home: Path, command: str, flags: list[str],
                                                  needles: list[str]) -> None:
    before = snapshot(offline_home)
    tail = ["echo", "hi"] if command == "run" else []
    r = rv(offline_home, command, *flags, *tail)
    user_error(r, *needles)
    assert "cannot reach" not in r.stderr
    assert snapshot(offline_home) == before


@pytest.mark.parametrize("flags, needles", [
    (["--time", "3x"], ["--time", "'3x' is not a duration"]),
    (["-g", "0"], ["--gpu must be at least 1"]),
    (["-g", "99"], ["no GPU type takes 99 GPUs", "h200 4", "a100_80 32", "mig 1"]),
    (["-t", "h200", "-g", "5"], ["h200 allows at most 4"]),
])
def test_cost_bad_flags(offline_home: Path, flags: list[str], needles: list[str]) -> None:
    user_error(rv(offline_home, "cost", *flags), *needles)


@pytest.mark.cluster
def test_too_many_gpus_explains_per_type_limits(rv_home: Path, tmp_path: Path) -> None:
    r = rv(rv_home, "run", "--dry-run", "-g", "99", "echo", "hi", cwd=tmp_path)
    user_error(r, "no strategy can satisfy 99", "h200: h200 allows at most 4 GPUs per user",
               "mig: MIG gives exactly 1 slice", "hint:")


# ----------------------------------------------------------------------------- rv env


@pytest.mark.cluster
def test_env_import_bad_line_changes_nothing(qa_home: Path, tmp_path: Path) -> None:
    assert rv(qa_home, "env", "set", "KEEP_ME", "v1").returncode == 0
    listed = rv(qa_home, "env", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    dotenv = tmp_path / "bad.env"
    dotenv.write_text("A=1\nB='two words'\nHF_TOKEN: hf_leakedsecretvalue123\nC=3\n")
    before = snapshot(qa_home, dotenv)
    r = rv(qa_home, "env", "import", str(dotenv))
    err = user_error(r, f"{dotenv} line 3", "expected KEY=value", "nothing was imported")
    assert "leakedsecret" not in err + r.stdout  # the bad line may be a secret: shown masked
    after = rv(qa_home, "env", "list", "--json")
    assert json.loads(after.stdout) == json.loads(listed.stdout) == {"vars": {"KEEP_ME": "v1"}, "expanded_in_job": {}}
    assert snapshot(qa_home, dotenv) == before


def test_env_set_bad_name(offline_home: Path) -> None:
    user_error(rv(offline_home, "env", "set", "1BAD", "x"), "'1BAD' is not a valid variable name",
               "hint: use letters, digits and underscores")


def test_env_import_missing_file(offline_home: Path, tmp_path: Path) -> None:
    user_error(rv(offline_home, "env", "import", str(tmp_path / "nope.env")),
               f"cannot read {tmp_path / 'nope.env'}", "No such file")


# ----------------------------------------------------------------------------- connection


@pytest.mark.parametrize("command", [["status"], ["ps"], ["run", "--no-sync", "echo", "hi"], ["env", "list"]])
def test_unreachable_host(offline_home: Path, command: list[str]) -> None:
    port = re.search(r"^port = (\d+)$", (offline_home / "config.toml").read_text(), re.M).group(1)
    before = snapshot(offline_home)
    r = rv(offline_home, *command, timeout=60)
    no_traceback(r)
    assert r.returncode != 0
    assert f"cannot reach rv-hpc (abc1de@127.0.0.1:{port})" in r.stderr, r.stderr
    assert "hint: check your VPN connection" in r.stderr
    assert snapshot(offline_home) == before


def _other_public_key() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()[1]


@pytest.mark.cluster
@pytest.mark.parametrize("kind", ["unknown", "changed", "missing"])
def test_host_key_not_verified_refuses_with_the_fix(qa_home: Path, slurm_cluster, tmp_path: Path,
                                                    kind: str) -> None:
    c = slurm_cluster
    kh = tmp_path / "known_hosts"
    if kind == "changed":
        kh.write_text(f"[{c.host}]:{c.port} ssh-ed25519 {_other_public_key()}\n")
    elif kind == "unknown":
        kh.write_text("")
    cfg = qa_home / "config.toml"
    edit_config(cfg, r"^known_hosts = .*$", f'known_hosts = "{kh}"')
    before = snapshot(qa_home, tmp_path)
    r = rv(qa_home, "env", "set", "SHOULD_NOT_LAND", "x")
    if kind == "changed":
        user_error(r, f"host key for [{c.host}]:{c.port} has CHANGED", "SHA256:",
                   f"ssh-keygen -R '[{c.host}]:{c.port}' -f {kh} && ssh-keyscan -p {c.port} {c.host} >> {kh}")
    else:
        user_error(r, f"host key for [{c.host}]:{c.port} is not in {kh}", "SHA256:",
                   f"ssh-keyscan -p {c.port} {c.host} >> {kh}")
    assert snapshot(qa_home, tmp_path) == before  # known_hosts not written, nothing accepted
    assert not kh.exists() if kind == "missing" else True
    # and nothing ran remotely: with the real known_hosts the variable is not there
    edit_config(cfg, r"^known_hosts = .*$", f'known_hosts = "{c.known_hosts}"')
    listed = rv(qa_home, "env", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "SHOULD_NOT_LAND" not in json.loads(listed.stdout)["vars"]


@pytest.mark.cluster
def test_wrong_identity_file_is_auth_failed(qa_home: Path, tmp_path: Path) -> None:
    key = tmp_path / "id_other"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(key))
    key.chmod(0o600)
    edit_config(qa_home / "config.toml", r"^identity_file = .*$", f'identity_file = "{key}"')
    before = snapshot(qa_home, tmp_path)
    r = rv(qa_home, "ps")
    user_error(r, "SSH authentication failed for rvtest@", str(key), "hint: run `rv init`")
    assert snapshot(qa_home, tmp_path) == before


def test_identity_file_that_does_not_exist(offline_home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_key"
    cfg = offline_home / "config.toml"
    cfg.write_text(cfg.read_text().replace("port = ", f'identity_file = "{missing}"\nport = '))
    r = rv(offline_home, "ps")
    user_error(r, f"cannot load SSH key {missing}", "No such file", "connection.identity_file")
    assert not missing.exists()


# ----------------------------------------------------------------------------- job ids


@pytest.mark.cluster
def test_unknown_job_ids(qa_home: Path) -> None:
    user_error(rv(qa_home, "logs", "999999"), "job 999999")
    user_error(rv(qa_home, "stop", "999999"), "no job 999999", "Slurm does not know it", "rv ps -a")
    user_error(rv(qa_home, "stop", "no-such-name"), "no job, group or name 'no-such-name'")


@pytest.mark.parametrize("job_id", ["nosuch", "-5", "1;id", "$(id)"])
def test_logs_refuses_a_non_job_id_before_connecting(offline_home: Path, job_id: str) -> None:
    r = rv(offline_home, "logs", "--", job_id)
    user_error(r, f"{job_id!r} is not a Slurm job id")
    assert "cannot reach" not in r.stderr


# ----------------------------------------------------------------------------- hostile values


HOSTILE_NAMES = ["'; touch {pwn}-q; echo '", "$(touch {pwn}-d)", "`touch {pwn}-b`"]


@pytest.mark.cluster
def test_hostile_values_never_execute(qa_home: Path, tmp_path: Path) -> None:
    pwn = f"/tmp/rv-pwn-{uuid.uuid4().hex[:8]}"
    env_value = f"`touch {pwn}-envb`$(touch {pwn}-envd)'\"; touch {pwn}-envq"
    assert rv(qa_home, "env", "set", "WEIRD_VALUE", env_value).returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    for name in HOSTILE_NAMES:
        r = rv(qa_home, "run", "--dry-run", "--json", "--no-sync", "-t", "a6000", "--name",
               name.format(pwn=pwn), "echo", "hi", cwd=work)
        no_traceback(r)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["request"]["name"] == name.format(pwn=pwn)
    # a real job, followed to its end: the name and the env value reach it as data
    r = rv(qa_home, "run", "-f", "--no-sync", "-t", "a6000", "--time", "10m", "--name",
           HOSTILE_NAMES[0].format(pwn=pwn), "--", "bash", "-c", 'printf "weird=%s\\n" "$WEIRD_VALUE"',
           cwd=work, timeout=300)
    no_traceback(r)
    job_ids = re.findall(r"submitted (\d+)", r.stderr)
    try:
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert f"weird={env_value}" in r.stdout
    finally:
        if job_ids:  # only our own jobs (normally already finished)
            rv(qa_home, "stop", job_ids[0], timeout=60)
    assert not list(Path("/tmp").glob(f"{Path(pwn).name}*")), "a hostile value executed locally"
    ls = rv(qa_home, "exec", "--", "sh", "-c", f"ls -d {pwn}* 2>/dev/null; echo done", timeout=60)
    assert ls.returncode == 0, ls.stderr
    assert ls.stdout.strip() == "done", f"a hostile value executed on the cluster: {ls.stdout}"


# ----------------------------------------------------------------------------- secrets


SECRET = "hf_supersecretvalue"


@pytest.mark.cluster
def test_secret_never_printed_and_local_files_are_private(qa_home: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    r = rv(qa_home, "env", "set", "HF_TOKEN", SECRET)
    assert r.returncode == 0, r.stderr
    outputs = [r]
    for args in (["env", "list"], ["env", "list", "--json"], ["ps"], ["ps", "-a", "--json"], ["status"],
                 ["run", "--dry-run", "--json", "--no-sync", "echo", "hi"],
                 ["run", "--dry-run", "echo", "$HF_TOKEN"],
                 ["run", "--no-sync", "-t", "a6000", "--time", "10m", "-f", "--", "sh", "-c",
                  'test -n "$HF_TOKEN" && echo token-present']):
        res = rv(qa_home, *args, cwd=work, timeout=300)
        no_traceback(res)
        assert res.returncode == 0, (args, res.stderr)
        outputs.append(res)
    assert "token-present" in outputs[-1].stdout  # the job did get it
    for res in outputs:
        assert SECRET not in res.stdout + res.stderr, res.args
    assert "hf_s***" in outputs[1].stdout
    revealed = rv(qa_home, "env", "list", "--reveal")
    assert f"HF_TOKEN={SECRET}" in revealed.stdout
    # every local file rv wrote that may hold secrets is 0600 (dirs 0700), none holds the value
    files = [p for p in qa_home.rglob("*") if p.is_file()]
    assert any(p.parent.name == "groups" for p in files), files
    for p in files:
        assert p.stat().st_mode & 0o077 == 0, f"{p} is {oct(p.stat().st_mode)}"
        assert SECRET.encode() not in p.read_bytes(), p


@pytest.mark.cluster
async def test_command_log_never_holds_the_secret(qa_home: Path) -> None:
    from rv_tui.cluster import open_cluster
    from rv_tui.config import load_config
    from rv_tui.workspace.envstore import EnvStore

    cluster = await open_cluster(load_config())
    try:
        store = EnvStore(cluster)
        await store.set("MY_API_KEY", "sk-notprintedever123")
        await store.import_dotenv(f"HF_TOKEN={SECRET}\nPLAIN=1\n")
        assert (await store.list())["HF_TOKEN"] == SECRET
        text = "\n".join(rec.command for rec in cluster.pool.command_log.records())
    finally:
        await cluster.close()
    assert text  # the log did record the commands
    assert SECRET not in text and "notprintedever" not in text


@pytest.mark.cluster
def test_hostile_scratch_path_is_data_not_code(rv_home: Path, tmp_path: Path) -> None:
    """A config value is quoted like any other: a scratch path full of shell syntax is just a path."""
    pwn = f"/tmp/rv-pwn-{uuid.uuid4().hex[:8]}"
    top = f"qa-bad-input-{uuid.uuid4().hex[:8]} $(touch {pwn}-d) `touch {pwn}-b` ';touch {pwn}-q;'"
    scratch = f"/scratch/rvtest/{top}"
    toml_value = json.dumps(scratch)  # a TOML basic string is a JSON string for this text
    edit_config(rv_home / "config.toml", r'^scratch = ".*"$', f"scratch = {toml_value}")
    try:
        assert rv(rv_home, "env", "set", "FOO", "bar").returncode == 0
        listed = rv(rv_home, "env", "list", "--json")
        assert json.loads(listed.stdout) == {"vars": {"FOO": "bar"}, "expanded_in_job": {}}, listed.stderr
        r = rv(rv_home, "run", "--no-sync", "-t", "a6000", "--time", "10m", "echo", "hi", cwd=tmp_path)
        user_error(r, "cannot be used in #SBATCH -o/-e", "hint: set [paths] scratch")
        assert "submitted" not in r.stderr
    finally:
        rv(rv_home, "exec", "--", "rm", "-rf", f"/scratch/rvtest/{top.split('/')[0]}", timeout=60)
    assert not list(Path("/tmp").glob(f"{Path(pwn).name}*"))
    ls = rv(rv_home, "exec", "--", "sh", "-c", f"ls -d {pwn}* 2>/dev/null; echo done", timeout=60)
    assert ls.stdout.strip() == "done", ls.stdout


def test_env_import_binary_file(offline_home: Path, tmp_path: Path) -> None:
    blob = tmp_path / "blob.env"
    blob.write_bytes(b"A=1\n\xff\xfe\x00binary")
    before = snapshot(blob)
    user_error(rv(offline_home, "env", "import", str(blob)), f"{blob} is not a UTF-8 text file",
               "nothing was imported")
    assert snapshot(blob) == before
