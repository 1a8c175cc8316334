"""How AMORE's processes log: one format, to stderr and, for the backend, to ``amore.log``.

``amore.log`` is rotated by size: when a line would take it past ``[backend] log_max_mb``, it
becomes ``amore.log.1`` (the older ones ``amore.log.2`` ... up to ``[backend] log_backups``,
the oldest dropped), so the backend's log never takes more than ``log_max_mb * (log_backups +
1)`` MB however long it runs.

Light on purpose (standard library and :mod:`backend.contextdir` only): the command line sets
up logging with it before it knows whether it needs the rest of the service.
"""
from __future__ import annotations

import logging
import logging.handlers
import os

#: The format of every AMORE log line (the GUI's backend log view and ``amore-proto logs``
#: read it back).
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(context_dir: str | os.PathLike | None, level=logging.INFO,
                  max_mb: float = 0.0, backups: int = 1) -> None:
    """Log at ``level`` to stderr and, if ``context_dir`` is given, to its ``amore.log``
    (appended; created with the directory's sharing rules). With ``max_mb > 0`` (the backend
    passes ``[backend] log_max_mb`` and ``log_backups``) the file is rotated at ``max_mb``
    megabytes, keeping ``backups`` (at least 1) older files, see the module docstring.
    Replaces the root logger's handlers. Raises ``OSError`` if the log file cannot be
    opened."""
    fmt = logging.Formatter(LOG_FORMAT)
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    sh = logging.StreamHandler()
    sh.setFormatter(fmt)
    root.addHandler(sh)
    if context_dir is not None:
        from backend.contextdir import ContextDir
        from backend.files import restrict_umask
        restrict_umask(context_dir)
        max_bytes = int(float(max_mb) * 2**20) if max_mb and float(max_mb) > 0 else 0
        fh = logging.handlers.RotatingFileHandler(ContextDir(context_dir).log_file,
                                                  maxBytes=max_bytes,
                                                  backupCount=max(1, int(backups)))
        fh.setFormatter(fmt)
        root.addHandler(fh)
