"""The backend process and how it is kept alive.

* ``listener``: the backend itself: the facility's run sources feeding the run path
  (:mod:`backend.processing.runpath`), and its follow-ups:
* ``reload``, ``manualedits``, ``slurmfollow``, ``catchup``: the context file reloaded, the
  variables depending on edited manual values recomputed, Slurm jobs followed, what is left to
  do queued;
* ``control``: the command line's reprocess requests to the running backend;
* ``manager``: find out its state, start, stop and heal it (and its log);
* ``session``: what the running backend holds for its life (the lock, a heartbeat record);
* ``tmux``: the tmux client (the backend runs in a tmux session);
* ``lock``: the exclusive ``flock`` of a context directory;
* ``status``: the status record ``backend-status.json`` and the errors of backend management;
* ``logs``: the one log format, to stderr and ``amore.log`` (light: the command line uses it);
* ``integrity``: the trust work beside processing (run snapshots, data check, checksums).
"""
