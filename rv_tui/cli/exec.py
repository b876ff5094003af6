"""``rv exec CMD``: run a command on the login node over the persistent connection.

One argument is sent as a shell string (so ``rv exec 'squeue | wc -l'`` works); several arguments
are quoted word by word, so ``rv exec ls "my dir"`` cannot be re-split by the remote shell.
The exit status is the remote command's.
"""

from __future__ import annotations

import argparse
import sys

from rv_tui.cli.common import add_json_flag, cluster_from_args, print_json
from rv_tui.quoting import join


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("exec", help="run a command on the login node",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="give up after S seconds (default 120)")
    add_json_flag(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="the command (use -- before it if it starts with -)")
    p.set_defaults(func=main)


def command_string(words: list[str]) -> str:
    if words and words[0] == "--":
        words = words[1:]
    if len(words) == 1:
        return words[0]
    return join(words)


async def main(args: argparse.Namespace) -> int:
    cmd = command_string(list(args.cmd))
    if not cmd.strip():
        print("rv exec: no command given", file=sys.stderr)
        return 2
    async with cluster_from_args(args) as cluster:
        res = await cluster.exec(cmd, timeout=args.timeout)
    if args.json:
        print_json({"command": res.command, "exit_status": res.exit_status, "stdout": res.stdout,
                    "stderr": res.stderr, "duration": round(res.duration, 3)})
    else:
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
    return res.exit_status if 0 <= res.exit_status < 256 else 1
