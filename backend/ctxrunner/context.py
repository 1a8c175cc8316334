"""The context file API: what users write in ``context.py``.

New context files import from here::

    from amore.context import Variable, Cell, Skip

(``amore.context`` is this module, provided while the file is evaluated). Files written for DAMNIT (``from damnit_ctx import ...``, ``from damnit.context import ...``)
or for the 2022 AMORE prototype (``from amore_mid_prototype.context import ...``) run unchanged:
:func:`install_compat_modules` makes those module names point here while a context file is
evaluated.

A variable is a function of the run (an extra-data ``DataCollection``) decorated with
:class:`Variable`. Further arguments declare inputs by string annotation:

``"var#name"``
    result of another variable (its default is used if that variable has no result);
    ``"var#prefix_*"`` gives a dict ``{name: result}`` of all matching variables.
    ``name`` may also be a manual column (typed in by people: sample, detector distance...):
    its value for the run (a number in the column's units, bool, or str); the variable is
    skipped if the run has no value there and the argument has no default. Changing the value
    recomputes the variable for that run.
``"meta#run_number"``, ``"meta#proposal"``, ``"meta#proposal_path"``
    the run number (int), proposal number (int) and proposal directory (str).
``"mymdc#sample_name"``, ``"mymdc#run_type"``
    the facility metadata service (only where configured; otherwise the variable fails with
    a "not available" error).
``"param#name"``
    values given at execution time (``amore-proto reprocess --param name=value``).

This module is imported by the context-file worker process only (it runs user code); the
listener and GUI never execute user code.
"""
from __future__ import annotations

import fnmatch
import inspect
import logging
import sys
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

#: Module names that context files import the API from.
#: Module names that older context files import the API from; aliased to this module while a
#: context file is evaluated (``amore.context`` is a real module re-exporting this one).
COMPAT_MODULES = ("damnit_ctx", "damnit.context", "amore_mid_prototype.context")

INPUT_KINDS = ("var", "meta", "mymdc", "param")
META_KEYS = ("run_number", "proposal", "proposal_path")
MYMDC_KEYS = ("sample_name", "run_type")


class Skip(Exception):
    """Raise ``Skip("reason")`` in a variable when it does not apply to a run.

    The run's cell shows the reason instead of an error; dependent variables are skipped too.
    """


@dataclass
class Cell:
    """A variable result that separates stored data from what the run table shows.

    ``data``: what is stored in ``extracted_data`` (any supported result type).
    ``summary``: numpy reduction name for the table value of an array (overrides the variable's).
    ``summary_value``: the table value itself (number or string), instead of a reduction.
    ``bold``/``background``: table styling (``background`` a colour name or ``#rrggbb``, or an
    RGB tuple of 0-255 ints). ``preview``: an array or figure shown as the cell's thumbnail or
    sparkline instead of ``data``. ``units``: units of this value (overrides the variable's).
    """

    data: Any
    summary: str | None = None
    summary_value: Any = None
    bold: bool | None = None
    background: Any = None
    preview: Any = None
    units: str | None = None


@dataclass
class Input:
    """One declared input of a variable, parsed from an annotation such as ``"var#xgm"``."""

    param: str
    kind: str
    key: str
    default: Any = inspect.Parameter.empty

    @property
    def is_glob(self) -> bool:
        return self.kind == "var" and any(c in self.key for c in "*?[")


class Variable:
    """Decorator marking a function of the run as a variable of the context file.

    Usable bare (``@Variable``) or with arguments: ``title`` (default: function name),
    ``description`` (default: docstring), ``summary`` (numpy reduction name giving the table value
    of an array), ``data`` (``"raw"`` or ``"proc"``: which data must be ready; default raw),
    ``cluster`` (heavy variable; processed like the others when processing is local),
    ``tags`` (str or list of str, for filtering columns), ``transient`` (result only used as an
    input, not stored), ``units`` (str shown in the column header).
    """

    def __init__(self, title=None, description=None, summary=None, data=None, cluster=False,
                 tags=None, transient=False, units=None):
        self.func: Callable | None = None
        if callable(title) and description is None and summary is None and data is None:
            func, title = title, None
        else:
            func = None
        self.title = title
        self.description = description
        self.summary = summary
        if data not in (None, "raw", "proc"):
            raise ValueError(f"Variable data must be 'raw' or 'proc', not {data!r}")
        self.data = data or "raw"
        self._data_given = data is not None
        self.cluster = bool(cluster)
        if isinstance(tags, str):
            tags = [tags]
        self.tags = list(tags or [])
        self.transient = bool(transient)
        self.units = units
        self.name: str | None = None
        self.inputs: list[Input] = []
        if func is not None:
            self(func)

    def __call__(self, func: Callable) -> "Variable":
        if self.func is not None:  # calling the variable like its function
            return self.func(func)
        self.func = func
        self.name = func.__name__
        if self.title is None:
            self.title = self.name
        if self.description is None and func.__doc__:
            self.description = inspect.cleandoc(func.__doc__)
        self.inputs = _parse_inputs(func)
        return self

    def var_dependencies(self) -> list[str]:
        """Names (or glob patterns) of other variables this one takes as input."""
        return [i.key for i in self.inputs if i.kind == "var"]

    def __repr__(self):
        return f"<Variable {self.name} ({self.data})>"


def _parse_inputs(func) -> list[Input]:
    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    if not params:
        raise ContextFileError(f"Variable {func.__name__!r} must take the run as first argument")
    inputs = []
    for p in params[1:]:
        ann = p.annotation
        if not isinstance(ann, str) or "#" not in ann:
            if p.default is not inspect.Parameter.empty:
                continue
            raise ContextFileError(
                f"Argument {p.name!r} of variable {func.__name__!r} needs an annotation such as "
                f"\"var#name\", \"meta#run_number\", \"mymdc#sample_name\" or \"param#name\"")
        kind, key = ann.split("#", 1)
        if kind not in INPUT_KINDS:
            raise ContextFileError(f"Argument {p.name!r} of variable {func.__name__!r}: unknown "
                                   f"input kind {kind!r} in {ann!r} (use one of {', '.join(INPUT_KINDS)})")
        if kind == "mymdc" and key not in MYMDC_KEYS:
            raise ContextFileError(f"Argument {p.name!r} of variable {func.__name__!r}: unknown "
                                   f"{ann!r} (use one of {', '.join('mymdc#' + k for k in MYMDC_KEYS)})")
        if kind == "meta" and key not in META_KEYS:
            raise ContextFileError(f"Argument {p.name!r} of variable {func.__name__!r}: unknown "
                                   f"{ann!r} (use one of {', '.join('meta#' + k for k in META_KEYS)})")
        inputs.append(Input(p.name, kind, key, p.default))
    return inputs


class ContextFileError(Exception):
    """The context file cannot be used. The message names file and line where known."""


def install_compat_modules() -> None:
    """Make ``damnit_ctx``, ``damnit.context``, ``amore_mid_prototype.context`` and
    ``amore.context`` import from this module (in this process only)."""
    this = sys.modules[__name__]
    for name in COMPAT_MODULES:
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in sys.modules:
                pkg = types.ModuleType(parent)
                pkg.__path__ = []
                sys.modules[parent] = pkg
        sys.modules[name] = this
        if len(parts) > 1:
            setattr(sys.modules[".".join(parts[:-1])], parts[-1], this)


def _user_frame(tb, filename: str):
    """Last traceback entry in the context file (file, line, function) or None."""
    found = None
    for fs in traceback.extract_tb(tb):
        if fs.filename == filename:
            found = fs
    return found


@dataclass
class ContextFile:
    """A loaded context file: its variables in definition order.

    Use :meth:`from_path` or :meth:`from_str`; both raise :class:`ContextFileError` for syntax
    errors and exceptions while executing the file (naming file and line), for dependency cycles
    (naming the cycle), unknown ``var#`` inputs and raw variables depending on proc ones.
    """

    variables: dict[str, Variable]
    path: str = "<context>"
    ordered: list[str] = field(default_factory=list)
    #: names of the manual columns ``var#`` inputs may name (besides variables)
    manual: frozenset = frozenset()

    @classmethod
    def from_path(cls, path: str | Path, manual=()) -> "ContextFile":
        """Load ``path``; ``manual``: names of the manual columns of the database."""
        path = Path(path)
        try:
            code = path.read_text()
        except OSError as e:
            raise ContextFileError(f"Cannot read context file {path}: {e}") from None
        return cls.from_str(code, str(path), manual=manual)

    @classmethod
    def from_str(cls, code: str, path: str = "<context>", manual=()) -> "ContextFile":
        install_compat_modules()
        try:
            compiled = compile(code, path, "exec", dont_inherit=True)
        except SyntaxError as e:
            raise ContextFileError(f"{e.filename}, line {e.lineno}: SyntaxError: {e.msg}"
                                   + (f"\n    {e.text.rstrip()}" if e.text else "")) from None
        ns: dict[str, Any] = {"__file__": path, "__name__": "context"}
        sys.path.insert(0, str(Path(path).parent))
        try:
            exec(compiled, ns)
        except ContextFileError:
            raise
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            fs = _user_frame(e.__traceback__, path)
            where = f"{path}, line {fs.lineno}" if fs else path
            raise ContextFileError(f"{where}: {type(e).__name__}: {e}") from None
        finally:
            try:
                sys.path.remove(str(Path(path).parent))
            except ValueError:
                pass
        variables = {}
        for value in ns.values():
            if isinstance(value, Variable) and value.name is not None:
                variables[value.name] = value
        ctx = cls(variables, path, manual=frozenset(manual or ()))
        ctx.check()
        return ctx

    # -- checks ------------------------------------------------------------------------
    def deps_of(self, name: str) -> list[str]:
        """Names of variables ``name`` takes directly as input (globs expanded)."""
        out = []
        for inp in self.variables[name].inputs:
            if inp.kind != "var":
                continue
            if inp.is_glob:
                out += [n for n in self.variables if fnmatch.fnmatchcase(n, inp.key) and n != name]
            elif inp.key in self.variables:
                out.append(inp.key)
        return out

    def manual_inputs(self, name: str) -> list[str]:
        """Manual columns variable ``name`` takes directly as input."""
        return [i.key for i in self.variables[name].inputs
                if i.kind == "var" and not i.is_glob and i.key not in self.variables
                and i.key in self.manual]

    def check(self) -> None:
        """Validate dependencies and compute :attr:`ordered` (a topological order)."""
        for name, var in self.variables.items():
            for inp in var.inputs:
                if (inp.kind == "var" and not inp.is_glob and inp.key not in self.variables
                        and inp.key not in self.manual):
                    raise ContextFileError(
                        f"{self.path}: variable {name!r} takes input 'var#{inp.key}', but no "
                        f"variable {inp.key!r} is defined (nor a manual column of that name)")
            if name in self.manual:
                raise ContextFileError(
                    f"{self.path}: variable {name!r} has the name of a manual column; rename "
                    f"one of them")
            for dep in self.deps_of(name):
                if var.data == "raw" and self.variables[dep].data == "proc":
                    raise ContextFileError(
                        f"{self.path}: raw-data variable {name!r} depends on proc-data variable "
                        f"{dep!r}; mark {name!r} with data=\"proc\"")
        order: list[str] = []
        state: dict[str, int] = {}  # 1 = visiting, 2 = done

        def visit(n, stack):
            if state.get(n) == 2:
                return
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise ContextFileError(f"{self.path}: dependency cycle: {' -> '.join(cycle)}")
            state[n] = 1
            for d in self.deps_of(n):
                visit(d, stack + [n])
            state[n] = 2
            order.append(n)

        for n in self.variables:
            visit(n, [])
        self.ordered = order

    def closure(self, names) -> list[str]:
        """``names`` plus all variables they depend on, in execution order."""
        need = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n in need:
                continue
            need.add(n)
            todo += self.deps_of(n)
        return [n for n in self.ordered if n in need]

    def select(self, data: str = "all", names=None) -> list[str]:
        """Variables to compute, in order: those for ``data`` (``"raw"``: raw variables;
        ``"proc"``: proc variables; ``"all"``: every variable), restricted to ``names`` if given,
        with their dependencies."""
        chosen = [n for n, v in self.variables.items()
                  if (data == "all" or v.data == data) and (names is None or n in names)]
        return self.closure(chosen)

    # -- execution ---------------------------------------------------------------------
    def execute(self, run_data, *, run_number: int, proposal: int, proposal_path: str = "",
                names=None, data: str = "all", params: dict | None = None,
                mymdc: Callable[[str], Any] | None = None,
                manual: dict | None = None) -> dict[str, "VariableResult"]:
        """Compute variables on one run, in dependency order; never raises for user errors.

        ``run_data``: extra-data ``DataCollection``. ``mymdc``: callable taking a key such as
        ``"sample_name"`` (None: metadata service not available). ``manual``: this run's
        manual column values (name -> value; absent = no value). Returns name ->
        :class:`VariableResult`; a failing variable gets its exception, its dependents an
        error naming the chain, and the other variables are unaffected.
        """
        params = params or {}
        results: dict[str, VariableResult] = {}
        meta = {"run_number": run_number, "proposal": proposal, "proposal_path": proposal_path}
        for name in self.select(data, names):
            var = self.variables[name]
            t0 = time.perf_counter()
            try:
                kwargs = self._inputs(var, results, meta, params, mymdc, manual or {})
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
                fs = _user_frame(e.__traceback__, self.path)
                results[name] = VariableResult(
                    name, error=str(e) or repr(e), error_type=type(e).__name__,
                    line=fs.lineno if fs else None,
                    traceback="".join(traceback.format_exception(type(e), e, e.__traceback__)))
            results[name].seconds = time.perf_counter() - t0
        return results

    def _inputs(self, var: Variable, results, meta, params, mymdc, manual) -> dict:
        kwargs = {}
        for inp in var.inputs:
            if inp.kind == "meta":
                kwargs[inp.param] = meta[inp.key]
            elif inp.kind == "param":
                if inp.key in params:
                    kwargs[inp.param] = params[inp.key]
                elif inp.default is not inspect.Parameter.empty:
                    kwargs[inp.param] = inp.default
                else:
                    raise _InputFailed(f"parameter {inp.key!r} was not given", "MissingParameter")
            elif inp.kind == "mymdc":
                if mymdc is None:
                    if inp.default is not inspect.Parameter.empty:
                        kwargs[inp.param] = inp.default
                        continue
                    raise _InputFailed(f"'mymdc#{inp.key}' is not available: no metadata service "
                                       f"is configured (mymdc.url)", "MetadataUnavailable")
                try:
                    kwargs[inp.param] = mymdc(inp.key)
                except Exception as e:  # the service's error, named as the input that failed
                    raise _InputFailed(f"'mymdc#{inp.key}': {e}", "MetadataUnavailable") from None
            elif inp.key not in self.variables and inp.key in self.manual and not inp.is_glob:
                if manual.get(inp.key) is not None:
                    kwargs[inp.param] = manual[inp.key]
                elif inp.default is not inspect.Parameter.empty:
                    kwargs[inp.param] = inp.default
                else:
                    raise _InputFailed(f"manual column {inp.key!r} has no value for this run",
                                       "Skipped", [var.name, inp.key],
                                       f"has no value for this run")
            elif inp.is_glob:
                kwargs[inp.param] = {n: r.value for n, r in results.items()
                                     if fnmatch.fnmatchcase(n, inp.key) and r.ok}
            else:
                dep = results.get(inp.key)
                if dep is not None and dep.ok:
                    kwargs[inp.param] = dep.value
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
