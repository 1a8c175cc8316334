"""The context-file API: what a ``context.py`` imports to declare variables.

::

    from amore.context import Variable, Cell, Skip

    @Variable(title="XGM intensity", units="µJ", summary="mean")
    def xgm(run):
        return run["SA2_XTD1_XGM/XGM/DOOCS:output", "data.intensityTD"].ndarray()[:, 0]

Importable anywhere AMORE is installed (a notebook, an IDE, a linter). Context files written
for DAMNIT (``from damnit_ctx import ...``, ``from damnit.context import ...``) or for the 2022
AMORE prototype (``from amore_mid_prototype.context import ...``) get the same objects while
AMORE evaluates them. The implementation lives in :mod:`backend.ctxrunner.context`, the part of
AMORE that runs in the user's Python.
"""
from backend.ctxrunner.context import Cell, ContextFile, ContextFileError, Skip, Variable  # noqa: F401

__all__ = ["Variable", "Cell", "Skip", "ContextFile", "ContextFileError"]
