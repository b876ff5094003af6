"""The race: submit every strategy at once, the first job to start wins, the others are cancelled.

Why a separate engine: the original rv polled the whole queue with a 1 s -> 5 s backoff, picked
the "winner" by squeue order or rank, never cancelled anything on Ctrl-C or timeout, and had no
on-cluster guard, so two strategies could both run the command.  Here:

* all submissions go out in one :meth:`Cluster.submit` round trip, and the group (strategies, job
  ids, command, git commit) is recorded locally and on the cluster's scratch right away, including
  ``<group_dir>/jobs`` so the on-cluster winner can cancel its siblings itself;
* entries are submitted in rank order (:func:`merit_order`, the plan's one rank order), and
  every one but the best "starts now" strategy carries ``--begin=now+2``: the best usually starts
  alone and cancels the rest before they are eligible, and when several do start together the
  job scripts defer to the better-ranked (lower) job id;
* each job script claims the group with ``mkdir <group_dir>/claim`` before anything else (the job
  templates do that); the client trusts that claim: when several jobs are seen started it asks the
  claim who owns the group and never cancels the owner;
* the client polls only its own job ids every ~0.5 s over the persistent connection and cancels
  every loser in one call the moment the winner is known;
* Ctrl-C, a timeout or an error cancels whatever was submitted, unless the caller chose to leave
  the jobs queued (``leave=True``).

:class:`Race` is an async iterator of :class:`RaceEvent`; the CLI prints the events and the TUI
worker posts them as messages.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from rv_tui.allocator.model import Strategy
from rv_tui.allocator.rank import rank_key
from rv_tui.cluster.base import Cluster, ControllerUnavailable, JobInfo, JobSubmission
from rv_tui.slurm.reasons import reason_text
from rv_tui.groupstore import (
    GitInfo, GroupJob, GroupRecord, GroupStore, new_group_id, publish_jobs, publish_record,
    utc_now_iso,
)
from rv_tui.paths import RemotePaths
from rv_tui.quoting import join, q

#: Probe answers at most this far away count as "starts now" for the begin stagger.
STARTS_NOW_S = 60.0
#: ``--begin=now+N`` for every "starts now" strategy but the best-ranked one (<= 2 s of delay
#: when the best one does not start after all).
BEGIN_STAGGER_S = 2

#: Terminal states that mean the job's script ran (as opposed to being cancelled while pending).
RAN_STATES = frozenset({"COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                        "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT"})


class RaceEventKind(StrEnum):
    SUBMITTED = "submitted"  # one strategy became a job
    SUBMIT_FAILED = "submit_failed"  # sbatch refused one strategy
    PENDING = "pending"  # a job's pending reason or estimated start changed
    STARTED = "started"  # a job was seen started (it may still lose the claim)
    WINNER = "winner"  # the group's winner is known; losers have been cancelled already
    CANCELLED = "cancelled"  # a loser (or, on abort, any job) was cancelled
    FAILED = "failed"  # a job ended without ever winning (cancelled by someone else, refused)
    NO_WINNER = "no_winner"  # every job ended (or none was submitted): the race is lost
    TIMEOUT = "timeout"  # the race's deadline passed
    NOTE = "note"  # something worth telling the user (e.g. the remote record could not be written)


@dataclass(frozen=True)
class RaceEntry:
    """One strategy and the job submission built from it."""

    submission: JobSubmission
    strategy: Strategy | None = None

    @property
    def label(self) -> str:
        if self.strategy is not None:
            return self.strategy.label
        s = self.submission
        return f"{s.gpu_type} {s.nodes}x{s.gpus_per_node} on {s.partition}"


@dataclass(frozen=True)
class RaceEvent:
    """Something that happened in a race, in the order it happened."""

    kind: RaceEventKind
    group_id: str
    elapsed_s: float  # since the race started (client clock)
    job_id: str | None = None
    entry: RaceEntry | None = None
    info: JobInfo | None = None
    reason: str | None = None  # Slurm's pending reason
    eta: datetime | None = None  # Slurm's estimated start (cluster time)
    message: str = ""

    @property
    def reason_text(self) -> str:
        return reason_text(self.reason)

    @property
    def label(self) -> str:
        return self.entry.label if self.entry else ""

    def describe(self) -> str:
        """One line for the CLI."""
        k = self.kind
        jid = self.job_id or "-"
        if k is RaceEventKind.SUBMITTED:
            return f"submitted {jid}  {self.label}"
        if k is RaceEventKind.SUBMIT_FAILED:
            return f"could not submit {self.label}: {self.message}"
        if k is RaceEventKind.PENDING:
            eta = f", est. start {self.eta:%H:%M:%S}" if self.eta else ""
            return f"pending {jid}  {self.label}: {self.reason_text or 'queued'}{eta}"
        if k is RaceEventKind.STARTED:
            return f"started {jid}  {self.label}"
        if k is RaceEventKind.WINNER:
            nodes = ",".join(self.info.nodes) if self.info and self.info.nodes else "?"
            return f"winner {jid}  {self.label} on {nodes} after {self.elapsed_s:.1f}s"
        if k is RaceEventKind.CANCELLED:
            return f"cancelled {jid}  {self.label}" + (f" ({self.message})" if self.message else "")
        if k is RaceEventKind.FAILED:
            return f"ended {jid}  {self.label}: {self.message}"
        return self.message


@dataclass
class RaceResult:
    """How a race ended."""

    group_id: str
    record: GroupRecord | None = None
    winner_id: str | None = None
    winner: RaceEntry | None = None
    winner_info: JobInfo | None = None
    cancelled: list[str] = field(default_factory=list)
    outcome: str = "racing"  # won, no_winner, timeout, aborted, left
    started_seen_at: float | None = None  # monotonic: first poll that saw the winner started
    losers_cancelled_at: float | None = None  # monotonic: the loser scancel returned
    errors: list[str] = field(default_factory=list)


class Race:
    """Submit entries as one group and yield :class:`RaceEvent` until a winner is known.

    Use ``async for ev in race`` (or :meth:`run`) inside ``async with race`` so that leaving
    early (Ctrl-C, an exception, ``break``) cancels what was submitted unless ``leave=True``.
    """

    def __init__(
        self,
        cluster: Cluster,
        entries: Sequence[RaceEntry],
        *,
        group_id: str | None = None,
        kind: str = "run",
        name: str | None = None,
        command: str | None = None,
        git: GitInfo | None = None,
        store: GroupStore | None = None,
        poll_interval: float = 0.5,
        timeout: float | None = None,
        leave: bool = False,
        claims: bool = True,
        claim_wait: float = 10.0,
        after_submit: Callable[[list[str]], Awaitable[str | None]] | None = None,
        stagger: int = BEGIN_STAGGER_S,
    ) -> None:
        if not entries:
            raise ValueError("a race needs at least one entry")
        entries = merit_order(entries, stagger)
        ids = {e.submission.group_id for e in entries if e.submission.group_id}
        if len(ids) > 1:
            raise ValueError(f"entries belong to different groups: {sorted(ids)}")
        self.group_id = group_id or (ids.pop() if ids else new_group_id())
        self.cluster = cluster
        self.entries = list(entries)
        self.kind = kind
        self.name = name or entries[0].submission.name
        self.command = command if command is not None else entries[0].submission.command
        self.git = git
        self.store = store
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.leave = leave
        self.claims = claims
        self.claim_wait = claim_wait
        #: Called once with every submitted job id right after the batch (e.g. the workspace
        #: records them in the snapshot); a returned message becomes a NOTE event.
        self.after_submit = after_submit
        self.result = RaceResult(group_id=self.group_id)
        self.by_id: dict[str, RaceEntry] = {}
        self.last: dict[str, JobInfo] = {}
        self._terminal: set[str] = set()
        self._gen: AsyncIterator[RaceEvent] | None = None
        self._t0 = time.monotonic()
        self._done = False

    # ------------------------------------------------------------------ public

    @property
    def job_ids(self) -> list[str]:
        return list(self.by_id)

    @property
    def group_dir(self) -> str:
        return RemotePaths(self.cluster.scratch).group_dir(self.group_id)

    def __aiter__(self) -> AsyncIterator[RaceEvent]:
        if self._gen is None:
            self._gen = self._events()
        return self._gen

    async def __aenter__(self) -> "Race":
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._gen is not None:
            await self._gen.aclose()  # type: ignore[attr-defined]
        if not self._done:
            await self._abort()

    async def run(self, on_event: Callable[[RaceEvent], object] | None = None) -> RaceResult:
        """Consume the whole race; call ``on_event`` for each event; return the result."""
        async with self:
            async for ev in self:
                if on_event is not None:
                    on_event(ev)
        return self.result

    async def abort(self) -> list[str]:
        """Cancel every submitted job that has not ended (used by Ctrl-C handlers)."""
        return await self._abort()

    # ------------------------------------------------------------------ internals

    def _ev(self, kind: RaceEventKind, **kw: object) -> RaceEvent:
        return RaceEvent(kind=kind, group_id=self.group_id, elapsed_s=time.monotonic() - self._t0, **kw)  # type: ignore[arg-type]

    def _record(self, jobs: list[GroupJob]) -> GroupRecord:
        return GroupRecord(
            id=self.group_id, kind=self.kind, name=self.name, command=self.command,
            created_at=utc_now_iso(), jobs=tuple(jobs), cluster=self.cluster.name,
            user=self.cluster.user, git=self.git,
        )

    def _save(self, record: GroupRecord) -> None:
        self.result.record = record
        if self.store is not None:
            try:
                self.store.save(record)
            except OSError as exc:
                self.result.errors.append(f"local group record not saved: {exc}")

    async def _events(self) -> AsyncIterator[RaceEvent]:
        self._t0 = time.monotonic()
        try:
            async for ev in self._race():
                yield ev
        finally:
            if not self._done:
                await self._abort()

    async def _prepare_dirs(self) -> None:
        """Create the log and group directories before submitting: Slurm fails a job whose
        ``-o`` directory is missing before its script (and so its claim) ever runs."""
        dirs = {self.group_dir}
        for e in self.entries:
            for path in (e.submission.stdout_path, e.submission.stderr_path):
                if path and "/" in path:
                    dirs.add(path.rsplit("/", 1)[0])
        try:
            await self.cluster.exec(join(["mkdir", "-p", "-m", "700", "--", *sorted(dirs)]), timeout=30)
        except Exception as exc:  # the submission will say what is wrong if it matters
            self.result.errors.append(f"could not create {', '.join(sorted(dirs))}: {exc}")

    async def _race(self) -> AsyncIterator[RaceEvent]:
        await self._prepare_dirs()
        try:
            results = await self.cluster.submit([e.submission for e in self.entries])
        except Exception as exc:  # the connection dropped mid-batch: never re-send sbatch
            from rv_tui.groupstore import recover_submission

            found = await recover_submission(self.cluster, self.group_id, [e.submission for e in self.entries])
            if found is None:
                raise
            results = found
            self.result.errors.append(
                f"the connection dropped during submission ({exc}); kept the {sum(r.ok for r in found)} "
                "job(s) of this group found on the cluster, submitted nothing twice")
        jobs: list[GroupJob] = []
        for entry, res in zip(self.entries, results):
            jobs.append(GroupJob.from_parts(entry.submission, res.job_id, entry.strategy, res.error))
            if res.ok:
                assert res.job_id is not None
                self.by_id[res.job_id] = entry
        # the sibling list first: a winner that starts at once looks for it
        if self.by_id:
            record = self._record(jobs)
            self._save(record)
            pub = await asyncio.gather(publish_jobs(self.cluster, self.group_id, self.job_ids),
                                       publish_record(self.cluster, record), return_exceptions=True)
            for r in pub:
                if isinstance(r, BaseException):
                    self.result.errors.append(f"remote group record not written: {r}")
            if self.after_submit is not None:
                try:
                    problem = await self.after_submit(list(self.job_ids))
                except Exception as exc:  # the jobs are submitted; say it, don't fail the race
                    problem = f"after-submit step failed: {exc}"
                if problem:
                    self.result.errors.append(problem)
        for entry, res in zip(self.entries, results):
            if res.ok:
                yield self._ev(RaceEventKind.SUBMITTED, job_id=res.job_id, entry=entry)
            else:
                yield self._ev(RaceEventKind.SUBMIT_FAILED, entry=entry, message=(res.error or "").strip())
        for err in self.result.errors:
            yield self._ev(RaceEventKind.NOTE, message=err)
        if not self.by_id:
            self._done = True
            self.result.outcome = "no_winner"
            yield self._ev(RaceEventKind.NO_WINNER, message="no strategy could be submitted")
            return

        deadline = None if self.timeout is None else self._t0 + self.timeout
        shown: dict[str, tuple[str | None, datetime | None, str]] = {}
        first_candidate_at: float | None = None
        controller_down = False
        while True:
            try:
                infos = {j.job_id: j for j in await self.cluster.jobs(self.job_ids)}
            except ControllerUnavailable as exc:  # unknown is not gone: say so once, ask again
                if not controller_down:
                    controller_down = True
                    yield self._ev(RaceEventKind.NOTE, message=f"{exc.message}; still waiting")
                await asyncio.sleep(self.poll_interval)
                continue
            controller_down = False
            self.last.update(infos)
            candidates: list[JobInfo] = []
            for jid, entry in self.by_id.items():
                info = infos.get(jid)
                if info is None or jid in self._terminal:
                    continue
                if info.has_started or _ran(info):
                    candidates.append(info)
                    if shown.get(jid, (None, None, ""))[2] != "started":
                        shown[jid] = (None, None, "started")
                        yield self._ev(RaceEventKind.STARTED, job_id=jid, entry=entry, info=info)
                elif info.is_terminal:
                    self._terminal.add(jid)
                    yield self._ev(RaceEventKind.FAILED, job_id=jid, entry=entry, info=info,
                                   message=info.state.lower() + (f" ({info.reason})" if info.reason else ""))
                else:
                    key = (info.reason, info.start_time, "pending")
                    if shown.get(jid) != key:
                        shown[jid] = key
                        yield self._ev(RaceEventKind.PENDING, job_id=jid, entry=entry, info=info,
                                       reason=info.reason, eta=info.start_time)
            if candidates:
                now = time.monotonic()
                if first_candidate_at is None:
                    first_candidate_at = now
                    self.result.started_seen_at = now
                winner_id = await self._decide(candidates, now - first_candidate_at)
                if winner_id is None and self.claims and now - first_candidate_at >= self.claim_wait:
                    # ended without ever claiming (e.g. failed before its script ran): not a winner
                    for c in candidates:
                        if c.is_terminal:
                            self._terminal.add(c.job_id)
                            yield self._ev(RaceEventKind.FAILED, job_id=c.job_id, entry=self.by_id[c.job_id],
                                           info=c, message=f"{c.state.lower()} before claiming the group")
                    first_candidate_at = None
                    continue
                if winner_id is not None:
                    async for ev in self._finish(winner_id, infos):
                        yield ev
                    return
            elif all(j in self._terminal for j in self.by_id):
                self._done = True
                self.result.outcome = "no_winner"
                self._save(self.result.record.with_(state="failed") if self.result.record else self._record([]))
                yield self._ev(RaceEventKind.NO_WINNER, message="every job ended before one started")
                return
            if deadline is not None and time.monotonic() >= deadline:
                self.result.outcome = "timeout"
                yield self._ev(RaceEventKind.TIMEOUT, message=f"no job started within {self.timeout:.0f}s")
                if self.leave:
                    self._done = True
                    self.result.outcome = "left"
                    self._save_state("left")
                return  # the finally in _events cancels everything unless leave
            # while a claim is being resolved, look again sooner
            await asyncio.sleep(min(0.15, self.poll_interval) if candidates else self.poll_interval)

    async def _decide(self, candidates: list[JobInfo], waited: float) -> str | None:
        """The winner among started jobs: the claim owner, else (claim-less) the earliest start."""
        ids = [c.job_id for c in candidates]
        if self.claims:
            owner = await read_claim_owner(self.cluster, self.group_id, self.job_ids)
            if owner is not None:
                return owner
            if waited < self.claim_wait:
                return None  # a job has started but not claimed yet: don't guess, ask again
            candidates = [c for c in candidates if not c.is_terminal]
            ids = [c.job_id for c in candidates]
            if not ids:
                return None
        if len(ids) == 1:
            return ids[0]
        # earliest actual start, then submission order (never rank or squeue order alone)
        order = {jid: i for i, jid in enumerate(self.by_id)}
        return min(candidates, key=lambda c: (c.start_time.timestamp() if c.start_time else float("inf"),
                                              order[c.job_id])).job_id

    async def _finish(self, winner_id: str, infos: dict[str, JobInfo]) -> AsyncIterator[RaceEvent]:
        losers = [j for j in self.by_id if j != winner_id and j not in self._terminal
                  and not (infos.get(j) is not None and infos[j].is_terminal)]
        if losers:
            try:
                await self.cluster.cancel(losers)
            except Exception as exc:  # the on-cluster winner cancels them too
                self.result.errors.append(f"cancelling losers failed: {exc}")
        self.result.losers_cancelled_at = time.monotonic()
        self._done = True
        entry = self.by_id.get(winner_id)
        info = infos.get(winner_id) or self.last.get(winner_id)
        self.result.winner_id = winner_id
        self.result.winner = entry
        self.result.winner_info = info
        self.result.cancelled = losers
        self.result.outcome = "won"
        self._terminal.update(losers)
        if self.result.record is not None:
            rec = self.result.record.with_(winner=winner_id, state="won")
            self._save(rec)
            try:
                await publish_record(self.cluster, rec)
            except Exception as exc:
                self.result.errors.append(f"remote group record not updated: {exc}")
        yield self._ev(RaceEventKind.WINNER, job_id=winner_id, entry=entry, info=info)
        for jid in losers:
            yield self._ev(RaceEventKind.CANCELLED, job_id=jid, entry=self.by_id[jid], message="lost the race")

    def _save_state(self, state: str) -> None:
        if self.result.record is not None:
            self._save(self.result.record.with_(state=state))

    async def _abort(self) -> list[str]:
        """Cancel every job of the group that has not ended (unless the caller chose to leave)."""
        self._done = True
        if self.leave:
            if self.result.outcome == "racing":
                self.result.outcome = "left"
            self._save_state("left")
            return []
        todo = [j for j in self.by_id if j not in self._terminal and j != self.result.winner_id]
        if todo:
            try:
                await self.cluster.cancel(todo)
            except Exception as exc:
                self.result.errors.append(f"cancel failed: {exc}")
            self._terminal.update(todo)
            self.result.cancelled = todo
        if self.result.outcome == "racing":
            self.result.outcome = "aborted"
        if self.result.outcome in ("aborted", "timeout"):
            self._save_state("cancelled")
        return todo


def _ran(info: JobInfo) -> bool:
    """The job's script ran (it may have finished already: a fast job can end between polls)."""
    if info.state in RAN_STATES:
        return True
    return info.state == "CANCELLED" and info.elapsed_s > 0


_ID_RE = re.compile(r"\d+(?:_\d+)?")


async def read_claim_owner(cluster: Cluster, group_id: str, job_ids: Sequence[str]) -> str | None:
    """Which job id holds the group's on-cluster claim (``<group_dir>/claim``), if any yet.

    The job templates ``mkdir`` the claim and record the owner in ``claim/owner``; the demo cluster
    keeps the owner in a ``claim`` file.  One login-node command reads whichever exists; a cluster
    whose shell cannot run it is asked with plain file reads.  Only ids of this group count.
    """
    claim = f"{RemotePaths(cluster.scratch).group_dir(group_id)}/claim"
    wanted = set(job_ids)
    text = ""
    try:
        res = await cluster.exec(
            f"if [ -d {q(claim)} ]; then cat {q(claim + '/owner')}; else cat {q(claim)}; fi 2>/dev/null; exit 0",
            timeout=15,
        )
        ok = res.ok
        text = res.stdout
    except Exception:
        ok = False
    if not ok:
        for path in (f"{claim}/owner", claim):
            try:
                text += (await cluster.read_file(path)).decode(errors="replace") + "\n"
            except Exception:
                continue
    for tok in _ID_RE.findall(text):
        if tok in wanted:
            return tok
    return None


def merit_order(entries: Sequence[RaceEntry], stagger: int = BEGIN_STAGGER_S) -> list[RaceEntry]:
    """The entries in rank order (:func:`rv_tui.allocator.rank.rank_key`, the one rank order),
    every one but the first eligible carrying ``--begin=now+stagger``.

    The first eligible is the best-ranked strategy whose probe said it starts now (or, when none
    does, the best-ranked one).  Why: Slurm starts many pending jobs in one scheduler pass.
    Submitted in rank order, a better-ranked sibling always has the lower job id, which is what
    the job script's claim defers to when several start together; and with the others eligible
    only ``stagger`` seconds later, the best one has usually claimed and cancelled them before,
    so no loser gets an allocation.  If it did not start after all, the others start at most
    ``stagger`` seconds later than they would have.  Entries without a strategy (raw
    submissions) keep the order given and get no delay.
    """
    items = list(entries)
    if not items or any(e.strategy is None for e in items):
        return items
    items.sort(key=lambda e: rank_key(e.strategy))  # type: ignore[arg-type]
    if stagger <= 0 or len(items) == 1:
        return items
    first = next((i for i, e in enumerate(items) if e.strategy.est_wait_s <= STARTS_NOW_S), 0)  # type: ignore[union-attr]
    return [e if i == first else RaceEntry(submission=with_begin_delay(e.submission, stagger), strategy=e.strategy)
            for i, e in enumerate(items)]


def with_begin_delay(sub: JobSubmission, seconds: int) -> JobSubmission:
    """The same job, eligible only *seconds* after its submission (``#SBATCH --begin=now+N``).

    The race gives this to every "starts now" strategy but the best-ranked one: if the best one
    starts, it claims the group and cancels them before they are eligible (no wasted allocation);
    if it does not, they become eligible N seconds later.  ``meta["begin_delay_s"]`` tells the
    demo cluster the same.
    """
    n = int(seconds)
    if n <= 0:
        return sub
    head, sep, rest = sub.script.partition("\n")
    if not head.startswith("#!"):
        head, sep, rest = "#!/bin/bash", "\n", sub.script
    script = f"{head}{sep}#SBATCH --begin=now+{n}\n{rest}"
    return replace(sub, script=script, meta={**sub.meta, "begin_delay_s": n})


def entries_for(strategies: Sequence[Strategy], build: Callable[[Strategy], JobSubmission]) -> list[RaceEntry]:
    """Pair each strategy with its submission (``build`` is usually ``build_submission(ctx, s)``)."""
    return [RaceEntry(submission=build(s), strategy=s) for s in strategies]


__all__ = [
    "BEGIN_STAGGER_S", "RAN_STATES", "Race", "RaceEntry", "RaceEvent", "RaceEventKind", "RaceResult",
    "STARTS_NOW_S", "entries_for", "merit_order", "read_claim_owner", "with_begin_delay",
]
