"""Evaluating a context file's variables from a notebook, in the current Python process:
:class:`Pipeline` (DAMNIT 0.4.0's spelling works too) and its :class:`Results`. Nothing is
stored.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Iterable

from backend.contextdir import proposal_dir_name
from backend.ctxrunner.context import ContextFile, default_pipeline_slot, is_loading_default
from backend.ctxrunner.evaluation import VariableResult
from backend.ctxrunner.groups import is_group_instance
from backend.ctxrunner.variables import Cell, GroupError, RunData, Variable

__all__ = ["Pipeline", "Results", "VariableError"]


class VariableError(RuntimeError):
    """Raised by ``results[name]`` for a variable that failed or was skipped on the run; the
    message is the variable's error (or skip reason)."""


class Results:
    """What :meth:`Pipeline.evaluate` computed on one run.

    ``results[name]`` is the value the variable returned (for a :class:`Cell`, its ``data``):
    a number, string, ``numpy`` array, ``xarray`` object, figure, ... exactly as the function
    returned it, not reduced. It raises ``KeyError`` for a name that was not evaluated and
    :class:`VariableError` (message = the error or skip reason) for a variable that failed or
    was skipped.

    Attributes: ``values`` (name -> value of every variable that produced one, transient ones
    excluded), ``cells`` (name -> :class:`Cell`, as DAMNIT's ``Results.cells``), ``errors``
    (name -> :class:`VariableError` of failed variables), ``skipped`` (name -> reason),
    ``outcomes`` (name -> :class:`VariableResult`, transient variables included), ``proposal``,
    ``run_number``.
    """

    def __init__(self, outcomes: dict[str, VariableResult], ctx: ContextFile, proposal, run_number):
        self.outcomes = outcomes
        self.proposal = proposal
        self.run_number = run_number
        self._ctx = ctx
        visible = {n: r for n, r in outcomes.items()
                   if n in ctx.variables and not ctx.variables[n].transient}
        self.values = {n: (r.value.data if isinstance(r.value, Cell) else r.value)
                       for n, r in visible.items() if r.ok}
        self.cells = {n: (r.value if isinstance(r.value, Cell) else Cell(r.value))
                      for n, r in visible.items() if r.ok}
        self.errors = {n: VariableError(_describe_failure(r)) for n, r in visible.items()
                       if r.error is not None}
        self.skipped = {n: r.skipped for n, r in visible.items() if r.skipped is not None}

    def __getitem__(self, name: str):
        if name in self.values:
            return self.values[name]
        if name in self.errors:
            raise self.errors[name]
        if name in self.skipped:
            raise VariableError(f"{name} was skipped: {self.skipped[name]}")
        raise KeyError(f"Variable {name!r} was not evaluated on run {self.run_number} "
                       f"(evaluated: {', '.join(self) or 'none'})")

    def __iter__(self):
        return iter([n for n in self.outcomes if n in self.values or n in self.errors
                     or n in self.skipped])

    def __len__(self):
        return len(list(iter(self)))

    def __contains__(self, name):
        return name in self.values or name in self.errors or name in self.skipped

    def summary(self, name: str):
        """The value the run table shows for ``name`` (a number, string, or PNG/sparkline
        bytes), reduced as the backend does; raises like ``results[name]``."""
        from backend.ctxrunner.results import table_value
        var = self._ctx.variables.get(name)
        value = self.outcomes[name].value if name in self.values else self[name]
        return table_value(value, summary=var.summary, units=var.units).value

    def __repr__(self):
        lines = [f"<Results of proposal {self.proposal} run {self.run_number}: "
                 f"{len(self.values)} values, {len(self.errors)} errors, "
                 f"{len(self.skipped)} skipped>"]
        for name in self:
            if name in self.values:
                v = self.values[name]
                desc = (f"{type(v).__name__} {getattr(v, 'shape', '')}".strip()
                        if hasattr(v, "shape") and getattr(v, "ndim", 0) else repr(v))
            elif name in self.errors:
                desc = f"error: {self.errors[name]}"
            else:
                desc = f"skipped: {self.skipped[name]}"
            lines.append(f"  {name}: {desc[:100]}")
        return "\n".join(lines)


def _describe_failure(r: VariableResult) -> str:
    where = f" (line {r.line})" if r.line else ""
    return f"{r.name}: {r.error_type}: {r.error}{where}"


class Pipeline:
    """Evaluate a context file's variables on one run, in this Python process (a notebook).

    ::

        from amore.context import Pipeline

        pipe = Pipeline.from_path("/gpfs/.../usr/Shared/amore/context.py")
        res = pipe.evaluate(12, proposal=2832)        # opens run 12 with extra_data.open_run
        res["xgm_intensity"]                          # the value, as the function returned it
        res.errors                                    # {name: VariableError} of failed ones

        run = extra_data.open_run(2832, 12).select_trains(np.s_[:100])
        pipe.select(variables=["xgm_intensity"]).evaluate(run)   # any DataCollection

    Nothing is stored: results stay in the returned :class:`Results`. Variables run in
    dependency order; a failing variable gets its error and the others go on, as in the
    backend. DAMNIT 0.4.0's spelling also works: ``Pipeline(proposal, run_number)``,
    ``Pipeline.from_context_file(path)``, ``Pipeline.from_str(code)``, ``.add(variables or
    group instances)``, ``.select(variables=..., match=..., run_data=...)``,
    ``.execute(data=..., param_values=...)``, ``.results``, ``.vars``, and inside a context
    file ``Pipeline.default()`` and ``Pipeline.set_default(pipeline)``.
    """

    def __init__(self, proposal: int | None = None, run_number: int | None = None, *,
                 name: str | None = None, data: Any = None, run_data: RunData | str | None = None,
                 param_values: dict | None = None, context: ContextFile | None = None):
        self.proposal = proposal
        self.run_number = run_number
        self.name = name
        self.data = data
        self.run_data = RunData(run_data or RunData.ALL)
        self.param_values = dict(param_values or {})
        self._base = context          # the context file (or selection) it was made from
        self._added: list[tuple[str | None, Any]] = []   # what add() was given since, in order
        self._context = context       # both, checked
        self._last: Results | None = None

    # -- the default pipeline of a context file --------------------------------------------
    @classmethod
    def default(cls) -> "Pipeline":
        """The default pipeline of the context file being loaded, as in DAMNIT 0.4.0.

        Inside a context file, what is added to it (``Pipeline.default().add(group_instance,
        variable, ...)``) becomes part of the file, besides the variables and group instances
        the file defines at module level; a group or variable need not be assigned to a
        module-level name then. Each loading of a context file has its own default pipeline
        (a file loaded while another one loads does not share it). Outside a context file it
        is one pipeline per thread (the same object on every call). Named ``"default"``.
        """
        slot = default_pipeline_slot()
        if slot.pipeline is None:
            slot.pipeline = cls(name="default")
        return slot.pipeline

    @classmethod
    def set_default(cls, pipeline: "Pipeline") -> "Pipeline":
        """Make ``pipeline`` the default pipeline of the context file being loaded (see
        :meth:`default`): then the file's variables are those of ``pipeline`` only, and the
        variables and groups it defines at module level are not collected. Returns
        ``pipeline``; raises TypeError if it is not a :class:`Pipeline`."""
        if not isinstance(pipeline, Pipeline):
            raise TypeError(f"Pipeline.set_default expects a Pipeline instance, "
                            f"not {type(pipeline).__name__}")
        slot = default_pipeline_slot()
        slot.pipeline, slot.explicit = pipeline, True
        return pipeline

    def members(self) -> list[tuple[str | None, Any]]:
        """The ``(name, object)`` pairs this pipeline's variables come from, in order: those of
        the context file it was made from (groups already expanded into variables), then the
        :class:`Variable` objects and group instances given to :meth:`add`."""
        return self._base_members() + list(self._added)

    def _base_members(self) -> list[tuple[str | None, Any]]:
        if self._base is None:
            return []
        return [(None, v) for v in self._base.variables.values()]

    # -- building -------------------------------------------------------------------------
    @classmethod
    def from_path(cls, path: str | Path, **kw) -> "Pipeline":
        """Load a context file (raises :class:`ContextFileError` naming file and line)."""
        return cls(context=ContextFile.from_path(path), **kw)

    from_context_file = from_path

    @classmethod
    def from_str(cls, code: str, *, path: str = "<string>", **kw) -> "Pipeline":
        """Load context-file code given as a string."""
        return cls(context=ContextFile.from_str(code, path), **kw)

    def add(self, *items) -> "Pipeline":
        """Add :class:`Variable` objects and :func:`Group` instances (or dicts name -> group,
        or lists of them) to this pipeline; returns it. Unnamed groups in a dict take the key
        as name. Raises TypeError for other objects, :class:`GroupError` for an unnamed group,
        :class:`ContextFileError` for duplicate names or inputs naming no variable -- for the
        default pipeline of a context file being loaded, when the whole file is checked, so
        that what is added to it may take inputs from variables defined further down, and a
        group may be named by its assignment in the file."""
        added = list(self._added)
        deferred = is_loading_default(self)

        def put(item, key=None):
            if isinstance(item, Variable):
                added.append((None, item))
            elif is_group_instance(item):
                if item.name is None and key is None and not deferred:
                    raise GroupError(f"Group instance of {type(item).__name__!r} has no name; "
                                     f"give it name=... or add it as {{name: group}}")
                added.append((key, item))
            elif isinstance(item, dict):
                for k, v in item.items():
                    put(v, k)
            elif isinstance(item, (list, tuple)):
                for v in item:
                    put(v)
            else:
                raise TypeError(f"Pipeline.add takes Variables and Group instances, "
                                f"not {type(item).__name__}")

        for item in items:
            put(item)
        if deferred:  # checked with the whole file: inputs and names may come further down
            self._context = None
        else:
            self._context = self._build(self._base_members() + added)
        self._added, self._last = added, None
        return self

    def _build(self, members) -> ContextFile:
        # Variables from the context file are already expanded: they are kept as they are.
        return ContextFile.from_namespace(
            members, self._base.path if self._base is not None else "<pipeline>")

    @property
    def context(self) -> ContextFile:
        """The pipeline's variables, checked (:class:`ContextFile`)."""
        if self._context is None:
            self._context = self._build(self.members())
        return self._context

    @property
    def variables(self) -> dict[str, Variable]:
        """Name -> :class:`Variable` of every variable in this pipeline."""
        return dict(self.context.variables)

    vars = variables

    def select(self, *, variables: Iterable[str] = (), match: Iterable[str] = (),
               run_data: RunData | str | None = None) -> "Pipeline":
        """A new pipeline with a subset of the variables (plus what they depend on):
        ``variables`` exact names, ``match`` substrings of titles (case-insensitive),
        ``run_data`` ``"raw"``/``"proc"`` for the variables needing that data. Raises KeyError
        for an unknown name in ``variables``."""
        ctx = self.context
        unknown = [n for n in variables if n not in ctx.variables]
        if unknown:
            raise KeyError(f"No variable {', '.join(map(repr, unknown))} in {ctx.path}")
        rd = RunData(run_data or RunData.ALL).value
        chosen = [n for n, v in ctx.variables.items()
                  if (rd == "all" or v.data == rd)
                  and (not variables or n in variables)
                  and (not match or any(m.lower() in (v.title or n).lower() for m in match))]
        keep = ctx.closure(chosen)
        sub = ContextFile({n: ctx.variables[n] for n in keep}, ctx.path)
        sub.check()
        new = copy.copy(self)
        new._base = new._context = sub
        new._added, new._last = [], None
        return new

    # -- running --------------------------------------------------------------------------
    def evaluate(self, run=None, *, proposal: int | None = None, variables: Iterable[str] | None = None,
                 params: dict | None = None, run_data: RunData | str | None = None,
                 mymdc: Callable[[str], Any] | None = None) -> Results:
        """Compute the variables on one run and return :class:`Results` (nothing is stored).

        ``run``: a run number (int; opened with ``extra_data.open_run(proposal, run)``, which
        needs ``proposal`` here or in the constructor) or an extra-data ``DataCollection``
        (used as is, e.g. a selection of trains; proposal and run number come from its
        metadata unless given). None: the constructor's ``data`` or ``run_number``.
        ``variables``: names to compute (with their dependencies; default all). ``params``:
        values for ``param#`` inputs (added to ``param_values``). ``run_data``: ``"raw"`` to
        compute only raw-data variables; with ``"all"`` (default) proc-data variables are left
        out when the run has no proc data. ``mymdc``: callable key -> value for ``mymdc#``
        inputs (default: those variables fail with "not available").

        Raises ValueError if no run is given or a run number comes without proposal,
        FileNotFoundError (from extra-data) if the run does not exist, KeyError for an unknown
        name in ``variables``. Errors inside variables are not raised: see ``Results.errors``.
        """
        if run is None:
            run = self.data if self.data is not None else self.run_number
        if run is None:
            raise ValueError("Pipeline.evaluate needs a run: a run number or an extra-data "
                             "DataCollection")
        if variables is not None:
            unknown = [n for n in variables if n not in self.context.variables]
            if unknown:
                raise KeyError(f"No variable {', '.join(map(repr, unknown))} in {self.context.path}")
        rd = RunData(run_data or self.run_data).value
        proposal = proposal if proposal is not None else self.proposal
        prop_path = None
        if isinstance(run, (int, str)) and not isinstance(run, bool):
            run_number = int(run)
            if proposal is None:
                raise ValueError(f"Pipeline.evaluate({run_number}) needs proposal=... "
                                 f"(or a DataCollection instead of a run number)")
            import extra_data
            from extra_data.read_machinery import find_proposal
            try:
                prop_path = Path(find_proposal(proposal_dir_name(proposal)))
            except Exception:
                prop_path = None
            has_proc = prop_path is not None and (prop_path / "proc" / f"r{run_number:04d}").is_dir()
            if rd == "all" and not has_proc:
                rd = "raw"
            run_dc = extra_data.open_run(int(proposal), run_number,
                                         data="raw" if rd == "raw" else "all")
        else:
            run_dc = run
            meta = {}
            try:
                meta = run_dc.run_metadata()
            except Exception:
                pass
            run_number = self.run_number if self.run_number is not None else meta.get("runNumber")
            if proposal is None:
                proposal = meta.get("proposalNumber")
        all_params = dict(self.param_values)
        all_params.update(params or {})
        outcomes = self.context.execute(
            run_dc, run_number=run_number, proposal=proposal, proposal_path=prop_path,
            names=list(variables) if variables is not None else None, data=rd,
            params=all_params, mymdc=mymdc)
        self._last = Results(outcomes, self.context, proposal, run_number)
        return self._last

    def execute(self, *, data=None, param_values: dict | None = None) -> Results:
        """DAMNIT's spelling of :meth:`evaluate`: runs on ``data`` (or the constructor's
        ``data``, or ``run_number``)."""
        return self.evaluate(data, params=param_values)

    @property
    def results(self) -> Results | None:
        """The :class:`Results` of the last evaluation, or None."""
        return self._last

    def __repr__(self):
        return f"<Pipeline {self.context.path}: {len(self.context.variables)} variables>"
