"""The context-file API: what a ``context.py`` imports to declare variables.

::

    from amore.context import Variable, Cell, Skip, Group

    @Variable(title="XGM intensity", units="µJ", summary="mean")
    def xgm(run):
        return run["SA2_XTD1_XGM/XGM/DOOCS:output", "data.intensityTD"].ndarray()[:, 0]

* :class:`Variable` - decorator marking a function of the run as a variable (a table column).
* :class:`Cell` - a result with its own table summary, styling, preview or units.
* :class:`Skip` - raise it when a variable does not apply to a run.
* :func:`Group` - class decorator for a reusable group of variables (``<group>.<var>``).
* :class:`RunData` - ``RAW``/``PROC``/``ALL``: which data a variable needs.
* :class:`Pipeline` - evaluate a context file's variables on one run from a notebook:
  ``Pipeline.from_path(path).evaluate(run_number, proposal=p)`` -> :class:`Results`.

Importable anywhere AMORE is installed (a notebook, an IDE, a linter). Context files written
for DAMNIT (``from damnit_ctx import ...``, ``from damnit.context import ...``) or for the 2022
AMORE prototype (``from amore_mid_prototype.context import ...``) get the same objects while
AMORE evaluates them. The implementation lives in :mod:`backend.ctxrunner` (all of it in
:mod:`backend.ctxrunner.api`), the part of AMORE that runs in the user's Python.
"""
from backend.ctxrunner.api import (  # noqa: F401
    Cell, ContextFile, ContextFileError, Group, GroupError, Pipeline, Results, RunData, Skip,
    Variable, VariableError,
)

__all__ = ["Variable", "Cell", "Skip", "Group", "RunData", "Pipeline",
           "Results", "VariableError", "GroupError", "ContextFile", "ContextFileError"]
