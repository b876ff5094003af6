"""The async workers that talk to the core and post messages.

Each function here is a coroutine the app runs with ``run_worker(..., exit_on_error=False)``.
They call the core (a :class:`Cluster`, the allocator, the race engine, the log follower, the env
store) and report only through ``target.post_message``; no widget is touched from here.
Errors become :class:`OperationFailed` / :class:`PollFailed` messages with the hint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.message_pump import MessagePump

from rv_tui.cluster.base import Cluster
from rv_tui.errors import RvError
from rv_tui.tui import messages as m


def describe_error(exc: BaseException) -> tuple[str, str | None]:
    """(message, hint) for any exception, without a traceback."""
    if isinstance(exc, RvError):
        return exc.message, exc.hint
    if isinstance(exc, (OSError, asyncio.TimeoutError)):
        return f"connection problem: {exc or type(exc).__name__}", "rv keeps retrying; check your network/VPN"
    return f"{type(exc).__name__}: {exc}", "this is a bug in rv; the command log (7) shows what ran"


#: An idle dashboard (none of the user's jobs pending or running) on a real cluster polls at
#: most this often: one poll is a handful of slurmctld RPCs, and a hundred open dashboards add up.
IDLE_POLL_S = 15.0
#: Backfill windows are ``sbatch --test-only`` probes (one REQUEST_JOB_WILL_RUN each): re-probed
#: only when the Cluster pane shows them and they are older than this.
BACKFILL_MAX_AGE_S = 60.0
#: With none of the user's jobs queued, their (empty) job list is re-read at most this often
#: (a submission from this dashboard pokes a full poll at once); clusters without ``poll()``.
IDLE_JOBS_S = 60.0
_ACTIVE = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING",
                     "SUSPENDED", "STAGE_OUT", "SIGNALING"})


class Poller:
    """Polls snapshot + jobs forever; the next poll starts only after the last one finished.

    ``poke()`` starts the next poll at once (the refresh key), without overlapping a running one.
    Cadence (kind to slurmctld): ``interval`` while the user has jobs in the queue, at least
    :data:`IDLE_POLL_S` otherwise (real clusters; the demo always uses ``interval``). A cluster
    with ``poll()`` (SshCluster: one sinfo + one ``scontrol show job``, 3 slurmctld RPCs, so an
    idle dashboard costs 12 a minute) answers snapshot and jobs together; otherwise both are
    asked concurrently (one round of latency). Backfill probes run only when
    ``backfill_wanted()`` (the app can point it at "is the Cluster pane showing?") and the last
    windows are older than :data:`BACKFILL_MAX_AGE_S`; an idle user's empty job list is re-read
    every :data:`IDLE_JOBS_S` (a poke always reads everything). ``data_at`` / ``windows_at``
    (``time.time()``) say how old each figure is; each ClusterPolled carries ``windows_at``.
    """

    def __init__(self, cluster: Cluster, target: MessagePump, interval: float,
                 probe: Callable[[Cluster], Any] | None = None) -> None:
        self.cluster = cluster
        self.target = target
        self.interval = interval
        self.probe = probe
        self._wake = asyncio.Event()
        self.polls = 0
        self.backfill_wanted: Callable[[], bool] = lambda: True
        self.data_at: float | None = None
        self.windows_at: float | None = None
        self._busy = True  # until the first poll says otherwise
        self._jobs: list[Any] = []
        self._jobs_mono: float | None = None
        self._forced = True

    def poke(self) -> None:
        self._forced = True
        self._wake.set()

    def next_wait(self) -> float:
        """Seconds until the next poll (unless poked)."""
        if getattr(self.cluster, "is_demo", False) or self._busy:
            return self.interval
        return max(self.interval, IDLE_POLL_S)

    def _probe_due(self) -> bool:
        if self.probe is None:
            return False
        try:
            wanted = bool(self.backfill_wanted())
        except Exception:  # noqa: BLE001 - a broken visibility check must not stop polling
            wanted = False  # (nor cost 48 RPCs: the probes are the expensive part)
        return wanted and (self.windows_at is None or time.time() - self.windows_at >= BACKFILL_MAX_AGE_S)

    async def poll_once(self) -> None:
        t0 = time.monotonic()
        try:
            forced, self._forced = self._forced, False
            real = not getattr(self.cluster, "is_demo", False)
            reuse_jobs = (real and not forced and not self._busy and self._jobs_mono is not None
                          and time.monotonic() - self._jobs_mono < IDLE_JOBS_S)
            both = getattr(self.cluster, "poll", None) if real else None
            if both is not None:  # one round trip, one job query (SshCluster.poll: 3 RPCs)
                snap, jobs = await both()
                self._jobs, self._jobs_mono = list(jobs), time.monotonic()
            elif reuse_jobs:
                snap, jobs = await self.cluster.snapshot(), list(self._jobs)
            else:
                snap, jobs = await asyncio.gather(self.cluster.snapshot(), self.cluster.jobs())
                self._jobs, self._jobs_mono = list(jobs), time.monotonic()
            windows: dict[str, int] = {}
            if self._probe_due():
                try:
                    windows = await self.probe(self.cluster, snap)  # type: ignore[misc]
                    self.windows_at = time.time()
                except asyncio.CancelledError:
                    raise
                except Exception:  # backfill windows are a nicety; never fail the poll for them
                    windows = {}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message
            msg, hint = describe_error(exc)
            self.target.post_message(m.PollFailed(msg, hint))
        else:
            self.data_at = time.time()
            self._busy = any(getattr(j, "state", "") in _ACTIVE for j in jobs)
            polled = m.ClusterPolled(snap, jobs, time.monotonic() - t0, windows)
            polled.windows_at = self.windows_at  # type: ignore[attr-defined]
            self.target.post_message(polled)
        self.polls += 1

    async def run(self) -> None:
        while True:
            await self.poll_once()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.next_wait())
            except asyncio.TimeoutError:
                pass
            self._wake.clear()


async def make_launch(target: MessagePump, cluster: Cluster, config: Any, request: Any,
                      cwd: Path) -> None:
    """Dry-run the launch for the form: the allocator's plan plus what the workspace step would
    sync from ``cwd`` (the same :func:`~rv_tui.jobs.launch.prepare_launch` ``rv run --dry-run``
    calls; nothing is uploaded or submitted)."""
    try:
        from rv_tui.jobs.launch import prepare_launch

        launch = await prepare_launch(cluster, config, request, request.command, cwd=cwd,
                                      dry_run=True)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001
        msg, hint = describe_error(exc)
        target.post_message(m.OperationFailed("plan", msg, hint))
        return
    target.post_message(m.PlanReady(launch.plan, launch))


async def attach_argv(target: MessagePump, cluster: Cluster, config: Any, job: Any) -> None:
    """Build the shell command for the job's first node and post the ``ssh -t`` argv."""
    from rv_tui.jobs.access import pick_node, shell_command
    from rv_tui.jobs.attach import ssh_argv

    try:
        remote = await shell_command(cluster, pick_node(job, 0))
        argv = ssh_argv(config, remote)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001
        msg, hint = describe_error(exc)
        target.post_message(m.OperationFailed("attach", msg, hint))
        return
    target.post_message(m.AttachReady(job.job_id, argv))


async def cancel_jobs(target: MessagePump, cluster: Cluster, job_ids: list[str]) -> None:
    try:
        await cluster.cancel(job_ids)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001
        msg, hint = describe_error(exc)
        target.post_message(m.OperationFailed("cancel", msg, hint))
        return
    target.post_message(m.JobsCancelled(job_ids))


async def backfill_windows(cluster: Cluster, snapshot: Any) -> dict[str, int]:
    """Longest walltime that starts now, per partition, for a 1-GPU job (the allocator's probe)."""
    from rv_tui.allocator.model import Request
    from rv_tui.allocator.probe import probe

    outcome = await probe(cluster, Request(gpus=1), snapshot)
    out: dict[str, int] = {}
    for w in outcome.windows:
        out[w.partition] = max(out.get(w.partition, 0), int(w.window_s))
    return out


async def run_race(target: MessagePump, cluster: Cluster, plan: Any, request: Any,
                   config: Any = None, holder: dict | None = None, *, cwd: Path | None = None) -> None:
    """Prepare the launch exactly as ``rv run`` does (workspace sync, deps, snapshot; the plan
    the user previewed), fan out every strategy, record the job ids in the snapshot and post
    each race event as it happens."""
    from rv_tui.allocator.race import Race
    from rv_tui.jobs.launch import prepare_launch
    from rv_tui.jobs.store import GroupStore, git_info

    def say(text: str) -> None:
        target.post_message(m.LaunchNote(text))

    here = cwd if cwd is not None else Path.cwd()
    try:
        launch = await prepare_launch(cluster, config, request, request.command, cwd=here,
                                      plan=plan, say=say)
        race = Race(cluster, launch.entries, group_id=launch.group_id, kind=launch.kind,
                    name=launch.name, command=launch.request.command, git=git_info(here),
                    store=GroupStore(),
                    after_submit=lambda ids: launch.record_jobs(cluster, ids))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001
        msg, hint = describe_error(exc)
        target.post_message(m.OperationFailed("launch", msg, hint))
        target.post_message(m.RaceFinished(None))
        return
    if holder is not None:
        holder["race"] = race
    # the lanes are what is really submitted (preflight may narrow the previewed plan)
    target.post_message(m.RaceStarted(launch.group_id, [e.strategy for e in launch.entries]))
    try:
        async with race:
            async for event in race:
                target.post_message(m.RaceEventArrived(event, launch.group_id))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001
        msg, hint = describe_error(exc)
        target.post_message(m.OperationFailed("race", msg, hint))
    target.post_message(m.RaceFinished(race.result.winner_id))


#: Log lines are posted at most this often (seconds) or this many at a time.
LOG_BATCH_S = 0.05
LOG_BATCH_MAX = 5000


async def follow_logs(target: MessagePump, cluster: Cluster, job_id: str, job: Any) -> None:
    """Follow a job's merged per-node logs, posting :class:`LogBatch` messages every 50 ms.

    A reader task appends to a buffer; this loop flushes it on a fixed beat, so a fast job costs
    the UI ~20 messages/s whatever its line rate, and a slow one shows each line within 50 ms.
    """
    buf: list[m.LogEntry] = []

    async def pump() -> None:
        async for entry in _log_entries(cluster, job_id, job):
            buf.append(entry)
            if len(buf) >= LOG_BATCH_MAX:
                await asyncio.sleep(0)

    reader = asyncio.create_task(pump())
    try:
        while True:
            done, _ = await asyncio.wait({reader}, timeout=LOG_BATCH_S)
            if buf:
                batch, buf[:] = list(buf), []
                target.post_message(m.LogBatch(job_id, batch))
            if done:
                break
        exc = reader.exception()
        if exc is not None:
            msg, hint = describe_error(exc)
            target.post_message(m.OperationFailed("logs", msg, hint))
            target.post_message(m.LogEnded(job_id, "error"))
            return
    finally:
        reader.cancel()
    target.post_message(m.LogEnded(job_id, "job ended"))


async def _log_entries(cluster: Cluster, job_id: str, job: Any):
    """LogEntry items from the core's merged per-node follower (:func:`rv_tui.logs.follow`).

    Status changes (pending reason, end) become dim marker lines so the view tells the story.
    """
    from rv_tui.jobs.reasons import reason_text
    from rv_tui.logs import JobEnded, JobStatus, LogLine, follow

    async for ev in follow(cluster, job_id):
        if isinstance(ev, LogLine):
            yield m.LogEntry(ev.node, ev.stream, ev.display, ev.is_progress)
        elif isinstance(ev, JobStatus):
            why = reason_text(ev.reason) if ev.state == "PENDING" else ""
            yield m.LogEntry(None, "rv", f"── job {ev.job_id} {ev.state.lower()}"
                                         + (f": {why}" if why else "") + " ──")
        elif isinstance(ev, JobEnded):
            yield m.LogEntry(None, "rv", f"── job {ev.job_id} {ev.state.lower()}, exit code "
                                         f"{ev.exit_code} ──")
