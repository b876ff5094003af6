"""Per-job immutable snapshots of ``code/`` and their pruning.

A snapshot is ``cp -al code snapshots/{job}-{epoch_ms}``: instant, and zero extra space until
files change.  It stays immutable because sync never writes into an existing file (it links new
inodes into place, see :mod:`rv_tui.workspace.sync`).

Pruning removes snapshots older than 7 days, judged by the creation time in the name (``cp -a``
copies ``code/``'s old mtime onto the new directory, so mtime would lie), but never one a live job
uses: a job appends its ``$SLURM_JOB_ID`` to ``.rv-jobs`` in its snapshot when it starts
(:func:`job_snippet`), rv records the submitted ids there too (:func:`record_jobs`), and prune
keeps every snapshot whose ids include a job squeue still lists (pending or running).  A
checkpoint chain is one job: a live segment's group (its ``rvgroup:`` comment) names the chain in
``<group_dir>/segments``, and every id of that chain counts as live, so the snapshot the winner
recorded stays while a later segment waits in the queue (that segment's id is only written into
``.rv-jobs`` once it starts).  A live job's working directory is kept too, as a last resort.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from rv_tui.cluster.base import Cluster
from rv_tui.errors import RvError
from rv_tui.quoting import q

MAX_AGE_DAYS = 7
JOBS_FILE = ".rv-jobs"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def snapshot_name(job_name: str, epoch_ms: int | None = None) -> str:
    base = _SAFE.sub("-", job_name).strip(".-")[:60] or "job"
    return f"{base}-{epoch_ms if epoch_ms is not None else int(time.time() * 1000)}"


def create_command(code_dir: str, snapshot: str) -> str:
    snaps = snapshot.rsplit("/", 1)[0]
    return (f"mkdir -p {q(code_dir)} {q(snaps)} && cp -al {q(code_dir)} {q(snapshot)} && "
            f"touch {q(snapshot)}")


async def create_snapshot(cluster: Cluster, code_dir: str, snapshots_dir: str, job_name: str,
                          *, epoch_ms: int | None = None) -> str:
    """Hard-link copy of ``code_dir``; returns the snapshot path."""
    path = f"{snapshots_dir}/{snapshot_name(job_name, epoch_ms)}"
    res = await cluster.exec(create_command(code_dir, path), timeout=300)
    if not res.ok:
        raise RvError(f"could not snapshot {code_dir}: {res.stderr.strip()[-300:]}",
                      hint="check scratch quota (hard links still need inodes)")
    return path


def job_snippet(snapshot: str) -> str:
    """Shell for the job: record this job as a user of its snapshot (keeps prune away)."""
    return (f'[ -n "${{SLURM_JOB_ID:-}}" ] && echo "$SLURM_JOB_ID" >> {q(snapshot + "/" + JOBS_FILE)} '
            "2>/dev/null || true")


async def record_jobs(cluster: Cluster, snapshot: str, job_ids: Iterable[str]) -> None:
    """Note submitted job ids in the snapshot (covers jobs still pending)."""
    ids = [j for j in job_ids if re.fullmatch(r"\d+(_\d+)?", j)]
    if ids:
        await cluster.exec(f"printf '%s\\n' {' '.join(q(i) for i in ids)} >> {q(snapshot + '/' + JOBS_FILE)}")


@dataclass(frozen=True)
class PruneResult:
    removed: list[str]
    kept_in_use: list[str]


def prune_command(snapshots_dir: str, *, max_age_days: float = MAX_AGE_DAYS, now_ms: int | None = None,
                  groups_dir: str | None = None) -> str:
    """One script: list live jobs once (with their checkpoint chains), remove old snapshots no
    live job uses."""
    cutoff = (now_ms if now_ms is not None else int(time.time() * 1000)) - int(max_age_days * 86400_000)
    chains = ""
    if groups_dir:
        chains = f"""
g={q(groups_dir)}
for c in $(printf '%s\\n' "$live" | awk '{{print $2}}' | sed -n 's/^rvgroup://p' | grep -E '^[A-Za-z0-9][A-Za-z0-9._-]*$' | sort -u); do
  [ -f "$g/$c/segments" ] && ids="$ids
$(grep -E '^[0-9]+(_[0-9]+)?$' "$g/$c/segments")"
done"""
    return f"""
d={q(snapshots_dir)}; cutoff={cutoff}
[ -d "$d" ] || exit 0
live=$(squeue -h -u "$(id -un)" -o '%i %k %Z' 2>/dev/null) || {{ echo "RVERR squeue failed" >&2; exit 3; }}
ids=$(printf '%s\\n' "$live" | awk '{{print $1}}'){chains}
for s in "$d"/*/; do
  s=${{s%/}}; [ -d "$s" ] || continue
  b=${{s##*/}}; ts=${{b##*-}}
  case "$ts" in ''|*[!0-9]*) ts=$(( $(stat -c %Y "$s") * 1000 ));; esac
  [ "$ts" -lt "$cutoff" ] || continue
  use=""
  if [ -f "$s/{JOBS_FILE}" ]; then
    for j in $(cat "$s/{JOBS_FILE}"); do
      if printf '%s\\n' "$ids" | grep -qx -- "$j"; then use=1; break; fi
      if printf '%s\\n' "$ids" | grep -q -- "^${{j}}_"; then use=1; break; fi
    done
  fi
  if [ -z "$use" ] && printf '%s\\n' "$live" | grep -qF -- " $s"; then use=1; fi
  if [ -n "$use" ]; then echo "KEEP $s"; else rm -rf -- "$s" && echo "RM $s"; fi
done
"""


async def prune_snapshots(cluster: Cluster, snapshots_dir: str, *, max_age_days: float = MAX_AGE_DAYS,
                          now_ms: int | None = None) -> PruneResult:
    """Remove snapshots older than ``max_age_days`` that no live job (or live checkpoint chain)
    uses (never raises on a failed squeue: then nothing is removed)."""
    from rv_tui.paths import RemotePaths

    groups = RemotePaths(cluster.scratch).groups_dir if getattr(cluster, "scratch", None) else None
    res = await cluster.exec(prune_command(snapshots_dir, max_age_days=max_age_days, now_ms=now_ms,
                                           groups_dir=groups), timeout=300)
    removed, kept = [], []
    for line in res.stdout.splitlines():
        if line.startswith("RM "):
            removed.append(line[3:])
        elif line.startswith("KEEP "):
            kept.append(line[5:])
    return PruneResult(removed, kept)
