"""The remote multi-file tail command, run for real by the local /bin/sh, tail and awk.

The command is started in its own session (``start_new_session``), exactly as sshd starts an exec
request, so these tests exercise the same framing, escaping and cleanup the cluster runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from rv_tui.cluster.base import FileLine
from rv_tui.slurm.tail import TailDecoder, tail_command, unescape

HOSTILE_LINES = [
    "plain",
    "0:looks like a frame of file 0",
    "1+looks like a continuation",
    "#",
    "",
    "==> /etc/passwd <==",
    "epoch 1  45%|####      | 45/100 [00:01<00:02]\r 46%|#####",
    "trailing cr\r",
    "percent %r %% %n %l literal",
    "vt\vff\fseps\x1c\x1d\x1e",
    "unicode seps \x85 \u2028 \u2029 end",
    "ünïcödé ✓ 日本語 🚀",
    "'; rm -rf ~; echo '$(id)`whoami`",
    "tab\tseparated\tvalues",
]


class LocalTail:
    """Run tail_command locally in its own session; collect decoded lines on a thread."""

    def __init__(self, paths: list[str], **kw: object) -> None:
        self.decoder = TailDecoder(paths)
        self.lines: list[FileLine] = []
        self.raw_count = 0
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", tail_command(paths, **kw)],  # type: ignore[arg-type]
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            text = raw.decode("utf-8", errors="replace")
            fl = self.decoder.feed(text)
            with self._lock:
                self.raw_count += 1
                if fl is not None:
                    self.lines.append(fl)

    def wait_for(self, n: int, timeout: float = 20.0) -> list[FileLine]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.lines) >= n:
                    return list(self.lines)
            time.sleep(0.02)
        with self._lock:
            raise AssertionError(f"only {len(self.lines)} of {n} lines arrived: {self.lines[-5:]}")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


@pytest.fixture
def tails():
    started: list[LocalTail] = []

    def start(paths: list[str], **kw: object) -> LocalTail:
        t = LocalTail(paths, **kw)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


def test_hostile_content_round_trips(tmp_path: Path, tails) -> None:
    f = tmp_path / "a.out"
    f.write_text("".join(line + "\n" for line in HOSTILE_LINES), encoding="utf-8")
    t = tails([str(f)])
    got = t.wait_for(len(HOSTILE_LINES))
    assert [fl.line for fl in got] == HOSTILE_LINES
    assert {fl.path for fl in got} == {str(f)}
    assert t.decoder.malformed == 0


def test_long_lines_and_multibyte_are_reassembled(tmp_path: Path, tails) -> None:
    long_ascii = "x" * 200_000
    long_multi = "é✓🚀" * 5000 + "%\r"  # 3 widths of UTF-8 sequences crossing chunk borders
    f = tmp_path / "long.out"
    f.write_text(f"{long_ascii}\n{long_multi}\nshort\n", encoding="utf-8")
    t = tails([str(f)])
    got = t.wait_for(3)
    assert [fl.line for fl in got] == [long_ascii, long_multi, "short"]
    assert t.raw_count > 200  # it really was chunked
    assert t.decoder.malformed == 0


def test_binary_junk_keeps_framing(tmp_path: Path, tails) -> None:
    f = tmp_path / "bin.out"
    junk = bytes(range(1, 256)).replace(b"\n", b"")
    f.write_bytes(b"before\n" + junk + b"\n" + b"\xff\xfe0:fake\n" + b"after\n")
    t = tails([str(f)])
    got = t.wait_for(4)
    lines = [fl.line for fl in got]
    assert lines[0] == "before" and lines[3] == "after"
    assert lines[2].endswith("0:fake")
    assert len(got) == 4 and t.decoder.malformed == 0


def test_late_files_truncation_and_order(tmp_path: Path, tails) -> None:
    a, b = tmp_path / "job.node0.out", tmp_path / "job.node1.out"
    a.write_text("a1\n")
    t = tails([str(a), str(b)])
    t.wait_for(1)
    b.write_text("b1\n")  # appears after the tail started
    t.wait_for(2)
    with a.open("a") as fh:
        fh.write("a2\n")
    t.wait_for(3)
    time.sleep(0.1)
    a.write_text("z\n")  # truncated (shorter: tail detects truncation by size)
    got = t.wait_for(4)
    assert [(Path(fl.path).name, fl.line) for fl in got] == [
        ("job.node0.out", "a1"), ("job.node1.out", "b1"), ("job.node0.out", "a2"),
        ("job.node0.out", "z"),
    ]


def test_from_start_false_skips_existing(tmp_path: Path, tails) -> None:
    f = tmp_path / "x.out"
    f.write_text("old1\nold2\n")
    t = tails([str(f)], from_start=False)
    time.sleep(0.5)  # give tail time to open the file and seek to its end
    with f.open("a") as fh:
        fh.write("new\n")
    got = t.wait_for(1)
    assert [fl.line for fl in got] == ["new"]


def test_hostile_paths(tmp_path: Path, tails) -> None:
    d = tmp_path / "we'ird $(id) `x` dir"
    d.mkdir()
    f = d / "job;rm -rf ~;'-1.node0.out"
    f.write_text("ok\n")
    t = tails([str(f)])
    got = t.wait_for(1)
    assert got == [FileLine(str(f), "ok")]


def test_concurrent_writers_never_interleave(tmp_path: Path, tails) -> None:
    """4 files written at once with lines longer than PIPE_BUF: every line arrives intact."""
    paths = [tmp_path / f"n.node{i}.out" for i in range(4)]
    for p in paths:
        p.write_text("")
    t = tails([str(p) for p in paths])
    per_file = 300

    def writer(i: int) -> None:
        with paths[i].open("a") as fh:
            for k in range(per_file):
                body = (f"{i}" * (50 + (k * 37) % 6000))
                fh.write(f"n{i} k{k} {body} end\n")
                fh.flush()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    got = t.wait_for(4 * per_file, timeout=60)
    for i, p in enumerate(paths):
        mine = [fl.line for fl in got if fl.path == str(p)]
        assert len(mine) == per_file
        for k, line in enumerate(mine):
            assert line == f"n{i} k{k} {str(i) * (50 + (k * 37) % 6000)} end"
    assert t.decoder.malformed == 0


def test_closing_the_stream_kills_remote_tails(tmp_path: Path) -> None:
    f = tmp_path / "idle.out"
    f.write_text("one\n")
    proc = subprocess.Popen(
        ["/bin/sh", "-c", tail_command([str(f)], heartbeat_s=1)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first in (b"#\n", b"0:one\n")
        pgid = proc.pid
        members = _group_members(pgid)
        assert any("tail" in cmd for cmd in members.values()), members
        proc.stdout.close()  # the channel closes; nothing more is ever written to the file
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            proc.poll()
            if not _group_members(pgid):
                break
            time.sleep(0.1)
        assert not _group_members(pgid), "remote tail processes outlived the closed stream"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _group_members(pgid: int) -> dict[int, str]:
    """Live (non-zombie) processes in a process group, read from /proc."""
    out: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, pg = fields[0], int(fields[2])
        if pg == pgid and state != "Z":
            out[int(entry)] = cmd
    return out


def test_decoder_ignores_junk_and_reassembles() -> None:
    d = TailDecoder(["/a", "/b"])
    assert d.feed("#\n") is None and d.heartbeats == 1
    assert d.feed("garbage") is None
    assert d.feed("7:index out of range") is None
    assert d.malformed == 2
    assert d.feed("0+hel") is None
    assert d.feed("1:other") == FileLine("/b", "other")  # pieces of another file may interleave
    assert d.feed("0+lo %r") is None
    assert d.feed("0:wor%%ld\n") == FileLine("/a", "hello \rwor%ld")
    assert d.feed("0:") == FileLine("/a", "")
    assert d.feed("1:x%r\r\n") == FileLine("/b", "x\r")  # a transport that kept \r\n


def test_unescape_unknown_escape_is_verbatim() -> None:
    assert unescape("100%% %q %") == "100% %q %"


def test_tail_command_validates() -> None:
    with pytest.raises(ValueError):
        tail_command([])
    with pytest.raises(ValueError):
        tail_command(["/a"], chunk_bytes=5000)
    cmd = tail_command(["~/x.out"])
    assert cmd.startswith("exec sh -c ")
