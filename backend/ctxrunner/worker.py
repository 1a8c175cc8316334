"""The context-file worker: a separate process that evaluates ``context.py`` on runs.

Started by :class:`backend.processing.local.WorkerPool` as ``<context_python> -m backend.ctxrunner.worker DIR``.
It stays alive between runs (imports and the context file are loaded once), so a run costs the
variables' own time plus opening its files, not a Python start-up.

Protocol: one JSON object per line. Requests arrive on stdin; replies go to the original stdout,
which is reserved for them (anything user code prints goes to stderr, which the pool logs).
Nothing is pickled.

Requests and replies:

``{"op": "load", "manual_columns": [str]}``
    -> ``{"ok": true, "variables": [VariableInfo fields...], "mtime": float,
    "inputs": {name: [var# names it takes, variables and manual columns]},
    "graph": {name: {"cluster": bool, "data": str, "transient": bool, "deps": [str]}}}`` or
    ``{"ok": false, "kind": "context", "error": str}``.
``{"op": "run", "proposal": int|str, "run": int, "data": "raw"|"proc"|"all", "names": [str]|null,
"params": {}, "facility_run": {...}|null, "manual_columns": [str], "manual": {name: value},
"only": [str]|null, "reuse": [str]|null, "split": int, "start_time_known": bool}``
    (``facility_run``: what the run source recorded for the run, None if nothing; how a run is
    opened is the facility's: its worker module, named in ``$AMORE_FACILITY`` (JSON written by
    the backend, with the metadata columns), see :mod:`backend.ctxrunner.facilities`;
    ``manual_columns``: names of the manual
    columns, ``manual``: this run's values of them; ``only``: report and store just these
    variables, not the inputs computed for them -- a Slurm job's; ``reuse``: inputs to read
    back from the run's HDF5 file rather than compute (their stored values are up to date:
    ``reprocess all``); ``split``: how many processes
    the run may use, this one and forked copies on idle cores, see
    :mod:`backend.ctxrunner.forked`; default 1; ``start_time_known``: the backend has the
    run's start time, which a request with ``only`` then need not find: its reply's
    ``start_time`` may be null)
    -> ``{"ok": true, "values": {name: StoredValue.to_json()}, "start_time": float|null,
    "timings": {"open", "variables", "store": s, "processes": int}, "log": str}`` (``log``:
    what the variables printed, and tracebacks) or
    ``{"ok": false, "kind": "context"|"missing_run"|"error", "error": str}``.
``{"op": "exit"}``
    ends the process.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from backend.contextdir import ContextDir


class Worker:
    """Holds the loaded context file of one context directory and processes requests."""

    def __init__(self, context_dir: Path, thumbnail_px: int = 150, sparkline_points: int = 100):
        self.context_dir = Path(context_dir)
        self.ctx_path = ContextDir(self.context_dir).context_file
        self.thumbnail_px = thumbnail_px
        self.sparkline_points = sparkline_points
        self.ctx = None
        self.ctx_error: str | None = None
        self.ctx_mtime: float | None = None
        self.manual: frozenset = frozenset()  # manual column names the context may read
        self.memory_limit_mb = 0.0  # address-space limit (RLIMIT_AS) of this process, MB
        self.mymdc = None  # backend.ctxrunner.mymdc.MyMdcClient when a metadata service is configured
        #: ``$AMORE_FACILITY``: {"facility", "run_module", "columns", "attributo_config",
        #: "options"} (see backend.processing.local.facility_settings)
        self.facility_conf: dict = {}
        self.columns: list = []
        #: name -> seconds the variable took on the last run (shares runs out, see split_plan)
        self.seconds: dict[str, float] = {}
        #: ``[processing] watch_modules`` (``$AMORE_WATCH_MODULES``, JSON): modules whose code
        #: counts as the context file's (followed in the digests, imported anew when changed)
        self.watch_modules: tuple[str, ...] = tuple(
            json.loads(os.environ.get("AMORE_WATCH_MODULES") or "[]"))
        #: the provenance of the loaded file: name -> CodeInfo, SHA-256 of its text, the
        #: watched modules' files (path -> modification time) and their SHA-256
        self.codes: dict = {}
        self.context_sha: str | None = None
        self.watched: dict[str, float] = {}
        self.watched_sha: dict[str, str | None] = {}
        self._reported_codes: set[str] = set()
        #: where this process runs, for the values' provenance
        self.where = f"local worker, PID {os.getpid()}"
        #: whether a newly loaded context file is frozen for the garbage collector with the
        #: imports (:func:`freeze_long_lived`; the worker process sets it)
        self.freeze_loaded = False

    def opener(self):
        """The facility's worker module (``run_module`` of ``$AMORE_FACILITY``): its
        ``open_run(request)`` opens a run, see :mod:`backend.ctxrunner.facilities`. Imported
        once (the first call warms up what it imports). Raises ``RuntimeError`` when the backend
        named none."""
        import importlib
        name = self.facility_conf.get("run_module")
        if not name:
            raise RuntimeError("no facility: $AMORE_FACILITY names no run_module (the worker is "
                               "started by the backend, which sets it)")
        return importlib.import_module(name)

    def _load_columns(self) -> str | None:
        """Parse the metadata column specs; returns an error text or None."""
        from backend.ctxrunner.facilities import column_specs, read_attributo_config
        conf = self.facility_conf
        try:
            attributi = None
            ac = conf.get("attributo_config")
            if ac:
                path = Path(ac) if Path(ac).is_absolute() else self.context_dir / ac
                if path.exists() or conf.get("attributo_config_required"):
                    attributi = read_attributo_config(path)
            self.columns = column_specs(conf.get("columns") or {}, attributi)
        except ValueError as e:
            self.columns = []
            return f"metadata columns: {e}"
        return None

    def _watched_changed(self) -> bool:
        """Whether a file of a watched module changed since the context file was loaded."""
        for path, mtime in self.watched.items():
            try:
                if os.stat(path).st_mtime != mtime:
                    return True
            except OSError:
                return True
        return False

    def _ensure_context(self, manual=None) -> None:
        from backend.ctxrunner.context import ContextFile, ContextFileError
        manual_changed = manual is not None and frozenset(manual) != self.manual
        if manual is not None:
            self.manual = frozenset(manual)
        try:
            mtime = self.ctx_path.stat().st_mtime
        except FileNotFoundError:
            self.ctx, self.ctx_error, self.ctx_mtime = None, f"No context file at {self.ctx_path}", None
            return
        watched_changed = self._watched_changed()
        if mtime == self.ctx_mtime and not manual_changed and not watched_changed:
            return
        self.ctx_mtime = mtime
        if watched_changed or self.watch_modules:
            from backend.ctxrunner.provenance import forget_modules
            forget_modules(self.watch_modules)   # imported anew by the context file
        from backend.ctxrunner.provenance import file_sha
        self.context_sha = file_sha(self.ctx_path)   # the file the digests are of
        try:
            try:
                code = self.ctx_path.read_text()
            except OSError as e:
                raise ContextFileError(f"Cannot read context file {self.ctx_path}: {e}") from None
            self.ctx = ContextFile.from_str(code, str(self.ctx_path), manual=self.manual)
            self.ctx_error = None
        except ContextFileError as e:
            self.ctx, self.ctx_error = None, str(e)
            self.codes = {}
            return
        if self.freeze_loaded:
            freeze_long_lived()   # the new context file's objects are long-lived too
        col_error = self._load_columns()
        if col_error:
            self.ctx, self.ctx_error = None, col_error
            return
        self._digest()

    def _digest(self) -> None:
        """The provenance of the context file just loaded: its variables' code digests and the
        watched modules' files. A failure here costs the provenance
        (said on stderr), never the values."""
        from backend.ctxrunner.context import CONTEXT_MODULE_NAME
        from backend.ctxrunner.provenance import code_digests, file_sha, watched_files
        self.watched = watched_files(self.watch_modules)
        self.watched_sha = {p: file_sha(p) for p in self.watched}
        try:
            self.codes = code_digests(self.ctx, self.columns, self.watch_modules,
                                      CONTEXT_MODULE_NAME)
        except Exception as e:  # noqa: BLE001 - never lose values for their provenance
            print(f"AMORE: the code digests of {self.ctx_path.name} could not be computed "
                  f"({type(e).__name__}: {e}); values are stored without them", file=sys.stderr)
            self.codes = {}

    def load(self, req: dict) -> dict:
        self._ensure_context(req.get("manual_columns"))
        if self.ctx is None:
            return {"ok": False, "kind": "context", "error": self.ctx_error}
        variables = [{"name": c.name, "title": c.title or c.name,
                      "description": f"from {c.source()} ({c.type})", "units": c.units,
                      "tags": ["metadata"], "data": "raw", "summary": None}
                     for c in self.columns if c.name not in self.ctx.variables]
        variables += [{"name": v.name, "title": v.title, "description": v.description,
                       "units": v.units, "tags": v.tags, "data": v.data, "summary": v.summary}
                      for v in self.ctx.variables.values() if not v.transient]
        inputs = {n: [i.key for i in v.inputs if i.kind == "var"]
                  for n, v in self.ctx.variables.items()}
        graph = {v.name: {"cluster": v.cluster, "data": v.data, "transient": v.transient,
                          "deps": self.ctx.deps_of(v.name)}
                 for v in self.ctx.variables.values()}
        from backend.ctxrunner.provenance import DIGEST_VERSION
        self._reported_codes.update(c.digest for c in self.codes.values())
        return {"ok": True, "variables": variables, "mtime": self.ctx_mtime, "inputs": inputs,
                "graph": graph, "codes": {n: c.to_json() for n, c in self.codes.items()},
                "context": {"sha": self.context_sha, "watched": self.watched_sha,
                            "digest_version": DIGEST_VERSION}}

    def run(self, req: dict) -> dict:
        """One run request: open the run the facility's way, compute its metadata columns and
        the variables, and reply (see the module docstring)."""
        from backend.ctxrunner.facilities import RunNotReady, RunRequest, compute_columns
        t0 = time.perf_counter()
        started = time.time()
        self._ensure_context(req.get("manual_columns"))
        if self.ctx is None:
            return {"ok": False, "kind": "context", "error": self.ctx_error}
        run = int(req["run"])
        request = RunRequest(req["proposal"], run, req.get("data", "all"),
                             req.get("facility_run"), self.facility_conf.get("options") or {},
                             self._processes(req),
                             start_time=not (req.get("start_time_known") and req.get("only")))
        try:
            opened = self.opener().open_run(request)
        except RunNotReady as e:
            return {"ok": False, "kind": "missing_run", "error": str(e)}
        t_open = time.perf_counter()
        from backend.ctxrunner.provenance import data_identity
        data_ids = {kind: data_identity(pats) for kind, pats in opened.data_locations.items()}
        mymdc = None
        answers: dict = {}   # the metadata service's answers, for the values' provenance
        if self.mymdc is not None:
            def mymdc(key, _c=self.mymdc, _p=opened.proposal):
                answers[key] = _c.lookup(key, _p, run)
                return answers[key]
        try:
            columns = {}
            todo = [c for c in self.columns if c.name not in self.ctx.variables]
            if todo:
                columns = compute_columns(todo, opened.metadata(), opened.h5file,
                                          opened.metadata_where)
            ev = self._evaluate(
                opened.obj, req, run_number=run, proposal=opened.proposal,
                proposal_path=opened.proposal_path, names=req.get("names"), data=opened.data,
                params=req.get("params") or {}, meta=opened.meta, mymdc=mymdc,
                manual=req.get("manual") or {},
                given=self.stored_inputs(req.get("reuse"), opened.proposal, run))
        finally:
            opened.close()
        damaged = None
        if opened.damaged is not None and any(v.summary_type == "error"
                                              for v in ev.values.values()):
            damaged = opened.damaged()  # which files could not be read (extra-data skips them)
        reply = self._finish(ev, opened.data, opened.start_time, t0, t_open, columns,
                             req.get("only"), damaged=damaged)
        reply["provenance"] = self._provenance(reply, req, opened, data_ids, answers, started,
                                               time.perf_counter() - t0)
        return reply

    def _provenance(self, reply: dict, req: dict, opened, data_ids: dict, answers: dict,
                    started: float, seconds: float) -> dict:
        """The provenance of the values in ``reply`` (JSON, ``version`` 1): ``run`` (where,
        when, how long, AMORE's and Python's versions, the context file's SHA-256, the data's
        identity per kind, the ``meta#`` values), ``values`` (name -> ``{"code": digest,
        "inputs": {...} or None}``) and ``codes`` (digest -> ``{"name", "parts"}`` of the
        digests this process has not reported before)."""
        import socket

        from backend.ctxrunner.provenance import (_jsonable, amore_version, python_version,
                                                  value_inputs)
        manual = req.get("manual") or {}
        params = req.get("params") or {}
        values, codes = {}, {}
        for name in reply["values"]:
            info = self.codes.get(name)
            if info is None:
                continue
            values[name] = {"code": info.digest,
                            "inputs": value_inputs(info, manual, params, answers)}
            if info.digest not in self._reported_codes:
                codes[info.digest] = {"name": name, "parts": info.parts}
        self._reported_codes.update(codes)
        meta = {k: _jsonable(v) for k, v in (opened.meta or {}).items() if k != "metadata"}
        return {"version": 1, "values": values, "codes": codes, "run": {
            "started_at": started, "seconds": round(seconds, 4), "host": socket.gethostname(),
            "worker": self.where, "amore_version": amore_version(), "python": python_version(),
            "context": self.context_sha, "data": data_ids,
            "details": {"meta": meta, "opened": opened.data,
                        "processes": (reply.get("timings") or {}).get("processes", 1)}}}

    #: ``amore_type`` of the stored results an input may be taken from (read back as they
    #: were returned: numbers, text, arrays, xarray objects); others are computed again.
    REUSABLE = ("scalar", "ndarray", "string", "DataArray", "Dataset")

    def stored_inputs(self, names, proposal, run: int) -> dict:
        """The values of the variables ``names`` (a request's ``reuse``: inputs of what it
        computes whose stored values are up to date, as ``amore-proto reprocess all`` found)
        read back from the run's HDF5 file, so they are not computed again; those that cannot
        be read (or are of a kind not read back as returned) are left out, and computed."""
        if not names:
            return {}
        from backend.ctxrunner.results import h5_path, read_run_value
        path = h5_path(self.context_dir, proposal, run)
        out = {}
        try:
            import h5py
            with h5py.File(path, "r") as f:
                kinds = {n: f[n].attrs.get("amore_type") for n in names if n in f}
        except OSError:
            return {}
        for name, kind in kinds.items():
            if kind not in self.REUSABLE or name not in self.ctx.variables:
                continue
            try:
                value = read_run_value(path, name)
            except (KeyError, OSError, ValueError):
                continue
            if kind == "scalar":
                value = value.item() if hasattr(value, "item") else value
            elif kind == "Dataset":
                import xarray as xr
                value = xr.Dataset(value)
            out[name] = value
        return out

    @staticmethod
    def _processes(req: dict) -> int:
        """Processes this run may use (``"split"`` of the request: 1 + the backend's idle
        workers); 1 where the platform cannot fork."""
        from backend.ctxrunner.forked import can_fork
        try:
            n = int(req.get("split") or 1)
        except (TypeError, ValueError):
            n = 1
        return max(1, n) if can_fork() else 1

    def split_plan(self, data: str, names, processes: int) -> list[list[str]] | None:
        """How to share the run's variables between ``processes`` (this one and forked copies):
        groups of variable names (the first for this process), each closed under the
        dependencies (a variable, what it takes through ``var#`` and what takes it stay
        together), balanced by the seconds the variables took on the last run this worker
        computed (a variable new to it counts as 0 s). None when one process is best:
        ``processes`` < 2, no timings yet (the first run after the worker started), or the
        smaller share would save less than :data:`MIN_SPLIT_SECONDS`."""
        if processes < 2:
            return None
        chosen = self.ctx.select(data, names)
        if len(chosen) < 2 or not any(n in self.seconds for n in chosen):
            return None
        # connected groups of the dependency graph (undirected), in the context file's order
        linked: dict[str, set[str]] = {n: set() for n in chosen}
        for n in chosen:
            for d in self.ctx.deps_of(n):
                if d in linked:
                    linked[n].add(d)
                    linked[d].add(n)
        group_of: dict[str, int] = {}
        groups: list[list[str]] = []
        for name in chosen:
            if name in group_of:
                continue
            group_of[name] = len(groups)
            members, todo = [], [name]
            while todo:
                n = todo.pop()
                members.append(n)
                for m in linked[n]:
                    if m not in group_of:
                        group_of[m] = group_of[name]
                        todo.append(m)
            groups.append(members)
        processes = min(processes, len(groups))
        cost = [sum(self.seconds.get(n, 0.0) for n in g) for g in groups]
        shares: list[list[int]] = [[] for _ in range(processes)]
        load = [0.0] * processes
        for i in sorted(range(len(groups)), key=lambda i: -cost[i]):  # longest first
            k = load.index(min(load))
            shares[k].append(i)
            load[k] += cost[i]
        shares = [s for s, ld in zip(shares, load) if s]
        if len(shares) < 2 or sorted(load)[-2] < MIN_SPLIT_SECONDS:
            return None
        # this process takes the heaviest share: it also has the metadata columns to do
        shares.sort(key=lambda s: -sum(cost[i] for i in s))
        order = {n: i for i, n in enumerate(chosen)}
        return [sorted((n for i in s for n in groups[i]), key=order.get) for s in shares]

    def _evaluate(self, run_obj, req: dict, **kw) -> "_Evaluated":
        """The variables of one run computed, converted to table values and their data stored
        in the run's HDF5 file; shared with forked copies of this process (on the backend's
        idle cores, see :mod:`backend.ctxrunner.forked`) when :meth:`split_plan` says it pays.
        ``kw``: :meth:`ContextFile.execute`'s arguments. A copy that dies or fails marks its
        own variables as errors; the others are kept."""
        from backend.ctxrunner.forked import ForkedPart, ForkedPartFailed
        from backend.vocab import StoredValue, SummaryType
        only = req.get("only")
        plan = self.split_plan(kw["data"], kw.get("names"), self._processes(req))
        copies = []
        if plan:
            for names in plan[1:]:
                try:
                    copies.append((names, ForkedPart(self._evaluate_json, run_obj, only,
                                                     dict(kw, names=names))))
                except OSError as e:  # no memory or process slots for a copy: do it here
                    print(f"AMORE: cannot share the run with a second process ({e})",
                          file=sys.stderr)
                    plan[0] += names
            kw = dict(kw, names=plan[0])
        ev = self._evaluate_here(run_obj, only, kw)
        ev.processes = 1 + len(copies)
        for names, copy in copies:
            try:
                part = copy.result()
                ev.values.update({n: StoredValue.from_json(v) for n, v in part["values"].items()})
                ev.log_parts += part["log"]
                ev.storage_error = ev.storage_error or part["storage_error"]
                ev.store_seconds = max(ev.store_seconds, part["store_seconds"])
            except (ForkedPartFailed, KeyError, TypeError, ValueError) as e:
                reason = e.reason if isinstance(e, ForkedPartFailed) else f"sent a bad answer ({e})"
                msg = f"the second process computing it (with {', '.join(names)}) {reason}"
                ev.log_parts.append(f"--- {msg}\n")
                for name in names:
                    if self._reported(name, only):
                        ev.values[name] = StoredValue(None, SummaryType.ERROR.value,
                                                      {"error": msg, "error_type": "WorkerDied"})
        for name, v in ev.values.items():
            if "seconds" in v.attributes:
                self.seconds[name] = v.attributes["seconds"]
        return ev

    def _reported(self, name: str, only) -> bool:
        """Whether a computed variable is a result of this request (not a transient one, not an
        input computed again for a Slurm job's ``only`` variables)."""
        return not self.ctx.variables[name].transient and (only is None or name in only)

    def _evaluate_json(self, run_obj, only, kw: dict) -> dict:
        """:meth:`_evaluate_here` as JSON, for a forked copy's answer."""
        ev = self._evaluate_here(run_obj, only, kw)
        return {"values": {n: v.to_json() for n, v in ev.values.items()}, "log": ev.log_parts,
                "storage_error": ev.storage_error, "store_seconds": ev.store_seconds}

    def _evaluate_here(self, run_obj, only, kw: dict) -> "_Evaluated":
        """The variables ``kw["names"]`` (all if None) computed in this process, as table values,
        their data written to the run's HDF5 file."""
        from backend.ctxrunner.results import h5_path, table_value, write_run_file
        from backend.vocab import StoredValue, SummaryType
        results, log_parts = self._execute_logged(run_obj, **kw)
        only = set(only) if only is not None else None
        values: dict[str, StoredValue] = {}
        to_store = {}
        for name, res in results.items():
            var = self.ctx.variables[name]
            if not self._reported(name, only):
                continue
            if res.skipped is not None:
                values[name] = StoredValue(None, SummaryType.SKIPPED.value, {"reason": res.skipped})
                continue
            if not res.ok:
                attrs = {"error": res.error, "error_type": res.error_type}
                if res.error_type == "MemoryError":
                    limit = f" of {self.memory_limit_mb:.0f} MB ([processing] " \
                            f"worker_memory_mb)" if self.memory_limit_mb else ""
                    attrs["error"] = f"out of memory: the variable needed more than the " \
                                     f"worker's limit{limit}" + (f" ({res.error})" if res.error else "")
                if res.line:
                    attrs["line"] = res.line
                if res.traceback:
                    attrs["traceback"] = res.traceback[-4000:]
                values[name] = StoredValue(None, SummaryType.ERROR.value, attrs)
                continue
            try:
                values[name] = table_value(res.value, summary=var.summary, units=var.units,
                                           thumbnail_px=self.thumbnail_px,
                                           sparkline_points=self.sparkline_points)
                to_store[name] = (res.value, var.units)
            except Exception as e:
                values[name] = StoredValue(None, SummaryType.ERROR.value, {"error": str(e),
                                                           "error_type": type(e).__name__})
            values[name].attributes["seconds"] = round(res.seconds, 4)
        t_store = time.perf_counter()
        proposal, run = kw["proposal"], kw["run_number"]
        path = h5_path(self.context_dir, proposal, run)
        h5_error = None
        try:
            store_errors = write_run_file(path, to_store) if to_store else {}
        except OSError as e:  # e.g. a full disk: the table values are still worth keeping
            reason = os.strerror(e.errno) if e.errno else (str(e).splitlines() or [""])[0]
            h5_error = f"could not write {path}: {reason}"
            store_errors = {}
            for name in to_store:
                values[name].attributes["storage_error"] = h5_error
        for name, err in store_errors.items():
            # the table value is still good: keep it, say why the full data is missing
            values[name].attributes["storage_error"] = f"could not be stored in {path.name}: {err}"
        return _Evaluated(values, log_parts, h5_error, time.perf_counter() - t_store)

    def _execute_logged(self, run_obj, **kw) -> tuple[dict, list[str]]:
        """:meth:`ContextFile.execute` with what the variables print captured (and passed on
        to stderr): ``(results, log parts)``, the parts being the printed text and one entry
        per failed variable (its traceback, else its error)."""
        import contextlib
        captured = _Tee(sys.stderr)
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            results = self.ctx.execute(run_obj, **kw)
        log_parts = [captured.getvalue()] if captured.getvalue() else []
        for name, res in results.items():
            if res.traceback:
                log_parts.append(f"--- {name} failed:\n{res.traceback}")
            elif res.error:
                log_parts.append(f"--- {name} failed: {res.error_type}: {res.error}\n")
        return results, log_parts

    def _finish(self, ev: "_Evaluated", data, start_time, t0, t_open, columns, only=None,
                damaged=None) -> dict:
        """The reply: the variables' table values (``ev``, see :meth:`_evaluate`) plus metadata
        ``columns`` (those in ``only`` if given: a Slurm job's variables), the run's ``log``.
        ``damaged``: ``{file name: reason}`` of the run's unreadable files (the facility's
        ``OpenedRun.damaged``), named in the error of every variable that failed."""
        values = {n: v for n, v in columns.items() if only is None or n in set(only)}
        values.update(ev.values)
        if damaged and any(v.summary_type == "error" for v in values.values()):
            # Say which files of the run could not be read (extra-data skips them silently).
            from backend.ctxrunner.facilities import describe_damage
            note = f" (this run has damaged or unreadable files: {describe_damage(damaged)})"
            for v in values.values():
                if v.summary_type == "error":
                    v.attributes["error"] = (v.attributes.get("error") or "") + note
                    v.attributes["damaged_files"] = damaged
        t_end = time.perf_counter()
        return {"ok": True, "values": {n: v.to_json() for n, v in values.items()},
                "start_time": start_time, "data": data, "storage_error": ev.storage_error,
                "log": "".join(p if p.endswith("\n") else p + "\n" for p in ev.log_parts)[-200_000:],
                "timings": {"open": t_open - t0,
                            "variables": t_end - t_open - ev.store_seconds,
                            "store": ev.store_seconds, "processes": ev.processes}}


#: Seconds the smaller share of a run's variables must have taken on the last run before the
#: share goes to a forked copy (:meth:`Worker.split_plan`): forking, a second HDF5 write and
#: the JSON answer cost ~10 ms.
MIN_SPLIT_SECONDS = 0.05


@dataclass
class _Evaluated:
    """What :meth:`Worker._evaluate` made of one run: ``values`` (name -> StoredValue, the
    variables' table values), ``log_parts`` (what they printed, tracebacks), ``storage_error``
    (why the run's HDF5 file could not be written, or None), ``store_seconds`` (writing it),
    ``processes`` (how many computed them: this one and its forked copies)."""

    values: dict
    log_parts: list
    storage_error: str | None
    store_seconds: float
    processes: int = 1


class _Tee:
    """A text stream that keeps what is written (for the run's log) and passes it on. Only a
    bounded excerpt is kept: the first and the last :data:`KEEP` characters (megabytes of
    output must not fill the worker's memory or the database)."""

    KEEP = 64 * 1024

    def __init__(self, passthrough):
        import collections
        self._head: list[str] = []
        self._head_len = 0
        self._tail: collections.deque = collections.deque()
        self._tail_len = 0
        self._dropped = 0
        self._pass = passthrough

    def write(self, s: str) -> int:
        if self._head_len < self.KEEP:
            part = s[:self.KEEP - self._head_len]
            self._head.append(part)
            self._head_len += len(part)
            rest = s[len(part):]
        else:
            rest = s
        if rest:
            self._tail.append(rest)
            self._tail_len += len(rest)
            while self._tail_len - len(self._tail[0]) >= self.KEEP:
                self._dropped += len(self._tail[0])
                self._tail_len -= len(self._tail.popleft())
        try:
            self._pass.write(s)
        except (OSError, ValueError):
            pass
        return len(s)

    def flush(self) -> None:
        try:
            self._pass.flush()
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        return False

    def getvalue(self) -> str:
        tail = "".join(self._tail)
        if self._tail_len > self.KEEP:
            self._dropped += self._tail_len - self.KEEP
            tail, self._tail_len = tail[-self.KEEP:], self.KEEP
            self._tail = __import__("collections").deque([tail])
        cut = f"\n[... {self._dropped} characters of output not kept ...]\n" if self._dropped else ""
        return "".join(self._head) + cut + tail


def kill_leftover_processes(keep: set[int] | frozenset = frozenset()) -> int:
    """Kill every process the context file started and left behind (forked children, spawned
    programs, daemons that detached with setsid: as a child subreaper the worker inherits those),
    except the PIDs in ``keep`` (processes that existed before the run, e.g. a pool the context
    file starts when it is loaded), and reap them. Returns how many were killed."""
    from backend.procs import kill_descendants
    n = kill_descendants(keep)
    if n:
        print(f"AMORE: killed {n} process(es) the context file left running", file=sys.stderr)
    return n


def apply_memory_limit(megabytes: float) -> None:
    """Limit this process's address space (RLIMIT_AS) to ``megabytes`` MB (<= 0: no limit).
    Allocations beyond it raise MemoryError in the variable that makes them."""
    if megabytes and megabytes > 0:
        import resource
        limit = int(megabytes * 2**20)
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def freeze_long_lived() -> None:
    """Leave what exists now (imports, the loaded context file: what lives as long as the
    worker) out of the garbage collector's later passes (``gc.freeze``; earlier frozen objects
    are looked at once more, so a replaced context file's cycles are still collected). The
    collection after each run (:func:`_release_memory`) then looks at the run's objects only:
    1 ms instead of 80 ms per run for the benchmark context file (130,000 objects), and the
    worker takes its next run that much sooner. Forked copies share those objects' pages
    undisturbed."""
    import gc
    gc.unfreeze()
    gc.collect()
    gc.freeze()


#: Modules a run may import (a worker started without warm-up) before what exists is frozen
#: again (:func:`freeze_long_lived`), so that the collection after each run stays quick.
REFREEZE_MODULES = 20


def _release_memory() -> None:
    """After a run: close figures and collect garbage; then, if more freed heap memory is left
    than :func:`backend.ctxrunner.memory.keep_memory` allows, hand it all back to the system (glibc keeps it otherwise,
    and a long-lived worker's RSS would only grow)."""
    import gc
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
    gc.collect()
    from backend.ctxrunner.memory import hand_back
    hand_back()


def main(argv=None):
    # Nothing the context file starts outlives this worker, even if it crashes or is killed:
    # from here on this is the child of a keeper (backend.procs.keep_descendants), and a child
    # subreaper itself, so what the context file leaves behind can be cleaned up after each run
    # (and is when the keeper goes away).
    import gc
    # No automatic collection while the imports run (what they leave is collected once, by
    # freeze_long_lived below): numpy, h5py and extra-data cost 60 collections otherwise,
    # 12-23 ms of the worker's start, and a reprocess waits for its workers' start.
    gc.disable()
    from backend.procs import descendants, keep_descendants
    keep_descendants("context worker")
    argv = sys.argv[1:] if argv is None else argv
    context_dir = Path(argv[0]) if argv else Path.cwd()
    # Reserve the real stdout for protocol replies; user prints go to stderr.
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ.setdefault("MPLBACKEND", "Agg")  # matplotlib itself is imported when needed
    px = int(os.environ.get("AMORE_THUMBNAIL_PX", "150"))
    npts = int(os.environ.get("AMORE_SPARKLINE_POINTS", "100"))
    # This process runs context files only: damnit_ctx, damnit.context, ... are AMORE's for good
    # (also for imports inside variables' functions, even if the real DAMNIT is installed).
    from backend.ctxrunner.context import install_compat_modules
    install_compat_modules()
    worker = Worker(context_dir, px, npts)
    worker.facility_conf = json.loads(os.environ.get("AMORE_FACILITY") or "{}")
    # The API key is for this process only: not for the user's code, its prints and the
    # programs it starts.
    mymdc_conf = json.loads(os.environ.pop("AMORE_MYMDC", None) or "{}")
    from backend.ctxrunner.mymdc import metadata_client
    worker.mymdc = metadata_client(mymdc_conf)  # [mymdc] url, else extra-proposal (as DAMNIT)
    # The facility's worker module (extra-data at European XFEL) is imported before the first
    # request: every run needs it. Unless $AMORE_WARM_UP is 0 (a reprocess's workers, which
    # load only what their variables use: a few cheap values need little of it), so is what
    # the first run would load on first use (xarray/pandas, pint, matplotlib: ~0.9 s of CPU),
    # so that the first run after the backend starts is as quick as the others.
    try:
        worker.opener()
    except Exception as e:  # the first run request says so again, as its error
        print(f"AMORE: cannot load the facility's worker module: {e}", file=sys.stderr)
    import h5py  # noqa: F401
    if os.environ.get("AMORE_WARM_UP", "1") != "0":
        import xarray  # noqa: F401
        from backend.ctxrunner import results
        results.warm_up(px, npts)  # and what converting results loads on first use
    worker.memory_limit_mb = float(os.environ.get("AMORE_MEMORY_LIMIT_MB") or 0)
    from backend.ctxrunner.memory import keep_memory
    keep_memory(float(os.environ.get("AMORE_KEEP_MEMORY_MB") or 0))
    apply_memory_limit(worker.memory_limit_mb)
    freeze_long_lived()
    gc.enable()
    worker.freeze_loaded = True
    frozen_modules = len(sys.modules)
    before: set[int] = set()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = {}
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "exit":
                kill_leftover_processes()
                break
            elif op == "load":
                out = worker.load(req)
            elif op == "run":
                worker._ensure_context()   # what loading the file starts is kept
                before = set(descendants(os.getpid()))
                out = worker.run(req)
            else:
                out = {"ok": False, "kind": "error", "error": f"unknown op {op!r}"}
        except Exception as e:
            out = {"ok": False, "kind": "error",
                   "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        out["id"] = req.get("id") if isinstance(req, dict) else None
        reply.write(json.dumps(out, default=str) + "\n")
        reply.flush()
        if isinstance(req, dict) and req.get("op") == "run":
            kill_leftover_processes(keep=before)
        _release_memory()  # after the reply: not on the run's critical path
        if len(sys.modules) - frozen_modules >= REFREEZE_MODULES:
            freeze_long_lived()   # what the run imported lives as long as the worker too
            frozen_modules = len(sys.modules)


if __name__ == "__main__":
    main()
