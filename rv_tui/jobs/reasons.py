"""Kept for importers: Slurm's reason texts moved to :mod:`rv_tui.slurm.reasons`, one floor
down, so the race engine uses them without importing ``jobs/``."""

from rv_tui.slurm.reasons import (  # noqa: F401
    REASON_TEXT, reason_text, FINAL_TEXT, final_text,
)
