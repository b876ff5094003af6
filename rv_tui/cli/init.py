"""``rv init``: set rv up for a cluster (interactive wizard, or fully by flags).

Asks for what it cannot discover (computing id, login host), sets up an SSH key when key auth does
not work yet, discovers the Slurm account with ``allocations``, offers a shared HuggingFace cache
on group storage, asks for an optional webhook URL for signed job notifications (mail goes to
``--email`` through Slurm itself), writes ``config.toml`` (with a fresh notification token),
creates the remote directories and the ``~/.cache`` -> scratch symlinks.  Safe to run again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from rv_tui.cli.common import add_json_flag, err, print_json
from rv_tui.cluster import open_cluster
from rv_tui.config import config_path, load_config
from rv_tui.errors import RvError
from rv_tui.paths import CACHE_DIRS
from rv_tui.workspace import init as core


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="configure rv for your cluster (wizard, or flags)")
    p.add_argument("--user", help="computing id on the cluster (e.g. abc1de)")
    p.add_argument("--hostname", help=f"login host (default {core.DEFAULT_HOSTNAME})")
    p.add_argument("--host", help="ssh alias to use (default: the hostname)")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--identity-file", default=None, help="private key to use")
    p.add_argument("--account", default=None, help="Slurm account (default: discovered)")
    p.add_argument("--hf-cache", default=None, help="shared HuggingFace cache directory on group storage")
    p.add_argument("--scratch", default=None, help="remote scratch root (default /scratch/USER)")
    p.add_argument("--no-notifications", action="store_true")
    p.add_argument("--email", default=None, help="where Slurm mails when your job ends, fails or is requeued")
    p.add_argument("--notify-url", default=None, metavar="URL",
                   help="webhook that receives HMAC-signed job notifications (optional)")
    p.add_argument("--any-user", action="store_true", help="accept user names that are not UVA computing ids")
    p.add_argument("--skip-remote", action="store_true", help="only write the config")
    p.add_argument("-y", "--yes", action="store_true", help="non-interactive: never prompt")
    add_json_flag(p)
    p.set_defaults(func=main)


def _ask(prompt: str, default: str | None, interactive: bool) -> str | None:
    if not interactive:
        return default
    suffix = f" [{default}]" if default else ""
    try:
        ans = input(f"{prompt}{suffix}: ").strip()
    except EOFError:
        return default
    return ans or default


def _choose(prompt: str, options: list[str], interactive: bool) -> str | None:
    if not options:
        return None
    if len(options) == 1 or not interactive:
        return options[0]
    for i, o in enumerate(options, 1):
        print(f"  {i}) {o}")
    ans = _ask(prompt, "1", True) or "1"
    if ans.isdigit() and 1 <= int(ans) <= len(options):
        return options[int(ans) - 1]
    return ans if ans in options else options[0]


async def main(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty() and not args.yes and not args.json
    existing = None
    if config_path().exists():
        try:
            existing = load_config()
        except RvError:
            existing = None
    conn = existing.connection if existing else None
    user = args.user or (conn.user if conn else None) or _ask("computing id (e.g. abc1de)", None, interactive)
    if not user:
        raise RvError("rv init needs your computing id", hint="rv init --user abc1de")
    core.validate_user(user, strict=not args.any_user)
    hostname = (args.hostname or (conn.hostname if conn else None)
                or _ask("login host", core.DEFAULT_HOSTNAME, interactive) or core.DEFAULT_HOSTNAME)
    identity = args.identity_file or (conn.identity_file if conn else None)
    if identity is None and interactive:
        key = core.find_ssh_key()
        if key is None and _ask("no SSH key found; generate one? (y/n)", "y", True) == "y":
            key = core.generate_ssh_key(user)
            err(f"generated {key}")
        if key is not None and _ask(f"copy {key.name}.pub to {hostname} (asks your password)? (y/n)", "n",
                                    True) == "y":
            subprocess.run(core.copy_key_command(key, user, hostname, args.port))
    notify_url = args.notify_url or (existing.notifications.url if existing else None)
    if notify_url is None and interactive and not args.no_notifications:
        notify_url = _ask("webhook URL for signed job notifications (empty: email only)", None, True)
    if notify_url:
        from rv_tui.config import _url_rule

        problem = _url_rule(notify_url)
        if problem:
            raise RvError(f"notification URL {problem}", hint="give an http(s):// URL, or leave it empty")
    opts = core.InitOptions(
        user=user, hostname=hostname, host=args.host or (conn.host if conn else None), port=args.port or
        (conn.port if conn else None), identity_file=identity, account=args.account,
        hf_cache=args.hf_cache, email=args.email, notifications=not args.no_notifications,
        notify_url=notify_url or None,
        scratch=args.scratch)
    config = core.write_config(opts)  # early save: a failed connection can resume from here
    report: dict[str, object] = {"config": str(config_path()), "user": user, "host": opts.host or hostname}
    if args.skip_remote:
        print_json(report) if args.json else print(f"wrote {config_path()}")
        return 0
    cluster = await open_cluster(config)
    try:
        if not args.account:
            accounts = await core.discover_accounts(cluster)
            account = _choose("Slurm account", accounts, interactive) or _ask("Slurm account", None, interactive)
            if account:
                opts.account = account
        if not args.hf_cache and interactive:
            groups = await core.group_storage(cluster)
            if groups:
                hf = _ask(f"shared HuggingFace cache on group storage (empty: none)",
                          f"{groups[0]}/.cache/huggingface", True)
                opts.hf_cache = hf or None
        config = core.write_config(opts)
        links = await core.remote_setup(cluster, config)
    finally:
        await cluster.close()
    report.update({"account": opts.account, "hf_cache": opts.hf_cache,
                   "caches": {c.name: {"action": c.action, "target": c.target, "detail": c.detail}
                              for c in links}})
    if args.json:
        print_json(report)
    else:
        print(f"wrote {config_path()} (account: {opts.account or 'none'})")
        for c in links:
            where = f"~/.cache/{c.name} ->" if c.name in CACHE_DIRS else f"{c.name}:"
            print(f"  {where} {c.target}: {c.action}{' ' + c.detail if c.detail else ''}")
    return 1 if any(c.action == "failed" for c in links) else 0
