"""Hardware retry: a followed job that died of a bad GPU is raced again without that node.

Why: on a big shared cluster a node with a failing GPU ("CUDA error: unknown error", "GPU has
fallen off the bus", an uncorrectable ECC error) kills a job within seconds of its start, and
Slurm happily hands the same node out again.  After ``rv run -f`` sees its job end non-zero,
:func:`diagnose` reads the tail of the job's stderr (each node's file for multi-node jobs) in one
round trip; if a hardware pattern matches and the job had run for less than
:data:`RETRY_WINDOW_S` *of its own runtime* (the original counted queue wait too, so it rarely
fired after a real wait), :func:`relaunch` re-plans the same request with the failed nodes
excluded (``#SBATCH --exclude=``), at most :data:`MAX_RETRIES` times.  The code and snapshot are
reused: nothing is synced again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from rv_tui.allocator.model import Strategy
from rv_tui.cluster.base import Cluster, ClusterSnapshot, JobInfo
from rv_tui.quoting import q

#: Retries after the first run (so at most three runs in all).
MAX_RETRIES = 2
#: A job that ran longer than this (from its own start) is not retried: a hardware fault shows
#: at CUDA initialisation; a long run that failed is more likely the program's own error.
RETRY_WINDOW_S = 600
#: stderr lines read: the single-node file, and each node's file of a multi-node job.
TAIL_LINES = 100
TAIL_LINES_PER_NODE = 50

#: GPU hardware failures (original-rv 2.11).
HARDWARE_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"CUDA error: unknown error", re.I),
    re.compile(r"Failed to get device handle", re.I),
    re.compile(r"cudaErrorUnknown", re.I),
    re.compile(r"GPU has fallen off the bus", re.I),
    re.compile(r"uncorrectable ECC error", re.I),
    re.compile(r"NCCL.*unhandled system error", re.I),
    re.compile(r"NVMLError_Unknown"),
)

_DELIM = "___RV_TAIL_END___"


def match_hardware_error(text: str) -> str | None:
    """The first stderr line that shows a GPU hardware failure (stripped), else None."""
    for line in text.splitlines():
        if any(p.search(line) for p in HARDWARE_PATTERNS):
            return line.strip()[:300]
    return None


def tail_command(paths: Sequence[tuple[str, int]]) -> str:
    """``tail -n N`` of every ``(path, N)``, each followed by a delimiter line (one round trip;
    a missing file yields an empty section)."""
    parts = [f"tail -n {int(n)} -- {q(path)} 2>/dev/null; echo {_DELIM}" for path, n in paths]
    return "; ".join(parts) + "; true"


def split_tails(stdout: str, count: int) -> list[str]:
    """The sections of :func:`tail_command`'s output, padded to ``count``."""
    sections = stdout.split(_DELIM + "\n")
    if sections and sections[-1].endswith(_DELIM):
        sections[-1] = sections[-1][: -len(_DELIM)]
    out = [s for s in sections[:count]]
    return out + [""] * (count - len(out))


def runtime_s(info: JobInfo, now: datetime | None = None) -> int | None:
    """How long the job itself ran (Slurm's Elapsed; else now - start), never its queue wait."""
    if info.elapsed_s:
        return int(info.elapsed_s)
    if info.start_time is not None and now is not None:
        return max(0, int((now - info.start_time).total_seconds()))
    return 0 if info.has_started or info.is_terminal else None


@dataclass(frozen=True)
class RetryDecision:
    """Whether to race again, and the evidence either way."""

    retry: bool
    reason: str
    job_id: str
    failed_nodes: tuple[str, ...] = ()
    evidence: str | None = None  # the matching stderr line
    runtime_s: int | None = None
    attempt: int = 0  # retries already made before this decision

    @property
    def hardware(self) -> bool:
        return self.evidence is not None

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "retry": self.retry, "reason": self.reason,
                "failed_nodes": list(self.failed_nodes), "evidence": self.evidence,
                "runtime_s": self.runtime_s, "attempt": self.attempt}


async def diagnose(cluster: Cluster, job_id: str, *, attempt: int = 0, name: str | None = None,
                   nodes: Sequence[str] = (), num_nodes: int | None = None,
                   max_retries: int = MAX_RETRIES, window_s: int = RETRY_WINDOW_S,
                   final_state: str | None = None) -> RetryDecision:
    """Decide whether the ended job ``job_id`` should be raced again without its node(s).

    ``nodes``/``num_nodes``/``name`` are what the race knew about the winner (used when Slurm has
    already forgotten the job).  Two round trips: the job's final record and the stderr tails.
    Only a job in a terminal state is ever retried (``final_state``, what the follower saw, else
    Slurm's answer now): a job whose state is unknown may still be running its first copy.
    """
    from rv_tui.cluster.base import TERMINAL_STATES, ControllerUnavailable
    from rv_tui.logs.follow import job_info
    from rv_tui.logs.locate import locate_logs

    def no(reason: str, **kw: Any) -> RetryDecision:
        return RetryDecision(False, reason, job_id, attempt=attempt, **kw)

    try:
        info = await job_info(cluster, job_id)
    except ControllerUnavailable:
        return no("Slurm is not answering, so the job's final state is unknown")
    state = final_state or (info.state if info is not None else None)
    if state not in TERMINAL_STATES or (info is not None and not info.is_terminal):
        return no(f"job {job_id} has not ended ({(info.state if info else state) or 'state unknown'})")
    ran = runtime_s(info, await cluster.now()) if info is not None else None
    job_nodes = tuple(info.nodes) if info is not None and info.nodes else tuple(nodes)
    count = num_nodes or (info.num_nodes if info is not None else None) or max(1, len(job_nodes))
    try:
        logs = await locate_logs(cluster, job_id, info, name=name, nodes=count)
    except Exception as exc:  # noqa: BLE001 - no logs, no evidence: just don't retry
        return no(f"could not read the job's stderr ({exc})", runtime_s=ran)
    sources = [(s, TAIL_LINES_PER_NODE if s.node is not None else TAIL_LINES)
               for s in logs.all if s.stream == "err"]
    res = await cluster.exec(tail_command([(s.path, n) for s, n in sources]), timeout=60)
    tails = split_tails(res.stdout, len(sources))
    failed: list[str] = []
    evidence = None
    for (src, _), text in zip(sources, tails):
        hit = match_hardware_error(text)
        if hit is None:
            continue
        evidence = evidence or hit
        if src.node is not None and src.node < len(job_nodes):
            failed.append(job_nodes[src.node])
        else:  # the batch script's stderr: any of the job's nodes
            failed.extend(job_nodes)
    failed = list(dict.fromkeys(failed))
    if evidence is None:
        return no("no GPU hardware error in the job's stderr", runtime_s=ran)
    kw = {"failed_nodes": tuple(failed), "evidence": evidence, "runtime_s": ran}
    if not failed:
        return no("GPU hardware error, but the job's nodes are unknown", **kw)
    if attempt >= max_retries:
        return no(f"GPU hardware error; already retried {attempt} time(s) (at most {max_retries})", **kw)
    if ran is None or ran > window_s:
        shown = "unknown" if ran is None else f"{ran} s"
        return no(f"GPU hardware error, but the job had run {shown} (retries only within "
                  f"{window_s} s of its start)", **kw)
    return RetryDecision(True, f"GPU hardware error on {', '.join(failed)}", job_id, attempt=attempt, **kw)


def union_excludes(previous: Iterable[str], failed: Iterable[str]) -> tuple[str, ...]:
    """Previously excluded nodes plus the newly failed ones, in order, once each."""
    return tuple(dict.fromkeys([*previous, *failed]))


def strategies_avoiding(strategies: Sequence[Strategy], snapshot: ClusterSnapshot,
                        exclude: Iterable[str]) -> list[Strategy]:
    """Drop strategies whose partition has too few nodes of their type left after ``exclude``
    (they could never start and would only sit in the queue)."""
    banned = set(exclude)
    out = []
    for s in strategies:
        left = [n for n in snapshot.nodes if s.partition in n.partitions and n.gpu_type == s.gpu_type
                and n.name not in banned and n.gpus_total >= s.gpus_per_node]
        if len(left) >= s.nodes:
            out.append(s)
    return out


async def relaunch(cluster: Cluster, launch: Any, failed_nodes: Iterable[str], *,
                   max_strategies: int = 16) -> Any:
    """The same launch (code, snapshot, venv, name, command) re-planned with ``failed_nodes``
    excluded, in a new race group.  Raises ``NoStrategyError``/``RvError`` when nothing is left."""
    from rv_tui.allocator.plan import make_plan
    from rv_tui.errors import RvError
    from rv_tui.jobs.launch import entries_for_context
    from rv_tui.groupstore import new_group_id

    exclude = union_excludes(launch.request.exclude_nodes, failed_nodes)
    request = launch.request.with_(exclude_nodes=exclude)
    plan = await make_plan(cluster, request, max_strategies=max_strategies)
    strategies = strategies_avoiding(plan.strategies, plan.snapshot, exclude)
    if not strategies:
        raise RvError(f"no strategy is left once {', '.join(exclude)} are excluded",
                      hint="run again later, or ask for another GPU type (-t)")
    plan = replace(plan, request=request, strategies=strategies)
    gid = new_group_id()
    ctx = replace(launch.context, group_id=gid, exclude_nodes=exclude)
    return replace(launch, request=request, plan=plan, context=ctx,
                   entries=entries_for_context(ctx, strategies), group_id=gid)


__all__ = ["HARDWARE_PATTERNS", "MAX_RETRIES", "RETRY_WINDOW_S", "RetryDecision", "diagnose",
           "match_hardware_error", "relaunch", "runtime_s", "split_tails", "strategies_avoiding",
           "tail_command", "union_excludes"]
