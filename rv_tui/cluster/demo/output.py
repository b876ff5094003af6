"""What a simulated job prints, and for how long it runs.

A job's *program* is a lazily generated, time-ordered stream of :class:`Emit` lines plus its
natural run time and exit code.  It imitates what rv's real job scripts and a typical training
script print: an ``[rv]`` preamble, a training loop with loss lines and tqdm progress bars (each
update is one line starting with ``\\r``, which the log merger collapses), occasional stderr
warnings, a traceback for failing commands, and the checkpoint/SIGUSR1 protocol.  Multi-node jobs
print per node (``node{N}`` targets) with ranks slightly out of step, so lines interleave in time.
"""

from __future__ import annotations

import heapq
import math
import random
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

#: The checkpoint template's safety margin before the time limit (SIGUSR1 is sent then).
CHECKPOINT_BUFFER_S = 600
#: Simulated seconds a checkpointing job spends saving after SIGUSR1.
CHECKPOINT_SAVE_S = 5.0


@dataclass(frozen=True)
class Emit:
    """One line written *at* seconds after the job started."""

    at: float
    stream: str  # "out" or "err"
    node: int | None  # None: the sbatch-level file; else the per-node file (multi-node jobs)
    text: str


@dataclass
class Program:
    """A job's behaviour: how long it runs, how it ends, what it prints."""

    run_s: float  # natural run time (math.inf: until cancelled or the time limit)
    exit_code: int
    lines: Iterator[Emit]
    resubmit_total: float | None = None  # checkpoint: RV_TOTAL_ELAPSED for the next segment
    meta: dict = field(default_factory=dict)


def _fmt_mmss(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def _bar(frac: float, width: int = 10) -> str:
    full = int(frac * width)
    return "█" * full + " " * (width - full)


@dataclass(frozen=True)
class JobContext:
    """What a program needs to know about the job it plays."""

    job_id: str
    name: str
    command: str | None
    partition: str
    gres: str
    hosts: tuple[str, ...]
    gpus_per_node: int
    limit_s: float
    checkpoint_total_s: int | None = None
    total_elapsed_s: float = 0.0


def _preamble(ctx: JobContext) -> list[Emit]:
    multi = len(ctx.hosts) > 1
    out = [
        Emit(0.2, "out", None, f"[rv] job {ctx.job_id} ({ctx.name}) started on "
             f"{','.join(ctx.hosts)} ({ctx.partition}, {ctx.gres} per node)"),
        Emit(0.3, "out", None, "[rv] modules: cuda/12.8.0 miniforge/24.11.3-py3.12"),
    ]
    if ctx.command is not None:
        out.append(Emit(0.4, "out", None, f"[rv] command: {ctx.command}"))
    if multi:
        out.append(Emit(0.5, "out", None, f"[rv] MASTER_ADDR={ctx.hosts[0]} "
                        f"MASTER_PORT={29500 + int(ctx.job_id) % 1000} WORLD_SIZE={len(ctx.hosts)}"))
    return out


def _training(ctx: JobContext, rng: random.Random, run_s: float, *, fail_at: float | None,
              start_at: float = 1.0) -> Iterator[Emit]:
    """A training loop per node until *run_s* (or *fail_at*): losses, tqdm bars, warnings."""
    multi = len(ctx.hosts) > 1
    nodes = list(range(len(ctx.hosts))) if multi else [None]
    end = fail_at if fail_at is not None else run_s
    steps = rng.choice((200, 400, 500))
    # Short jobs: three epochs over the run; long (checkpoint/interactive-like) runs: ~20 min epochs.
    epochs = 3 if math.isfinite(run_s) and run_s < 3 * 3600 and ctx.checkpoint_total_s is None else 10**6
    epoch_s = (run_s - start_at - 4) / 3 if epochs == 3 else 1200.0
    step_s = max(0.05, epoch_s / steps)
    loss0 = rng.uniform(2.2, 3.4)

    def node_lines(node: int | None, rank: int) -> Iterator[Emit]:
        skew = 0.37 * rank
        yield Emit(start_at + skew, "err", node, "/opt/conda/lib/python3.12/site-packages/torch/utils/"
                   "data/dataloader.py:617: UserWarning: This DataLoader will create 8 worker "
                   "processes in total. Our suggested max number of worker in current system is 4")
        yield Emit(start_at + 0.5 + skew, "out", node,
                   f"[rank {rank}] {ctx.gpus_per_node} GPU(s) visible on {ctx.hosts[rank]}: "
                   f"CUDA_VISIBLE_DEVICES={','.join(str(i) for i in range(ctx.gpus_per_node))}")
        t = start_at + 1.0 + skew
        ep = 0
        while ep < epochs:
            ep += 1
            label = f"{ep}/{epochs}" if epochs < 10**6 else f"{ep}"
            for pct in range(10, 101, 10):
                step = steps * pct // 100
                t_step = t + step * step_s
                if t_step >= end:
                    return
                done_s = step * step_s
                rate = 1 / step_s
                yield Emit(t_step, "out", node,
                           f"\repoch {label}: {pct:3d}%|{_bar(pct / 100)}| {step}/{steps} "
                           f"[{_fmt_mmss(done_s)}<{_fmt_mmss((steps - step) * step_s)}, {rate:.2f}it/s]")
                if pct % 50 == 0:
                    progress = (ep - 1 + pct / 100) / min(epochs, 3)
                    loss = loss0 * math.exp(-1.1 * progress) + rng.uniform(0, 0.05)
                    yield Emit(t_step + 0.01, "out", node,
                               f"[rank {rank}] epoch {label} step {step}/{steps} loss {loss:.3f} "
                               f"lr {3e-4 * (1 - 0.2 * progress):.1e}")
            t += steps * step_s
            if rank == 0 and t < end:
                acc = min(0.95, 0.45 + 0.1 * ep + rng.uniform(0, 0.03))
                yield Emit(t + 0.2, "out", node, f"epoch {label} done: val_loss "
                           f"{loss0 * math.exp(-1.1 * ep / 3) + 0.1:.3f} val_acc {acc:.3f} "
                           f"(saved $RV_CHECKPOINT_DIR/epoch{ep}.pt)")
            if rng.random() < 0.3 and t < end:
                yield Emit(t + 0.4, "err", node, "[W reducer.cpp:1389] Warning: find_unused_parameters=True "
                           "was specified in DDP constructor, but did not find any unused parameters")

    if len(nodes) == 1:
        yield from node_lines(nodes[0], 0)
    else:
        yield from heapq.merge(*(node_lines(n, i) for i, n in enumerate(nodes)), key=lambda e: e.at)


def _traceback(ctx: JobContext, at: float) -> list[Emit]:
    node = 1 if len(ctx.hosts) > 1 else None
    lines = [
        "Traceback (most recent call last):",
        '  File "train.py", line 142, in <module>',
        "    main()",
        '  File "train.py", line 118, in main',
        "    loss = model(**batch).loss",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
        "capacity of 47.53 GiB of which 1.12 GiB is free.",
    ]
    out = [Emit(at + i * 0.001, "err", node, text) for i, text in enumerate(lines)]
    if node is not None:
        out.append(Emit(at + 0.5, "err", None,
                        f"srun: error: {ctx.hosts[1]}: task 1: Exited with exit code 1"))
    return out


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def make_program(ctx: JobContext, rng: random.Random) -> Program:
    """The behaviour of one user job, decided by its command (deterministic for a given rng)."""
    pre = _preamble(ctx)
    cmd = ctx.command
    words = _words(cmd) if cmd else []
    if cmd is None:
        lines = pre + [Emit(1.0, "out", None, f"[rv] interactive allocation ready on {ctx.hosts[0]}; "
                            "holding it until cancelled or the time limit")]
        return Program(math.inf, 0, iter(lines))
    if words[:2] == ["sleep", "infinity"]:
        return Program(math.inf, 0, iter(pre))
    if ctx.checkpoint_total_s is not None:
        return _checkpoint_program(ctx, rng, pre)
    if words and words[0] == "sleep" and len(words) == 2 and words[1].replace(".", "", 1).isdigit():
        return Program(max(1.0, float(words[1])), 0, iter(pre))
    if words and words[0] == "echo":
        text = " ".join(words[1:])
        return Program(2.0, 0, iter(pre + [Emit(1.0, "out", 0 if len(ctx.hosts) > 1 else None, text)]))
    run_s = float(rng.randint(150, 420))
    if "fail" in cmd:
        fail_at = round(run_s * rng.uniform(0.25, 0.5), 1)
        lines = _chain(pre, _training(ctx, rng, run_s, fail_at=fail_at), _traceback(ctx, fail_at),
                       [Emit(fail_at + 1.0, "out", None, "[rv] command exited with status 1")])
        return Program(fail_at + 1.5, 1, lines)
    tail = [Emit(run_s - 1.0, "out", 0 if len(ctx.hosts) > 1 else None,
                 f"training done in {_fmt_mmss(run_s)}; best checkpoint saved"),
            Emit(run_s - 0.5, "out", None, "[rv] command exited with status 0")]
    return Program(run_s, 0, _chain(pre, _training(ctx, rng, run_s - 2, fail_at=None), tail))


def _checkpoint_program(ctx: JobContext, rng: random.Random, pre: list[Emit]) -> Program:
    """One checkpoint-restart segment: SIGUSR1 before the limit, resubmit until the total is done."""
    total = float(ctx.checkpoint_total_s or 0)
    done = ctx.total_elapsed_s
    timeout = max(60.0, ctx.limit_s - CHECKPOINT_BUFFER_S)
    remaining = max(1.0, total - done)
    head = pre + [Emit(0.6, "out", None, f"[rv] checkpoint segment: RV_TOTAL_ELAPSED={int(done)} of "
                       f"{int(total)}s; SIGUSR1 in {int(timeout)}s")]
    if done > 0:
        head.append(Emit(0.8, "out", None, f"resuming from $RV_CHECKPOINT_DIR/last.pt "
                         f"(RV_TOTAL_ELAPSED={int(done)})"))
    if remaining <= timeout:
        run_s = remaining
        tail = [Emit(run_s - 0.5, "out", None, f"[rv] total time reached ({int(total)}s); done")]
        return Program(run_s, 0, _chain(head, _training(ctx, rng, run_s - 1, fail_at=None), tail))
    run_s = timeout + CHECKPOINT_SAVE_S
    new_total = done + run_s
    tail = [Emit(timeout, "out", None, "[rv] SIGUSR1: checkpointing"),
            Emit(timeout + 1.0, "out", None, "saved $RV_CHECKPOINT_DIR/last.pt"),
            Emit(timeout + CHECKPOINT_SAVE_S - 0.5, "out", None,
                 f"[rv] RV_TOTAL_ELAPSED={int(new_total)} < {int(total)}; resubmitting")]
    return Program(run_s, 0, _chain(head, _training(ctx, rng, timeout, fail_at=timeout), tail),
                   resubmit_total=new_total)


class ReplayLines:
    """A program's line stream that survives pickling (the demo's state is saved between commands).

    Generators cannot be pickled, but programs are deterministic: the stream is rebuilt from its
    *recipe* (a picklable callable, e.g. a :func:`functools.partial` of a module-level function)
    and the lines already consumed are skipped.
    """

    def __init__(self, recipe: Callable[[], Iterator[Emit]], live: Iterator[Emit] | None = None) -> None:
        self.recipe = recipe
        self.consumed = 0
        self._live = live

    def __iter__(self) -> "ReplayLines":
        return self

    def __next__(self) -> Emit:
        if self._live is None:
            self._live = self.recipe()
            for _ in range(self.consumed):
                next(self._live)
        item = next(self._live)
        self.consumed += 1
        return item

    def __getstate__(self) -> dict:
        return {"recipe": self.recipe, "consumed": self.consumed}

    def __setstate__(self, state: dict) -> None:
        self.recipe, self.consumed, self._live = state["recipe"], state["consumed"], None


def program_lines(ctx: JobContext, rng_key: str, first: Emit | None = None) -> Iterator[Emit]:
    """The lines of ``make_program(ctx, Random(rng_key))``, with *first* in front (a recipe)."""
    lines = make_program(ctx, random.Random(rng_key)).lines
    return _prepend(first, lines) if first is not None else lines


def fixed_lines(lines: tuple[Emit, ...]) -> Iterator[Emit]:
    """A recipe for a constant stream."""
    return iter(lines)


def _prepend(first: Emit, rest: Iterator[Emit]) -> Iterator[Emit]:
    yield first
    yield from rest


def _chain(*parts) -> Iterator[Emit]:
    """Merge already time-ordered parts into one time-ordered stream."""
    return heapq.merge(*(iter(p) for p in parts), key=lambda e: e.at)
