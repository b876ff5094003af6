"""``~/.cache/{huggingface,uv,pip,wandb,triton,torch}`` -> scratch symlinks, and remote setup.

Home directories have small quotas; every tool (not only rv jobs) writes caches under
``~/.cache``.  Pointing those directories at scratch avoids "Disk quota exceeded".  An existing
real directory is migrated so that no failure can lose data:

1. ``cp -a`` into a staging directory made by ``mktemp -d`` *inside* the scratch target (same
   filesystem, never a predictable name); cp must exit 0;
2. every file and symlink of the home copy is compared with the staged one (``cmp``: size and
   bytes; symlinks by target);
3. the staged tree is hard-linked into the target (``cp -al --backup=numbered``: a file on both
   sides keeps the scratch version as ``name.~1~``) and compared again;
4. only then is the home directory renamed away, the symlink made, and the old copy removed.

On any failure the staging copy is removed, the home directory and the target's earlier content
stay, and the report says what failed and where (cp's own message, e.g. "No space left on
device", the files that did not match, the target path).

A shared Hugging Face cache (``shared.hf_cache``) is for model files only: ``~/.cache/huggingface``
still points at the *private* scratch cache (tokens, ``stored_tokens``, datasets stay private),
and only Hub entries (``hub/models--*``, ``datasets--*``, ``spaces--*``) are copied into
``<shared>/hub`` -- group-readable, never overwriting, never changing the shared directory's mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from rv_tui.cluster.base import Cluster
from rv_tui.errors import RvError
from rv_tui.paths import CACHE_DIRS, RemotePaths
from rv_tui.quoting import q

#: CacheLink names of the shared HF cache's results (model copy; a token found in it)
SHARED = "hf-shared"
SHARED_TOKEN = "hf-shared-token"

#: where ~/.cache is on the login node (a shell expression; tests pass a quoted directory)
HOME_CACHE = '"$HOME/.cache"'


@dataclass(frozen=True)
class CacheLink:
    name: str
    target: str
    action: str  # "linked" | "migrated" | "ok" | "relinked" | "failed" | "shared" | "warning"
    detail: str = ""


def shared_hub_dir(hf_cache: str) -> str:
    """The model-file directory inside a shared HF cache (what jobs get as ``HF_HUB_CACHE``)."""
    return f"{hf_cache.rstrip('/')}/hub"


def remote_dirs(scratch: str, hf_cache: str | None = None) -> list[str]:
    """rv's own remote directories (created 0700 by ``rv init``, idempotently).

    The shared HF cache is not in this list: it is the group's directory, created (if missing)
    by :func:`shared_setup_script` with the group's mode and never chmod-ed afterwards.
    """
    p = RemotePaths(scratch)
    dirs = [p.rv_dir, p.logs_dir, p.env_dir, p.venvs_dir, p.outputs_dir, p.checkpoints_dir,
            p.groups_dir, p.workspaces_dir, p.cache_root]
    dirs += [p.cache_dir(n) for n in CACHE_DIRS]
    return dirs


# verification: print (up to 5) files under the current directory whose copy under "$1" differs
_VERIFY = ("find . \\( -type f -o -type l \\) -exec sh -c '"
           "d=$1; shift; for f; do if [ -L \"$f\" ]; then "
           "[ -L \"$d/$f\" ] && [ \"$(readlink -- \"$f\")\" = \"$(readlink -- \"$d/$f\")\" ] || printf \"%s\\n\" \"$f\"; "
           "else cmp -s -- \"$f\" \"$d/$f\" || printf \"%s\\n\" \"$f\"; fi; done' rv \"$1\" {} + | head -n 5")


def link_script(name: str, target: str, *, home_cache: str = HOME_CACHE) -> str:
    """Make ``~/.cache/<name>`` a symlink to ``target``; prints ``RVCACHE <action> <detail>``."""
    return f"""
n={q(name)}; t={q(target)}; hc={home_cache}; h="$hc/$n"
rvfail() {{ echo "RVCACHE failed $*" | tr '\\n' ' '; echo; }}
rvverify() {{ ( cd "$h" && {_VERIFY} ) | tr '\n' ' '; }}
umask 077
mkdir -p "$hc" "$t" || {{ rvfail "cannot create $t"; exit 0; }}
if [ -L "$h" ]; then
  if [ "$(readlink "$h")" = "$t" ]; then echo "RVCACHE ok"; else ln -sfn "$t" "$h" && echo "RVCACHE relinked"; fi
elif [ -d "$h" ]; then
  # a staging copy an interrupted run left (older than an hour: no run still uses it)
  find "$t" -mindepth 1 -maxdepth 1 -name '.rv-migrate.*' -user "$(id -u)" -mmin +60 -exec rm -rf -- {{}} + 2>/dev/null
  err=$(mktemp "${{TMPDIR:-/tmp}}/rvcache.XXXXXXXX") || {{ rvfail "cannot create a temp file in ${{TMPDIR:-/tmp}}; $h left in place"; exit 0; }}
  stage=$(mktemp -d "$t/.rv-migrate.XXXXXXXX" 2>"$err") || {{ rvfail "cannot create a staging directory in $t: $(head -c 300 "$err"); $h left in place"; rm -f "$err"; exit 0; }}
  why=""
  if ! cp -a -- "$h/." "$stage/" 2>"$err"; then
    why="copying $h to $t failed: $(head -c 300 "$err")"
  else
    bad=$(rvverify "$stage")
    [ -z "$bad" ] || why="copy in $t does not match $h for: $bad"
  fi
  if [ -z "$why" ]; then
    if ! ( cd "$stage" && find . -mindepth 1 -maxdepth 1 -exec cp -al --backup=numbered -t "$t/" -- {{}} + ) 2>"$err"; then
      why="moving the verified copy into $t failed: $(head -c 300 "$err")"
    else
      bad=$(rvverify "$t")
      [ -z "$bad" ] || why="$t does not match $h after the move for: $bad"
    fi
  fi
  rm -rf -- "$stage"
  if [ -n "$why" ]; then
    rvfail "$why; nothing was removed: $h is unchanged (df: $(df -Pk "$t" 2>/dev/null | awk 'NR==2{{print $4" KiB free on "$6}}'))"
  else
    old=$(mktemp -d "$hc/.rv-old-$n.XXXXXXXX") && mv -- "$h" "$old/$n" || {{ rvfail "copied to $t but could not move $h aside; $h left in place"; rm -f "$err"; exit 0; }}
    if ln -s "$t" "$h"; then rm -rf -- "$old"; echo "RVCACHE migrated"; else mv -- "$old/$n" "$h"; rmdir "$old"; rvfail "copied to $t but could not create the link $h; $h left in place"; fi
  fi
  rm -f "$err"
elif [ -e "$h" ]; then
  rvfail "$h exists and is not a directory"
else
  ln -s "$t" "$h" && echo "RVCACHE linked"
fi
"""


def shared_setup_script(shared: str) -> str:
    """Create the shared HF cache if missing (2775: group-writable, setgid); never chmod it.

    Prints ``RVSHARED ok`` or ``RVSHARED failed <why>``.
    """
    hub = shared_hub_dir(shared)
    return f"""
s={q(shared)}; hub={q(hub)}
if [ ! -d "$s" ]; then mkdir -p -- "$(dirname -- "$s")" && mkdir -m 2775 -- "$s" || {{ echo "RVSHARED failed cannot create $s"; exit 0; }}; fi
if [ ! -w "$s" ]; then echo "RVSHARED failed $s is not writable by $(id -un)"; exit 0; fi
if [ ! -d "$hub" ]; then mkdir -m 2775 -- "$hub" || {{ echo "RVSHARED failed cannot create $hub"; exit 0; }}; fi
echo "RVSHARED ok"
"""


def share_models_script(private: str, shared: str) -> str:
    """Copy the Hub entries of the private HF cache into ``<shared>/hub`` (models only).

    Never tokens (they live at the HF home's top level, not in ``hub/``), never ``hub/.locks``.
    Each entry is copied into a ``mktemp -d`` stage in ``<shared>/hub``, compared (``cmp``), then
    hard-linked in with ``cp -n`` (never overwriting what the group already has); a failed or
    short copy never lands.  ``--no-preserve=mode`` under umask 002 makes the copies
    group-readable in the setgid directory.  The private copy stays.
    Prints ``RVCACHE shared <n> entries`` or ``RVCACHE failed <why>``; warns about token files
    found in the shared directory (a previous version put ``HF_HOME`` there).
    """
    hub = shared_hub_dir(shared)
    return f"""
p={q(private.rstrip('/') + '/hub')}; s={q(shared)}; hub={q(hub)}
rvv() {{ ( cd "$1" && shift && {_VERIFY} ) | tr '\n' ' '; }}
for tok in "$s/token" "$s/stored_tokens"; do
  [ -e "$tok" ] && [ -O "$tok" ] && echo "RVCACHE-TOKEN warning $tok is your Hugging Face token in the shared cache: move it to {private}/ and run: hf auth login"
done
n=0; bad=""
find "$hub" -mindepth 1 -maxdepth 1 -name '.rv-share.*' -user "$(id -u)" -mmin +60 -exec rm -rf -- {{}} + 2>/dev/null
if [ -d "$p" ]; then
  for e in "$p"/models--* "$p"/datasets--* "$p"/spaces--*; do
    [ -d "$e" ] && [ ! -L "$e" ] || continue
    b=$(basename -- "$e")
    st=$(mktemp -d "$hub/.rv-share.XXXXXXXX") || {{ bad="$bad $b (cannot create a staging directory in $hub)"; continue; }}
    if ( umask 002; cp -RP --preserve=timestamps --no-preserve=mode -- "$e" "$st/" ) 2>"$st.err"; then
      miss=$(rvv "$e" "$st/$b")
      if [ -z "$miss" ]; then
        ( umask 002; cp -RPnl -- "$st/$b" "$hub/" ) 2>/dev/null  # hard links; never overwrite
        n=$((n+1))
      else bad="$bad $b (copy does not match: $miss)"; fi
    else bad="$bad $b ($(head -c 200 "$st.err" | tr '\n' ' '))"; fi
    rm -rf -- "$st" "$st.err"
  done
fi
if [ -n "$bad" ]; then echo "RVCACHE failed copying into $hub failed for:$bad (your private copies in $p stay)"; else echo "RVCACHE shared $n"; fi
"""


async def ensure_remote_setup(cluster: Cluster, *, hf_cache: str | None = None, scratch: str | None = None,
                              home_cache: str = HOME_CACHE) -> list[CacheLink]:
    """Create rv's remote directories (0700) and the cache symlinks (one round trip).

    ``scratch`` and ``home_cache`` default to the cluster's scratch and ``~/.cache``.
    """
    if cluster.is_demo:
        return []
    scratch = scratch or cluster.scratch
    paths = RemotePaths(scratch)
    targets = {n: paths.cache_dir(n) for n in CACHE_DIRS}
    parts = ["(umask 077 && mkdir -p " + " ".join(q(d) for d in remote_dirs(scratch)) + ")",
             f"chmod 700 {q(paths.rv_dir)} {q(paths.env_dir)}"]
    for name, target in targets.items():
        parts.append(f"( {link_script(name, target, home_cache=home_cache)} ) | sed 's/^RVCACHE /RVCACHE {name} /'")
    if hf_cache:
        parts.append(f"( {shared_setup_script(hf_cache)} ) | sed 's/^RVSHARED failed /RVCACHE {SHARED} failed /'")
        parts.append(f"( {share_models_script(targets['huggingface'], hf_cache)} ) | "
                     f"sed 's/^RVCACHE /RVCACHE {SHARED} /; s/^RVCACHE-TOKEN /RVCACHE {SHARED_TOKEN} /'")
    res = await cluster.exec("\n".join(parts), timeout=1800)
    out: list[CacheLink] = []
    for line in res.stdout.splitlines():
        if line.startswith("RVCACHE "):
            _, name, action, *rest = line.split(" ", 3) + [""]
            target = shared_hub_dir(hf_cache) if (hf_cache and name in (SHARED, SHARED_TOKEN)) else targets.get(name, "")
            out.append(CacheLink(name, target, action, (rest[0] if rest else "").strip()))
    if not res.ok and not out:
        raise RvError(f"remote setup failed: {res.stderr.strip()[-300:]}")
    return out
