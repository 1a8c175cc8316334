"""Context files written for DAMNIT or the 2022 AMORE prototype run unchanged: their imports
(``from damnit_ctx import ...``, ``from damnit.context import ...``, ``from
amore_mid_prototype.context import ...``) give AMORE's context-file API,
:mod:`backend.ctxrunner.api`, while a context file is loaded or evaluated -- even where the real
``damnit`` package is installed too.

The API module is above this one (it re-exports what imports this module), so it is named here
(:data:`API_MODULE`) and imported when the aliases are installed.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import sys
import types

#: Module names that older context files import the API from; aliased to :data:`API_MODULE`
#: while a context file is evaluated (``amore.context`` is a real module re-exporting it).
COMPAT_MODULES = ("damnit_ctx", "damnit.context", "amore_mid_prototype.context")

#: The context-file API, what the names of :data:`COMPAT_MODULES` stand for.
API_MODULE = "backend.ctxrunner.api"


def _api():
    return importlib.import_module(API_MODULE)


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
    :data:`API_MODULE` (in this process only).

    Where the real ``damnit`` package is installed (``euxfel-extra`` depends on it), context
    files still get AMORE's API: ``sys.modules["damnit.context"]`` is the API whether or not
    the real ``damnit`` package is imported before or after; the real package itself stays
    importable (``from damnit import Damnit`` works).
    """
    this = _api()
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
    this = _api()
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
