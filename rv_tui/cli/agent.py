"""``rv agent status|stop``: the background agents that keep one warm SSH connection per cluster.

Why a command: the agent starts by itself and exits after its idle timeout, but a user who
changes networks, debugs a hang or wants the connection gone now needs to see and stop it.
"""

from __future__ import annotations

import argparse
import time

from rv_tui.cli.common import add_json_flag, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="the background agent holding the warm SSH connection")
    asub = p.add_subparsers(dest="agent_command", metavar="ACTION")
    s = asub.add_parser("status", help="show running agents (pid, target, state, clients, idle time)")
    add_json_flag(s)
    s.set_defaults(func=status_main)
    t = asub.add_parser("stop", help="stop every agent of this RV_HOME (the next command starts a new one)")
    add_json_flag(t)
    t.set_defaults(func=stop_main)
    p.set_defaults(func=status_main, json=False)


def _ago(seconds: float) -> str:
    from rv_tui.durations import format_human

    return format_human(max(0, int(seconds)))


async def status_main(args: argparse.Namespace) -> int:
    from rv_tui.agent.launcher import list_agents

    agents = await list_agents()
    if getattr(args, "json", False):
        print_json([{"socket": str(p), **(info if isinstance(info, dict) else {"error": info})}
                    for p, info in agents])
        return 0
    if not agents:
        print("no rv agent running (the next command that needs the cluster starts one)")
        return 0
    for path, info in agents:
        if not isinstance(info, dict):
            print(f"{path.name}: not usable: {info}")
            continue
        others = int(info["clients"])  # commands using it now (this status command not counted)
        idle = "in use" if others else f"idle {_ago(info['idle_for'])}"
        print(f"agent pid {info['pid']}  {info['target']}  {info['state']}  "
              f"up {_ago(time.time() - info['started'])}  {others} other client(s), {idle}  "
              f"exits after {_ago(info['idle_timeout'])} idle  "
              f"{info['requests']} requests, {info['round_trips']} round trips, "
              f"{info['connects']} connect(s)" + ("  (retiring)" if info.get("retired") else ""))
    return 0


async def stop_main(args: argparse.Namespace) -> int:
    from rv_tui.agent.launcher import stop_agents

    stopped = await stop_agents()
    if getattr(args, "json", False):
        print_json([{"socket": str(p), "pid": r} if isinstance(r, int) else {"socket": str(p), "error": r}
                    for p, r in stopped])
        return 0
    if not stopped:
        print("no rv agent running")
    for path, r in stopped:
        print(f"stopped agent pid {r}" if isinstance(r, int) else f"{path.name}: {r}")
    return 0
