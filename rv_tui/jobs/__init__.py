"""Jobs: batch-script templates (with the on-cluster first-wins claim), auto-set env, naming,
signed notifications, and the request store.

Import from the submodules (``rv_tui.jobs.templates``, ``.naming``, ``.notify``, ``.autoenv``);
this package stays import-light so the CLI starts fast.
"""
