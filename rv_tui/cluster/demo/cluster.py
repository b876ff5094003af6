"""DemoCluster: a simulated Rivanna behind the real :class:`~rv_tui.cluster.base.Cluster` interface.

A newcomer with no account, VPN or Slurm runs ``rv --demo`` and every pane and command takes its
real code path against this object.  The simulation (:mod:`.sim`) advances lazily to the current
simulated time on every call; streams advance it while they are being read.  No threads.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from dataclasses import replace

from rv_tui.slurm.accounting import ClusterLimits
from rv_tui.cluster.base import (
    ClusterSnapshot, ExecResult, FileLine, History, JobInfo, JobSubmission, ProbeResult, ProbeSpec,
    SubmitResult,
)

from . import persist as persist_mod
from .clock import DEFAULT_SPEED, SEEDED_START, SimClock, to_datetime
from .fs import MiniShell
from .sim import Simulation

#: One line the CLI prints to stderr (and the TUI shows as a banner) whenever the demo is in use.
DEMO_NOTICE = ("demo cluster: a simulated Rivanna, nothing runs on real GPUs "
               "(run `rv init` to connect to your cluster)")
DEMO_USER = "demo1a"
#: Real seconds between polls of a stream (the simulation advances on each poll).
STREAM_POLL_S = 0.1


class DemoCluster:
    """The built-in simulated cluster.

    ``persist=True`` (what :func:`rv_tui.cluster.open_cluster` passes for the CLI and TUI) saves
    the simulation on :meth:`close` under ``rv_home()/demo/`` and resumes it at construction, so
    consecutive ``rv --demo`` commands see one cluster (see :mod:`.persist`); a path persists in that
    directory instead.  It is off by default and always off with ``speed=0``.

    ``DemoCluster(seed=1, speed=0)`` is frozen: only :meth:`advance` moves time, so tests and
    snapshots are exact.  ``speed`` is simulated seconds per real second (default 30).  A seed
    makes the background workload and job output repeat exactly; seeded runs start at
    2026-11-23 09:00 America/New_York, unseeded ones at the real current time.
    """

    name = "demo"
    is_demo = True

    def __init__(self, seed: int | None = None, speed: float | None = None, *,
                 user: str = DEMO_USER, background: bool = True, warm_hours: float = 3.0,
                 persist: bool | str | os.PathLike[str] = False) -> None:
        self.user = user
        self.scratch = f"/scratch/{user}"
        self.home = f"/home/{user}"
        self.speed = DEFAULT_SPEED if speed is None else float(speed)
        self.background = background
        # A frozen clock (speed=0) is for tests and snapshots: never read or write saved state.
        self.state_path = persist_mod.state_path(persist) if self.speed > 0 else None
        #: (simulated seconds replayed, simulated seconds jumped over) when resumed from saved state
        self.resumed: tuple[float, float] | None = None
        self._stamp = persist_mod.stamp(self.state_path) if self.state_path is not None else None
        loaded = (persist_mod.load(self.state_path, seed=seed, user=user, background=background)
                  if self.state_path is not None else None)
        if loaded is not None:
            self.seed = loaded.seed
            self.sim = loaded.sim
            self.resumed = persist_mod.catch_up(loaded)
            start_t = self.sim.t
        else:
            self.seed = seed if seed is not None else int.from_bytes(os.urandom(4), "big")
            start = (SEEDED_START if seed is not None
                     else datetime.now(SEEDED_START.tzinfo).replace(microsecond=0))
            start_t = start.timestamp()
            self.sim = Simulation(seed=self.seed, start=start_t, user=user,
                                  scratch=self.scratch, background=background,
                                  warm_s=warm_hours * 3600.0)
        self.clock = SimClock(start_t, self.speed)
        self.shell = MiniShell(self.sim.fs, user, self.home)
        self._snap: tuple[int, ClusterSnapshot] | None = None
        self._closed = False

    def save(self) -> None:
        """Save the simulation for the next ``rv --demo`` command (no-op unless persisting)."""
        if self.state_path is None:
            return
        self._sync()
        now_stamp = persist_mod.stamp(self.state_path)
        if now_stamp is not None and now_stamp != self._stamp:
            persist_mod.notice("another demo session saved while this one ran; "
                               "its changes are replaced by this session's")
        try:
            persist_mod.save(self.state_path, self.sim, seed=self.seed, user=self.user,
                             background=self.background, speed=self.speed)
            self._stamp = persist_mod.stamp(self.state_path)
        except Exception as exc:  # noqa: BLE001 - a full disk must not fail the user's command
            persist_mod.notice(f"could not save the simulation to {self.state_path} ({exc})")

    # ------------------------------------------------------------------ time

    def _sync(self) -> None:
        self.sim.advance_to(self.clock.now())

    def advance(self, seconds: float) -> None:
        """Step simulated time by *seconds* and process everything that happens meanwhile."""
        self.clock.advance(seconds)
        self._sync()

    def sim_now(self) -> datetime:
        """Current simulated time without a coroutine (for faces that draw a clock)."""
        self._sync()
        return to_datetime(self.sim.t)

    async def now(self) -> datetime:
        return self.sim_now()

    # ------------------------------------------------------------------ state

    async def snapshot(self) -> ClusterSnapshot:
        self._sync()
        cached = self._snap
        if cached is None or cached[0] != self.sim.version:
            self._snap = cached = (self.sim.version, self.sim.snapshot())
        snap = cached[1]
        taken = to_datetime(self.sim.t)
        if snap.taken_at != taken:
            snap = ClusterSnapshot(taken_at=taken, nodes=snap.nodes, queues=snap.queues)
        return snap

    async def jobs(self, job_ids: Sequence[str] | None = None, *, all_users: bool = False) -> list[JobInfo]:
        self._sync()
        sim = self.sim
        if job_ids is not None:
            out = []
            for jid in job_ids:
                job = sim.jobs.get(int(jid)) if str(jid).isdigit() else None
                if job is not None:  # like squeue -j: any user's job, by id
                    out.append(sim.job_info(job))
            return out
        selected = []
        for pool in sim.pool_nodes:
            for job in sim.running[pool] + sim.pending[pool]:
                if all_users or job.user == self.user:
                    selected.append(job)
        selected.sort(key=lambda j: j.id)
        return [sim.job_info(j) for j in selected]

    async def history(self, job_ids: Sequence[str]) -> History:
        """The simulation keeps every job, so its accounting knows them all (like sacct)."""
        self._sync()
        out: dict[str, JobInfo] = {}
        for jid in job_ids:
            job = self.sim.jobs.get(int(jid)) if str(jid).isdigit() else None
            if job is not None:
                info = self.sim.job_info(job)
                out[info.job_id] = replace(info, from_accounting=True, work_dir=self.scratch)
        return History(available=True, jobs=out)

    async def gpu_limits(self) -> ClusterLimits:
        """The simulated partitions' QOS: the GPU table's max/user on every GPU partition
        (what the simulation enforces as QOSMaxGRESPerUser)."""
        from rv_tui.gpus import GPU_SPECS, SHARED_GPU_PARTITION, SHARED_PARTITION_TYPES

        per_user: dict[str, dict[str, int]] = {}
        for spec in GPU_SPECS.values():
            parts = [spec.partition] + ([SHARED_GPU_PARTITION] if spec.name in SHARED_PARTITION_TYPES
                                        else [])
            for part in parts:
                per_user.setdefault(part, {})[spec.gres_type] = spec.max_per_user
        return ClusterLimits(per_user=per_user)

    # ------------------------------------------------------------------ actions

    async def test_only(self, specs: Sequence[ProbeSpec]) -> list[ProbeResult]:
        self._sync()
        return [self.sim.probe(spec) for spec in specs]

    async def submit(self, submissions: Sequence[JobSubmission]) -> list[SubmitResult]:
        self._sync()
        results = [self.sim.submit(sub) for sub in submissions]
        self.sim._schedule()
        return results

    async def cancel(self, job_ids: Sequence[str]) -> None:
        self._sync()
        for jid in job_ids:
            if str(jid).isdigit():
                self.sim.cancel(int(jid))
        self.sim._schedule()

    # ------------------------------------------------------------------ files

    async def stream_files(self, paths: Sequence[str], *, from_start: bool = True) -> AsyncIterator[FileLine]:
        """Follow files like ``tail -F``: late files, replaced files, lines of all files in write order."""
        fs = self.sim.fs
        paths = list(dict.fromkeys(paths))
        pos: dict[str, tuple[int, int]] = {}  # path -> (generation, lines consumed)
        self._sync()
        for p in paths:
            f = fs.files.get(p)
            if f is not None:
                pos[p] = (f.generation, 0 if from_start else len(f.lines))
        while not self._closed:
            self._sync()
            batch: list[tuple[int, str, str]] = []
            for p in paths:
                f = fs.files.get(p)
                if f is None:
                    continue
                gen, n = pos.get(p, (f.generation, 0))
                if gen != f.generation:
                    gen, n = f.generation, 0
                if n < len(f.lines):
                    batch.extend((seq, p, text) for seq, text in f.lines[n:])
                pos[p] = (gen, len(f.lines))
            batch.sort()
            for _, p, text in batch:
                yield FileLine(p, text)
            await asyncio.sleep(STREAM_POLL_S)

    async def read_file(self, path: str) -> bytes:
        self._sync()
        return self.sim.fs.read(path)

    async def write_file(self, path: str, data: bytes | str, mode: int = 0o600) -> None:
        self.sim.fs.write(path, data, mode)

    async def tail_file(self, path: str, lines: int, *, max_bytes: int = 8 << 20) -> bytes:
        """Like ``tail -n lines | tail -c max_bytes`` on the simulated file."""
        data = await self.read_file(path)
        if lines <= 0:
            return b""
        parts = data.split(b"\n")
        if parts and parts[-1] == b"":
            parts.pop()
            tail = b"\n".join(parts[-lines:]) + b"\n" if parts else b""
        else:
            tail = b"\n".join(parts[-lines:])
        return tail[-max(1, max_bytes):]

    async def download_file(self, path: str, local_path: str) -> int:
        data = await self.read_file(path)
        with open(local_path, "wb") as fh:
            fh.write(data)
        return len(data)

    async def replace_file(self, path: str, data: bytes, *, expect: bytes | None,
                           mode: int = 0o600) -> bool:
        """The same compare-and-swap as the real cluster (one process: no lock needed)."""
        self._sync()
        f = self.sim.fs.files.get(path)
        current = bytes(f.data) if f is not None else None
        if current != expect:
            return False
        self.sim.fs.write(path, data, mode)
        return True

    async def exec(self, command: str, *, timeout: float | None = None) -> ExecResult:
        self._sync()
        site = _site_tools(command, self.user)
        if site is not None:  # UVA's allocations/hdquota, so rv status and rv cost show them too
            return ExecResult(command=command, exit_status=0, stdout=site, stderr="")
        status, out, err = self.shell.run(command, to_datetime(self.sim.t))
        return ExecResult(command=command, exit_status=status, stdout=out, stderr=err)

    async def forward_port(self, local_port: int, host: str, port: int) -> object:
        """The optional port-forwarding capability: the simulated nodes serve nothing."""
        from rv_tui.errors import RvError

        raise RvError("port forwarding is not available on the demo cluster (its nodes are simulated)",
                      hint="configure your cluster with `rv init`")

    async def close(self) -> None:
        self._closed = True
        self.save()

    def __repr__(self) -> str:
        return f"DemoCluster(seed={self.seed}, speed={self.speed}, t={to_datetime(self.sim.t)})"


def _site_tools(command: str, user: str) -> str | None:
    """Fixed, plausible output of the site tools (``allocations``, ``hdquota``, or both as
    :data:`rv_tui.slurm.site.SITE_COMMAND` runs them); None for any other command."""
    from rv_tui.slurm.site import SITE_COMMAND, SITE_DELIMITER

    alloc = (f"Account                      Balance        Reserved       Available\n"
             f"-----------------          ---------       ---------       ---------\n"
             f"{user + '_lab':<24}{100000:>12}{1536:>16}{73412:>16}\n\n"
             "for more information about a specific allocation,\n"
             "run: 'allocations -a <allocation name>'\n")
    quota = ("Storage Type                    Location                 Size       Used      Avail   Use%\n"
             + "-" * 92 + "\n"
             + f"{'Home Directory':<32}{'/home/' + user:<22}{'200 GB':>9}{'131.4 GB':>11}{'68.6 GB':>11}{'66%':>7}\n"
             + f"{'Scratch Directory':<32}{'/scratch/' + user:<22}{'10 TB':>9}{'2.1 TB':>11}{'7.9 TB':>11}{'21%':>7}\n")
    if command == SITE_COMMAND:
        return f"{alloc}{SITE_DELIMITER}\n{quota}"
    return {"allocations": alloc, "hdquota": quota}.get(command.strip())
