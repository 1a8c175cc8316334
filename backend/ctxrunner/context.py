"""The context file API: what users write in ``context.py``.

New context files import from here::

    from amore.context import Variable, Cell, Skip, Group

(``amore.context`` re-exports this module and is importable anywhere AMORE is installed.)
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
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import enum
import fnmatch
import importlib.abc
import importlib.util
import inspect
import logging
import sys
import time
import traceback
import types
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

#: Module names that older context files import the API from; aliased to this module while a
#: context file is evaluated (``amore.context`` is a real module re-exporting this one).
COMPAT_MODULES = ("damnit_ctx", "damnit.context", "amore_mid_prototype.context")

#: Name of the module a context file is executed as (``__name__`` inside it).
CONTEXT_MODULE_NAME = "amore_context_file"

INPUT_KINDS = ("var", "meta", "mymdc", "param")
GROUP_INPUT_KINDS = INPUT_KINDS + ("self",)
#: ``meta#`` keys: the first three everywhere, the others where the facility knows them
#: (:data:`backend.ctxrunner.facilities.FACILITY_META_KEYS`).
META_KEYS = ("run_number", "proposal", "proposal_path", "run_name", "instrument", "start_time",
             "stop_time", "file_name", "job_id", "metadata", "tag", "sample", "data_dir",
             "pgroup", "beamline")
from backend.ctxrunner.mymdc import KEYS as MYMDC_KEYS  # noqa: E402 - the keys, defined once


class RunData(str, enum.Enum):
    """Which data of a run a variable needs: ``Variable(data=RunData.PROC)`` is the same as
    ``Variable(data="proc")``. ``ALL`` selects every variable (``Pipeline.select``).
    Members compare equal to their strings (``RunData.RAW == "raw"``)."""

    RAW = "raw"
    PROC = "proc"
    ALL = "all"


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
    input, not stored), ``units`` (str shown in the column header). ``data`` may also be a
    :class:`RunData`. In a :func:`Group` class the function takes ``self``, then the run, and
    may use ``"self#..."`` inputs.
    """

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
            return _GroupBoundVariable(instance, self)
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


class GroupError(ContextFileError):
    """A :func:`Group` is defined or used wrongly (reserved field names, a ``self#`` input naming
    no variable, two instances with one name, ...). The context file cannot be used."""


# -- groups ----------------------------------------------------------------------------------
_GROUP_FIELDS = {"name": None, "title": None, "tags": None, "sep": "/"}


def _normalize_tags(tags) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str):
        return (tags,)
    return tuple(tags)


def is_group_instance(obj) -> bool:
    """True if ``obj`` is an instance of a class decorated with :func:`Group`."""
    return getattr(type(obj), "__amore_group__", False) is True


def Group(_cls=None, *, tags: Iterable[str] | str | None = None):
    """Class decorator: a reusable group of variables, as in DAMNIT 0.4.0.

    ::

        @Group(tags="xgm")
        class XGMGroup:
            source: str                      # a field, given when the group is instantiated

            @Variable(title="Energy", units="uJ", summary="mean")
            def energy(self, run):
                return run[self.source, "data.intensityTD"].ndarray()[:, :4].mean(axis=1)

            @Variable(title="Relative")
            def relative(self, run, e: "self#energy"):
                return e / e.mean()

        xgm = XGMGroup(source="SA2_XTD1_XGM/XGM/DOOCS:output", title="XGM")

    gives the variables ``xgm.energy`` (title ``"XGM/Energy"``, tags ``["xgm"]``) and
    ``xgm.relative``. Variables of a group take ``self`` and the run, then inputs; ``"self#name"``
    is another variable of the same instance and ``"self#sub.name"`` one of a nested group
    instance held in field ``sub`` (if that field is ``None``, the input is skipped: its default
    is used, or the variable is skipped).

    The class becomes a keyword-only dataclass with four reserved fields, given at instantiation:
    ``name`` (default: the name the instance is assigned to in the context file; a nested group
    gets ``<parent>.<field>``), ``title`` (default: the name with ``.`` replaced by ``sep``),
    ``tags`` (merged into each variable's tags; default: ``tags`` of the decorator, inherited
    from a parent Group class) and ``sep`` (default ``"/"``, between group and variable titles).
    A subclass of a Group class must be decorated with ``@Group`` too.

    Raises :class:`GroupError` if the class defines a reserved field.
    """
    def wrap(cls):
        own_ann = dict(cls.__dict__.get("__annotations__", {}))
        conflicts = sorted(set(_GROUP_FIELDS) & (set(own_ann) | set(cls.__dict__)))
        if conflicts:
            raise GroupError(f"Group class {cls.__name__!r} cannot define the reserved "
                             f"field(s) {', '.join(conflicts)} (set them when instantiating it)")
        group_tags = tags
        if group_tags is None:
            for base in cls.__mro__[1:]:
                if "__amore_group_tags__" in base.__dict__:
                    group_tags = base.__dict__["__amore_group_tags__"]
                    break
        group_tags = _normalize_tags(group_tags)
        cls.__amore_group__ = True
        cls.__amore_group_tags__ = group_tags
        own_ann.update({"name": str | None, "title": str | None,
                        "tags": Iterable[str] | str | None, "sep": str})
        cls.__annotations__ = own_ann
        cls.name = dataclasses.field(default=None, kw_only=True)
        cls.title = dataclasses.field(default=None, kw_only=True)
        cls.tags = dataclasses.field(default=group_tags, kw_only=True)
        cls.sep = dataclasses.field(default="/", kw_only=True)
        user_post_init = cls.__dict__.get("__post_init__")

        def __post_init__(self):
            self.tags = _normalize_tags(self.tags)
            if self.name is not None and (not isinstance(self.name, str) or not self.name):
                raise GroupError(f"Group {type(self).__name__!r}: name must be a non-empty "
                                 f"string, not {self.name!r}")
            if user_post_init is not None:
                user_post_init(self)

        cls.__post_init__ = __post_init__
        return dataclasses.dataclass(cls, kw_only=True)

    if _cls is None:
        return wrap
    return wrap(_cls)


class _GroupBoundVariable:
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


def _assign_group_names(namespace: dict) -> None:
    """Name unnamed group instances after the name they are assigned to (``beam = Beam()`` ->
    ``beam``); nested instances after their path (``beam.xgm``), the shortest path winning.
    Raises GroupError for an instance reachable under two equally short names."""
    candidates: dict[int, tuple[Any, int, set]] = {}
    pending: deque = deque()

    def record(group, path, depth):
        entry = candidates.get(id(group))
        if entry is None or depth < entry[1]:
            candidates[id(group)] = (group, depth, {path})
            pending.append((group, path, depth))
        elif depth == entry[1]:
            entry[2].add(path)

    for key, value in namespace.items():
        if not key.startswith("__") and is_group_instance(value):
            record(value, value.name or key, 0)
    while pending:
        group, path, depth = pending.popleft()
        if candidates[id(group)][1] != depth:
            continue
        for attr, value in vars(group).items():
            if is_group_instance(value):
                record(value, f"{group.name or path}.{attr}", depth + 1)
    for group, _, names in candidates.values():
        if group.name is None:
            if len(names) > 1:
                raise GroupError(f"Group instance of {type(group).__name__!r} is assigned to "
                                 f"several names {sorted(names)}; give it name=...")
            group.name = next(iter(names))
        if group.title is None:
            group.title = group.name.replace(".", group.sep)


def _group_variables(cls) -> dict[str, Variable]:
    """Variables defined in a Group class and its bases (a subclass overrides by name)."""
    out: dict[str, Variable] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in klass.__dict__.items():
            if isinstance(value, Variable) and value.func is not None:
                out[attr] = value
    return out


def _missing_input(group, attr: str, path: str) -> Variable:
    """Stand-in for the ``self#path`` input of ``group`` when its attribute ``attr`` is None
    (an optional nested group not given): a transient variable named like the missing one
    that skips, so the dependent variable gets its default or is skipped, saying why."""
    def missing(run):
        raise Skip(f"{group.name}.{attr} is None")
    var = Variable(transient=True)(missing)
    var.name = var.title = f"{group.name}.{path}"
    return var


def _resolve_self(group, path: str) -> tuple[str, Variable | None]:
    """``self#path`` of ``group`` -> (variable name, placeholder variable or None)."""
    target, _, rest = path.partition(".")
    if rest:
        try:
            sub = getattr(group, target)
        except AttributeError:
            raise GroupError(f"Group {group.name!r} has no attribute {target!r} "
                             f"(input 'self#{path}')") from None
        if sub is None:
            return "", _missing_input(group, target, path)
        if not is_group_instance(sub):
            raise GroupError(f"Attribute {target!r} of group {group.name!r} is a "
                             f"{type(sub).__name__}, not a group (input 'self#{path}')")
        return _resolve_self(sub, rest)
    if any(c in target for c in "*?["):
        return f"{group.name}.{target}", None
    try:
        ref = getattr(group, target)
    except AttributeError:
        raise GroupError(f"Group {group.name!r} has no variable {target!r} "
                         f"(input 'self#{target}')") from None
    if ref is None:
        return "", _missing_input(group, target, target)
    if not isinstance(ref, (_GroupBoundVariable, Variable)):
        raise GroupError(f"Attribute {target!r} of group {group.name!r} is a "
                         f"{type(ref).__name__}, but a self# input must name a variable")
    return ref.name, None


def _expand_group(group) -> dict[str, Variable]:
    """The variables of one group instance: named ``<group>.<var>``, titled
    ``<group title><sep><var title>``, tagged with the union of group and variable tags, bound
    to the instance, ``self#`` inputs rewritten to ``var#`` inputs."""
    out: dict[str, Variable] = {}
    for var_def in _group_variables(type(group)).values():
        var = copy.copy(var_def)
        var.func = var_def.func.__get__(group, type(group))
        var._in_class = False
        var.name = f"{group.name}.{var_def.name}"
        var.title = f"{group.title}{group.sep}{var_def.title}"
        var.tags = sorted(set(group.tags) | set(var_def.tags))
        inputs = []
        for inp in var_def.inputs:
            if inp.kind == "self":
                key, placeholder = _resolve_self(group, inp.key)
                if placeholder is not None:
                    out[placeholder.name] = placeholder
                    key = placeholder.name
                inp = Input(inp.param, "var", key, inp.default)
            inputs.append(inp)
        var.inputs = inputs
        out[var.name] = var
    return out


def _collect_variables(namespace: dict, path: str) -> dict[str, Variable]:
    """Variables of an executed context file's namespace, in definition order: module-level
    :class:`Variable` objects and the variables of every group instance (nested ones after
    their parent). Raises GroupError for duplicate names."""
    _assign_group_names(namespace)
    variables: dict[str, Variable] = {}
    group_names: dict[str, int] = {}
    seen: set[int] = set()

    def add(name, var, origin):
        if name in variables and variables[name] is not var:
            raise GroupError(f"{path}: duplicate variable name {name!r} ({origin})")
        variables[name] = var

    def add_group(group):
        if id(group) in seen:
            return
        seen.add(id(group))
        if group_names.setdefault(group.name, id(group)) != id(group):
            raise GroupError(f"{path}: group name {group.name!r} is used by several group "
                             f"instances")
        for name, var in _expand_group(group).items():
            add(name, var, f"from group {group.name!r}")
        for value in vars(group).values():
            if is_group_instance(value):
                add_group(value)

    for key, value in namespace.items():
        if isinstance(value, Variable) and value.name is not None and not value._in_class:
            add(value.name, value, "defined twice")
        elif not key.startswith("__") and is_group_instance(value):
            add_group(value)
    return variables


class _AttachContextModule(importlib.abc.MetaPathFinder):
    """When the real ``damnit`` package is installed and gets imported after a context file was
    loaded (``euxfel-extra`` imports it), give it ``damnit.context`` = AMORE's API as an
    attribute too, so ``import damnit.context; damnit.context.Variable`` keeps working."""

    def __init__(self, parent: str, attr: str, module):
        self.parent, self.attr, self.module = parent, attr, module

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.parent:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                loader, attr, module = spec.loader, self.attr, self.module

                class _Loader(importlib.abc.Loader):
                    def create_module(self, spec):
                        return loader.create_module(spec)

                    def exec_module(self, mod):
                        loader.exec_module(mod)
                        setattr(mod, attr, module)

                    def __getattr__(self, name):  # resources etc. from the real loader
                        return getattr(loader, name)
                spec.loader = _Loader()
                return spec
        return None


def install_compat_modules() -> None:
    """Make ``damnit_ctx``, ``damnit.context`` and ``amore_mid_prototype.context`` import from
    this module (in this process only).

    Where the real ``damnit`` package is installed (``euxfel-extra`` depends on it), context
    files still get AMORE's API: ``sys.modules["damnit.context"]`` is this module whether or not
    the real ``damnit`` package is imported before or after; the real package itself stays
    importable (``from damnit import Damnit`` works).
    """
    this = sys.modules[__name__]
    for name in COMPAT_MODULES:
        sys.modules[name] = this
        parent, _, attr = name.rpartition(".")
        if not parent:
            continue
        if parent in sys.modules:
            setattr(sys.modules[parent], attr, this)
            continue
        try:
            real = importlib.util.find_spec(parent) is not None
        except (ImportError, ValueError):
            real = False
        if real:  # attach ourselves when the real package is imported, not before
            if not any(isinstance(f, _AttachContextModule) and f.parent == parent
                       for f in sys.meta_path):
                sys.meta_path.insert(0, _AttachContextModule(parent, attr, this))
        else:
            pkg = types.ModuleType(parent)
            pkg.__path__ = []
            pkg.__amore_compat_stub__ = True
            setattr(pkg, attr, this)
            sys.modules[parent] = pkg


_ABSENT = object()


@contextlib.contextmanager
def compat_modules():
    """Install the compatibility modules (:func:`install_compat_modules`) for the duration of a
    ``with`` block and put back what was there before, so that a notebook that also uses the
    real DAMNIT keeps its own ``damnit.context`` / ``damnit_ctx`` outside it. The context-file
    worker installs them for good instead (it runs context files only)."""
    names = set(COMPAT_MODULES) | {n.rpartition(".")[0] for n in COMPAT_MODULES if "." in n}
    saved = {n: sys.modules.get(n, _ABSENT) for n in names}
    parent_attrs = {}
    for n in COMPAT_MODULES:
        parent, _, attr = n.rpartition(".")
        if parent and saved.get(parent, _ABSENT) is not _ABSENT:
            parent_attrs[n] = getattr(saved[parent], attr, _ABSENT)
    meta_path = list(sys.meta_path)
    this = sys.modules[__name__]
    install_compat_modules()
    try:
        yield
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path
                            if not isinstance(f, _AttachContextModule) or f in meta_path]
        for n in COMPAT_MODULES:  # child attributes on parent packages
            parent, _, attr = n.rpartition(".")
            mod = sys.modules.get(parent) if parent else None
            if mod is not None and getattr(mod, attr, None) is this:
                old = parent_attrs.get(n, _ABSENT)
                if old is _ABSENT:
                    delattr(mod, attr)
                else:
                    setattr(mod, attr, old)
        for n, old in saved.items():
            cur = sys.modules.get(n, _ABSENT)
            ours = cur is this or getattr(cur, "__amore_compat_stub__", False)
            if old is _ABSENT:
                if ours:
                    del sys.modules[n]
            elif cur is not old and ours:
                sys.modules[n] = old


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
        return cls.from_namespace(ns, path, manual=manual)

    @classmethod
    def from_namespace(cls, namespace: dict, path: str = "<context>",
                       manual=()) -> "ContextFile":
        """The variables among ``namespace`` values (module-level :class:`Variable` objects and
        :func:`Group` instances, in order), checked; ``manual``: names of the manual columns
        ``var#`` inputs may name. Raises :class:`ContextFileError`."""
        variables = _collect_variables(namespace, path)
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
                meta: dict | None = None, manual: dict | None = None) -> dict[str, "VariableResult"]:
        """Compute variables on one run, in dependency order; never raises for user errors.

        ``run_data``: extra-data ``DataCollection`` at European XFEL, the facility's run object
        elsewhere (:mod:`backend.ctxrunner.facilities`). ``proposal_path``: the proposal
        directory, given to ``meta#proposal_path`` as a ``pathlib.Path`` (if empty: the
        facility's ``meta["proposal_path"]``, else found from the run's files, else None).
        ``meta``: further ``meta#`` values (the facility's). ``mymdc``: callable taking a key
        such as ``"sample_name"`` (None: metadata service not available). ``manual``: this
        run's manual column values (name -> value; absent = no value). Returns name ->
        :class:`VariableResult`; a failing variable gets its exception, its dependents an error
        naming the chain, and the other variables are unaffected.
        """
        params = params or {}
        results: dict[str, VariableResult] = {}
        meta = dict(meta or {})
        prop_path = proposal_path or meta.get("proposal_path")
        prop_path = Path(prop_path) if prop_path else proposal_path_of(run_data)
        meta.update({"run_number": run_number, "proposal": proposal, "proposal_path": prop_path})
        with compat_modules():  # for imports inside variables' functions
            return self._execute(run_data, names, data, params, mymdc, results, meta,
                                 manual or {})

    def _execute(self, run_data, names, data, params, mymdc, results, meta, manual):
        for name in self.select(data, names):
            var = self.variables[name]
            t0 = time.perf_counter()
            try:
                kwargs = self._inputs(var, results, meta, params, mymdc, manual)
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
                if inp.key in meta:
                    kwargs[inp.param] = meta[inp.key]
                elif inp.default is not inspect.Parameter.empty:
                    kwargs[inp.param] = inp.default
                else:
                    raise _InputFailed(f"'meta#{inp.key}' is not known for this run (the "
                                       f"facility does not provide it)", "MetadataUnavailable")
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
                                       f"is configured ([mymdc] url) and extra-proposal is not "
                                       f"installed", "MetadataUnavailable")
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


# -- evaluating from a notebook --------------------------------------------------------------
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
    ``.execute(data=..., param_values=...)``, ``.results``, ``.vars``.
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
        self._context = context
        self._last: Results | None = None

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
        as name. Raises TypeError for other objects, :class:`GroupError` for duplicate names."""
        ns: dict[str, Any] = {}
        if self._context is not None:
            ns.update({f"__v{i}": v for i, v in enumerate(self._context.variables.values())})

        def put(item, key=None):
            if isinstance(item, Variable):
                ns[f"__v{len(ns)}"] = item
            elif is_group_instance(item):
                ns[key or item.name or f"__g{len(ns)}"] = item
                if item.name is None and key is None:
                    raise GroupError(f"Group instance of {type(item).__name__!r} has no name; "
                                     f"give it name=... or add it as {{name: group}}")
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
        # Variables from a previous context are already expanded: keep them as they are.
        self._context = ContextFile.from_namespace(
            {k: v for k, v in ns.items()}, self._context.path if self._context else "<pipeline>")
        self._last = None
        return self

    @property
    def context(self) -> ContextFile:
        if self._context is None:
            self._context = ContextFile({}, "<pipeline>")
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
        new._context, new._last = sub, None
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
                prop_path = Path(find_proposal(f"p{int(proposal):06d}"))
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
