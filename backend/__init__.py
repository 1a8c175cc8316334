"""AMORE's backend, the service: everything that is not Qt. One sub-package per concept:
``facilities`` (one folder per facility: its run sources, how its runs are opened, its settings,
data check and demo; registered in ``facilities/__init__.py``), ``sources`` (what every run
source shares: ``RunEvent``, ``RunSource``, Kafka consumption, JSON file watching),
``processing`` (who runs the context file: the run path ``processing/runpath.py``, the local
pool, Slurm), ``ctxrunner`` (where user code runs), ``store`` (where values are stored),
``notify`` (update messages out), ``service`` (the backend process and how it is kept alive),
``integrity`` (data checks and checksums of raw files), ``testing`` (mock runs).
Beside them: ``vocab`` (statuses, summary types, backend states: the vocabulary, defined once),
``contextdir`` (every path inside a context directory), ``config`` (layered configuration),
``locate`` (proposal number or path -> context directory), ``files``, ``formatting``,
``kafkaclient``."""
from pathlib import Path

#: Directory holding the ``backend`` package: put on ``PYTHONPATH`` of processes that run
#: context files with another Python (``processing.context_python``).
PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
