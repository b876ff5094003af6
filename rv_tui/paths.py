"""Where rv keeps things on the cluster (the seeds' paths table, in one place).

Every module that builds a remote path asks :class:`RemotePaths`, so the layout the docs promise
(``/scratch/<user>/.rv/logs/...``, ``rv-workspaces/<project>/<branch>/code``) cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Cache directories rv manages: name under ~/.cache -> the variables that point at it.
CACHE_DIRS: dict[str, tuple[str, ...]] = {
    "huggingface": ("HF_HOME",),
    "uv": ("UV_CACHE_DIR",),
    "pip": ("PIP_CACHE_DIR",),
    "wandb": ("WANDB_DIR", "WANDB_DATA_DIR"),
    "triton": ("TRITON_CACHE_DIR",),
    "torch": ("TORCH_HOME",),
}


@dataclass(frozen=True)
class RemotePaths:
    """The remote layout under one user's scratch directory."""

    scratch: str  # e.g. /scratch/abc1de

    @property
    def rv_dir(self) -> str:
        return f"{self.scratch}/.rv"

    @property
    def logs_dir(self) -> str:
        return f"{self.rv_dir}/logs"

    @property
    def outputs_dir(self) -> str:
        return f"{self.rv_dir}/outputs"

    @property
    def checkpoints_dir(self) -> str:
        return f"{self.rv_dir}/checkpoints"

    @property
    def env_dir(self) -> str:
        return f"{self.rv_dir}/env"

    @property
    def env_file(self) -> str:
        """The global ``rv env`` store: ``export KEY='value'`` lines, mode 0600, sourced by jobs."""
        return f"{self.env_dir}/vars.env"

    @property
    def venvs_dir(self) -> str:
        return f"{self.rv_dir}/envs"

    @property
    def groups_dir(self) -> str:
        """Race groups: ``<id>/group.json`` (the record) and ``<id>/claim`` (the first-wins lock)."""
        return f"{self.rv_dir}/groups"

    @property
    def workspaces_dir(self) -> str:
        return f"{self.scratch}/rv-workspaces"

    @property
    def cache_root(self) -> str:
        return f"{self.scratch}/.cache"

    def cache_dir(self, name: str) -> str:
        return f"{self.cache_root}/{name}"

    def group_dir(self, group_id: str) -> str:
        return f"{self.groups_dir}/{group_id}"

    def venv(self, project: str, branch: str) -> str:
        return f"{self.venvs_dir}/{project}/{branch}"

    def workspace(self, project: str, branch: str) -> str:
        return f"{self.workspaces_dir}/{project}/{branch}"

    def code_dir(self, project: str, branch: str) -> str:
        return f"{self.workspace(project, branch)}/code"

    def snapshots_dir(self, project: str, branch: str) -> str:
        return f"{self.workspace(project, branch)}/snapshots"

    def log_file(self, name: str, job_id: str, stream: str = "out", node: int | None = None) -> str:
        """``{name}-{id}.out`` or, for multi-node jobs, ``{name}-{id}.node{N}.out``."""
        suffix = f".node{node}" if node is not None else ""
        return f"{self.logs_dir}/{name}-{job_id}{suffix}.{stream}"
