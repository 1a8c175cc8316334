"""The backend process and how it is kept alive: the listener (sources -> processing -> store ->
notify), its lock and status record, and the tmux-managed session (start, stop, heal, logs)."""
