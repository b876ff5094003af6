"""The rv env store: .env parsing, the store file format, masking."""

from __future__ import annotations

import subprocess

import pytest

from rv_tui.workspace.envstore import EnvError, mask, parse_dotenv, parse_store, render_store

HOSTILE = {
    "QUOTES": "it's \"quoted\"",
    "DOLLAR": "$HOME $(id) ${PATH}",
    "BACKTICK": "`touch /tmp/rv-pwned`",
    "NEWLINE": "line1\nline2",
    "HASH": "a # not a comment",
    "EMPTY": "",
}


def test_store_round_trips_hostile_values() -> None:
    assert parse_store(render_store(HOSTILE)) == HOSTILE


def test_store_file_sourced_by_bash_gives_exact_values(tmp_path) -> None:
    store = tmp_path / "vars.env"
    store.write_text(render_store(HOSTILE))
    script = "source \"$1\"; " + "; ".join(f'printf "%s\\0" "${k}"' for k in HOSTILE)
    out = subprocess.run(["bash", "-c", script, "x", str(store)], capture_output=True, check=True)
    values = out.stdout.decode().split("\0")[:-1]
    assert values == list(HOSTILE.values())
    assert not (tmp_path / "rv-pwned").exists()


def test_parse_dotenv_forms() -> None:
    text = """
# comment
export A=1
B = two words # trailing comment
C="x\\ny \\"q\\""
D='single $literal'
E=
"""
    got = {ln.key: ln.value for ln in parse_dotenv(text)}
    assert got == {"A": "1", "B": "two words", "C": 'x\ny "q"', "D": "single $literal", "E": ""}


@pytest.mark.parametrize("bad,line", [("A=1\nnot a pair\n", 2), ("A=1\n\n1BAD=x\n", 3),
                                      ('A="unterminated\n', 1), ("A='x' junk\n", 1)])
def test_parse_dotenv_names_the_bad_line(bad: str, line: int) -> None:
    with pytest.raises(EnvError) as err:
        parse_dotenv(bad, source="my.env")
    assert f"my.env line {line}" in err.value.message


def test_mask_hides_secrets_only() -> None:
    assert mask("hf_abcdefghijkl", key="HF_TOKEN") == "hf_a" + "*" * 11
    assert "abcdefghijkl" not in mask("hf_abcdefghijkl", key="HF_TOKEN")
    assert mask("/data", key="DATA_DIR") == "/data"
    assert mask("abc") == "***"
