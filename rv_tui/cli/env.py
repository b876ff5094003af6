"""``rv env``: manage the variables injected into every job (set, list, rm, import)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rv_tui.cli.common import cluster_from_args, print_json
from rv_tui.errors import RvError
from rv_tui.workspace.envstore import EnvStore, effective, mask, validate_key


def register(sub: argparse._SubParsersAction) -> None:
    env = sub.add_parser("env", help="variables injected into every job (secrets masked)")
    env_sub = env.add_subparsers(dest="env_command", metavar="ACTION", required=True)

    p = env_sub.add_parser("set", help="set KEY to VALUE")
    p.add_argument("key")
    p.add_argument("value")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_set)

    p = env_sub.add_parser("list", help="list variables (secrets masked)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--reveal", action="store_true", help="show secret values unmasked")
    p.set_defaults(func=_list)

    p = env_sub.add_parser("rm", help="remove KEY")
    p.add_argument("key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_rm)

    p = env_sub.add_parser("import", help="import a .env file (all lines or none)")
    p.add_argument("file", nargs="?", default=".env")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_import)


def _emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    if args.json:
        print_json(payload)
    else:
        print(text)


async def _set(args: argparse.Namespace) -> int:
    validate_key(args.key)
    async with cluster_from_args(args) as cluster:
        await EnvStore(cluster).set(args.key, args.value)
    shown = mask(args.value, key=args.key)
    _emit(args, {"set": args.key, "value": shown}, f"{args.key}={shown}")
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with cluster_from_args(args) as cluster:
        decisive = effective(await EnvStore(cluster).entries())
    shown = {k: (e.shown if args.reveal else mask(e.shown, key=k)) for k, e in sorted(decisive.items())}
    # a line rv did not write whose value the job's shell expands ($HOME, $PATH): shown as written
    expr = {k: e.line for k, e in decisive.items() if not e.managed and e.value is None}
    if args.json:
        print_json({"vars": shown, "expanded_in_job": expr})
    elif not shown:
        print("no variables set (rv env set KEY VALUE, or rv env import .env)")
    else:
        for k, v in shown.items():
            print(f"{k}={v}" + (f"    (your line {expr[k]}, expanded by the job's shell)" if k in expr else ""))
    return 0


async def _rm(args: argparse.Namespace) -> int:
    validate_key(args.key)
    async with cluster_from_args(args) as cluster:
        store = EnvStore(cluster)
        removed = await store.remove(args.key)
        kept = await store.hand_written(args.key)
    text = f"removed {args.key}" if removed else f"{args.key} was not set by rv env"
    if kept:
        where = ", ".join(str(e.line) for e in kept)
        text += (f"\nnote: {args.key} is also assigned by a line rv did not write "
                 f"({store.path} line {where}); it was left as written")
    _emit(args, {"removed": args.key, "existed": removed,
                 "hand_written_lines": [e.line for e in kept]}, text)
    return 0


async def _import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RvError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise RvError(f"{path} is not a UTF-8 text file (byte {exc.start}: {exc.reason})",
                      hint="rv env import reads a .env file of KEY=value lines; nothing was imported") from exc
    async with cluster_from_args(args) as cluster:
        keys = await EnvStore(cluster).import_dotenv(text, source=str(path))
    _emit(args, {"imported": keys}, f"imported {len(keys)} variable(s) from {path}: "
          + ", ".join(keys))
    return 0
