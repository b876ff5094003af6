"""The env store as a database: missing vs broken reads, no lost updates, hand-written lines kept.

Real parts: the compare-and-swap script runs in a real local ``sh`` with ``flock``/``sha256sum``;
the cluster tests use two separate SSH connections (two clients) against the local Slurm test
cluster's login node, and chmod the store to 000 as the test user.  Each cluster test uses its own
scratch directory so concurrent sessions never share a store file.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rv_tui.paths import RemotePaths
from rv_tui.quoting import q
from rv_tui.slurm import files as f
from rv_tui.workspace.envstore import (
    EnvError, EnvStore, apply_changes, parse_entries, parse_store, render_store,
)

PATH_LINE = 'export PATH="$HOME/.local/bin:$PATH"\n'
HOSTILE_DIR = "dir with 'quotes' $(touch pwned) `id` ;"

# ----------------------------------------------------------------------------- pure format


def test_hand_written_path_line_is_kept_verbatim_and_still_expands(tmp_path) -> None:
    text = "# my additions\n" + PATH_LINE + "export OLD='1'\n"
    out = apply_changes(text, {"HF_TOKEN": "hf_x", "OLD": "2"})
    assert PATH_LINE in out and out.startswith("# my additions\n" + PATH_LINE)
    assert "'$HOME/.local/bin:$PATH'" not in out
    store = tmp_path / "vars.env"
    store.write_text(out)
    got = subprocess.run(["bash", "-c", '. "$1"; printf "%s|%s|%s" "$PATH" "$HF_TOKEN" "$OLD"', "x",
                          str(store)], capture_output=True, text=True, check=True,
                         env={"HOME": "/home/u", "PATH": "/usr/bin:/bin"}).stdout
    assert got == "/home/u/.local/bin:/usr/bin:/bin|hf_x|2"


def test_set_of_a_hand_written_key_adds_rvs_line_after_it(tmp_path) -> None:
    out = apply_changes(PATH_LINE, {"PATH": "/opt/bin"})
    assert out == PATH_LINE + "export PATH=/opt/bin\n"
    assert parse_store(out)["PATH"] == "/opt/bin"
    assert apply_changes(out, removes=["PATH"]) == PATH_LINE  # rm takes rv's line only


def test_list_shows_an_expanding_value_as_written() -> None:
    assert parse_store(PATH_LINE) == {"PATH": '"$HOME/.local/bin:$PATH"'}
    (entry,) = parse_entries(PATH_LINE)
    assert entry.key == "PATH" and entry.value is None and not entry.managed


def test_a_quoted_block_over_several_lines_is_one_entry() -> None:
    text = 'MSG="first\nexport FAKE=1\nlast"\n'
    entries = parse_entries(text)
    assert len(entries) == 1 and entries[0].key == "MSG"
    assert "FAKE" not in parse_store(text)
    assert apply_changes(text, {"FAKE": "2"}) == text + "export FAKE=2\n"


# hand-written lines a user might keep in the file (all valid shell, none assigns KEY_*)
_HAND = st.sampled_from([
    PATH_LINE, "# a comment with 'quote\n", "\n", "   \n", "export LD='x'\"$LD\"\n",
    "module load gcc 2>/dev/null || true\n", 'MSG="multi\nline $USER"\n', "set -a\n",
    "export EMPTY=\n", "if [ -n \"$X\" ]; then\n  export Y=1\nfi\n", "A=1 # trailing\n",
    "export W=$(printf '%s' ')')\n", "unset NOTHING\n", "export HASH=a#b\n", "X=\\\n  continued\n",
])
_KEYS = st.sampled_from([f"KEY_{i}" for i in range(6)])
_VALUES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_OPS = st.lists(st.tuples(st.sampled_from(["set", "rm"]), _KEYS, _VALUES), max_size=8)


def _run_ops(text: str, ops: list[tuple[str, str, str]]) -> tuple[str, dict[str, str]]:
    expect: dict[str, str] = {}
    for op, key, value in ops:
        if op == "set":
            text = apply_changes(text, {key: value})
            expect[key] = value
        else:
            text = apply_changes(text, removes=[key])
            expect.pop(key, None)
    return text, expect


@settings(max_examples=300, deadline=None)
@given(hand=st.lists(_HAND, max_size=8), ops=_OPS)
def test_property_hand_lines_survive_byte_for_byte_in_order(hand: list[str], ops) -> None:
    original = "".join(hand)
    out, expect = _run_ops(original, ops)
    kept = [e.text for e in parse_entries(out) if not e.managed]
    assert "".join(kept) == original  # exactly the hand-written text, in order, nothing else
    got = parse_store(out)
    assert {k: got[k] for k in expect} == expect
    assert not any(k in got for k in {k for _, k, _ in ops} - set(expect))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hand=st.lists(_HAND, max_size=6), ops=_OPS)
def test_property_sourcing_the_file_gives_every_set_value(tmp_path, hand: list[str], ops) -> None:
    out, expect = _run_ops("".join(hand), ops)
    store = tmp_path / "vars.env"
    store.write_bytes(out.encode("utf-8", "surrogateescape"))
    keys = sorted({k for _, k, _ in ops})
    script = '. "$1"; ' + "; ".join(f'printf "%s=%s\\0" {k} "${{{k}-<unset>}}"' for k in keys)
    res = subprocess.run(["bash", "-c", script, "x", str(store)], capture_output=True, check=True,
                         env={"HOME": "/home/u", "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    got = dict(p.split("=", 1) for p in res.stdout.decode("utf-8", "surrogateescape").split("\0")[:-1])
    assert got == {k: expect.get(k, "<unset>") for k in keys}


def test_old_stores_written_by_rv_are_still_rvs_lines() -> None:
    old = render_store({"A": "it's", "B": "$(id)", "C": "x\ny"})
    assert all(e.managed for e in parse_entries(old) if e.key)
    assert parse_store(apply_changes(old, removes=["A", "B", "C"])) == {}


# ----------------------------------------------------------------------------- the swap script


def _swap(path: str, data: bytes, expect: bytes | None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", f.replace_command(path)], input=f.replace_payload(data, expect),
                          capture_output=True)


def test_swap_script_is_a_compare_and_swap(tmp_path) -> None:
    d = tmp_path / HOSTILE_DIR / "env"
    target = str(d / "vars.env")
    assert _swap(target, b"one\n", None).returncode == 0  # created (dir too)
    assert (d / "vars.env").read_bytes() == b"one\n"
    assert stat.S_IMODE((d / "vars.env").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert _swap(target, b"two\n", None).returncode == f.CONFLICT  # it exists now
    assert _swap(target, b"two\n", b"stale\n").returncode == f.CONFLICT
    assert (d / "vars.env").read_bytes() == b"one\n"
    assert _swap(target, b"two\n", b"one\n").returncode == 0
    assert (d / "vars.env").read_bytes() == b"two\n"
    assert not (tmp_path / "pwned").exists()
    assert sorted(p.name for p in d.iterdir()) == ["vars.env", "vars.env.lock"]  # no temp left


def test_swap_script_writes_through_a_symlinked_store(tmp_path) -> None:
    real = tmp_path / "elsewhere" / "my vars.env"
    real.parent.mkdir()
    real.write_bytes(b"old\n")
    link = tmp_path / "env" / "vars.env"
    link.parent.mkdir()
    link.symlink_to(real)
    assert _swap(str(link), b"new\n", b"old\n").returncode == 0
    assert link.is_symlink() and real.read_bytes() == b"new\n"


async def test_bytes_that_are_not_utf8_survive_an_update() -> None:
    from rv_tui.cluster.demo import DemoCluster

    cluster = DemoCluster(seed=1, speed=0, background=False)
    store = EnvStore(cluster)
    hand = b"# caf\xe9 latin-1 comment\nexport X='\xff\xfe'\n"
    await cluster.write_file(store.path, hand)
    await store.set("A", "1")
    assert await cluster.read_file(store.path) == hand + b"export A=1\n"


def test_swap_script_waits_for_the_lock(tmp_path) -> None:
    target = tmp_path / "vars.env"
    target.write_bytes(b"base\n")
    lock = str(target) + ".lock"
    holder = subprocess.Popen(["flock", lock, "sh", "-c", "echo held; read x"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        res = subprocess.run(["sh", "-c", f.replace_command(str(target), lock_wait_s=1)],
                             input=f.replace_payload(b"new\n", b"base\n"), capture_output=True)
        assert res.returncode == f.LOCK_TIMEOUT
        assert target.read_bytes() == b"base\n"
    finally:
        holder.communicate("\n", timeout=10)


# ----------------------------------------------------------------------------- demo: same behaviour


async def test_demo_store_keeps_hand_lines_and_tells_missing_from_set() -> None:
    from rv_tui.cluster.demo import DemoCluster

    cluster = DemoCluster(seed=1, speed=0, background=False)
    store = EnvStore(cluster)
    assert await store.list() == {}
    await cluster.write_file(store.path, PATH_LINE)
    await store.set("HF_TOKEN", "hf_abc")
    assert (await cluster.read_file(store.path)).decode() == PATH_LINE + "export HF_TOKEN=hf_abc\n"
    assert await store.remove("PATH") is False
    assert [e.line for e in await store.hand_written("PATH")] == [1]
    # a writer that lands between our read and our swap is not lost
    real_read = cluster.read_file
    raced = []

    async def read_then_race(path: str) -> bytes:
        data = await real_read(path)
        if not raced:
            raced.append(1)
            cluster.sim.fs.write(path, data + b"export OTHER=1\n", 0o600)
        return data

    cluster.read_file = read_then_race  # type: ignore[method-assign]
    await store.set("MINE", "2")
    assert store.conflicts == 1
    assert {"OTHER", "MINE", "HF_TOKEN"} <= set(await store.list())


# ----------------------------------------------------------------------------- the real cluster


@pytest.fixture
async def scratch(rv_home) -> AsyncIterator[str]:
    """A private scratch root for this test (its own store file), removed afterwards."""
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config

    config = load_config()
    root = f"{config.scratch}/envdb-{uuid.uuid4().hex[:10]}"
    yield root
    c = SshCluster.from_config(config)
    try:
        await c.exec(f"chmod -R u+rwx {q(root)} 2>/dev/null; rm -rf {q(root)}")
    finally:
        await c.close()


async def _client(scratch: str):
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config

    c = SshCluster.from_config(load_config())
    c.scratch = scratch
    c.paths = RemotePaths(scratch)
    await c.connect()
    return c


@pytest.mark.cluster
async def test_two_clients_setting_at_once_lose_no_key(scratch: str) -> None:
    a, b = await _client(scratch), await _client(scratch)
    try:
        sa, sb = EnvStore(a), EnvStore(b)
        await a.write_file(sa.path, PATH_LINE)

        async def client(store: EnvStore, name: str) -> None:
            for i in range(20):
                await store.set(f"{name}_{i}", f"value {name} {i} $(id) 'q'")

        await asyncio.gather(client(sa, "A"), client(sb, "B"))
        final = await EnvStore(a).list()
        want = {f"{n}_{i}": f"value {n} {i} $(id) 'q'" for n in "AB" for i in range(20)}
        assert {k: final.get(k) for k in want} == want  # all 40 keys, exact values
        text = (await a.read_file(sa.path)).decode()
        assert text.startswith(PATH_LINE)  # the hand-written line, byte for byte
        res = await a.exec(f"stat -c %a {q(sa.path)}; . {q(sa.path)}; printf '%s\\n' \"$PATH\" \"$A_7\"")
        mode, path_value, a7 = res.stdout.splitlines()
        assert mode == "600"
        assert path_value.startswith(f"/home/{a.user}/.local/bin:") and a7 == "value A 7 $(id) 'q'"
    finally:
        await a.close()
        await b.close()


@pytest.mark.cluster
async def test_unreadable_store_is_an_error_and_stays_unchanged(scratch: str) -> None:
    c = await _client(scratch)
    try:
        store = EnvStore(c)
        await store.set("KEEP_ME", "precious")
        before = await c.read_file(store.path)
        assert (await c.exec(f"chmod 000 {q(store.path)}")).ok
        with pytest.raises(EnvError) as err:
            await store.set("NEW", "x")
        assert "cannot read the env store" in err.value.message
        with pytest.raises(EnvError):
            await store.list()
        with pytest.raises(EnvError):
            await store.remove("KEEP_ME")
        res = await c.exec(f"stat -c %a {q(store.path)}; chmod 600 {q(store.path)}")
        assert res.stdout.strip() == "0"  # rv did not replace or chmod it
        assert await c.read_file(store.path) == before
        assert await store.list() == {"KEEP_ME": "precious"}
    finally:
        await c.close()


@pytest.mark.cluster
async def test_a_directory_in_place_of_the_store_is_an_error(scratch: str) -> None:
    c = await _client(scratch)
    try:
        store = EnvStore(c)
        assert (await c.exec(f"mkdir -p {q(store.path)}")).ok
        with pytest.raises(EnvError):
            await store.set("A", "1")
        assert (await c.exec(f"[ -d {q(store.path)} ]")).ok
    finally:
        await c.close()


@pytest.mark.cluster
async def test_missing_store_is_empty_and_first_set_creates_it_private(scratch: str) -> None:
    c = await _client(scratch)
    try:
        store = EnvStore(c)
        assert await store.list() == {}
        await store.set("HF_TOKEN", "hf_secret_value")
        res = await c.exec(f"stat -c %a {q(RemotePaths(scratch).env_dir)} {q(store.path)}")
        assert res.stdout.split() == ["700", "600"]
        assert await store.list() == {"HF_TOKEN": "hf_secret_value"}
        log = "\n".join(r.command for r in c.pool.command_log.records())
        assert "hf_secret_value" not in log  # the value went on stdin, not the command line
    finally:
        await c.close()



def test_rv_env_list_and_rm_show_hand_written_lines_as_written(tmp_path, monkeypatch, capsys) -> None:
    """On the demo (persisted between commands): the CLI lists a hand-written expansion as written
    and `rv env rm` of it says the line stays."""
    import json as _json

    from rv_tui.cli.main import main
    from rv_tui.cluster.demo import DemoCluster

    monkeypatch.setenv("RV_HOME", str(tmp_path / "home"))
    assert main(["--demo", "env", "set", "PLAIN", "1"]) == 0
    demo = DemoCluster(persist=True)
    path = RemotePaths(demo.scratch).env_file
    demo.sim.fs.write(path, bytes(demo.sim.fs.read(path)) + PATH_LINE.encode(), 0o600)
    demo.save()
    capsys.readouterr()
    assert main(["--demo", "env", "list", "--json"]) == 0
    listed = _json.loads(capsys.readouterr().out)
    assert listed["vars"]["PATH"] == '"$HOME/.local/bin:$PATH"' and listed["expanded_in_job"] == {"PATH": 3}
    assert main(["--demo", "env", "rm", "PATH"]) == 0
    out = capsys.readouterr().out
    assert "was not set by rv env" in out and "line 3" in out and "left as written" in out
