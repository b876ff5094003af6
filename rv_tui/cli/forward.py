"""``rv forward PORT[:REMOTE_PORT] [JOB] [--node N] | --auto | --list``: reach a service running
in a job from the laptop.

The forward runs in the foreground over rv's own SSH connection (no background ``ssh -f``, no PID
files, nothing left behind) until Ctrl-C.  Fixes the original: the local and remote port may
differ (``8889:8888``), and ``--auto`` matches listening ports exactly from ``ss -tln`` in a job
step (``grep :800`` used to match 18000).  ``--list`` (alias of ``--auto --dry-run``) only shows
what ``--auto`` would forward.
"""

from __future__ import annotations

import argparse
import asyncio

from rv_tui.cli.common import cluster_from_args, err, print_json
from rv_tui.errors import RvError
from rv_tui.jobs.access import KNOWN_SERVICES, forward, known_services, listening_ports, pick_node, running_job


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forward", help="forward a local port to a service in a running job",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("port", nargs="?", help="PORT or LOCAL_PORT:REMOTE_PORT (omit with --auto/--list)")
    p.add_argument("job", nargs="?", help="job id (default: your newest running job)")
    p.add_argument("--node", type=int, default=0, metavar="N", help="node index in the job (default 0)")
    p.add_argument("--auto", action="store_true",
                   help="forward every well-known service found listening ("
                        + ", ".join(f"{n} {p}" for p, n in KNOWN_SERVICES.items()) + ")")
    p.add_argument("-l", "--list", action="store_true", help="list listening ports on the node; forward nothing")
    p.add_argument("--json", action="store_true", help="machine-readable JSON (one document once forwards are up)")
    p.set_defaults(func=main)


def parse_ports(spec: str) -> tuple[int, int]:
    """``8888`` -> (8888, 8888); ``9000:8888`` -> (9000, 8888); local 0 = any free port."""
    local_s, sep, remote_s = spec.partition(":")
    if not sep:
        remote_s = local_s
    try:
        local, remote = int(local_s), int(remote_s)
    except ValueError:
        raise RvError(f"not a port: {spec!r}", hint="use PORT or LOCAL_PORT:REMOTE_PORT, e.g. 8888 or 9000:8888") from None
    if not 0 <= local <= 65535 or not 1 <= remote <= 65535:
        raise RvError(f"port out of range: {spec!r}", hint="ports are 1..65535 (local 0 = any free port)")
    return local, remote


def _split_positionals(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """With --auto/--list the only positional is the job id."""
    if (args.auto or args.list) and args.port is not None and args.job is None:
        return None, args.port
    return args.port, args.job


async def main(args: argparse.Namespace) -> int:
    port_spec, job_id = _split_positionals(args)
    if not (args.auto or args.list) and port_spec is None:
        raise RvError("which port?", hint="rv forward PORT[:REMOTE_PORT] [JOB], or rv forward --auto")
    pairs = [parse_ports(port_spec)] if port_spec is not None and not (args.auto or args.list) else []
    async with cluster_from_args(args) as cluster:
        job = await running_job(cluster, job_id)
        target = pick_node(job, args.node)
        if args.auto or args.list:
            sockets = await listening_ports(cluster, target)
            if args.list:
                found = {p for p, _, _ in known_services(sockets)}
                rows = [{"address": s.address, "port": s.port, "service": KNOWN_SERVICES.get(s.port),
                         "loopback_only": s.loopback_only} for s in sorted(sockets, key=lambda s: s.port)]
                if args.json:
                    print_json({"job_id": job.job_id, "node": target.node, "listening": rows})
                else:
                    print(f"listening on {target.node} (job {job.job_id}):")
                    for r in rows:
                        tag = f"  {r['service']}" if r["port"] in found else ""
                        print(f"  {r['address']}:{r['port']}{tag}")
                return 0
            services = known_services(sockets)
            if not services:
                raise RvError(f"no well-known service is listening on {target.node}",
                              hint="looked for " + ", ".join(f"{n} {p}" for p, n in KNOWN_SERVICES.items())
                              + "; name the port: rv forward PORT")
            for port, name, sock in services:
                if sock.loopback_only:
                    err(f"rv: {name} on {target.node} listens on {sock.address} only; "
                        "the forward may be refused (bind it to 0.0.0.0)")
                pairs.append((port, port))
        listeners = []
        try:
            for local, remote in pairs:
                try:
                    listeners.append((await forward(cluster, local, target, remote), remote))
                except RvError as exc:
                    if not args.auto:
                        raise
                    # --auto: a local port already taken (a local jupyter...) gets any free port
                    try:
                        lst = await forward(cluster, 0, target, remote)
                    except RvError as exc2:
                        err(f"rv: skipped {remote}: {exc2.message}")
                        continue
                    err(f"rv: local port {local} is busy ({exc.message}); using {lst.get_port()}")
                    listeners.append((lst, remote))
            if not listeners:
                raise RvError("nothing was forwarded")
            forwards = [{"local_port": lst.get_port(), "url": f"http://localhost:{lst.get_port()}",
                         "node": target.node, "remote_port": remote, "service": KNOWN_SERVICES.get(remote)}
                        for lst, remote in listeners]
            if args.json:
                print_json({"job_id": job.job_id, "node": target.node, "forwards": forwards})
            else:
                for f in forwards:
                    svc = f" ({f['service']})" if f["service"] else ""
                    print(f"{f['url']} -> {target.node}:{f['remote_port']}{svc}  [job {job.job_id}]")
                err("rv: forwarding; press Ctrl-C to stop")
            await _hold(listeners)
            raise RvError("the SSH connection closed; the forward stopped", hint="run rv forward again")
        finally:
            for lst, _ in listeners:
                lst.close()


async def _hold(listeners: list) -> None:
    """Wait until a listener ends (connection lost); Ctrl-C cancels this."""
    await asyncio.wait([asyncio.ensure_future(lst.wait_closed()) for lst, _ in listeners],
                       return_when=asyncio.FIRST_COMPLETED)
