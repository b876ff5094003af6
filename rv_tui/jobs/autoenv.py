"""The variables rv sets in every job (seeds: OMP_NUM_THREADS ... RV_OUTPUT_DIR) as defaults.

Why a separate module: the batch script, the ``rv up`` attach rcfile and the docs/TUI all show the
same set, and the rule "a user's ``rv env`` value wins over the default" is implemented once, in
the order the script applies them (defaults first, then the user's env file).

Values may contain :data:`JOB_ID_REF` (``${SLURM_JOB_ID}``), which the script expands on the node;
:func:`export_lines` renders that part unquoted and everything else quoted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rv_tui.paths import RemotePaths
from rv_tui.quoting import env_assignment, q

if TYPE_CHECKING:
    from rv_tui.allocator.model import Strategy
    from rv_tui.jobs.context import JobContext

__all__ = ["AUTO_VARS", "JOB_ID_REF", "auto_env", "export_lines", "shared_hub_cache"]

JOB_ID_REF = "${SLURM_JOB_ID}"

#: the seeds' list, in the order the docs give it
AUTO_VARS = (
    "OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "HF_HOME", "VLLM_CACHE_DIR", "WANDB_DIR",
    "WANDB_DATA_DIR", "TRITON_CACHE_DIR", "TORCH_HOME", "RV_CHECKPOINT_DIR", "RV_OUTPUT_DIR",
)


def auto_env(ctx: "JobContext", strategy: "Strategy") -> dict[str, str]:
    """The auto-set variables for this job (the seeds' ten plus cache/launcher helpers).

    ``RV_OUTPUT_DIR`` is per job (``<outputs>/<name>-${SLURM_JOB_ID}``); ``RV_CHECKPOINT_DIR`` is
    per name, so reruns and checkpoint segments with the same name share it.  ``HF_HOME`` is
    always private; with a shared HF cache, ``HF_HUB_CACHE`` points at its ``hub/``.
    """
    p = RemotePaths(ctx.scratch)
    cpus = strategy.cpus_per_task if strategy.cpus_per_task and strategy.cpus_per_task > 0 else 1
    wandb = p.cache_dir("wandb")
    env = {
        "OMP_NUM_THREADS": str(cpus),
        "TOKENIZERS_PARALLELISM": "false",
        # HF_HOME (token, stored_tokens, settings) is always the user's private cache; a shared
        # cache ([shared] hf_cache) serves model files only, through HF_HUB_CACHE
        "HF_HOME": p.cache_dir("huggingface"),
        "VLLM_CACHE_DIR": p.cache_dir("vllm"),
        "WANDB_DIR": wandb,
        "WANDB_DATA_DIR": wandb,
        "TRITON_CACHE_DIR": p.cache_dir("triton"),
        "TORCH_HOME": p.cache_dir("torch"),
        "RV_CHECKPOINT_DIR": f"{p.checkpoints_dir}/{ctx.name}",
        "RV_OUTPUT_DIR": f"{p.outputs_dir}/{ctx.name}-{JOB_ID_REF}",
        # helpers the original also set; not in the seeds' list but harmless and useful
        "PYTHONUNBUFFERED": "1",
        "UV_CACHE_DIR": p.cache_dir("uv"),
        "PIP_CACHE_DIR": p.cache_dir("pip"),
        "RV_JOB_NAME": ctx.name,
        "RV_GROUP_ID": ctx.group_id,
    }
    if ctx.hf_cache:
        env["HF_HUB_CACHE"] = shared_hub_cache(ctx.hf_cache)
    return env


def shared_hub_cache(hf_cache: str) -> str:
    """The model-file cache inside a shared Hugging Face directory (``<dir>/hub``, where
    ``huggingface_hub`` keeps models under an ``HF_HOME``), so a group shares downloads but never
    the token files that live in ``HF_HOME`` itself."""
    return hf_cache.rstrip("/") + "/hub"


def _render_value(value: str) -> str:
    parts = value.split(JOB_ID_REF)
    out = []
    for i, part in enumerate(parts):
        if i:
            out.append('"${SLURM_JOB_ID}"')
        if part:
            out.append(q(part))
    return "".join(out) or "''"


def export_lines(env: dict[str, str]) -> list[str]:
    """``export K=<quoted>`` lines; ``${SLURM_JOB_ID}`` inside a value stays live."""
    lines = []
    for key, value in env.items():
        env_assignment(key, "")  # validates the name
        lines.append(f"export {key}={_render_value(value)}")
    return lines
