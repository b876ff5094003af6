"""Preflight of >= 4-GPU launches (original-rv 6.10): the NCCL-without-gloo lint, inference-only
detection on small sample scripts, and prepare_launch (shared by rv run and the TUI) dropping
multi-node strategies for an inference-only script on the demo cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rv_tui.allocator.model import Request
from rv_tui.cli.main import main as rv_main
from rv_tui.cluster.demo import DemoCluster
from rv_tui.jobs.launch import prepare_launch
from rv_tui.jobs.preflight import (
    apply_preflight, entry_script, inference_only_markers, lint_nccl_without_gloo, run_preflight,
)

INFER_HF = """\
from transformers import AutoModelForCausalLM, pipeline
model = AutoModelForCausalLM.from_pretrained("m", device_map="auto")
gen = pipeline("text-generation", model=model)
print(gen("hi"))
# loss.backward() would make this training, but it is only a comment
"""
INFER_VLLM = "from vllm import LLM\nllm = LLM('m', tensor_parallel_size=4)\nprint(llm.generate('x'))\n"
TRAIN_HF = """\
from transformers import Trainer, AutoModel
model = AutoModel.from_pretrained("m", device_map="auto")
Trainer(model=model).train()
"""
TRAIN_LOOP = """\
import torch.distributed as dist
dist.init_process_group("nccl")
model = load(device_map="auto")
for batch in data:
    loss = model(batch)
    loss.backward()
"""
NCCL_WITH_GLOO = """\
import torch.distributed as dist
dist.init_process_group(backend="nccl")
cpu_group = dist.new_group(backend="gloo")
"""


def test_nccl_lint() -> None:
    assert lint_nccl_without_gloo(TRAIN_LOOP) and "gloo" in lint_nccl_without_gloo(TRAIN_LOOP)
    assert lint_nccl_without_gloo("dist.init_process_group(backend='nccl')\n")
    assert lint_nccl_without_gloo(NCCL_WITH_GLOO) is None
    assert lint_nccl_without_gloo(INFER_HF) is None
    assert lint_nccl_without_gloo("# dist.init_process_group('nccl')\n") is None  # a comment


def test_inference_only_detection() -> None:
    assert inference_only_markers(INFER_HF) == ("device_map=", "pipeline(")
    assert inference_only_markers(INFER_VLLM) == ("vllm",)
    assert inference_only_markers(TRAIN_HF) == ()  # Trainer(
    assert inference_only_markers(TRAIN_LOOP) == ()  # .backward( / init_process_group
    assert inference_only_markers(INFER_HF, "torchrun --nproc_per_node=4 infer.py") == ()
    assert inference_only_markers("import torch\nprint(torch.cuda.device_count())\n") == ()
    assert inference_only_markers("import vllm_tools_lookalike\n") == ()


def test_run_preflight_only_for_big_local_python_entries(tmp_path: Path) -> None:
    (tmp_path / "infer.py").write_text(INFER_HF)
    (tmp_path / "train.py").write_text(TRAIN_LOOP)
    big = Request(gpus=4)
    rep = run_preflight(big, "python infer.py --n 3", tmp_path)
    assert rep.entry == str(tmp_path / "infer.py") and rep.single_node_reason
    assert "inference-only" in rep.single_node_reason and "device_map=" in rep.single_node_reason
    assert apply_preflight(big, rep).single_node is True
    assert run_preflight(Request(gpus=2), "python infer.py", tmp_path).entry is None  # < 4 GPUs
    assert run_preflight(big, "python missing.py", tmp_path).entry is None
    assert run_preflight(big, None, tmp_path).entry is None  # rv up
    train = run_preflight(Request(gpus=8), "torchrun --nproc_per_node=4 train.py", tmp_path)
    assert train.single_node_reason is None and len(train.warnings) == 1
    assert apply_preflight(Request(gpus=8), train).single_node is False
    assert entry_script(tmp_path, "python 'unbalanced") is None  # unparsable: no crash
    assert entry_script(tmp_path, "accelerate launch --x train.py") == tmp_path / "train.py"


async def test_prepare_launch_drops_multi_node_for_inference(tmp_path: Path) -> None:
    (tmp_path / "infer.py").write_text(INFER_VLLM)
    said: list[str] = []
    cluster = DemoCluster(seed=5, speed=0)
    try:
        req = Request(gpus=4, gpu_type="a6000", time_s=3600)
        plain = await prepare_launch(cluster, None, req, "python other.py", cwd=tmp_path, dry_run=True,
                                     workspace=False)
        assert any(s.multi_node for s in plain.plan.strategies)  # the control: 2x2 is raced
        assert plain.preflight is None
        launch = await prepare_launch(cluster, None, req, "python infer.py", cwd=tmp_path, dry_run=True,
                                      say=said.append, workspace=False)
        assert launch.request.single_node and launch.plan.strategies
        assert not any(s.multi_node for s in launch.plan.strategies)
        assert all(e.submission.nodes == 1 for e in launch.entries)
        assert any("inference-only" in m for m in said)
        assert launch.to_json()["preflight"]["inference_markers"] == ["vllm"]
        # a plan made beforehand (the TUI's preview) is narrowed to its single-node strategies
        again = await prepare_launch(cluster, None, req, "python infer.py", cwd=tmp_path, dry_run=True,
                                     plan=plain.plan, workspace=False)
        assert again.plan.strategies and not any(s.multi_node for s in again.plan.strategies)
        assert len(again.plan.strategies) == len([s for s in plain.plan.strategies if not s.multi_node])
    finally:
        await cluster.close()


@pytest.fixture
def demo_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RV_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_rv_run_dry_run_says_why(capsys, demo_home: Path) -> None:
    (demo_home / "serve.py").write_text(INFER_HF)
    code = rv_main(["--demo", "--seed", "2", "run", "-g", "4", "-t", "a6000", "--dry-run", "--json",
                    "--", "python", "serve.py"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["strategies"] and {s["topology"] for s in data["strategies"]} == {"1x4"}
    assert data["launch"]["preflight"]["single_node_reason"]
    code = rv_main(["--demo", "--seed", "2", "run", "-g", "4", "-t", "a6000", "--dry-run",
                    "--", "python", "serve.py"])
    out, err = capsys.readouterr()
    assert code == 0 and "inference-only" in err and "multi-node strategies dropped" in err
