"""``amore-proto listen``: the backend in the foreground."""
from __future__ import annotations

import logging

from amore.cli.common import context_dir

log = logging.getLogger("amore")


def cmd_listen(a) -> int:
    from backend.service.listener import Listener
    from backend.service.logs import setup_logging
    from backend.store.writer import StorageError
    from backend.service.status import backend_settings
    d = context_dir(a.dir)
    cfg = backend_settings(d)       # (a broken amore.toml is reported by Listener below)
    setup_logging(d, logging.DEBUG if a.debug else logging.INFO,
                  max_mb=float(cfg["log_max_mb"]), backups=int(cfg["log_backups"]))
    try:
        listener = Listener(d)
    except (StorageError, RuntimeError) as e:
        log.error("%s", e)
        return 1
    from backend.service.status import BackendLockedError
    try:
        if a.once:
            return listener.run_once()
        listener.run()
    except BackendLockedError as e:
        log.error("%s", e)
        return 1
    return 0


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    s = sub.add_parser("listen", help="run the backend")
    s.add_argument("dir", nargs="?")
    s.add_argument("--debug", action="store_true")
    s.add_argument("--once", action="store_true",
                   help="do all pending work (runs on disk not in the table, unfinished runs, "
                        "runs whose worker died, missing checks and checksums), then exit")
    s.set_defaults(func=cmd_listen)
