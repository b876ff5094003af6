"""tui/panes"""
