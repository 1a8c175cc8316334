"""AMORE's backend: everything that is not Qt (context files, storage, processing, event sources,
backend management, command line)."""
from pathlib import Path

#: Directory holding the ``backend`` package: put on ``PYTHONPATH`` of processes that run
#: context files with another Python (``processing.context_python``).
PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
