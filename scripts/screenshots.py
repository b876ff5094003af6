#!/usr/bin/env python3
"""Regenerate screenshots/*.svg: one per pane, from the seeded demo cluster in manual-clock mode.

Deterministic (DemoCluster(seed=1, speed=0), frozen app clock): rerunning without code changes
gives the same files.  Usage: python scripts/screenshots.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rv_tui.tui.scenes import render_all  # noqa: E402


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "screenshots"
    with tempfile.TemporaryDirectory(prefix="rv-shots-") as tmp:
        for path in render_all(out, Path(tmp)):
            print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
