"""Workspace core used by ``rv run``, ``rv sync`` and the TUI launch flow (Textual-free).

project (names, branches), ignore (.rvignore/.gitignore rules), sync (incremental push/pull),
snapshots (per-job hardlink copies + prune), deps (venv, two-phase install), prepare (smart
execution: everything before a submission), envstore, caches, keepalive, init.
"""
