"""How AMORE's processes log: one format, to stderr and, for the backend, to ``amore.log``.

Light on purpose (standard library and :mod:`backend.contextdir` only): the command line sets
up logging with it before it knows whether it needs the rest of the service.
"""
from __future__ import annotations

import logging
import os

#: The format of every AMORE log line (the GUI's backend log view and ``amore-proto logs``
#: read it back).
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(context_dir: str | os.PathLike | None, level=logging.INFO) -> None:
    """Log at ``level`` to stderr and, if ``context_dir`` is given, to its ``amore.log``
    (appended; created with the directory's sharing rules). Replaces the root logger's
    handlers. Raises ``OSError`` if the log file cannot be opened."""
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
        fh = logging.FileHandler(ContextDir(context_dir).log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)
