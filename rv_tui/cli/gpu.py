"""``rv gpu [JOB] [--node N] [--json]``: ``nvidia-smi`` on each node of a running job.

Each node's output comes from an ``srun --overlap --nodelist=<node>`` step with
``CUDA_VISIBLE_DEVICES`` unset, so every GPU the job holds is shown (as in the original); the
steps of all nodes run at once.  A node without ``nvidia-smi`` gets a clear line, not a traceback.
"""

from __future__ import annotations

import argparse

from rv_tui.cli.common import cluster_from_args, err, print_json
from rv_tui.jobs.access import all_nodes, job_gpus, pick_node, running_job


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gpu", help="show nvidia-smi on the nodes of a running job",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", nargs="?", help="job id (default: your newest running job)")
    p.add_argument("--node", type=int, default=None, metavar="N", help="only node N (default: all nodes)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    async with cluster_from_args(args) as cluster:
        job = await running_job(cluster, args.job)
        targets = [pick_node(job, args.node)] if args.node is not None else all_nodes(job)
        results = await job_gpus(cluster, targets)
    failed = [r for r in results if not r.ok]
    if args.json:
        print_json({"job_id": job.job_id, "name": job.name, "gres": job.gres,
                    "nodes": [{"node": r.index, "node_name": r.node, "ok": r.ok, "output": r.output,
                               "error": r.error} for r in results]})
        return 1 if failed else 0
    print(f"Job {job.job_id}: {job.name}  ({job.gres or 'no gres'} on {','.join(job.nodes)})")
    for r in results:
        if len(job.nodes) > 1 or args.node is not None:
            print(f"--- node {r.index}: {r.node} ---")
        if r.ok:
            print(r.output, end="" if r.output.endswith("\n") else "\n")
        else:
            err(f"rv: {r.error}")
    return 1 if failed else 0
