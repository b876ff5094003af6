"""Job naming: heuristic names, Slurm-safe sanitising, AI request building and its fallbacks.

AI naming is tested against local 127.0.0.1 servers only (no network): a good answer is used, a
500, garbage or a hang falls back to the heuristic within the timeout.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from rv_tui.jobs.naming import (
    MAX_NAME_LEN, ai_provider, build_ai_request, choose_job_name, heuristic_name, parse_ai_response,
    sanitize_job_name,
)


@pytest.mark.parametrize("command,expected", [
    ("python -u train.py", "rv-train"),  # the original's quirk gave rv-job
    ("python train.py --lr 3e-4", "rv-train"),
    ("python3 -O -B scripts/eval_model.py", "rv-eval-model"),
    ("torchrun --nproc_per_node 4 train.py", "rv-train"),
    ("accelerate launch --config_file cfg.yaml src/finetune.py", "rv-finetune"),
    ("python -m pkg.trainer --epochs 3", "rv-trainer"),
    ("python -m pkg.trainer.__main__", "rv-trainer"),
    ("make train", "rv-make-train"),
    ("CUDA_VISIBLE_DEVICES=0 python -c 'import torch'", "rv-python-c"),
    ("cd exp && python3 sweep.py", "rv-sweep"),
    ("./run_all.sh 3", "rv-run-all"),
    ("sleep 100", "rv-sleep"),
    (None, "rv-interactive"),
    ("", "rv-interactive"),
    ("python 'unbalanced", "rv-unbalanced"),
])
def test_heuristic_name(command: str | None, expected: str) -> None:
    assert heuristic_name(command) == expected


@pytest.mark.parametrize("raw", ["'; rm -rf ~; echo '", "$(id)", "`id`", 'a"b', "x\ny", " --help", "-J", "", "...",
                                 "é" * 10, "a" * 300])
def test_sanitize_is_slurm_safe(raw: str) -> None:
    name = sanitize_job_name(raw)
    assert 1 <= len(name) <= MAX_NAME_LEN
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
    assert name[0].isalnum() and name[-1].isalnum()


def test_sanitize_keeps_good_names() -> None:
    assert sanitize_job_name("my-run_2.b") == "my-run_2.b"
    assert sanitize_job_name("my run / 2") == "my-run-2"


def test_provider_and_request_building() -> None:
    assert ai_provider("sk-ant-abc") == "anthropic" and ai_provider("sk-proj-1") == "openai"
    req = build_ai_request("python train.py", "sk-ant-KEY")
    assert req.full_url == "https://api.anthropic.com/v1/messages"
    assert req.get_header("X-api-key") == "sk-ant-KEY" and req.get_header("Anthropic-version") == "2023-06-01"
    body = json.loads(req.data)
    assert body["max_tokens"] == 20 and "python train.py" in body["messages"][0]["content"]
    req = build_ai_request("python train.py", "sk-KEY", base_url="http://127.0.0.1:1/")
    assert req.full_url == "http://127.0.0.1:1/v1/chat/completions"
    assert req.get_header("Authorization") == "Bearer sk-KEY"
    assert json.loads(req.data)["model"] == "gpt-4o-mini"


def test_parse_responses() -> None:
    assert parse_ai_response("anthropic", b'{"content":[{"type":"text","text":"Llama Finetune!\\n"}]}') == "rv-llama-finetune"
    assert parse_ai_response("openai", b'{"choices":[{"message":{"content":"rv-bert-eval"}}]}') == "rv-bert-eval"
    assert parse_ai_response("openai", b"not json") is None
    assert parse_ai_response("openai", b'{"choices":[]}') is None
    assert parse_ai_response("anthropic", b'{"content":[{"text":"$(id); `x`"}]}') == "rv-id-x"


class _Server:
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(data)))
                if outer.behaviour == "hang":
                    time.sleep(5)
                    return
                if outer.behaviour == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                payload = ({"content": [{"type": "text", "text": "gpt2 sweep"}]}
                           if self.path.endswith("/messages") else
                           {"choices": [{"message": {"content": "resnet train"}}]})
                raw = json.dumps(payload).encode() if outer.behaviour == "ok" else b"<html>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    s = _Server(request.param)
    yield s
    s.close()


@pytest.mark.parametrize("server", ["ok"], indirect=True)
async def test_ai_name_from_local_server(server: _Server) -> None:
    name = await choose_job_name("python x.py", ai_naming=True, api_key="sk-ant-k", base_url=server.url)
    assert name == "rv-gpt2-sweep"
    path, headers, body = server.requests[0]
    assert path == "/v1/messages" and headers["x-api-key"] == "sk-ant-k"
    name = await choose_job_name("python x.py", ai_naming=True, api_key="sk-k", base_url=server.url)
    assert name == "rv-resnet-train" and server.requests[1][0] == "/v1/chat/completions"


@pytest.mark.parametrize("server", ["500", "garbage", "hang"], indirect=True)
async def test_ai_failures_fall_back_to_heuristic(server: _Server) -> None:
    t0 = time.monotonic()
    name = await choose_job_name("python -u train.py", ai_naming=True, api_key="sk-k", base_url=server.url,
                                 timeout=0.5)
    assert name == "rv-train"
    assert server.requests  # the request was really made
    assert time.monotonic() - t0 < 4  # bounded by the timeout, not by the 5 s hang


async def test_explicit_name_wins_and_no_key_means_no_request() -> None:
    assert await choose_job_name("python t.py", explicit="my run!", ai_naming=True, api_key="sk-x",
                                 base_url="http://127.0.0.1:9") == "my-run"
    assert await choose_job_name("python t.py", ai_naming=True, api_key=None) == "rv-t"
    assert await choose_job_name(None, ai_naming=True, api_key="sk-x", base_url="http://127.0.0.1:9") == "rv-interactive"
