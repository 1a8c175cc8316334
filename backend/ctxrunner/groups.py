"""Groups of variables (:func:`Group`, as in DAMNIT 0.4.0): a class whose methods are variables,
instantiated in the context file; each instance contributes variables named
``<group>.<var>``. This module also gathers the variables of an executed context file
(:func:`collect_variables`): module-level variables and those of every group instance.
"""
from __future__ import annotations

import copy
import dataclasses
from collections import deque
from typing import Any, Iterable

from backend.ctxrunner.variables import (GROUP_MARKER, PUBLIC_MODULE, GroupBoundVariable,
                                         GroupError, Input, Skip, Variable, is_group_instance)

__all__ = ["Group", "GroupError", "is_group_instance", "collect_variables"]

_GROUP_FIELDS = {"name": None, "title": None, "tags": None, "sep": "/"}


def _normalize_tags(tags) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str):
        return (tags,)
    return tuple(tags)


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
        setattr(cls, GROUP_MARKER, True)
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


Group.__module__ = PUBLIC_MODULE


def _assign_group_names(members: list[tuple[str | None, Any]]) -> None:
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

    for key, value in members:
        if not is_group_instance(value):
            continue
        if key is None:
            if value.name is not None:
                record(value, value.name, 0)
        elif not key.startswith("__"):
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


def _attribute(group, name: str, what: str, path: str):
    """``getattr(group, name)``; raises GroupError naming the ``self#path`` input if absent."""
    try:
        return getattr(group, name)
    except AttributeError:
        raise GroupError(f"Group {group.name!r} has no {what} {name!r} "
                         f"(input 'self#{path}')") from None


def _resolve_self(group, path: str) -> tuple[str, Variable | None]:
    """``self#path`` of ``group`` -> (variable name, placeholder variable or None)."""
    target, _, rest = path.partition(".")
    if rest:
        sub = _attribute(group, target, "attribute", path)
        if sub is None:
            return "", _missing_input(group, target, path)
        if not is_group_instance(sub):
            raise GroupError(f"Attribute {target!r} of group {group.name!r} is a "
                             f"{type(sub).__name__}, not a group (input 'self#{path}')")
        return _resolve_self(sub, rest)
    if any(c in target for c in "*?["):
        return f"{group.name}.{target}", None
    ref = _attribute(group, target, "variable", target)
    if ref is None:
        return "", _missing_input(group, target, target)
    if not isinstance(ref, (GroupBoundVariable, Variable)):
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


def collect_variables(members: Iterable[tuple[str | None, Any]],
                      path: str) -> dict[str, Variable]:
    """The variables among ``members`` -- ``(name, object)`` pairs such as the items of an
    executed context file's namespace -- in their order: :class:`Variable` objects and the
    variables of every group instance (nested ones after their parent); other objects, and
    groups under names starting with ``__``, are ignored. Unnamed group instances are named
    after their name in ``members``; a name of None gives none (the group is named by
    another entry, or it is an error). ``path`` names the context file in error messages.
    Raises GroupError for duplicate names and unnamed groups."""
    members = list(members)
    _assign_group_names(members)
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

    for key, value in members:
        if isinstance(value, Variable) and value.name is not None and not value._in_class:
            add(value.name, value, "defined twice")
        elif is_group_instance(value) and (key is None or not key.startswith("__")):
            if value.name is None:
                raise GroupError(f"{path}: group instance of {type(value).__name__!r} has no "
                                 f"name; give it name=... or assign it to a name")
            add_group(value)
    return variables
