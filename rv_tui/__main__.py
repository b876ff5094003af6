"""``python -m rv_tui`` is the same as ``rv``."""

import sys

from rv_tui.cli.main import main

sys.exit(main())
