"""``~/.cache/{huggingface,uv,pip,wandb,triton,torch}`` -> scratch symlinks, and remote setup.

Home directories have small quotas; every tool (not only rv jobs) writes caches under
``~/.cache``.  Pointing those directories at scratch avoids "Disk quota exceeded".  An existing
real directory is migrated without data loss: its contents are copied into the scratch target
with ``cp -a --backup=numbered`` (a file that exists on both sides keeps the scratch copy as
``name.~1~``), every copied file is verified to exist in the target, and only then is the home
directory removed and replaced by the link.  If verification fails the home directory is left in
place and the cache is reported as not migrated.  Running it again is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

from rv_tui.cluster.base import Cluster
from rv_tui.errors import RvError
from rv_tui.paths import CACHE_DIRS, RemotePaths
from rv_tui.quoting import q


@dataclass(frozen=True)
class CacheLink:
    name: str
    target: str
    action: str  # "linked" | "migrated" | "ok" | "relinked" | "failed"
    detail: str = ""


def remote_dirs(scratch: str, hf_cache: str | None = None) -> list[str]:
    """Every remote directory rv needs (created by ``rv init``, idempotently)."""
    p = RemotePaths(scratch)
    dirs = [p.rv_dir, p.logs_dir, p.env_dir, p.venvs_dir, p.outputs_dir, p.checkpoints_dir,
            p.groups_dir, p.workspaces_dir]
    dirs += [p.cache_dir(n) for n in CACHE_DIRS]
    if hf_cache:
        dirs.append(hf_cache)
    return dirs


def link_script(name: str, target: str) -> str:
    """Make ``~/.cache/<name>`` a symlink to ``target``; prints ``RVCACHE <action> <detail>``."""
    return f"""
n={q(name)}; t={q(target)}; h="$HOME/.cache/$n"
mkdir -p "$HOME/.cache" "$t"
if [ -L "$h" ]; then
  if [ "$(readlink "$h")" = "$t" ]; then echo "RVCACHE ok"; else ln -sfn "$t" "$h" && echo "RVCACHE relinked"; fi
elif [ -d "$h" ]; then
  cp -a --backup=numbered "$h/." "$t/" 2>/tmp/rvcache.$$ || true
  missing=$(cd "$h" && find . ! -type d -print | while IFS= read -r f; do [ -e "$t/$f" ] || [ -L "$t/$f" ] || echo "$f"; done | head -5)
  if [ -n "$missing" ]; then
    echo "RVCACHE failed not copied: $(echo $missing) $(head -c 200 /tmp/rvcache.$$)"
  else
    rm -rf "$h" && ln -s "$t" "$h" && echo "RVCACHE migrated"
  fi
  rm -f /tmp/rvcache.$$
elif [ -e "$h" ]; then
  echo "RVCACHE failed $h exists and is not a directory"
else
  ln -s "$t" "$h" && echo "RVCACHE linked"
fi
"""


async def ensure_remote_setup(cluster: Cluster, *, hf_cache: str | None = None) -> list[CacheLink]:
    """Create rv's remote directories and the cache symlinks (one round trip)."""
    if cluster.is_demo:
        return []
    paths = RemotePaths(cluster.scratch)
    targets = {n: (hf_cache if n == "huggingface" and hf_cache else paths.cache_dir(n)) for n in CACHE_DIRS}
    parts = ["mkdir -p " + " ".join(q(d) for d in remote_dirs(cluster.scratch, hf_cache)),
             f"chmod 700 {q(paths.env_dir)}"]
    for name, target in targets.items():
        parts.append(f"( {link_script(name, target)} ) | sed 's/^RVCACHE /RVCACHE {name} /'")
    res = await cluster.exec("\n".join(parts), timeout=1800)
    out: list[CacheLink] = []
    for line in res.stdout.splitlines():
        if line.startswith("RVCACHE "):
            _, name, action, *rest = line.split(" ", 3) + [""]
            out.append(CacheLink(name, targets.get(name, ""), action, (rest[0] if rest else "").strip()))
    if not res.ok and not out:
        raise RvError(f"remote setup failed: {res.stderr.strip()[-300:]}")
    return out
