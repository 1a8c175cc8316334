"""The context-file API: what users write in ``context.py``, in one module.

New context files import from ``amore.context`` (which re-exports this module and is importable
anywhere AMORE is installed)::

    from amore.context import Variable, Cell, Skip, Group

Files written for DAMNIT (``from damnit_ctx import ...``, ``from damnit.context import ...``,
DAMNIT 0.4.0 included) or for the 2022 AMORE prototype (``from amore_mid_prototype.context
import ...``) run unchanged: :func:`install_compat_modules` makes those module names point here
while a context file is evaluated, even where the real ``damnit`` package is installed too.

A variable is a function of the run (an extra-data ``DataCollection``) decorated with
:class:`Variable`. Further arguments declare inputs by string annotation:

``"var#name"``
    result of another variable (its default is used if that variable has no result);
    ``"var#prefix_*"`` gives a dict ``{name: result}`` of all matching variables.
    ``name`` may also be a manual column (typed in by people: sample, detector distance...):
    its value for the run (a number in the column's units, bool, or str); the variable is
    skipped if the run has no value there and the argument has no default. Changing the value
    recomputes the variable for that run.
``"self#name"``, ``"self#sub.name"``
    inside a :func:`Group` class: a variable of the same group instance (or of a nested group).
``"meta#run_number"``, ``"meta#proposal"``, ``"meta#proposal_path"``
    the run number (int), proposal (int, or str such as ``"mx2532"`` at ESRF) and proposal
    directory (``pathlib.Path``, as DAMNIT gives it; ``None`` if it cannot be found). Other
    facilities add what they know of the run (``meta#metadata``, ``meta#run_name``,
    ``meta#start_time``..., see :mod:`backend.ctxrunner.facilities`).
``"mymdc#sample_name"``, ``"mymdc#run_type"``, ``"mymdc#techniques"``
    the facility metadata service (only where configured; otherwise the variable fails with
    a "not available" error).
``"param#name"``
    values given at execution time (``amore-proto reprocess --param name=value``).

Groups (:func:`Group`) are reusable sets of variables; each instance in the context file
contributes variables named ``<group>.<var>`` titled ``<group title>/<var title>``.
:class:`Pipeline` evaluates a context file's variables on one run in the current Python process
(a notebook). This module is imported by the context-file worker process (it runs user code)
and by notebooks; the listener and GUI never execute user code.

Where each part lives: :mod:`.variables` (decorator API), :mod:`.groups`, :mod:`.compat` (the
older module names), :mod:`.context` (loading and checking a file), :mod:`.evaluation`
(computing variables on a run), :mod:`.pipeline` (notebooks).
"""
from __future__ import annotations

from backend.ctxrunner.compat import COMPAT_MODULES, compat_modules, install_compat_modules
from backend.ctxrunner.context import CONTEXT_MODULE_NAME, ContextFile
from backend.ctxrunner.evaluation import VariableResult, proposal_path_of
from backend.ctxrunner.groups import Group, is_group_instance
from backend.ctxrunner.pipeline import Pipeline, Results, VariableError
from backend.ctxrunner.variables import (GROUP_INPUT_KINDS, INPUT_KINDS, META_KEYS, MYMDC_KEYS,
                                         Cell, ContextFileError, GroupError, RunData, Skip,
                                         Variable)

__all__ = ["Variable", "Cell", "Skip", "Group", "RunData", "Pipeline", "Results",
           "VariableError", "GroupError", "ContextFile", "ContextFileError", "VariableResult",
           "CONTEXT_MODULE_NAME", "COMPAT_MODULES", "INPUT_KINDS", "GROUP_INPUT_KINDS",
           "META_KEYS", "MYMDC_KEYS", "install_compat_modules", "compat_modules",
           "is_group_instance", "proposal_path_of"]
