"""Local file writes that never leave a half-written file behind.

Every local file rv-tui writes (config, env store, request store, ...) goes through
:func:`atomic_write`: a crash or a full disk leaves either the old file or the new one,
never a truncated mix, and secrets never exist on disk with loose permissions.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rv_tui.cluster.base import Cluster


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) with mode 0700 for the directories we create."""
    p = Path(path)
    if not p.exists():
        # create parents one by one so each new directory gets 0700 (umask-proof)
        missing: list[Path] = []
        cur = p
        while not cur.exists():
            missing.append(cur)
            if cur.parent == cur:
                break
            cur = cur.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=0o700)
            except FileExistsError:
                continue
            os.chmod(d, 0o700)
    return p


def atomic_write(path: str | os.PathLike[str], data: str | bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with permission ``mode``.

    The data goes to a temporary file in the same directory (so the final
    ``os.replace`` is a same-filesystem rename), is fsynced, gets its mode set
    *before* the rename, and then replaces the target. Missing parent
    directories are created with mode 0700. Strings are encoded as UTF-8.
    """
    target = Path(path)
    ensure_private_dir(target.parent)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    # make the rename durable too
    try:
        dfd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


async def download_to(cluster: "Cluster", remote_path: str, path: str | os.PathLike[str],
                      mode: int = 0o600) -> int:
    """Download a remote file to ``path`` the :func:`atomic_write` way, streamed to disk.

    ``Cluster.download_file`` writes block by block into a private temp file next to the target
    (never the whole file in memory), which gets ``mode`` and then replaces the target; a failure
    leaves the old target (or nothing).  Returns the number of bytes.
    """
    target = Path(path)
    ensure_private_dir(target.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        os.chmod(tmp_name, mode)
        size = await cluster.download_file(remote_path, tmp_name)
        os.chmod(tmp_name, mode)  # the transfer may have recreated it with the remote's mode
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return size
