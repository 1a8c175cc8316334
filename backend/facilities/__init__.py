"""Facilities as plug-ins: one folder per facility, found here, named by nothing else.

Each sub-package ``backend/facilities/<name>/`` is one facility (``facility = "<name>"`` in
``amore.toml``); ``<name>/facility.py`` holds its plug-in, ``FACILITY``, an instance of a
subclass of :class:`Facility` that the service asks for everything it needs to know of that
facility: where its runs come from, what the context file's first argument is, its settings and
their defaults, its data check, what ``amore-proto init`` writes and its demo.
``docs/adding-a-facility.rst`` lists the steps; in short, the folder holds

* ``__init__.py`` - what the facility is (a docstring; nothing imported: the context-file worker
  imports the package on the way to ``run.py``);
* ``facility.py`` - the plug-in (``FACILITY``), with the facility's ``[<name>]`` defaults;
* ``source.py`` - its run source(s), built on the generic pieces of :mod:`backend.sources`;
* ``run.py`` - the worker side (runs in the user's Python: no SQLAlchemy, Kafka or Qt):
  ``open_run(request)`` gives the context file's first argument and the ``meta#`` inputs
  (:mod:`backend.ctxrunner.facilities`);
* optionally ``check.py`` (its data check) and ``demo.py`` (its demo data).

This module is the registry, the one place facilities are registered (:func:`names`,
:func:`get`): every sub-package is one, found when first asked for, so adding a facility is
adding a folder. It is also the interface a plug-in implements (:class:`Facility`, with the
:class:`SourceContext` its run sources get). Who asks a plug-in what:

* the listener (:mod:`backend.service.listener`): :meth:`Facility.run_sources`, given a
  :class:`SourceContext`;
* the worker pool and Slurm jobs (:func:`backend.processing.local.facility_settings`):
  :meth:`Facility.worker_settings` and :attr:`Facility.run_module` (``$AMORE_FACILITY``);
* the trust work and the catch-up (:mod:`backend.service.integrity`,
  :mod:`backend.service.catchup`): :meth:`Facility.runs_on_disk`, :meth:`Facility.run_dir`,
  :meth:`Facility.check_run`, :meth:`Facility.run_metadata`;
* ``amore-proto init --facility`` (:mod:`backend.store.init`): :meth:`Facility.amore_toml`,
  :attr:`Facility.context_template`;
* ``amore-proto gui <proposal>`` (:mod:`backend.locate`): :meth:`Facility.context_dir_glob`;
* ``amore-proto demo --facility`` (:mod:`amore.cli.facilitydemo`): :meth:`Facility.demo`.

Nothing of the service is imported here (the worker imports this module).
"""
from __future__ import annotations

import copy
import importlib
import pkgutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

__all__ = ["Facility", "FacilityError", "SourceContext", "get", "merged", "names", "toml_str"]


class FacilityError(KeyError):
    """No facility of that name (``facility`` in ``amore.toml``); the text lists the known ones.
    A ``KeyError`` (unknown name) that the configuration errors are also raised as."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@lru_cache(maxsize=1)
def names() -> tuple[str, ...]:
    """The facilities AMORE knows: the names of the folders beside this module, sorted."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg))


def get(name: str | None):
    """The :class:`Facility` plug-in of facility ``name`` (any case,
    surrounding spaces ignored). Raises :class:`FacilityError` for an unknown name."""
    key = str(name or "").strip().lower()
    if key not in names():
        raise FacilityError(f"facility must be one of {', '.join(names())}, not {name!r}")
    return _load(key)


@lru_cache(maxsize=None)
def _load(name: str):
    return importlib.import_module(f"{__name__}.{name}.facility").FACILITY


# ---------------------------------------------------------------------------------------------
# The plug-in interface

def toml_str(s) -> str:
    """``s`` as a TOML basic string (quoted, backslashes and quotes escaped)."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def merged(defaults: dict, override: dict | None) -> dict:
    """``defaults`` (deep-copied) with ``override`` merged in, nested tables key by key."""
    out = copy.deepcopy(defaults)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class SourceContext:
    """What a facility's run sources get from the listener (:meth:`Facility.run_sources`).

    ``config``: the context directory's :class:`backend.config.Config`; ``settings``: the
    facility's ``[<name>]`` table with its defaults (:meth:`Facility.settings`); ``proposal``:
    the database's proposal (int or identifier); ``db_id``: the database's id (consumer groups);
    ``proposal_dir``: the proposal's data directory, or None where the facility has none under
    the data root; ``broker``: the Kafka broker (``host:port``) or None; ``broker_reachable``:
    whether it answered at start-up (checked once, within ``[kafka] connect_timeout``);
    ``reporter(name)``: a :data:`backend.sources.base.ProblemCallback` that writes to the event
    log as ``name`` (what a source tells people: a malformed message, a lost connection).
    """

    config: Any
    settings: dict
    proposal: int | str
    db_id: str
    proposal_dir: Path | None
    broker: str | None
    broker_reachable: bool
    reporter: Callable[[str], Callable[[str, str, dict], None]]


class Facility:
    """One facility, as the service sees it. Subclass it in ``<name>/facility.py``.

    ``name``: the facility's name (its folder's; ``facility`` in ``amore.toml``). ``defaults``:
    its ``[<name>]`` table of ``amore.toml`` with the value of every key (the comments there are
    the settings' documentation). ``run_module``: the module the context-file worker imports to
    open a run (``open_run(request)``, see :mod:`backend.ctxrunner.facilities`); by default the
    folder's ``run.py``.
    """

    name: str = ""
    defaults: dict = {}

    @property
    def run_module(self) -> str:
        return f"backend.facilities.{self.name}.run"

    @property
    def context_template(self) -> str:
        """The :mod:`context_templates` template a new context directory starts with
        (``amore-proto init --facility``): the facility's name by default."""
        return self.name

    # -- settings ----------------------------------------------------------------------------
    def settings(self, config) -> dict:
        """The facility's ``[<name>]`` table of ``config`` with :attr:`defaults` for every key
        not set (site file, ``amore.toml``)."""
        return merged(self.defaults, config.values.get(self.name))

    def worker_settings(self, config) -> dict:
        """What the context-file worker needs beyond the metadata columns
        (``$AMORE_FACILITY``, see :func:`backend.processing.local.facility_settings`):
        ``attributo_config`` (path of AMARCORD's mapping file, relative to the context
        directory; "" = none) and ``options`` (passed to ``open_run`` as ``request.options``)."""
        return {"attributo_config": "", "options": {}}

    # -- where runs come from ----------------------------------------------------------------
    def run_sources(self, ctx: SourceContext) -> list:
        """The :class:`~backend.sources.base.RunSource` objects announcing this proposal's runs,
        not started (the listener starts them, in this order). The first one's ``name`` is what
        the status record shows as the update source ("kafka host:9092", "watcher"...). An empty
        list (logged, with what is missing) when the configuration does not allow any."""
        raise NotImplementedError(f"facility {self.name!r} names no run source")

    # -- trust work on the run's files ---------------------------------------------------------
    def runs_on_disk(self, proposal_dir: Path | None) -> set[int]:
        """Run numbers whose data is in ``proposal_dir`` (the catch-up records those the
        database does not know). None of them where a facility has no such directory."""
        return set()

    def run_dir(self, proposal_dir: Path, run: int) -> Path | None:
        """Where run ``run``'s raw data is (the data check and the metadata snapshot look
        there), or None."""
        return None

    def check_run(self, run_dir: Path, rules, max_gaps: int) -> dict | None:
        """The data consistency check of one run (a report of
        :mod:`backend.integrity.datacheck`), or None where the facility has none."""
        return None

    def run_metadata(self, run_dir: Path) -> tuple[dict, str] | None:
        """The run's metadata as read from its data, with how it was read (the run's metadata
        snapshot), or None."""
        return None

    # -- places --------------------------------------------------------------------------------
    def amore_toml(self, proposal, root: str | None = None) -> str:
        """The settings part of the ``amore.toml`` that ``amore-proto init --facility`` writes
        (after the ``facility = ...`` line): the ``[<name>]`` table with placeholders the user
        edits. ``root``: the facility's data folder given with ``--root``."""
        return ""

    def context_dir_glob(self, config, proposal) -> tuple[Path, str] | None:
        """Where the site keeps the context directory of ``proposal`` by convention: a root and
        a glob under it (the newest match with a database is opened), or None when the
        facility's proposals follow the proposal-directory convention (numbers)."""
        return None

    # -- the demo ------------------------------------------------------------------------------
    def demo(self):
        """This facility played on generated data (``amore-proto demo --facility``): an object
        with ``proposal``, ``needs_broker``, ``topics``, ``prepare(base, broker)`` and
        ``next_run(n)``, see :mod:`amore.cli.facilitydemo`; None if it has no demo."""
        return None
