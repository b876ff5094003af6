"""SshCluster: the :class:`~rv_tui.cluster.base.Cluster` interface over real Slurm and SSH.

Why it is shaped this way: every method that takes a list is one round trip (``run_many`` on the
pool's persistent connection), Slurm times are read in the cluster's own zone (asked with
``date`` in the snapshot batch, so a laptop anywhere computes the same waits), and the sharp
edges of the original are handled here once: exact GPU use from GRES_USED, nodes counted once,
finished jobs' exit codes including signals, ``scancel`` of already-finished ids, and submissions
written to a temp file and submitted in one batch.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rv_tui.cluster.base import (
    TERMINAL_STATES, ClusterSnapshot, ControllerUnavailable, ExecResult, FileLine, History, JobInfo,
    JobSubmission, ProbeResult, ProbeSpec, SubmitResult,
)
from rv_tui.errors import RvError
from rv_tui.paths import RemotePaths
from rv_tui.remote.errors import RemoteFileError
from rv_tui.slurm import builders as b
from rv_tui.slurm import parsers as p
from rv_tui.slurm import accounting as acct

if TYPE_CHECKING:
    from rv_tui.config import Config
    from rv_tui.remote.pool import CommandResult, RemotePool

#: Probes per parallel batch in :meth:`SshCluster.test_only` (batches run concurrently on
#: separate channels, so the round is still one round trip of latency).
PROBE_CHUNK = 12
#: Concurrent probe batches (stays under the pool's channel cap).
PROBE_PARALLEL = 4
#: How long identical probe batches are answered from the pool's cache (``rv up --dry-run``
#: followed by ``rv run`` asks the same ``sbatch --test-only`` questions).
PROBE_CACHE_S = 15.0
#: How long the QOS/partition limits (sacctmgr + scontrol) are reused across commands.
LIMITS_CACHE_S = 300.0
#: How long a cluster clock reading is reused for parsing times (zone does not change).
CLOCK_TTL_S = 300.0


class SlurmError(RvError):
    """A Slurm command failed in a way rv cannot work around."""


class SshCluster:
    """A real Slurm cluster reached through a :class:`~rv_tui.remote.pool.RemotePool`."""

    is_demo = False

    def __init__(self, pool: "RemotePool", *, name: str, user: str, scratch: str) -> None:
        self.pool = pool
        self.name = name
        self.user = user
        self.scratch = scratch
        self.paths = RemotePaths(scratch)
        self._clock: p.ClusterClock | None = None
        self._clock_at = 0.0
        self._tmp_ready = False

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def from_config(cls, config: "Config", **pool_kwargs: object) -> "SshCluster":
        from rv_tui.remote.pool import RemotePool
        from rv_tui.remote.target import SshTarget

        conn = config.connection
        if conn is None:
            raise RvError("no [connection] in the config", hint="run `rv init`")
        target = SshTarget.from_config(conn)
        pool = RemotePool(target, **pool_kwargs)  # type: ignore[arg-type]
        return cls(pool, name=conn.host, user=conn.user, scratch=config.scratch)

    async def connect(self) -> None:
        await self.pool.connect()

    async def close(self) -> None:
        await self.pool.close()

    # ------------------------------------------------------------------ clock

    def _remember_clock(self, text: str) -> p.ClusterClock:
        self._clock = p.parse_clock(text)
        self._clock_at = time.monotonic()
        return self._clock

    async def _tz(self):
        if self._clock is None or time.monotonic() - self._clock_at > CLOCK_TTL_S:
            res = await self.pool.run(b.CLOCK_COMMAND)
            self._remember_clock(_ok(res, "date").stdout)
        assert self._clock is not None
        return self._clock.tz

    async def now(self) -> datetime:
        res = await self.pool.run(b.CLOCK_COMMAND)
        return self._remember_clock(_ok(res, "date").stdout).now

    # ------------------------------------------------------------------ state

    async def snapshot(self) -> ClusterSnapshot:
        """date + sinfo (GRES, GRES_USED) + queue depth: one round trip, 3 slurmctld RPCs (the
        depth is counted from one ``scontrol show job -o``, 1 RPC; ``squeue`` is 2)."""
        from rv_tui.slurm import pollquery as pq

        clock_r, sinfo_r, queue_r = await self.pool.run_many(
            [b.CLOCK_COMMAND, b.sinfo_nodes_command(), pq.poll_jobs_command(None)])
        clock = self._remember_clock(_ok(clock_r, "date").stdout)
        nodes = p.parse_sinfo_nodes(_ok(sinfo_r, "sinfo").stdout)
        queues = pq.parse_poll(queue_r.stdout if queue_r.ok else "", clock.tz, self.user).queues
        return ClusterSnapshot(taken_at=clock.now, nodes=tuple(nodes), queues=queues)

    async def jobs(self, job_ids: Sequence[str] | None = None, *,
                   all_users: bool = False) -> list[JobInfo]:
        """squeue (one round trip); ids that squeue no longer shows, or shows finished without
        an exit code, are looked up with ``scontrol show job`` (a second round trip only then).

        Raises :class:`ControllerUnavailable` when Slurm did not answer (any error other than
        "Invalid job id"): a missing id then means "unknown", not "gone", so nothing is
        returned rather than a partial answer."""
        ids = [str(j) for j in job_ids] if job_ids else []
        user = None if all_users else self.user
        # the clock (first call of a command only) on its own channel, in the same round of latency
        if ids:
            tz, res = await asyncio.gather(self._tz(), self.pool.run(b.squeue_jobs_command(user, ids)))
            restarts: dict[str, int] = {}
        else:
            tz, (res, rres) = await asyncio.gather(self._tz(), self.pool.run_many(
                [b.squeue_jobs_command(user, None), b.squeue_restarts_command(user)]))
            restarts = p.parse_restart_counts(rres.stdout if rres.ok else "")
        problems = p.job_query_errors(res.stderr)
        if problems:
            raise ControllerUnavailable(f"Slurm did not answer squeue: {problems[-1]}",
                                        hint="slurmctld may be restarting; try again in a minute")
        if not ids and not res.ok:
            raise SlurmError(f"squeue failed: {res.stderr.strip() or res.exit_status}")
        found = {j.job_id: j for j in p.parse_squeue_jobs(res.stdout, tz)}
        if restarts:
            found = {k: replace(j, restart_count=restarts.get(k, 0)) for k, j in found.items()}
        if not ids:
            return list(found.values())
        need = [j for j in ids if j not in found or found[j].state in TERMINAL_STATES]
        if need:
            # scontrol and sacct in one round trip: sacct answers for jobs past MinJobAge
            known = [j for j in need if acct.is_job_id(j)]
            sres, *more = await self.pool.run_many(
                [b.scontrol_jobs_command(need)] + ([acct.sacct_command(known)] if known else []))
            problems = p.job_query_errors(sres.stdout + "\n" + sres.stderr)
            if problems:
                raise ControllerUnavailable(f"Slurm did not answer scontrol: {problems[-1]}",
                                            hint="slurmctld may be restarting; try again in a minute")
            for info in p.parse_scontrol_jobs(sres.stdout, tz):
                if info.job_id in need:
                    found[info.job_id] = info
            if more:
                found = acct.with_history(found, self._history_from(more[0], tz))
        return [found[j] for j in ids if j in found]

    async def poll(self) -> tuple[ClusterSnapshot, list[JobInfo]]:
        """Optional capability (the dashboard's refresh): :meth:`snapshot` and :meth:`jobs` in one
        round trip and 3 slurmctld RPCs (sinfo: PARTITION_INFO + NODE_INFO; one
        ``scontrol show job -o``: JOB_INFO, filtered and counted by awk remotely) instead of 8.
        Ids of job lines that free text made ambiguous are asked about with :meth:`jobs`
        (squeue, name last); those that turn out finished or another user's are not asked again."""
        from rv_tui.slurm import pollquery as pq

        clock_r, sinfo_r, job_r = await self.pool.run_many(
            [b.CLOCK_COMMAND, b.sinfo_nodes_command(), pq.poll_jobs_command(self.user)])
        clock = self._remember_clock(_ok(clock_r, "date").stdout)
        nodes = p.parse_sinfo_nodes(_ok(sinfo_r, "sinfo").stdout)
        problems = p.job_query_errors(job_r.stderr)
        if problems:
            raise ControllerUnavailable(f"Slurm did not answer scontrol: {problems[-1]}",
                                        hint="slurmctld may be restarting; try again in a minute")
        ans = pq.parse_poll(job_r.stdout, clock.tz, self.user)
        snap = ClusterSnapshot(taken_at=clock.now, nodes=tuple(nodes), queues=ans.queues)
        ignore: set[str] = self.__dict__.setdefault("_poll_ignore", set())
        unsure = [j for j in ans.ambiguous if j not in ignore]
        if not unsure:
            return snap, ans.jobs
        extra = []
        for job in await self.jobs(unsure):
            if job.user == self.user and job.state not in TERMINAL_STATES:
                extra.append(job)
            else:  # finished, or someone else's: stays so
                ignore.add(job.job_id)
        if len(ignore) > 4096:
            ignore.clear()
        return snap, ans.jobs + extra

    async def history(self, job_ids: Sequence[str]) -> History:
        """One batched ``sacct -X -D`` for every id (final state, exit code, requeues, WorkDir)."""
        ids = [str(j) for j in job_ids if str(j)]
        if not ids:
            return History(available=True)
        tz = await self._tz()
        return self._history_from(await self.pool.run(acct.sacct_command(ids)), tz)

    async def gpu_limits(self) -> "acct.ClusterLimits | None":
        """Optional capability (not in the Cluster protocol): the per-user/per-job GPU limits of
        each partition's QOS (``sacctmgr show qos`` + ``scontrol show partition``, one round
        trip); None when the cluster states none or has no accounting."""
        # QOS limits change about never: the agent (or this pool) answers repeats for a while
        qres, pres = await self.pool.run_many([acct.QOS_COMMAND, acct.PARTITION_QOS_COMMAND],
                                              cache_ttl=LIMITS_CACHE_S)
        if not qres.ok or not pres.ok:
            return None
        return acct.cluster_limits(qres.stdout, pres.stdout)

    @staticmethod
    def _history_from(res: "CommandResult", tz: Any) -> History:
        if not res.ok:
            return History(available=False, note=acct.history_unavailable(res.stderr)
                           or acct.UNREACHABLE_NOTE)
        return History(available=True, jobs=acct.parse_sacct(res.stdout, tz))

    # ------------------------------------------------------------------ probes

    async def test_only(self, specs: Sequence[ProbeSpec]) -> list[ProbeResult]:
        """``sbatch --test-only`` for every spec; chunks run concurrently (one round of latency)."""
        if not specs:
            return []
        cmds = [b.test_only_command(s) for s in specs]
        chunk = max(PROBE_CHUNK, -(-len(cmds) // PROBE_PARALLEL))
        batches = [cmds[i:i + chunk] for i in range(0, len(cmds), chunk)]
        # the clock (if not known yet) rides along on its own channel: same round of latency; the
        # same probes asked again within PROBE_CACHE_S (up --dry-run, then run) are not re-sent
        tz, *outs = await asyncio.gather(self._tz(), *(self.pool.run_many(batch, cache_ttl=PROBE_CACHE_S)
                                                       for batch in batches))
        results: list[ProbeResult] = []
        flat = [r for batch in outs for r in batch]
        for spec, res in zip(specs, flat):
            ans = p.parse_test_only(res.stdout + "\n" + res.stderr, tz)
            results.append(ProbeResult(spec=spec, start=ans.start, error=ans.error, nodes=ans.nodes))
        return results

    # ------------------------------------------------------------------ submit / cancel

    async def submit(self, submissions: Sequence[JobSubmission]) -> list[SubmitResult]:
        """Write each script under ``<scratch>/.rv/tmp`` over SFTP, then one batch of sbatch."""
        if not submissions:
            return []
        tmp_dir = f"{self.paths.rv_dir}/tmp"
        paths = [f"{tmp_dir}/rv-{secrets.token_hex(6)}.sh" for _ in submissions]
        cmds = [b.submit_command(path) for path in paths]
        # one round trip: the scripts travel on stdin of the same invocation that runs sbatch
        try:
            results = await self.pool.run_many(cmds, idempotent=False, files=[
                (path, sub.script, 0o700) for path, sub in zip(paths, submissions)])
            by_index: dict[int, str | None] = {i: None for i in range(len(submissions))}
        except RemoteFileError as exc:  # nothing was submitted; scripts already written are removed
            results, by_index = [], {i: exc.message for i in range(len(submissions))}
            from rv_tui.quoting import join

            try:
                await self.pool.run(join(["rm", "-f", "--", *paths]))
            except RvError:
                pass
        results_iter = iter(results)
        out: list[SubmitResult] = []
        for i, sub in enumerate(submissions):
            if by_index[i] is not None:
                out.append(SubmitResult(sub, None, f"could not write the job script: {by_index[i]}"))
                continue
            res = next(results_iter)
            job_id = p.parse_sbatch_parsable(res.stdout) if res.ok else None
            if job_id is None:
                err = (res.stderr.strip() or res.stdout.strip() or f"exit {res.exit_status}")
                out.append(SubmitResult(sub, None, err.replace("sbatch: error: ", "")))
            else:
                out.append(SubmitResult(sub, job_id))
        return out

    async def _write_script(self, path: str, script: str) -> str | None:
        """Write one job script (0700, parents made); the error message, or None."""
        try:
            await self.pool.write_file(path, script, 0o700, make_parents=True)
        except RvError as exc:
            return exc.message
        return None

    async def cancel(self, job_ids: Sequence[str]) -> None:
        """scancel; ids that already finished (or are unknown) are not an error."""
        ids = [str(j) for j in job_ids if str(j)]
        if not ids:
            return
        res = await self.pool.run(b.scancel_command(ids))
        if res.ok:
            return
        bad = p.scancel_errors(res.stderr)
        if bad:
            raise SlurmError("scancel failed: " + "; ".join(bad[:3]))

    # ------------------------------------------------------------------ files / exec

    async def stream_files(self, paths: Sequence[str], *,
                           from_start: bool = True) -> AsyncIterator[FileLine]:
        from rv_tui.slurm.tail import TailDecoder, tail_command

        decoder = TailDecoder(paths)
        async with self.pool.stream(tail_command(paths, from_start=from_start)) as stream:
            async for line in stream:
                item = decoder.feed(line)
                if item is not None:
                    yield item

    async def read_file(self, path: str) -> bytes:
        return await self.pool.read_file(path)

    async def write_file(self, path: str, data: bytes | str, mode: int = 0o600) -> None:
        # one exec with the data on stdin (temp 0600 + chmod + rename) instead of ~7 SFTP round trips
        await self.pool.run_many([], files=[(path, data, mode)])

    async def tail_file(self, path: str, lines: int, *, max_bytes: int = 8 << 20) -> bytes:
        """``tail -n`` on the login node: only the tail crosses the network."""
        from rv_tui.remote.errors import RemoteFileError, RemoteFileNotFound
        from rv_tui.slurm import files as f

        res = await self.pool.run(f.tail_command(path, lines, max_bytes=max_bytes))
        if res.exit_status == f.TAIL_MISSING:
            raise RemoteFileNotFound(f"remote file not found: {path}", path=path)
        if not res.ok:
            raise RemoteFileError(f"cannot read {path}: {res.stderr.strip() or res.exit_status}", path=path)
        return res.stdout.encode("utf-8", "surrogateescape")

    async def download_file(self, path: str, local_path: str) -> int:
        """SFTP get in blocks straight to ``local_path`` (no overall timeout: size is unbounded)."""
        return await self.pool.download_file(path, local_path)

    async def replace_file(self, path: str, data: bytes, *, expect: bytes | None,
                           mode: int = 0o600) -> bool:
        """One round trip: stdin carries the expected hash and the data; flock + CAS remotely."""
        from rv_tui.remote.errors import RemoteFileError
        from rv_tui.slurm import files as f

        res = await self.pool.run(f.replace_command(path, mode=mode),
                                  stdin=f.replace_payload(data, expect),
                                  timeout=f.LOCK_WAIT_S + 30)
        if res.ok:
            return True
        if res.exit_status == f.CONFLICT:
            return False
        why = {f.UNREADABLE: "it exists but cannot be read", f.UNWRITABLE: "cannot write next to it",
               f.LOCK_TIMEOUT: "another rv held its lock too long"}.get(res.exit_status or -1, "")
        detail = res.stderr.strip().splitlines()[-1:] or [f"exit {res.exit_status}"]
        raise RemoteFileError(f"cannot update {path}: {why or detail[0]}", path=path,
                              hint=detail[0] if why else None)

    async def exec(self, command: str, *, timeout: float | None = None) -> ExecResult:
        res = await self.pool.run(command, timeout=timeout)
        return ExecResult(command=command, exit_status=res.exit_status if res.exit_status is not None
                          else -1, stdout=res.stdout, stderr=res.stderr, duration=res.duration)

    def add_connection_listener(self, callback: Any) -> Any:
        """Optional capability (not in the Cluster protocol): ``callback(ConnectionEvent)`` on
        every connection state change of the pool (the dashboard's reconnect banner); returns
        a remover."""
        return self.pool.add_listener(callback)

    async def forward_port(self, local_port: int, host: str, port: int) -> Any:
        """Optional capability (not in the Cluster protocol): forward ``127.0.0.1:local_port``
        to ``host:port`` as the login node sees it; returns the listener (``get_port()``,
        ``close()``, ``wait_closed()``)."""
        return await self.pool.forward_local_port(local_port, host, port)


def _ok(res: "CommandResult", what: str) -> "CommandResult":
    if not res.ok:
        raise SlurmError(f"{what} failed on the cluster (exit {res.exit_status})",
                         hint=(res.stderr.strip().splitlines() or ["no error output"])[-1])
    return res
