"""A job's life in the simulation: start, the race claim, output lines, end, cancel, resubmit.

Why its own module: the scheduler decides *when* a job starts; what happens to it from then on
(the same claim layout the real templates create, the log lines it writes, its final state) is
the other half of the simulation and reads better apart.
"""

from __future__ import annotations

import heapq
import posixpath
import random
from collections.abc import Sequence
from functools import partial

from .clock import to_datetime
from .jobs import SimJob
from .layout import SimNode
from .output import Emit, JobContext, Program, ReplayLines, fixed_lines, make_program, program_lines

#: Seconds after a race winner starts until it has cancelled its siblings.
SIBLING_CANCEL_DELAY = 1.0
#: Seconds a job that lost its race group's claim runs before exiting.
LOST_CLAIM_RUN_S = 0.5


class JobLifecycle:
    """Start, end, cancel, requeue and output of jobs: the half of :class:`~.sim.Simulation` that
    moves one job through its states (mixed into it; the state lives on the simulation)."""

    def _start(self, job: SimJob, hosts: Sequence[SimNode], limit: int, *, at: float | None = None) -> None:
        t = self.t if at is None else at
        if job in self.pending[job.pool]:
            self.pending[job.pool].remove(job)
        self.running[job.pool].append(job)
        job.state, job.reason, job.start, job.est_start = "RUNNING", "None", t, t
        job.limit_eff = limit
        job.hosts = tuple(n.name for n in hosts)
        for n in hosts:
            n.gpus_used += job.gpus_per_node
            n.cpus_used += job.cpus_per_node
            n.mem_used += job.mem_per_node
        self.version += 1
        if job.submission is not None:
            # The demo user's jobs learn their fate (race claim, program) once every job starting
            # at this instant is known, so the lowest id wins a tie, as in Slurm's job-id order.
            job.end = t + limit  # provisional, for the rest of this pass
            self._starting.append(job)
            return
        self._arm_end(job)

    def _arm_end(self, job: SimJob) -> None:
        assert job.run_s is not None and job.start is not None
        job.end = job.start + min(job.run_s, job.limit_eff)
        job.outcome = ("TIMEOUT" if job.run_s > job.limit_eff
                       else "COMPLETED" if job.planned_exit == 0 else "FAILED")
        job.token += 1
        self._push(job.end, "end", (job.id, job.token))

    def _start_user_job(self, job: SimJob) -> None:
        sub = job.submission
        assert sub is not None
        gid = sub.group_id
        if gid is not None and self.groups.get(gid, job.chain_root) != job.chain_root:
            winner = self.groups[gid]
            job.program = Program(LOST_CLAIM_RUN_S, 0, ReplayLines(partial(fixed_lines, (
                Emit(0.1, "out", None, f"[rv] race group already won by job {winner}; exiting"),))))
        else:
            if gid is not None and gid not in self.groups:
                self.groups[gid] = job.chain_root
                # the same layout the job templates create: mkdir claim, owner file inside
                self.fs.write(f"{self.paths.group_dir(gid)}/claim/owner", f"{job.id}\n", 0o600)
                self.fs.append_line(f"{self.paths.group_dir(gid)}/segments", str(job.id))  # chain starts
                self._push(self.t + SIBLING_CANCEL_DELAY, "group_cancel", (gid, job.id))
            gres = f"gpu:{job.gres_type}:{job.gpus_per_node}" if job.gres_type else "cpu"
            ctx = JobContext(job_id=str(job.id), name=job.name, command=sub.command,
                             partition=job.partition, gres=gres, hosts=job.hosts,
                             gpus_per_node=job.gpus_per_node, limit_s=job.limit_eff,
                             checkpoint_total_s=sub.checkpoint_total_s,
                             total_elapsed_s=job.total_elapsed)
            key = f"{self.seed}/job/{job.id}"
            job.program = make_program(ctx, random.Random(key))
            claim = None
            if job.restarts:  # a requeued owner runs again, as the templates do
                claim = Emit(0.25, "out", None, f"[rv] ===== restart {job.restarts} of job {job.id} "
                             "(requeued by Slurm) =====")
            elif gid is not None and self.groups[gid] == job.chain_root and job.chain_root == job.id:
                claim = Emit(0.25, "out", None, f"[rv] race group {gid}: claimed by job {job.id}")
            # replayable, so a saved demo state can be pickled mid-job
            job.program.lines = ReplayLines(partial(program_lines, ctx, key, claim))
        job.run_s = job.program.run_s
        job.planned_exit = job.program.exit_code
        job.next_emit = next(job.program.lines, None)
        self.emitting.append(job)

    def _finish(self, job: SimJob, state: str | None = None) -> None:
        """End a running job now (naturally, or with *state* such as CANCELLED)."""
        t = self.t
        self._flush_job(job, t)
        if job in self.emitting:
            self.emitting.remove(job)
        self.running[job.pool].remove(job)
        for h in job.hosts:
            n = self.node_by_name[h]
            n.gpus_used -= job.gpus_per_node
            n.cpus_used -= job.cpus_per_node
            n.mem_used -= job.mem_per_node
        final = state or job.outcome
        job.state, job.end, job.token = final, t, job.token + 1
        job.exit_code, job.exit_signal = (job.planned_exit, None) if final in ("COMPLETED", "FAILED") else (0, 15)
        if job.submission is not None:
            stamp = to_datetime(t).strftime("%Y-%m-%dT%H:%M:%S")
            if final == "TIMEOUT":
                self._write(job, "err", None, f"slurmstepd: error: *** JOB {job.id} ON {job.hosts[0]} "
                            f"CANCELLED AT {stamp} DUE TO TIME LIMIT ***")
            elif final == "CANCELLED":
                self._write(job, "err", None, f"slurmstepd: error: *** JOB {job.id} ON {job.hosts[0]} "
                            f"CANCELLED AT {stamp} ***")
            elif job.program is not None and job.program.resubmit_total is not None:
                self._resubmit(job, job.program.resubmit_total)
        else:
            self.finished_bg.append((t, job.id))
        self._dirty.add(job.pool)
        self.version += 1

    def _cancel(self, job: SimJob) -> None:
        if job.state == "RUNNING":
            self._finish(job, "CANCELLED")
        elif job.state == "PENDING":
            self.pending[job.pool].remove(job)
            job.state, job.end, job.reason, job.est_start = "CANCELLED", self.t, "None", None
            job.exit_code, job.exit_signal = 0, 0
            self._dirty.add(job.pool)
            self.version += 1

    def _resubmit(self, job: SimJob, total: float) -> None:
        sub = job.submission
        assert sub is not None
        new = self._add_user_job(sub, chain_root=job.chain_root, total_elapsed=total)
        self._write(job, "out", None, f"Submitted batch job {new.id}")
        if sub.group_id is not None:  # as the template's epilogue does: the chain's next segment
            self.fs.append_line(f"{self.paths.group_dir(sub.group_id)}/segments", str(new.id))

    # ------------------------------------------------------------------ output

    def _target_path(self, job: SimJob, stream: str, node: int | None) -> str:
        base = job.stdout if stream == "out" else job.stderr
        assert base is not None
        if node is None or job.num_nodes == 1:
            return base
        return f"{posixpath.dirname(base)}/{job.name}-{job.id}.node{node}.{stream}"

    def _write(self, job: SimJob, stream: str, node: int | None, text: str) -> None:
        self.fs.append_line(self._target_path(job, stream, node), text)

    def _flush_job(self, job: SimJob, t: float) -> None:
        assert job.start is not None
        while job.next_emit is not None and job.start + job.next_emit.at <= t:
            e = job.next_emit
            self._write(job, e.stream, e.node, e.text)
            job.next_emit = next(job.program.lines, None) if job.program else None

    def _flush_output(self, t: float) -> None:
        """Write every line due by *t*, across jobs in time order (so nodes interleave)."""
        if not self.emitting:
            return
        if len(self.emitting) == 1:
            self._flush_job(self.emitting[0], t)
            return
        heap = [(j.start + j.next_emit.at, j.id, j) for j in self.emitting
                if j.next_emit is not None and j.start is not None and j.start + j.next_emit.at <= t]
        heapq.heapify(heap)
        while heap:
            _, _, j = heapq.heappop(heap)
            e = j.next_emit
            assert e is not None and j.program is not None and j.start is not None
            self._write(j, e.stream, e.node, e.text)
            j.next_emit = next(j.program.lines, None)
            if j.next_emit is not None and j.start + j.next_emit.at <= t:
                heapq.heappush(heap, (j.start + j.next_emit.at, j.id, j))
