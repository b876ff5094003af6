"""tui/panes: one module per pane; :data:`PANES` is their order, titles and keys (here so the
app and the command palette share it without importing each other)."""

#: (tab id, title, key) in display order; the keys 1-8 switch panes.
PANES: tuple[tuple[str, str, str], ...] = (
    ("cluster", "Cluster", "1"),
    ("jobs", "Jobs", "2"),
    ("launch", "Launch", "3"),
    ("race", "Race", "4"),
    ("logs", "Logs", "5"),
    ("env", "Env", "6"),
    ("config", "Config", "7"),
    ("commands", "Commands", "8"),
)
