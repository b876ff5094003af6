"""Unit tests of the log core: progress collapse, ring bounds, locate, merge order, exit codes,
and the CLI renderer.  Cluster behaviour is covered end to end in test_logs_cluster.py/demo."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import pytest

from rv_tui.cli.logs import Renderer
from rv_tui.cluster.base import ExecResult, FileLine, JobInfo
from rv_tui.errors import RvError
from rv_tui.logs import (
    JobEnded,
    LogLine,
    LogRing,
    ProgressCollapser,
    collapse,
    exit_code_of,
    follow,
    is_progress,
    locate_logs,
)
from rv_tui.logs.locate import listing_command
from rv_tui.logs.merge import split_lines

TQDM = "Epoch 1:  45%|####5     | 45/100 [00:01<00:02, 30.1it/s]"


def ln(seq: int, text: str, node: int | None = 0, stream: str = "out") -> LogLine:
    return LogLine(seq, node, stream, text, is_progress(text))  # type: ignore[arg-type]


# ---------------------------------------------------------------- progress


def test_progress_detection_and_collapse() -> None:
    assert is_progress(TQDM)
    assert is_progress("a\rb")
    assert is_progress("[=====>     ] 52%")
    assert not is_progress("loss 0.45 after 100% of warmup")
    assert collapse(" 10%|#\r 50%|#####\r100%|##########\r") == "100%|##########"
    assert collapse("plain") == "plain"
    assert collapse("\r\r") == ""


def test_collapser_keeps_only_latest_per_source() -> None:
    c = ProgressCollapser()
    out: list[LogLine] = []
    for line in [ln(1, "start"), ln(2, " 10%|#|"), ln(3, "n1", node=1), ln(4, " 90%|#|"),
                 ln(5, " 20%|#|", node=1), ln(6, "done")]:
        out.extend(c.feed(line))  # type: ignore[arg-type]
    out.extend(c.flush())  # type: ignore[arg-type]
    assert [(x.node, x.text) for x in out] == [
        (0, "start"), (1, "n1"), (0, " 90%|#|"), (0, "done"), (1, " 20%|#|")]


# ---------------------------------------------------------------- ring


def test_ring_bounds_lines_and_bytes() -> None:
    r = LogRing(max_lines=100, max_bytes=10_000_000)
    for i in range(1000):
        r.append(ln(i, f"line {i}"))
    assert len(r) == 100 and r.dropped == 900 and r.total == 1000
    assert [x.text for x in r.lines(2)] == ["line 998", "line 999"]
    rb = LogRing(max_lines=10_000, max_bytes=50_000)
    for i in range(1000):
        rb.append(ln(i, "x" * 1000))
    assert rb.bytes <= 50_000 and len(rb) < 50


def test_ring_collapses_progress_in_place_per_source() -> None:
    r = LogRing(max_lines=10)
    r.append(ln(1, "begin"))
    r.append(ln(2, "  1%|#|", node=0))
    r.append(ln(3, "other node", node=1))
    for i in range(4, 10_000):
        r.append(ln(i, f" {i % 100}%|#|", node=0))
    assert [x.text for x in r] == ["begin", " 99%|#|", "other node"]
    r.append(ln(10_001, "after", node=0))
    r.append(ln(10_002, " 1%|#|", node=0))  # a new bar after a normal line gets a new slot
    assert [x.text for x in r][-2:] == ["after", " 1%|#|"]


def test_ring_cuts_giant_lines() -> None:
    r = LogRing()
    r.append(ln(1, "y" * 1_000_000))
    assert len(r.lines()[0].text) < 70_000


def test_split_lines_only_on_newline() -> None:
    assert split_lines(b"a\rb\nc\n") == ["a\rb", "c"]
    assert split_lines(b"no newline") == ["no newline"]
    assert split_lines(b"") == []
    assert split_lines(b"\xff\n") == ["\ufffd"]


# ---------------------------------------------------------------- exit codes


def _info(state: str, code: int | None = 0, sig: int | None = None, **kw: object) -> JobInfo:
    return JobInfo(job_id="7", name="j", user="u", state=state, partition="gpu", exit_code=code,
                   exit_signal=sig, **kw)  # type: ignore[arg-type]


def test_exit_codes_never_zero_for_failures() -> None:
    assert exit_code_of(_info("COMPLETED", 0)) == 0
    assert exit_code_of(_info("FAILED", 3)) == 3
    assert exit_code_of(_info("FAILED", 0)) == 1
    assert exit_code_of(_info("CANCELLED", 0, 15)) == 143
    assert exit_code_of(_info("TIMEOUT", 0)) == 124
    assert exit_code_of(_info("CANCELLED", None)) == 130
    assert exit_code_of(None) == 1


# ---------------------------------------------------------------- a scripted in-memory cluster


class ScriptedCluster:
    """Just enough of the Cluster interface to drive follow(): files grow on a script."""

    name = "scripted"
    user = "u"
    scratch = "/scratch/u"
    is_demo = True

    def __init__(self, info: JobInfo, files: dict[str, list[str]], listing: str = "") -> None:
        self.info = info
        self.files = files
        self.listing = listing
        self.feed: asyncio.Queue[FileLine] = asyncio.Queue()
        self.stream_closed = False
        self.exec_calls: list[str] = []

    async def jobs(self, job_ids: Sequence[str] | None = None, *, all_users: bool = False) -> list[JobInfo]:
        return [self.info]

    async def exec(self, command: str, *, timeout: float | None = None) -> ExecResult:
        self.exec_calls.append(command)
        return ExecResult(command, 0, self.listing, "")

    async def read_file(self, path: str) -> bytes:
        if path not in self.files:
            raise FileNotFoundError(path)
        return "".join(x + "\n" for x in self.files[path]).encode()

    async def tail_file(self, path: str, lines: int, *, max_bytes: int = 8 << 20) -> bytes:
        if path not in self.files:
            raise FileNotFoundError(path)
        return "".join(x + "\n" for x in self.files[path][-lines:]).encode()

    async def stream_files(self, paths: Sequence[str], *, from_start: bool = True) -> AsyncIterator[FileLine]:
        try:
            while True:
                fl = await self.feed.get()
                if fl.path in paths:
                    yield fl
        finally:
            self.stream_closed = True


LOGS = "/scratch/u/.rv/logs"


async def test_locate_multi_node_from_listing_and_hostile_listing_command() -> None:
    c = ScriptedCluster(_info("RUNNING", num_nodes=1, stdout_path=None),
                        {}, listing="train-7.out\ntrain-7.err\ntrain-7.node0.out\ntrain-7.node1.err\n")
    logs = await locate_logs(c, "7")  # type: ignore[arg-type]
    assert logs.name == "train" and logs.nodes == 2 and logs.multi_node
    assert [s.path for s in logs.select(node=1)] == [f"{LOGS}/train-7.node1.out", f"{LOGS}/train-7.node1.err"]
    assert [s.path for s in logs.select(streams=("err",))] == [
        f"{LOGS}/train-7.node0.err", f"{LOGS}/train-7.node1.err", f"{LOGS}/train-7.err"]
    with pytest.raises(RvError):
        logs.select(node=2)
    with pytest.raises(RvError):
        await locate_logs(c, "7; rm -rf ~")  # type: ignore[arg-type]
    cmd = listing_command("/scratch/we'ird $(id)/logs", "123")
    assert "'/scratch/we'\"'\"'ird $(id)/logs'" in cmd


async def test_follow_interleaves_by_arrival_and_reports_exit() -> None:
    info = _info("RUNNING", None, num_nodes=2)
    c = ScriptedCluster(info, {})
    got: list[object] = []

    async def consume() -> None:
        async for ev in follow(c, "7", poll=0.05, drain_quiet=0.3, drain_max=2):  # type: ignore[arg-type]
            got.append(ev)

    task = asyncio.create_task(consume())
    n0, n1e = f"{LOGS}/j-7.node0.out", f"{LOGS}/j-7.node1.err"
    for k in range(3):
        await c.feed.put(FileLine(n0, f"a{k}"))
        await c.feed.put(FileLine(n1e, f"b{k}"))
    await asyncio.sleep(0.2)
    c.info = replace(info, state="FAILED", exit_code=2)
    await c.feed.put(FileLine(n1e, "late traceback"))  # written as the job ended: still shown
    await asyncio.wait_for(task, 10)
    lines = [e for e in got if isinstance(e, LogLine)]
    assert [(x.node, x.stream, x.text) for x in lines] == [
        (0, "out", "a0"), (1, "err", "b0"), (0, "out", "a1"), (1, "err", "b1"),
        (0, "out", "a2"), (1, "err", "b2"), (1, "err", "late traceback")]
    assert [x.seq for x in lines] == sorted(x.seq for x in lines)
    assert isinstance(got[-1], JobEnded) and got[-1].state == "FAILED" and got[-1].exit_code == 2
    assert c.stream_closed


async def test_follow_finished_job_reads_once() -> None:
    c = ScriptedCluster(_info("TIMEOUT", 0), {f"{LOGS}/j-7.out": ["x", "y", "z"]})
    got = [ev async for ev in follow(c, "7", last=2)]  # type: ignore[arg-type]
    assert [e.text for e in got if isinstance(e, LogLine)] == ["y", "z"]
    assert got[-1] == JobEnded("7", "TIMEOUT", 124, None)


# ---------------------------------------------------------------- renderer


def test_renderer_prefixes_and_json() -> None:
    out = io.StringIO()
    r = Renderer(out, multi_node=True, both_streams=True, raw=False, as_json=False, tty=False)
    for line in [ln(1, "hi"), ln(2, "boom", node=1, stream="err"), ln(3, " 5%|#|"), ln(4, " 9%|#|"),
                 ln(5, "ok")]:
        r.feed(line)
    r.finish()
    assert out.getvalue().splitlines() == ["[node0] hi", "[node1] [stderr] boom", "[node0]  9%|#|", "[node0] ok"]
    out = io.StringIO()
    r = Renderer(out, multi_node=False, both_streams=True, raw=True, as_json=True, tty=False)
    r.feed(ln(1, "a\rb", node=None))
    r.finish()
    assert json.loads(out.getvalue()) == {"seq": 1, "node": None, "stream": "out", "line": "a\rb"}


def test_renderer_tty_redraws_progress_in_place() -> None:
    out = io.StringIO()
    r = Renderer(out, multi_node=False, both_streams=False, raw=False, as_json=False, tty=True)
    for line in [ln(1, "a", None), ln(2, " 1%|#|", None), ln(3, " 2%|#|", None), ln(4, "b", None)]:
        r.feed(line)
    r.finish()
    assert out.getvalue() == "a\n\r 1%|#|\x1b[K\r 2%|#|\x1b[K\nb\n"
