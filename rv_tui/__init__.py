"""rv-tui: a keyboard-driven terminal UI and CLI for GPU computing on a Slurm cluster over SSH."""

__version__ = "0.1.0"
