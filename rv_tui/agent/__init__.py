"""The rv agent: one warm SSH connection per configured cluster, shared by every rv command.

Why: a CLI command that imports asyncssh and makes a fresh SSH handshake pays ~0.3 s of imports
and 8-10 round trips before its first remote command; a VPN user feels every one. The agent
(:mod:`rv_tui.agent.server`, started in the background by :mod:`rv_tui.agent.launcher` for the first command that needs the
cluster) owns the :class:`~rv_tui.remote.pool.RemotePool`; commands reach it over a Unix socket
in ``RV_HOME/agent`` through :class:`~rv_tui.agent.client.AgentPool`, which offers the pool's
remote primitives (run / run_many / read_file / write_file / stream) and imports neither
asyncssh nor textual. :mod:`rv_tui.agent.protocol` is the wire format both sides share.
"""
