"""The decorator API of a context file: :class:`Variable`, :class:`Cell`, :class:`Skip`,
:class:`RunData`, and how a variable's arguments declare its inputs (``"var#name"``,
``"meta#run_number"``, ...; see :mod:`backend.ctxrunner.api` for the list).

Groups of variables are in :mod:`backend.ctxrunner.groups`; this module only knows how to
recognise an instance of a group class (:func:`is_group_instance`), so that
``group_instance.variable`` names that instance's variable.

The public names report :data:`PUBLIC_MODULE` as their module (``Variable.__module__``): the
module they have always been imported from, so reprs, pickles and context files that print
them keep the same name.
"""
from __future__ import annotations

import enum
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from backend.ctxrunner.mymdc import KEYS as MYMDC_FIELDS

#: Module the context-file API's names report as theirs (``__module__``); they are importable
#: from it (:mod:`backend.ctxrunner.context` re-exports them).
PUBLIC_MODULE = "backend.ctxrunner.context"

#: Class attribute that marks a class decorated with :func:`backend.ctxrunner.groups.Group`.
GROUP_MARKER = "__amore_group__"

INPUT_KINDS = ("var", "meta", "mymdc", "param")
GROUP_INPUT_KINDS = INPUT_KINDS + ("self",)
#: ``meta#`` keys: the first three everywhere, the others where the facility knows them
#: (each facility's ``META_KEYS`` in ``backend/facilities/<name>/run.py``; a test checks they are here).
META_KEYS = ("run_number", "proposal", "proposal_path", "run_name", "instrument", "start_time",
             "stop_time", "file_name", "job_id", "metadata", "tag", "sample", "data_dir",
             "pgroup", "beamline")
#: ``mymdc#`` keys (defined once, with what each asks MyMdC, in :mod:`backend.ctxrunner.mymdc`).
MYMDC_KEYS = MYMDC_FIELDS


class RunData(str, enum.Enum):
    """Which data of a run a variable needs: ``Variable(data=RunData.PROC)`` is the same as
    ``Variable(data="proc")``. ``ALL`` selects every variable (``Pipeline.select``).
    Members compare equal to their strings (``RunData.RAW == "raw"``)."""

    __module__ = PUBLIC_MODULE

    RAW = "raw"
    PROC = "proc"
    ALL = "all"


class Skip(Exception):
    """Raise ``Skip("reason")`` in a variable when it does not apply to a run.

    The run's cell shows the reason instead of an error; dependent variables are skipped too.
    """

    __module__ = PUBLIC_MODULE


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

    __module__ = PUBLIC_MODULE

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
    input, not stored), ``units`` (str shown in the column header). ``data`` may also be a
    :class:`RunData`. In a :func:`Group` class the function takes ``self``, then the run, and
    may use ``"self#..."`` inputs.
    """

    __module__ = PUBLIC_MODULE

    def __init__(self, title=None, description=None, summary=None, data=None, cluster=False,
                 tags=None, transient=False, units=None):
        self.func: Callable | None = None
        self._in_class = False  # defined in a class body (a Group): first argument is self
        if callable(title) and description is None and summary is None and data is None:
            func, title = title, None
        else:
            func = None
        self.title = title
        self.description = description
        self.summary = summary
        if isinstance(data, RunData):
            data = data.value
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
        self._in_class = _defined_in_class_body(func)
        self.inputs = _parse_inputs(func, in_group=self._in_class)
        return self

    def __get__(self, instance, owner):
        # ``group_instance.var`` (e.g. while wiring nested groups) names the instance's variable
        if instance is not None and is_group_instance(instance):
            return GroupBoundVariable(instance, self)
        return self

    def var_dependencies(self) -> list[str]:
        """Names (or glob patterns) of other variables this one takes as input."""
        return [i.key for i in self.inputs if i.kind == "var"]

    def __repr__(self):
        return f"<Variable {self.name} ({self.data})>"


def _defined_in_class_body(func) -> bool:
    """True for a function written in a class body (``Cls.f``), not at module level and not
    inside another function (``f.<locals>.g``)."""
    qual = getattr(func, "__qualname__", "") or ""
    parts = qual.split(".")
    return len(parts) > 1 and parts[-2] != "<locals>"


def _parse_inputs(func, in_group: bool = False) -> list[Input]:
    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    first = 2 if in_group else 1  # (self,) run
    if len(params) < first:
        raise ContextFileError(
            f"Variable {func.__name__!r} must take "
            + ("self and the run as first arguments (it is defined in a class)" if in_group
               else "the run as first argument"))
    kinds = GROUP_INPUT_KINDS if in_group else INPUT_KINDS
    inputs = []
    for p in params[first:]:
        ann = p.annotation
        if not isinstance(ann, str) or "#" not in ann:
            if p.default is not inspect.Parameter.empty:
                continue
            raise ContextFileError(
                f"Argument {p.name!r} of variable {func.__name__!r} needs an annotation such as "
                f"\"var#name\", \"meta#run_number\", \"mymdc#sample_name\" or \"param#name\"")
        kind, key = ann.split("#", 1)
        if kind == "self" and not in_group:
            raise ContextFileError(f"Argument {p.name!r} of variable {func.__name__!r}: "
                                   f"{ann!r} inputs only work in variables of a @Group class")
        if kind not in kinds:
            raise ContextFileError(f"Argument {p.name!r} of variable {func.__name__!r}: unknown "
                                   f"input kind {kind!r} in {ann!r} (use one of {', '.join(kinds)})")
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

    __module__ = PUBLIC_MODULE


class GroupError(ContextFileError):
    """A :func:`Group` is defined or used wrongly (reserved field names, a ``self#`` input naming
    no variable, two instances with one name, ...). The context file cannot be used."""

    __module__ = PUBLIC_MODULE


def is_group_instance(obj) -> bool:
    """True if ``obj`` is an instance of a class decorated with
    :func:`~backend.ctxrunner.groups.Group`."""
    return getattr(type(obj), GROUP_MARKER, False) is True


class GroupBoundVariable:
    """``group_instance.var``: the variable of that instance (its ``name`` is
    ``<group>.<var>`` once the group is named). Not itself collected as a variable."""

    def __init__(self, group, var: Variable):
        self._group = group
        self._var = var

    @property
    def name(self) -> str:
        return f"{self._group.name}.{self._var.name}"

    def __getattr__(self, attr):
        return getattr(self._var, attr)

    def __repr__(self):
        return f"<Variable {self.name} of group {type(self._group).__name__}>"
