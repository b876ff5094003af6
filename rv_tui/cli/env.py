"""``rv env``: manage the variables injected into every job (set, list, rm, import)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rv_tui.cluster import open_cluster
from rv_tui.config import load_config
from rv_tui.errors import RvError
from rv_tui.workspace.envstore import EnvStore, mask, validate_key


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


async def _store(args: argparse.Namespace) -> EnvStore:
    cluster = await open_cluster(load_config(), demo=args.demo, seed=args.seed, speed=args.speed)
    if cluster.is_demo:
        print("rv: using the built-in demo cluster (no cluster configured or --demo)", file=sys.stderr)
    return EnvStore(cluster)


def _emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    print(json.dumps(payload) if args.json else text)


async def _set(args: argparse.Namespace) -> int:
    validate_key(args.key)
    store = await _store(args)
    try:
        await store.set(args.key, args.value)
    finally:
        await store.cluster.close()
    shown = mask(args.value, key=args.key)
    _emit(args, {"set": args.key, "value": shown}, f"{args.key}={shown}")
    return 0


async def _list(args: argparse.Namespace) -> int:
    store = await _store(args)
    try:
        variables = await store.list()
    finally:
        await store.cluster.close()
    shown = {k: (v if args.reveal else mask(v, key=k)) for k, v in variables.items()}
    if args.json:
        print(json.dumps({"vars": shown}))
    elif not shown:
        print("no variables set (rv env set KEY VALUE, or rv env import .env)")
    else:
        for k, v in shown.items():
            print(f"{k}={v}")
    return 0


async def _rm(args: argparse.Namespace) -> int:
    store = await _store(args)
    try:
        removed = await store.remove(args.key)
    finally:
        await store.cluster.close()
    _emit(args, {"removed": args.key, "existed": removed},
          f"removed {args.key}" if removed else f"{args.key} was not set")
    return 0


async def _import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RvError(f"cannot read {path}: {exc.strerror}") from exc
    store = await _store(args)
    try:
        keys = await store.import_dotenv(text, source=str(path))
    finally:
        await store.cluster.close()
    _emit(args, {"imported": keys}, f"imported {len(keys)} variable(s) from {path}: "
          + ", ".join(keys))
    return 0
