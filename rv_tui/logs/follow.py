"""Follow a job's logs from wherever it is (pending, running, finished) to its end.

``follow`` is the one entry point both faces use: it waits for a pending job to start, finds its
files, streams them over one channel (never re-reading files in a loop), watches the job's state
with a cheap squeue per ``poll`` seconds, drains the last lines after the job ends, and finishes
with a :class:`JobEnded` carrying the final state and an exit code that is never 0 for a job that
failed, was cancelled, killed by a signal or timed out.

Two things that are not the end of a job: a Slurm controller that does not answer (slurmctld
restarting: :class:`~rv_tui.cluster.base.ControllerUnavailable`) only means "unknown, ask again",
so the follower says so once and keeps polling; and a checkpoint segment that resubmitted itself
hands over to the next segment of its chain (``<group_dir>/segments``), so one ``follow`` covers
the whole chain and its JobEnded is the chain's final state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from rv_tui.cluster.base import Cluster, ControllerUnavailable, JobInfo
from rv_tui.errors import RvError
from rv_tui.logs.events import JobEnded, JobStatus, LogEvent, LogLine, Stream
from rv_tui.logs.locate import JobLogs, check_job_id, locate_logs
from rv_tui.logs.merge import Sequencer, merge_stream, read_sources

#: Exit codes for terminal states without a usable ExitCode (shell conventions).
_STATE_CODES = {"TIMEOUT": 124, "CANCELLED": 130, "OUT_OF_MEMORY": 137, "NODE_FAIL": 135,
                "PREEMPTED": 143, "DEADLINE": 124}


def exit_code_of(info: JobInfo | None) -> int:
    """The job's exit code for scripts: ExitCode when it says failure, 128+signal for signals,
    and a non-zero code for every unsuccessful state even when Slurm reports ``0:0``."""
    if info is None:
        return 1
    if info.state == "COMPLETED":
        return info.exit_code or 0
    if info.exit_signal:
        return 128 + info.exit_signal
    if info.exit_code:
        return info.exit_code
    return _STATE_CODES.get(info.state, 1)


async def job_info(cluster: Cluster, job_id: str) -> JobInfo | None:
    """The job as Slurm reports it; None only when Slurm says it does not know the id.
    Raises :class:`ControllerUnavailable` when Slurm did not answer."""
    infos = await cluster.jobs([job_id])
    return next((j for j in infos if j.job_id == job_id), None)


#: JobStatus.state while the controller does not answer (the job's real state is unknown).
UNREACHABLE = "UNKNOWN"
UNREACHABLE_REASON = "the Slurm controller is not answering; still asking"


class _Poller:
    """``job_info`` that turns a controller outage into "no news" (and remembers it once)."""

    def __init__(self, cluster: Cluster, job_id: str) -> None:
        self.cluster = cluster
        self.job_id = job_id
        self.down = False  # the last question went unanswered
        self.outages = 0  # how many times the controller stopped answering

    async def ask(self) -> tuple[bool, JobInfo | None]:
        """(answered, info): info None with answered=True means Slurm does not know the job."""
        try:
            info = await job_info(self.cluster, self.job_id)
        except ControllerUnavailable:
            if not self.down:
                self.outages += 1
            self.down = True
            return False, None
        self.down = False
        return True, info


async def latest_job_id(cluster: Cluster) -> str:
    """The user's most recent job: newest running, else newest in the queue, else the newest
    job the local request store remembers."""
    jobs = await cluster.jobs()

    def key(j: JobInfo) -> tuple[int, str]:
        head = j.job_id.split("_")[0]
        return (int(head) if head.isdigit() else -1, j.job_id)

    running = [j for j in jobs if j.has_started]
    for pool in (running, jobs):
        if pool:
            return max(pool, key=key).job_id
    try:
        from rv_tui.groupstore import GroupStore

        records = sorted(GroupStore().all(), key=lambda r: r.created_at, reverse=True)
    except Exception:
        records = []
    for rec in records:
        ids = [rec.winner] if rec.winner else rec.job_ids
        if ids and ids[0]:
            return ids[0]
    raise RvError("you have no recent jobs", hint="start one with `rv run` or `rv up`, or pass a job id")


def _store_hint(job_id: str) -> tuple[str | None, int | None]:
    """Name and node count the local request store remembers for a job (for purged jobs)."""
    try:
        from rv_tui.groupstore import GroupStore

        rec = GroupStore().find_job(job_id)
        job = rec.job(job_id) if rec else None
        if job is not None:
            return (job.name or None, job.nodes)
    except Exception:
        pass
    return (None, None)


async def resolve(cluster: Cluster, job_id: str, info: JobInfo | None) -> JobLogs:
    name, nodes = _store_hint(job_id) if info is None else (None, None)
    return await locate_logs(cluster, job_id, info, name=name, nodes=nodes)


#: JobStatus.state when a checkpoint segment hands over to the next one (reason names it).
RESUBMITTED = "RESUBMITTED"


async def follow(
    cluster: Cluster,
    job_id: str,
    *,
    node: int | None = None,
    streams: Sequence[Stream] = ("out", "err"),
    last: int | None = None,
    poll: float = 2.0,
    drain_quiet: float = 2.0,
    drain_max: float = 15.0,
    vanish_after: int = 3,
    queue_size: int = 10_000,
    known: tuple[JobInfo | None, JobLogs] | None = None,
    chain: bool = True,
) -> AsyncIterator[LogEvent]:
    """Events of one job until it ends: JobStatus while waiting, LogLine as lines arrive, then
    one JobEnded.  ``last`` limits the backlog to each file's last lines; ``node``/``streams``
    filter.  Closing the generator early closes the remote stream.  ``known`` is the job's info
    and located files when the caller already looked them up (saves those round trips).

    With ``chain`` (the default) a checkpoint segment that resubmitted itself is followed into
    its next segment (a ``JobStatus(id, "RESUBMITTED", "continues as job N")`` marks the
    hand-over) and the one JobEnded is the last segment's."""
    check_job_id(job_id)
    current = job_id
    seen = {job_id}
    while True:
        ended: JobEnded | None = None
        final: list[JobInfo | None] = []
        async for ev in _follow_one(cluster, current, node=node, streams=streams, last=last, poll=poll,
                                    drain_quiet=drain_quiet, drain_max=drain_max,
                                    vanish_after=vanish_after, queue_size=queue_size, known=known,
                                    final=final):
            if isinstance(ev, JobEnded):
                ended = ev
            else:
                yield ev
        assert ended is not None
        nxt = None
        if chain and ended.state == "COMPLETED" and ended.exit_code == 0:
            from rv_tui.groupstore import next_segment

            nxt = await next_segment(cluster, current, final[0] if final else None)
        if nxt is None or nxt in seen:
            yield ended
            return
        seen.add(nxt)
        yield JobStatus(current, RESUBMITTED, f"continues as job {nxt}")
        current, known, last = nxt, None, None


async def _follow_one(
    cluster: Cluster,
    job_id: str,
    *,
    node: int | None,
    streams: Sequence[Stream],
    last: int | None,
    poll: float,
    drain_quiet: float,
    drain_max: float,
    vanish_after: int,
    queue_size: int,
    known: tuple[JobInfo | None, JobLogs] | None,
    final: list[JobInfo | None],
) -> AsyncIterator[LogEvent]:
    """:func:`follow` for one job id (no chain); appends the job's last JobInfo to ``final``."""
    check_job_id(job_id)
    poller = _Poller(cluster, job_id)
    if known is not None:
        info = known[0]
    else:
        answered, info = await poller.ask()
        if not answered:
            yield JobStatus(job_id, UNREACHABLE, UNREACHABLE_REASON)
        while not answered:  # the controller is down: wait for an answer, never guess
            await asyncio.sleep(poll)
            answered, info = await poller.ask()
    last_state: tuple[str, str | None] | None = None
    misses = 0
    # 1) wait for a pending job to start
    while info is not None and not info.has_started and not info.is_terminal:
        if (info.state, info.reason) != last_state:
            last_state = (info.state, info.reason)
            yield JobStatus(job_id, info.state, info.reason)
        await asyncio.sleep(poll)
        answered, cur = await poller.ask()
        if not answered:
            if last_state != (UNREACHABLE, UNREACHABLE_REASON):
                last_state = (UNREACHABLE, UNREACHABLE_REASON)
                yield JobStatus(job_id, UNREACHABLE, UNREACHABLE_REASON)
            continue
        info = cur
        known = None  # the files are listed again once the job has started
    logs = known[1] if known is not None else await resolve(cluster, job_id, info)
    sources = logs.select(node=node, streams=streams)
    seqr = Sequencer(sources)
    # 2) a job that already ended: read its files once
    if info is None or info.is_terminal:
        lines, _missing = await read_sources(cluster, sources, last=last, sequencer=seqr)
        for line in lines:
            yield line
        final.append(info)
        yield _ended(job_id, info)
        return
    yield JobStatus(job_id, info.state, info.reason)
    # 3) running: backlog (optionally only the last lines), then one stream for everything
    from_start = True
    if last is not None:
        lines, _missing = await read_sources(cluster, sources, last=last, sequencer=seqr)
        for line in lines:
            yield line
        from_start = False
    queue: asyncio.Queue[LogLine | BaseException | None] = asyncio.Queue(maxsize=queue_size)

    async def pump() -> None:
        agen = merge_stream(cluster, sources, from_start=from_start, sequencer=seqr)
        try:
            async for line in agen:
                await queue.put(line)
            await queue.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surface stream errors to the consumer
            await queue.put(exc)
        finally:
            with contextlib.suppress(Exception):
                await agen.aclose()

    task = asyncio.get_running_loop().create_task(pump())
    last_info: JobInfo | None = info
    try:
        ended_at: float | None = None
        last_line_at = time.monotonic()
        next_poll = time.monotonic() + poll
        stream_done = False
        while True:
            now = time.monotonic()
            if ended_at is not None and (stream_done or now - last_line_at >= drain_quiet
                                         or now - ended_at >= drain_max):
                break
            wait = max(0.0, next_poll - now) if ended_at is None else min(
                drain_quiet - (now - last_line_at), drain_max - (now - ended_at))
            item: LogLine | BaseException | None | str = "timeout"
            if not stream_done:
                with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                    item = await asyncio.wait_for(queue.get(), max(0.01, wait))
            else:
                await asyncio.sleep(max(0.01, wait))
            if isinstance(item, LogLine):
                last_line_at = time.monotonic()
                yield item
            elif item is None:
                stream_done = True
            elif isinstance(item, BaseException):
                raise RvError(f"log stream for job {job_id} stopped: {item}",
                              hint="run `rv logs` again to resume") from item
            if ended_at is None and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + poll
                was_down = poller.down
                answered, cur = await poller.ask()
                if not answered:  # unknown is not gone: keep streaming, ask again
                    if not was_down:
                        yield JobStatus(job_id, UNREACHABLE, UNREACHABLE_REASON)
                    continue
                if was_down and cur is not None and not cur.is_terminal:
                    yield JobStatus(job_id, cur.state, cur.reason)
                if cur is None:
                    misses += 1
                    if misses >= vanish_after:
                        last_info = None
                        ended_at = time.monotonic()
                else:
                    misses = 0
                    last_info = cur
                    if cur.is_terminal:
                        ended_at = time.monotonic()
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    end_info = last_info if last_info is None or last_info.is_terminal else None
    final.append(end_info)
    yield _ended(job_id, end_info)


def _ended(job_id: str, info: JobInfo | None) -> JobEnded:
    if info is None:
        return JobEnded(job_id, "UNKNOWN", 1, "the job left the queue and Slurm no longer reports it")
    return JobEnded(job_id, info.state, exit_code_of(info), info.reason)


async def follow_job(cluster: Cluster, job_id: str, **kw: object) -> AsyncIterator[LogLine]:
    """Only the log lines of :func:`follow` (what ``rv run -f`` prints while it waits)."""
    async for ev in follow(cluster, job_id, **kw):  # type: ignore[arg-type]
        if isinstance(ev, LogLine):
            yield ev
