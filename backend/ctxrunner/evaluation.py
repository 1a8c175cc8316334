"""The evaluation engine: computing a context file's variables on one run, in dependency
order, each one's inputs (``var#``, ``meta#``, ``mymdc#``, ``param#``, manual columns) taken
from the results before it; a failing or skipped variable never loses the others.

Used by :meth:`backend.ctxrunner.context.ContextFile.execute` (the worker, the notebook
:class:`~backend.ctxrunner.pipeline.Pipeline`).
"""
from __future__ import annotations

import fnmatch
import inspect
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from backend.ctxrunner.variables import Cell, Skip, Variable

def _user_frame(tb, filename: str):
    """Last traceback entry in the context file (file, line, function) or None."""
    found = None
    for fs in traceback.extract_tb(tb):
        if fs.filename == filename:
            found = fs
    return found


def proposal_path_of(run_data) -> Path | None:
    """The proposal directory of an extra-data run, from its files' paths
    (``<proposal>/raw/r0001/RAW-....h5`` -> ``<proposal>``), as DAMNIT finds it; None if the
    run has no files (or is not a DataCollection)."""
    try:
        files = [f.filename for f in run_data.files]
    except Exception:
        return None
    if not files:
        return None
    parts = Path(sorted(files)[0]).parts
    return Path(*parts[:-3]) if len(parts) > 3 else None


def _data_of(value):
    """What a dependent variable receives: the data of a :class:`Cell` (as in DAMNIT)."""
    return value.data if isinstance(value, Cell) else value


class _InputFailed(Exception):
    def __init__(self, msg, error_type, chain=None, root=None):
        super().__init__(msg)
        self.error_type = error_type
        self.chain = chain
        self.root = root


@dataclass
class VariableResult:
    """Outcome of one variable on one run: ``value``, or ``error`` (message) with
    ``error_type`` (exception class name), or ``skipped`` (the Skip reason)."""

    name: str
    value: Any = None
    error: str | None = None
    error_type: str | None = None
    skipped: str | None = None
    line: int | None = None
    chain: list[str] | None = None
    root: str | None = None
    traceback: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None


def evaluate(variables: dict[str, Variable], order: Iterable[str], run_data, *, path: str,
             meta: dict, params: dict, mymdc: Callable[[str], Any] | None,
             manual_columns: frozenset = frozenset(),
             manual: dict | None = None, given: dict | None = None) -> dict[str, VariableResult]:
    """Compute ``variables`` named in ``order`` (dependencies first) on one run; never raises
    for user errors.

    ``run_data``: the run object given to each function. ``path``: the context file (a
    traceback entry in it gives the error's line). ``meta``: the ``meta#`` values,
    ``params``: the ``param#`` values, ``mymdc``: callable key -> ``mymdc#`` value (None: no
    metadata service). ``manual_columns``: names of the manual columns ``var#`` inputs may
    name, ``manual``: this run's values of them (absent = no value). ``given``: name -> value
    of variables not to call but to take as they are (inputs stored before and still up to
    date, see :meth:`backend.ctxrunner.worker.Worker.stored_inputs`). Returns name ->
    :class:`VariableResult`: a failing variable gets its exception, its dependents an error
    naming the chain, a skipped one (:class:`Skip`) its reason; the others are unaffected.
    """
    results: dict[str, VariableResult] = {}
    manual = manual or {}
    given = given or {}
    for name in order:
        if name in given:
            results[name] = VariableResult(name, value=given[name])
            continue
        var = variables[name]
        t0 = time.perf_counter()
        try:
            kwargs = _inputs(var, variables, manual_columns, results, meta, params, mymdc,
                             manual)
            value = var.func(run_data, **kwargs)
            results[name] = VariableResult(name, value=value)
        except Skip as e:
            results[name] = VariableResult(name, skipped=str(e) or "skipped")
        except _InputFailed as e:
            if e.error_type == "Skipped":  # an input was skipped: skip this one too
                results[name] = VariableResult(name, skipped=str(e), chain=e.chain, root=e.root)
            else:
                results[name] = VariableResult(name, error=str(e), error_type=e.error_type,
                                               chain=e.chain, root=e.root)
        except Exception as e:
            fs = _user_frame(e.__traceback__, path)
            results[name] = VariableResult(
                name, error=str(e) or repr(e), error_type=type(e).__name__,
                line=fs.lineno if fs else None,
                traceback="".join(traceback.format_exception(type(e), e, e.__traceback__)))
        results[name].seconds = time.perf_counter() - t0
    return results


def _inputs(var: Variable, variables, manual_columns, results, meta, params, mymdc,
            manual) -> dict:
    """The keyword arguments of ``var``'s function; raises :class:`_InputFailed`."""
    kwargs = {}
    for inp in var.inputs:
        if inp.kind == "meta":
            kwargs[inp.param] = _given(inp, meta, f"'meta#{inp.key}' is not known for this run "
                                       f"(the facility does not provide it)", "MetadataUnavailable")
        elif inp.kind == "param":
            kwargs[inp.param] = _given(inp, params, f"parameter {inp.key!r} was not given",
                                       "MissingParameter")
        elif inp.kind == "mymdc":
            if mymdc is None:
                if inp.default is not inspect.Parameter.empty:
                    kwargs[inp.param] = inp.default
                    continue
                raise _InputFailed(f"'mymdc#{inp.key}' is not available: no metadata service "
                                   f"is configured ([mymdc] url) and extra-proposal is not "
                                   f"installed", "MetadataUnavailable")
            try:
                kwargs[inp.param] = mymdc(inp.key)
            except Exception as e:  # the service's error, named as the input that failed
                raise _InputFailed(f"'mymdc#{inp.key}': {e}", "MetadataUnavailable") from None
        elif inp.key not in variables and inp.key in manual_columns and not inp.is_glob:
            if manual.get(inp.key) is not None:
                kwargs[inp.param] = manual[inp.key]
            elif inp.default is not inspect.Parameter.empty:
                kwargs[inp.param] = inp.default
            else:
                raise _InputFailed(f"manual column {inp.key!r} has no value for this run",
                                   "Skipped", [var.name, inp.key],
                                   f"has no value for this run")
        elif inp.is_glob:
            kwargs[inp.param] = {n: _data_of(r.value) for n, r in results.items()
                                 if fnmatch.fnmatchcase(n, inp.key) and r.ok}
        else:
            dep = results.get(inp.key)
            if dep is not None and dep.ok:
                kwargs[inp.param] = _data_of(dep.value)
            elif inp.default is not inspect.Parameter.empty:
                kwargs[inp.param] = inp.default
            elif dep is None:
                raise _InputFailed(f"input 'var#{inp.key}' was not computed", "MissingInput",
                                   [var.name, inp.key])
            else:
                chain = [var.name] + (dep.chain or [inp.key])
                root = dep.root or (f"was skipped ({dep.skipped})" if dep.skipped is not None
                                    else f"failed with {dep.error_type}: {dep.error}")
                raise _InputFailed(f"{' needs '.join(chain)}, which {root}",
                                   dep.error_type or "Skipped", chain, root)
    return kwargs


def _given(inp, values: dict, missing: str, error_type: str):
    """``values[inp.key]``, else the argument's default; else raises :class:`_InputFailed`
    with the message ``missing``."""
    if inp.key in values:
        return values[inp.key]
    if inp.default is not inspect.Parameter.empty:
        return inp.default
    raise _InputFailed(missing, error_type)
