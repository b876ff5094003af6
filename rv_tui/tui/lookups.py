"""One-off core calls the panes ask for (not the poll loop, which lives in workers.py).

* :func:`final_states`: the final state and exit code of jobs that left the queue, from the
  core's ``cluster.history(ids)`` (sacct) and ``cluster.jobs(ids)`` (squeue/scontrol);
* :func:`backfill_windows`: the Cluster pane's backfill window per partition, from the
  allocator's probe, saying when the probe's own top walltime capped what it could see.

Like the workers, these call the core and only post messages.
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual.message_pump import MessagePump

from rv_tui.cluster.base import Cluster
from rv_tui.tui import messages as m
from rv_tui.tui.state import BackfillWindow


async def final_states(target: MessagePump, cluster: Cluster, job_ids: list[str]) -> None:
    """Post :class:`JobsLookedUp` with what the cluster still knows of ``job_ids``: the
    accounting database's final records (``cluster.history``, one sacct) first, then
    ``cluster.jobs(ids)`` (squeue/scontrol) for any id accounting does not know."""
    found: dict[str, Any] = {}
    try:
        history = getattr(cluster, "history", None)
        if callable(history):
            hist = await history(job_ids)
            if getattr(hist, "available", False):
                found.update(hist.jobs)
        rest = [j for j in job_ids if j not in found]
        if rest:
            found.update({j.job_id: j for j in await cluster.jobs(rest)})
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a lookup is a nicety; the panes say "left the queue"
        pass
    target.post_message(m.JobsLookedUp(list(found.values())))  # also when empty: it is done


async def backfill_windows(cluster: Cluster, snapshot: Any) -> dict[str, BackfillWindow]:
    """Longest walltime that starts now, per partition, for a 1-GPU job (the allocator's probe).

    The probe tries walltimes up to its request's time (2:59:00, the backfill cliff); a window
    that reaches the top walltime tried is only a lower bound, so it is marked ``capped`` and the
    pane says "at least 2h 59m" rather than pretending that is the window."""
    from rv_tui.allocator.model import Request
    from rv_tui.allocator.probe import probe

    outcome = await probe(cluster, Request(gpus=1), snapshot)
    out: dict[str, BackfillWindow] = {}
    for w in outcome.windows:
        top = max(w.waits, default=0)  # the longest walltime this probe tried
        win = BackfillWindow(int(w.window_s), capped=bool(w.window_s) and w.window_s >= top)
        have = out.get(w.partition)
        if have is None or (win.seconds, win.capped) > (have.seconds, have.capped):
            out[w.partition] = win
    return out
