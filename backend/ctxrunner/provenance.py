"""The provenance of the values a context file makes, computed where the file runs (the worker,
a Slurm job): a digest of the code behind each variable, what each value was given, and the
identity of the run's data. Standard library only (numpy when a module-level value is an
array); nothing here is pickled or sent but JSON.

Code digests (:func:`code_digests`, once per load of the context file). A variable's digest is
the SHA-256 (first 16 hex characters) of its *parts*:

``function``
    the function's code: its bytecode, constants, names, argument names, defaults and closure
    values -- not its line numbers, comments, formatting or docstring (moving a function, adding
    a blank line or a comment changes nothing);
``arguments``
    the decorator arguments that change what is stored -- ``data``, ``summary``, ``units``,
    ``transient`` -- and the declared inputs (``"var#..."``, ``"param#..."``, ``"meta#..."``,
    ``"mymdc#..."`` and their defaults); not ``title``, ``description``, ``tags`` or ``cluster``;
``fields``
    for a variable of a :func:`~backend.ctxrunner.groups.Group` instance, the instance's
    fields (``source=...``; not its ``title``, ``tags`` or ``sep``);
``names``
    every module-level name the function reads, followed through the helper functions and
    classes it calls (those defined in the context file, or in a module named in
    ``[processing] watch_modules``): name -> digest of its value (a number, a string, a tuple,
    a dict, an array: its contents; a helper: its code; a module or something imported from a
    module that is not watched: its name only). Tuning one threshold changes the digest of
    exactly the variables that read it;
``inputs``
    the code digests of the variables it takes through ``var#`` (so a change propagates to
    every variable depending on it).

Metadata columns (``[columns]`` of ``amore.toml``) get a digest of their definition.

What a value was given (:func:`value_inputs`): the manual values it read through ``var#``
(directly or through its inputs), its ``param#`` values and ``mymdc#`` answers.

The run's data (:func:`data_identity`): for each kind (``raw``, ``proc``) a digest of the names,
sizes and modification times of the files the facility's worker module lists for the run
(:attr:`backend.ctxrunner.facilities.OpenedRun.data_locations`: glob patterns).
"""
from __future__ import annotations

import dataclasses
import dis
import enum
import fnmatch
import functools
import glob
import hashlib
import json
import math
import os
import re
import stat
import sys
import types
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, Iterable

#: Changes when the way digests are computed changes (every value is then stale once).
DIGEST_VERSION = 1
#: Hex characters of a digest (64 bits).
DIGEST_CHARS = 16
#: Decorator arguments of a variable that change what is stored (the others -- title,
#: description, tags, cluster -- do not make a value stale).
STORED_ARGUMENTS = ("data", "summary", "units", "transient")
#: Fields of a group instance that only change how it is shown.
DISPLAY_FIELDS = ("name", "title", "tags", "sep")

_GLOBAL_OPS = {"LOAD_GLOBAL", "LOAD_NAME"}
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def digest(*parts: Any) -> str:
    """A short digest (:data:`DIGEST_CHARS` hex characters) of JSON-able ``parts``."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def file_sha(path: str | os.PathLike) -> str | None:
    """SHA-256 (hex) of a file's bytes; None if it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


class _Hasher:
    """Digests of code and values reachable from a context file's variables. ``local(obj)``:
    whether an object's code is followed (defined in the context file or a watched module)."""

    def __init__(self, local_modules: Iterable[str]):
        self.local_modules = tuple(local_modules)
        self._code: dict[int, str] = {}
        self._value: dict[int, tuple[Any, str]] = {}   # id -> (object kept alive, digest)
        self._names: dict[int, dict[str, str]] = {}

    def is_local(self, obj) -> bool:
        mod = getattr(obj, "__module__", None) or ""
        return any(mod == m or mod.startswith(m + ".") for m in self.local_modules)

    def is_watched(self, module: types.ModuleType) -> bool:
        """A module named in ``[processing] watch_modules`` (or inside one)."""
        mod = module.__name__
        return any(mod == m or mod.startswith(m + ".") for m in self.local_modules[1:])

    # -- code ----------------------------------------------------------------------------------
    def code(self, co: types.CodeType, doc: str | None = None, function: bool = False) -> str:
        """Digest of a code object without line numbers or file name; of a function's code
        (``function``) also without its docstring ``doc``: the first constant of a function's
        code is its docstring, or None when it has none, and is left out either way."""
        got = self._code.get(id(co))
        if got is not None and not function:
            return got
        consts = []
        for i, c in enumerate(co.co_consts):
            if i == 0 and function and (c is None or c == doc):
                continue
            consts.append(self.code(c) if isinstance(c, types.CodeType) else _const(c))
        out = digest("code", co.co_code.hex(), consts, co.co_names, co.co_varnames,
                     co.co_freevars, co.co_cellvars, co.co_argcount, co.co_posonlyargcount,
                     co.co_kwonlyargcount, co.co_flags & ~0x10)  # not CO_NESTED
        if not function:
            self._code[id(co)] = out
        return out

    def global_names(self, co: types.CodeType) -> list[str]:
        """Module-level names a code object (and the code nested in it) reads."""
        out: list[str] = []
        todo = [co]
        while todo:
            c = todo.pop()
            for ins in dis.get_instructions(c):
                if ins.opname in _GLOBAL_OPS and isinstance(ins.argval, str):
                    out.append(ins.argval)
            todo += [k for k in c.co_consts if isinstance(k, types.CodeType)]
        return list(dict.fromkeys(out))

    def function(self, func, names: dict[str, str], seen: set[int]) -> str:
        """Digest of a Python function: its code, defaults and closure values; the module-level
        names it reads go into ``names`` (followed through local helpers)."""
        func = getattr(func, "__func__", func)     # a bound method: its function
        co = func.__code__
        parts = [self.code(co, func.__doc__, function=True),
                 self.value(func.__defaults__, names, seen),
                 self.value(func.__kwdefaults__, names, seen)]
        if func.__closure__:
            cells = []
            for name, cell in zip(co.co_freevars, func.__closure__):
                try:
                    cells.append([name, self.value(cell.cell_contents, names, seen)])
                except ValueError:          # an empty cell
                    cells.append([name, None])
            parts.append(cells)
        self.read_globals(func, names, seen)
        return digest("function", parts)

    def read_globals(self, func, names: dict[str, str], seen: set[int]) -> None:
        """Add the module-level names ``func`` reads to ``names`` (name -> value digest),
        following helpers defined locally."""
        g = getattr(func, "__globals__", None)
        if g is None:
            return
        module = g.get("__name__", "")
        local_ns = self.is_local(func)
        for name in self.global_names(func.__code__):
            if name not in g:
                continue                      # a builtin (or not defined yet)
            key = name if module in self.local_modules[:1] else f"{module}.{name}"
            if key in names:
                continue
            names[key] = ""                   # placeholder: cycles end here
            names[key] = self.value(g[name], names, seen) if local_ns else _named(g[name])

    # -- values -------------------------------------------------------------------------------
    def value(self, obj, names: dict[str, str], seen: set[int], depth: int = 0) -> str:
        """Digest of a module-level value, a default or a field (see the module docstring)."""
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
            return digest(_const(obj))
        key = id(obj)
        hit = self._value.get(key)
        if hit is not None and hit[0] is obj and key not in seen:
            # helpers' names: the digest of a helper stands for its code; what it reads was
            # put in ``names`` the first time
            names.update({k: v for k, v in self._names.get(key, {}).items() if k not in names})
            return hit[1]
        if key in seen or depth > 8:
            return digest("cycle", type(obj).__qualname__)
        seen = seen | {key}
        own: dict[str, str] = {}
        out = self._value_of(obj, own, seen, depth)
        for k, v in own.items():
            names.setdefault(k, v)
        self._value[key] = (obj, out)
        self._names[key] = own
        return out

    def _value_of(self, obj, names, seen, depth) -> str:
        from backend.ctxrunner.variables import GroupBoundVariable, Variable, is_group_instance
        if isinstance(obj, (list, tuple)):
            return digest(type(obj).__name__, [self.value(x, names, seen, depth + 1) for x in obj])
        if isinstance(obj, (set, frozenset)):
            return digest(type(obj).__name__,
                          sorted(self.value(x, names, seen, depth + 1) for x in obj))
        if isinstance(obj, Mapping) and not isinstance(obj, type):
            try:
                items = sorted(([self.value(k, names, seen, depth + 1),
                                 self.value(v, names, seen, depth + 1)] for k, v in obj.items()))
            except Exception:
                return _named(obj)
            return digest(type(obj).__name__, items)
        if isinstance(obj, PurePath):
            return digest("path", str(obj))
        if isinstance(obj, enum.Enum):
            return digest("enum", type(obj).__qualname__, obj.name, _const(obj.value))
        if isinstance(obj, types.ModuleType):
            if not self.is_watched(obj):
                return digest("module", obj.__name__)
            # a watched module: what it defines, each name on its own (``mod.NAME``)
            members = []
            for k, v in sorted(vars(obj).items()):
                if k.startswith("__") or isinstance(v, types.ModuleType):
                    continue
                if (callable(v) or isinstance(v, type)) and not self.is_local(v):
                    continue                          # imported into it from elsewhere
                d = self.value(v, names, seen, depth + 1)
                names.setdefault(f"{obj.__name__}.{k}", d)
                members.append([k, d])
            return digest("module", obj.__name__, members)
        if isinstance(obj, GroupBoundVariable):
            return self.value(obj._var, names, seen, depth + 1)
        if isinstance(obj, Variable):
            return digest("variable", self.function(obj.func, names, seen) if obj.func else None,
                          self.arguments(obj, names, seen))
        if isinstance(obj, (types.FunctionType, types.MethodType)):
            if self.is_local(obj):
                return self.function(obj, names, seen)
            return _named(obj)
        if isinstance(obj, type):
            if not self.is_local(obj):
                return _named(obj)
            members = []
            for k, v in sorted(vars(obj).items()):
                if k.startswith("__") and k not in ("__init__", "__call__", "__post_init__"):
                    continue
                if isinstance(v, (staticmethod, classmethod)):
                    v = v.__func__
                if isinstance(v, property):
                    v = (v.fget, v.fset)
                members.append([k, self.value(v, names, seen, depth + 1)])
            bases = [self.value(b, names, seen, depth + 1) for b in obj.__bases__
                     if b is not object]
            return digest("class", obj.__qualname__, bases, members)
        if is_group_instance(obj):
            return self.fields(obj, names, seen, depth)
        if hasattr(obj, "__array__") and hasattr(obj, "dtype"):
            try:
                import numpy as np
                arr = np.ascontiguousarray(np.asarray(obj))
                if arr.dtype.hasobject:
                    raise TypeError
                return digest("array", type(obj).__qualname__, str(arr.dtype), arr.shape,
                              hashlib.sha256(arr.view(np.uint8).reshape(-1)).hexdigest())
            except Exception:
                pass
        if dataclasses.is_dataclass(obj):
            return digest("dataclass", self.value(type(obj), names, seen, depth + 1),
                          [[f.name, self.value(getattr(obj, f.name, None), names, seen, depth + 1)]
                           for f in dataclasses.fields(obj)])
        if self.is_local(type(obj)) and hasattr(obj, "__dict__"):
            return digest("object", self.value(type(obj), names, seen, depth + 1),
                          self.value(dict(vars(obj)), names, seen, depth + 1))
        if callable(obj) and not hasattr(obj, "__dict__"):
            return _named(obj)                # builtins, numpy ufuncs...
        try:
            text = repr(obj)
        except Exception:
            text = ""
        return digest("object", type(obj).__module__, type(obj).__qualname__,
                      _ADDRESS.sub("", text)[:20000])

    def fields(self, group, names, seen, depth=0) -> str:
        """Digest of a group instance's fields that change what its variables compute."""
        out = []
        for f in dataclasses.fields(group):
            if f.name in DISPLAY_FIELDS:
                continue
            out.append([f.name, self.value(getattr(group, f.name, None), names, seen, depth + 1)])
        return digest("group", type(group).__qualname__, out)

    def group_class(self, cls, names, seen) -> str:
        """Digest of a group class's members that are not variables (helper methods, class
        attributes), its bases' too: what its variables may call through ``self``."""
        from backend.ctxrunner.variables import Variable
        members = []
        for klass in cls.__mro__:
            if klass is object or not self.is_local(klass):
                continue
            for k, v in sorted(vars(klass).items()):
                if isinstance(v, Variable) or k in DISPLAY_FIELDS \
                        or (k.startswith("__") and k != "__post_init__"):
                    continue
                if isinstance(v, dataclasses.Field):
                    continue
                if isinstance(v, (staticmethod, classmethod)):
                    v = v.__func__
                if isinstance(v, property):
                    v = (v.fget, v.fset)
                members.append([klass.__qualname__, k, self.value(v, names, seen)])
        return digest("group class", members)

    def arguments(self, var, names, seen) -> str:
        """Digest of a variable's decorator arguments that change what is stored, and of its
        declared inputs."""
        inputs = [[i.param, i.kind, i.key,
                   None if i.default is _EMPTY else self.value(i.default, names, seen)]
                  for i in var.inputs]
        return digest("arguments", {k: getattr(var, k, None) for k in STORED_ARGUMENTS}, inputs)


_EMPTY = __import__("inspect").Parameter.empty


def _const(c) -> Any:
    """A constant as JSON-able data that tells types apart (1, 1.0 and True differ)."""
    if isinstance(c, float):
        return ["float", repr(c) if math.isfinite(c) else str(c)]
    if isinstance(c, (bytes, complex)):
        return [type(c).__name__, repr(c)]
    if isinstance(c, (tuple, frozenset)):
        items = [_const(x) for x in c]
        return [type(c).__name__, sorted(items, key=json.dumps) if isinstance(c, frozenset)
                else items]
    if c is None or isinstance(c, (bool, int, str)):
        return [type(c).__name__, c]
    return [type(c).__name__, repr(c)]


def _named(obj) -> str:
    """Digest of an object by its name only (something imported from a module not watched)."""
    mod = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) \
        or type(obj).__qualname__
    return digest("named", mod, name)


@dataclasses.dataclass
class CodeInfo:
    """The code of one variable: ``digest``, its ``parts`` (see the module docstring),
    ``manual`` (manual columns it reads, also through its inputs), ``params`` and ``mymdc``
    (``param#``/``mymdc#`` keys it takes, also through its inputs), ``data``, ``deps``
    (variables it takes directly)."""

    digest: str
    parts: dict
    manual: list
    params: list
    mymdc: list
    data: str
    deps: list

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def code_digests(ctx, columns: Iterable = (), watch_modules: Iterable[str] = (),
                 module_name: str = "amore_context_file") -> dict[str, CodeInfo]:
    """The :class:`CodeInfo` of every variable of a loaded
    :class:`~backend.ctxrunner.context.ContextFile` (transient ones too), and of the metadata
    ``columns`` (:class:`~backend.ctxrunner.facilities.ColumnSpec` objects) not overridden by a
    variable. ``watch_modules``: modules whose code is followed like the context file's
    (``[processing] watch_modules``); ``module_name``: the module the context file runs as."""
    h = _Hasher([module_name, *watch_modules])
    out: dict[str, CodeInfo] = {}
    for name in ctx.ordered:
        var = ctx.variables[name]
        names: dict[str, str] = {}
        func = var.func
        group = getattr(func, "__self__", None)
        parts: dict[str, Any] = {
            "function": h.function(func, names, set()) if func is not None else None,
            "arguments": h.arguments(var, names, set())}
        if group is not None and dataclasses.is_dataclass(group):
            parts["fields"] = h.fields(group, names, set())
            parts["class"] = h.group_class(type(group), names, set())
        parts["names"] = {k: v for k, v in sorted(names.items()) if v}
        deps = ctx.deps_of(name)
        parts["inputs"] = {d: out[d].digest for d in deps if d in out}
        manual = set(ctx.manual_inputs(name))
        params = {i.key for i in var.inputs if i.kind == "param"}
        mymdc = {i.key for i in var.inputs if i.kind == "mymdc"}
        for d in deps:
            if d in out:
                manual.update(out[d].manual)
                params.update(out[d].params)
                mymdc.update(out[d].mymdc)
        out[name] = CodeInfo(digest(DIGEST_VERSION, name, parts), parts, sorted(manual),
                             sorted(params), sorted(mymdc), var.data, deps)
    for col in columns:
        if col.name in out:
            continue
        spec = dataclasses.asdict(col) if dataclasses.is_dataclass(col) else repr(col)
        parts = {"column": digest("column", spec)}
        out[col.name] = CodeInfo(digest(DIGEST_VERSION, col.name, parts), parts, [], [], [],
                                 "raw", [])
    return out


def watched_files(watch_modules: Iterable[str]) -> dict[str, float]:
    """Files (path -> modification time) of the watched modules imported now (a package: every
    imported module of it)."""
    out: dict[str, float] = {}
    prefixes = tuple(watch_modules)
    if not prefixes:
        return out
    for name, mod in list(sys.modules.items()):
        if not any(name == m or name.startswith(m + ".") for m in prefixes):
            continue
        f = getattr(mod, "__file__", None)
        if f:
            try:
                out[str(f)] = os.stat(f).st_mtime
            except OSError:
                out[str(f)] = -1.0
    return out


def forget_modules(watch_modules: Iterable[str]) -> None:
    """Drop the watched modules from ``sys.modules`` (the context file imports them anew)."""
    prefixes = tuple(watch_modules)
    for name in [n for n in sys.modules
                 if any(n == m or n.startswith(m + ".") for m in prefixes)]:
        del sys.modules[name]
    import importlib
    importlib.invalidate_caches()


def value_inputs(info: CodeInfo, manual: dict, params: dict, mymdc: dict) -> dict | None:
    """What one value was given: ``{"manual": {column: value}, "param": {...},
    "mymdc": {...}}`` (only the kinds it reads; None if none). ``manual``: the run's manual
    values (a column without one: None), ``params``: the request's, ``mymdc``: the answers the
    metadata service gave during the run."""
    out = {}
    if info.manual:
        out["manual"] = {c: _jsonable(manual.get(c)) for c in info.manual}
    if info.params:
        out["param"] = {k: _jsonable(params.get(k)) for k in info.params if k in params}
    if info.mymdc:
        out["mymdc"] = {k: _jsonable(mymdc.get(k)) for k in info.mymdc if k in mymdc}
    return {k: v for k, v in out.items() if v} or None


def _jsonable(v):
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    item = getattr(v, "item", None)          # numpy scalars
    if callable(item):
        try:
            return _jsonable(item())
        except Exception:
            pass
    return str(v)


def data_identity(patterns: Iterable[str]) -> dict:
    """The identity of a run's data of one kind: the files matching the glob ``patterns``
    (absolute; ``**`` recursive), by name, size and modification time. A name is the path
    below the pattern's fixed directory, so that the same files seen under another mount
    point or copied with their times are the same data. Returns ``{"digest", "files",
    "bytes", "mtime" (newest, Unix seconds; None without files), "locations"}``; files that
    vanish while listed are left out."""
    rows, total, newest = [], 0, None
    patterns = [str(p) for p in patterns]
    for pat in patterns:
        listed = _files_in_one_dir(pat)
        if listed is None:
            fixed = os.path.dirname(re.split(r"[*?\[]", pat, maxsplit=1)[0])
            listed = []
            for path in sorted(glob.glob(pat, recursive=True)):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                listed.append((os.path.relpath(path, fixed), st))
        for name, st in listed:
            if not stat.S_ISREG(st.st_mode):
                continue
            rows.append([name, st.st_size, st.st_mtime_ns])
            total += st.st_size
            newest = st.st_mtime if newest is None else max(newest, st.st_mtime)
    return {"digest": digest("data", rows), "files": len(rows), "bytes": total,
            "mtime": newest, "locations": patterns}


def _files_in_one_dir(pattern: str) -> list[tuple[str, os.stat_result]] | None:
    """``glob.glob(pattern)``'s matches, sorted, as ``(name, os.stat of it)`` (those that
    vanish while listed left out), for the usual pattern of :func:`data_identity`: a wildcard
    in the last part only (``.../raw/r0012/*.h5``). One ``scandir`` instead of ``glob``'s
    listing, ``stat``, ``isfile`` and ``relpath`` per file (0.3 instead of 1.4 ms for a run's
    34 files; ``reprocess all`` looks at every run's data). None for any other pattern."""
    folder, name_pattern = os.path.split(pattern)
    if not folder or not glob.has_magic(name_pattern) or glob.has_magic(folder) \
            or "**" in name_pattern:
        return None
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it]
    except OSError:
        return []
    if not name_pattern.startswith("."):    # glob leaves hidden files out unless asked for
        names = [n for n in names if not n.startswith(".")]
    out = []
    for name in sorted(fnmatch.filter(names, name_pattern)):
        try:
            out.append((name, os.stat(os.path.join(folder, name))))
        except OSError:
            continue
    return out


def where(kind: str, detail: str = "") -> str:
    """Where an evaluation ran, for people: ``local worker, PID 1234`` or ``Slurm job 12_3``."""
    return f"{kind}{', ' if detail else ''}{detail}"


@functools.cache
def amore_version() -> str:
    """AMORE's version: the installed distribution's (``pip install -e .`` too), else
    ``"unknown"``; looked up once per process (a few milliseconds)."""
    try:
        from importlib.metadata import version
        return version("amore")
    except Exception:
        return "unknown"


def python_version() -> str:
    v = sys.version_info
    return f"{v.major}.{v.minor}.{v.micro}"
