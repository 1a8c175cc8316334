"""A context file: loading it (the one place AMORE executes user code on purpose), checking it
and computing its variables on a run (:class:`ContextFile`).

The file itself imports the context-file API (``from amore.context import Variable, ...``, or
DAMNIT's and the 2022 prototype's module names, see :mod:`backend.ctxrunner.compat`); its
parts live beside this module:

* :mod:`.variables` - ``Variable``, ``Cell``, ``Skip``, ``RunData``, the input annotations;
* :mod:`.groups` - ``Group`` and gathering the variables of an executed file;
* :mod:`.compat` - DAMNIT's and the prototype's module names;
* :mod:`.evaluation` - computing variables on one run in dependency order;
* :mod:`.pipeline` - ``Pipeline``: evaluating from a notebook;
* :mod:`.api` - all of it in one module (what ``amore.context`` re-exports).

The decorator API is importable from here as well (its names report this module as theirs,
as they always have).
"""
from __future__ import annotations

import contextvars
import fnmatch
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from backend.ctxrunner.compat import COMPAT_MODULES, compat_modules, install_compat_modules
from backend.ctxrunner.evaluation import VariableResult, _user_frame, evaluate, proposal_path_of
from backend.ctxrunner.groups import Group, collect_variables, is_group_instance
from backend.ctxrunner.variables import (META_KEYS, MYMDC_KEYS, Cell, ContextFileError,
                                         GroupError, RunData, Skip, Variable)

__all__ = ["ContextFile", "ContextFileError", "GroupError", "Variable", "Cell", "Skip", "Group",
           "RunData", "VariableResult", "CONTEXT_MODULE_NAME", "COMPAT_MODULES",
           "install_compat_modules", "compat_modules", "is_group_instance", "proposal_path_of",
           "META_KEYS", "MYMDC_KEYS"]

#: Name of the module a context file is executed as (``__name__`` inside it).
CONTEXT_MODULE_NAME = "amore_context_file"


@dataclass
class DefaultPipeline:
    """The default pipeline of one loading of a context file
    (:meth:`backend.ctxrunner.pipeline.Pipeline.default`): ``pipeline`` (None until the file
    asks for it), ``explicit`` (set by ``Pipeline.set_default``: its variables are the file's,
    the module-level ones are not collected), ``loading`` (False for the one kept for a thread
    outside any loading)."""

    pipeline: Any = None
    explicit: bool = False
    loading: bool = False


_DEFAULT_PIPELINE: contextvars.ContextVar[DefaultPipeline | None] = contextvars.ContextVar(
    "amore_default_pipeline", default=None)


def default_pipeline_slot() -> DefaultPipeline:
    """The :class:`DefaultPipeline` of the context file being loaded in this thread; outside a
    loading, one kept for the thread (created on first use)."""
    slot = _DEFAULT_PIPELINE.get()
    if slot is None:
        slot = DefaultPipeline()
        _DEFAULT_PIPELINE.set(slot)
    return slot


def is_loading_default(pipeline) -> bool:
    """Whether ``pipeline`` is the default pipeline of the context file being loaded (then
    what is added to it is checked together with the whole file, once it has run)."""
    slot = _DEFAULT_PIPELINE.get()
    return slot is not None and slot.loading and slot.pipeline is pipeline


@dataclass
class ContextFile:
    """A loaded context file: its variables in definition order.

    Use :meth:`from_path` or :meth:`from_str`; both raise :class:`ContextFileError` for syntax
    errors and exceptions while executing the file (naming file and line), for dependency cycles
    (naming the cycle), unknown ``var#`` inputs and raw variables depending on proc ones.
    The variables are those the file defines at module level (variables and group instances)
    and those it adds to ``Pipeline.default()``, or only those of the pipeline it gives to
    ``Pipeline.set_default`` (as DAMNIT 0.4.0 does).
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
        """Load context-file text; ``manual``: names of the manual columns of the database
        (``var#`` inputs may name them)."""
        with compat_modules():
            return cls._from_str(code, path, manual)

    @classmethod
    def _from_str(cls, code: str, path: str, manual=()) -> "ContextFile":
        try:
            compiled = compile(code, path, "exec", dont_inherit=True)
        except SyntaxError as e:
            raise ContextFileError(f"{e.filename}, line {e.lineno}: SyntaxError: {e.msg}"
                                   + (f"\n    {e.text.rstrip()}" if e.text else "")) from None
        # A real module (registered under CONTEXT_MODULE_NAME), so that what needs the module
        # of a class defined in the file (dataclasses, hence @Group; pickle) finds it.
        module = types.ModuleType(CONTEXT_MODULE_NAME)
        module.__file__ = path
        sys.modules[CONTEXT_MODULE_NAME] = module
        ns: dict[str, Any] = module.__dict__
        sys.path.insert(0, str(Path(path).parent))
        default = DefaultPipeline(loading=True)  # Pipeline.default() while the file runs
        token = _DEFAULT_PIPELINE.set(default)
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
            _DEFAULT_PIPELINE.reset(token)
            try:
                sys.path.remove(str(Path(path).parent))
            except ValueError:
                pass
        members = list(ns.items())
        if default.pipeline is not None:  # what the file added to it, or set as default
            added = default.pipeline.members()
            members = added if default.explicit else members + added
        return cls.from_namespace(members, path, manual=manual)

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any] | Iterable[tuple[str, Any]],
                       path: str = "<context>", manual=()) -> "ContextFile":
        """The variables among ``namespace`` values (a dict, or ``(name, object)`` pairs:
        :class:`Variable` objects and :func:`Group` instances, in order), checked; ``manual``:
        names of the manual columns ``var#`` inputs may name. Raises
        :class:`ContextFileError`."""
        members = namespace.items() if isinstance(namespace, Mapping) else namespace
        variables = collect_variables(members, path)
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
    def execute(self, run_data, *, run_number: int, proposal: int | str,
                proposal_path: str | Path | None = None, names=None, data: str = "all",
                params: dict | None = None, mymdc: Callable[[str], Any] | None = None,
                meta: dict | None = None, manual: dict | None = None,
                given: dict | None = None) -> dict[str, "VariableResult"]:
        """Compute variables on one run, in dependency order; never raises for user errors.

        ``run_data``: extra-data ``DataCollection`` at European XFEL, the facility's run object
        elsewhere (:mod:`backend.ctxrunner.facilities`). ``proposal_path``: the proposal
        directory, given to ``meta#proposal_path`` as a ``pathlib.Path`` (if empty: the
        facility's ``meta["proposal_path"]``, else found from the run's files, else None).
        ``meta``: further ``meta#`` values (the facility's). ``mymdc``: callable taking a key
        such as ``"sample_name"`` (None: metadata service not available). ``manual``: this
        run's manual column values (name -> value; absent = no value). ``given``: values of
        variables taken as they are instead of calling them (stored inputs). Returns name ->
        :class:`VariableResult`; a failing variable gets its exception, its dependents an error
        naming the chain, and the other variables are unaffected.
        """
        meta = dict(meta or {})
        prop_path = proposal_path or meta.get("proposal_path")
        prop_path = Path(prop_path) if prop_path else proposal_path_of(run_data)
        meta.update({"run_number": run_number, "proposal": proposal, "proposal_path": prop_path})
        with compat_modules():  # for imports inside variables' functions
            return evaluate(self.variables, self.select(data, names), run_data, path=self.path,
                            meta=meta, params=params or {}, mymdc=mymdc,
                            manual_columns=self.manual, manual=manual, given=given)
