"""Preflight for big launches: read the local entry script before racing >= 4 GPUs.

Why: a multi-node strategy is only worth racing when the program can use it.  Two cheap static
checks catch the common waste (original-rv 6.10):

* an inference-only script (``device_map=``, ``pipeline(``, vLLM) with no training or
  distributed markers cannot use a second node, so multi-node strategies are dropped
  (``Request.single_node``) and the reason is said;
* a script that uses NCCL as its only process-group backend hangs when it runs collectives on CPU
  tensors (object gathers, barriers on CPU state); a warning suggests adding a gloo group.

Only the local file is read (no cluster); a command without a local ``.py`` entry is left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rv_tui.allocator.model import Request

#: Preflight runs for requests of at least this many GPUs (where multi-node strategies appear).
MIN_GPUS = 4
#: Scripts larger than this are not read (generated or vendored files; the check is a heuristic).
MAX_BYTES = 2_000_000

_NCCL = re.compile(r"""init_process_group\(\s*(?:backend\s*=\s*)?["']nccl["']|backend\s*=\s*["']nccl["']""")
_GLOO = re.compile(r"\bgloo\b")
_INFERENCE = (
    ("device_map=", re.compile(r"\bdevice_map\s*=")),
    ("pipeline(", re.compile(r"\bpipeline\(")),
    ("vllm", re.compile(r"^\s*(?:import\s+vllm\b|from\s+vllm\b)", re.M)),
)
_TRAINING = (
    (".backward(", re.compile(r"\.backward\(")),
    ("Trainer(", re.compile(r"\w*Trainer\(")),
    ("init_process_group", re.compile(r"\binit_process_group\b")),
    ("torchrun", re.compile(r"\btorchrun\b")),
    ("optimizer.step(", re.compile(r"\boptimi[sz]er\w*\.step\(")),
)


@dataclass(frozen=True)
class PreflightReport:
    """What the checks found in one entry file."""

    entry: str | None  # the local file that was read (None: nothing to check)
    warnings: tuple[str, ...] = ()
    single_node_reason: str | None = None  # set: drop multi-node strategies, and why
    inference_markers: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, object]:
        return {"entry": self.entry, "warnings": list(self.warnings),
                "single_node_reason": self.single_node_reason,
                "inference_markers": list(self.inference_markers)}


def _code(source: str) -> str:
    """The source without whole-line comments (a commented-out ``loss.backward()`` is not training)."""
    return "\n".join(ln for ln in source.splitlines() if not ln.lstrip().startswith("#"))


def lint_nccl_without_gloo(source: str) -> str | None:
    """A warning when NCCL is the only process-group backend (CPU-tensor collectives hang)."""
    code = _code(source)
    if _NCCL.search(code) and not _GLOO.search(code):
        return ("the script uses the NCCL backend and never gloo: collectives on CPU tensors "
                "(all_gather_object, barriers on CPU state) hang under NCCL; create a gloo group "
                "for them (dist.new_group(backend=\"gloo\")) or move the tensors to the GPU")
    return None


def inference_only_markers(source: str, command: str = "") -> tuple[str, ...]:
    """The inference markers found when the script looks inference-only (else ``()``)."""
    code = _code(source)
    found = tuple(name for name, rx in _INFERENCE if rx.search(code))
    if not found:
        return ()
    if any(rx.search(code) for _, rx in _TRAINING) or re.search(r"\btorchrun\b", command):
        return ()
    return found


def entry_script(cwd: str | Path, command: str) -> Path | None:
    """The first word of ``command`` that is an existing local ``.py`` file (the workspace's
    project-script rule, restricted to Python; shell operators split off, nothing rewritten)."""
    from rv_tui.jobs.command import command_words

    argv = command_words(command)
    base = Path(cwd)
    for word in argv:
        if word.startswith("-"):
            continue
        p = base / word
        if p.suffix == ".py" and p.is_file():
            return p
    return None


def run_preflight(request: Request, command: str | None, cwd: str | Path) -> PreflightReport:
    """Check the entry script of a >= :data:`MIN_GPUS` request; an empty report otherwise."""
    if command is None or request.gpus < MIN_GPUS:
        return PreflightReport(entry=None)
    path = entry_script(cwd, command)
    if path is None:
        return PreflightReport(entry=None)
    try:
        if path.stat().st_size > MAX_BYTES:
            return PreflightReport(entry=str(path))
        source = path.read_text(errors="replace")
    except OSError:
        return PreflightReport(entry=None)
    warnings = [w for w in (lint_nccl_without_gloo(source),) if w]
    markers = inference_only_markers(source, command)
    reason = None
    if markers and not request.single_node:
        reason = (f"{path.name} looks inference-only ({', '.join(markers)}; no backward(), Trainer, "
                  f"init_process_group or torchrun): multi-node strategies dropped, one node serves "
                  f"all {request.gpus} GPUs")
    return PreflightReport(entry=str(path), warnings=tuple(warnings), single_node_reason=reason,
                           inference_markers=markers)


def apply_preflight(request: Request, report: PreflightReport) -> Request:
    """The request with multi-node strategies dropped when the report says so."""
    if report.single_node_reason and not request.single_node:
        return request.with_(single_node=True)
    return request


__all__ = ["MIN_GPUS", "PreflightReport", "apply_preflight", "entry_script", "inference_only_markers",
           "lint_nccl_without_gloo", "run_preflight"]
