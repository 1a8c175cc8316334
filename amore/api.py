"""Reading AMORE's results from Python (a notebook, a script), shaped like DAMNIT's API::

    import amore.api

    db = amore.api.open(2832)              # a proposal number, or a context directory
    df = db.table()                        # pandas.DataFrame, one row per run
    db.variables()                         # name, title, units, tags, description
    energy = db[12, "xgm_energy"].read()   # the whole stored value of run 12
    db[12, "xgm_energy"].summary()         # the value shown in the table

Everything is read-only: the database is opened with SQLite's ``mode=ro`` and never written,
so reading is safe while the backend processes runs (each call reads one consistent snapshot;
run files are replaced whole by the backend, so a read never sees a half-written one).

Where values come from: the run table is ``runs.sqlite`` of the context directory (tables
described in :mod:`backend.store.schema`); the whole value of a variable for one run is in
``extracted_data/p<proposal>_r<run>.h5`` (layout in :mod:`backend.ctxrunner.results`).

Errors: unknown runs and variables raise :class:`KeyError` (the message names the run or
variable and what exists); a missing database raises :class:`FileNotFoundError`; an unknown
proposal :class:`LocateError`.
"""
from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from backend.contextdir import ContextDir
from backend.locate import LocateError, resolve
from backend.store import reader as sql
from backend.store.identify import read_snapshot
from backend.store.reader import decode_value
from backend.store.staleness import json_or
from backend.vocab import SummaryType, normalize_proposal

if TYPE_CHECKING:
    import pandas

__all__ = ["open", "AmoreDB", "RunVariables", "VariableData", "AmoreKeyError", "LocateError"]

#: The fixed columns of :meth:`AmoreDB.table`, before the variables.
FIXED_COLUMNS = ("proposal", "run", "start_time", "comment")

#: What :meth:`AmoreDB.table` shows for summaries that are not a number or a text.
THUMBNAIL_PLACEHOLDER = "<thumbnail>"
SPARKLINE_PLACEHOLDER = "<sparkline>"


class AmoreKeyError(KeyError):
    """A run or variable is not there (a :class:`KeyError`; its text is the plain message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def open(location: int | str | os.PathLike) -> "AmoreDB":  # noqa: A001 - the API's name
    """Open the results of a proposal for reading.

    ``location``: a proposal number (``2832``, ``"2832"``, ``"p002832"``; its context
    directory ``<proposal dir>/usr/Shared/amore-proto``, or an AMORE directory made earlier in
    ``usr/Shared/amore``, is found under the data root as ``amore-proto gui 2832`` finds it:
    :func:`backend.locate.resolve`), at ESRF and SwissFEL a proposal identifier
    (``"mx2532"``, ``"p18493"``; found where the site's facility keeps context directories),
    a context directory, a proposal directory, or a ``runs.sqlite`` file.

    Raises :class:`LocateError` for an unknown proposal or for a directory whose database is
    not AMORE's (DAMNIT's: the message names the ``amore-proto import-damnit`` command; the
    database is not touched), :class:`FileNotFoundError` if the directory has no
    ``runs.sqlite``.
    """
    return AmoreDB(location)


def _table_value(value: Any, summary_type: str) -> Any:
    """The value :meth:`AmoreDB.table` shows (placeholders for pictures)."""
    if summary_type == SummaryType.THUMBNAIL:
        return THUMBNAIL_PLACEHOLDER
    if summary_type == SummaryType.SPARKLINE:
        return SPARKLINE_PLACEHOLDER
    return decode_value(value, summary_type)


def _proposal_column(proposals: list) -> np.ndarray:
    """int64 for proposal numbers (European XFEL, ESS); ``object`` (str) when any proposal is
    an identifier such as ``"mx2532"`` (ESRF, SwissFEL)."""
    if all(isinstance(p, int) for p in proposals):
        return np.array(proposals, dtype=np.int64)
    return np.array(proposals, dtype=object)


def _describe_runs(runs: list[int]) -> str:
    if not runs:
        return "it has no runs yet"
    if len(runs) <= 8:
        return "it has runs " + ", ".join(map(str, runs))
    return f"it has {len(runs)} runs, {runs[0]} to {runs[-1]}"


class AmoreDB:
    """The results of one context directory (one proposal), read-only.

    Create it with :func:`open`. Index it like DAMNIT's ``Damnit`` object:

    * ``db[run]`` -> :class:`RunVariables` (the variables of one run);
    * ``db[run, name]`` or ``db[proposal, run, name]`` -> :class:`VariableData`; ``name`` is a
      variable name or, if unambiguous, its title.

    Attributes: ``context_dir`` (:class:`pathlib.Path`), ``proposal`` (int, or str for
    identifiers such as ``"mx2532"``; None if the database does not know it).
    """

    def __init__(self, location: int | str | os.PathLike):
        target = resolve(location)
        self.context_dir: Path = Path(target.context_dir)
        self._paths = ContextDir(self.context_dir)
        self.db_file: Path = self._paths.db_file
        if not self.db_file.is_file():
            if target.damnit_dir is not None:
                raise FileNotFoundError(
                    f"No AMORE database at {self.db_file}; {target.damnit_dir} holds DAMNIT's "
                    f"(AMORE does not change it). To take this beamtime over: amore-proto "
                    f"import-damnit {target.damnit_dir} {self.context_dir}")
            raise FileNotFoundError(f"No AMORE database at {self.db_file} (is {self.context_dir} "
                                    f"the context directory of a proposal AMORE processes?)")
        with self._snapshot() as con:
            if sql.schema_revision(con) is None:
                raise FileNotFoundError(f"{self.db_file} is not an AMORE database "
                                        f"(it has no schema revision)")
            meta = dict(con.execute(sql.METADATA_SQL))
        p = meta.get("proposal")
        self.proposal: int | str | None = (normalize_proposal(p) if p is not None
                                           else target.proposal)

    # --- plumbing ---------------------------------------------------------------------------
    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection inside one read transaction (a consistent snapshot)."""
        with read_snapshot(sql.connect(self.db_file, uri_readonly=True)) as con:
            yield con

    def __enter__(self) -> "AmoreDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (every call opens and closes its own connection); here so that
        ``with amore.api.open(...) as db:`` reads naturally."""

    def __repr__(self) -> str:
        return f"<AmoreDB p{self.proposal} at {self.context_dir}>"

    # --- runs and variables -------------------------------------------------------------
    def _run_keys(self, con) -> list[tuple[int | str, int]]:
        return [(p, r) for p, r, *_ in con.execute(sql.RUNS_SQL)]

    def runs(self) -> list[int]:
        """Run numbers in the table (ascending, ``int``), of every run AMORE has heard of
        (processed or not). For a database holding several proposals: of all of them."""
        with self._snapshot() as con:
            return sorted({r for _p, r in self._run_keys(con)})

    def _variable_rows(self, con) -> list[dict]:
        rows = []
        for r in con.execute(sql.VARIABLES_SQL):
            d = dict(zip(sql.VARIABLE_FIELDS, r))
            d["tags"] = list(json_or(d["tags"], []))
            d["title"] = d["title"] or d["name"]
            rows.append(d)
        return rows

    def variables(self) -> "pandas.DataFrame":
        """The context file's variables, in definition order: a ``pandas.DataFrame`` with
        columns ``name`` (str), ``title`` (str; the name if no title was given), ``units``
        (str or None), ``tags`` (list of str) and ``description`` (str or None: the
        variable's docstring)."""
        import pandas as pd
        with self._snapshot() as con:
            rows = self._variable_rows(con)
        cols = ["name", "title", "units", "tags", "description"]
        return pd.DataFrame([[r[c] for c in cols] for r in rows], columns=cols, dtype=object)

    def comments(self) -> "pandas.DataFrame":
        """The standalone timestamped comments (the GUI's comment log), oldest first: a
        ``pandas.DataFrame`` with columns ``timestamp`` (``datetime64[ns, UTC]``), ``proposal``
        and ``run`` (may be missing: a comment about no particular run), ``author`` and
        ``text``. Each run's own editable comment is the ``comment`` column of :meth:`table`.
        """
        import pandas as pd
        with self._snapshot() as con:
            rows = [dict(zip(sql.COMMENT_FIELDS, r)) for r in con.execute(sql.COMMENTS_SQL)]
        cols = ["timestamp", "proposal", "run", "author", "text"]
        df = pd.DataFrame([[r[c] for c in cols] for r in rows], columns=cols, dtype=object)
        df["timestamp"] = pd.to_datetime(df["timestamp"].astype(float), unit="s",
                                         utc=True).astype("datetime64[ns, UTC]")
        return df

    def table(self, with_titles: bool = False) -> "pandas.DataFrame":
        """The run table as a ``pandas.DataFrame``, one row per run (ordered by proposal and
        run; a default ``RangeIndex``).

        Columns: ``proposal`` (int64; ``object`` holding str where proposals are identifiers
        such as ``"mx2532"``) and ``run`` (int64), ``start_time`` (``datetime64[ns, UTC]``,
        the first train's time; NaT if not known yet), ``comment`` (str or None: the run's
        editable comment), then one column per variable in the context file's order (then
        variables that have values but are no longer defined), named by variable name, or by
        title with ``with_titles=True`` (``"title (name)"`` where two variables share a title).

        Values are the table summaries, as :meth:`VariableData.summary` gives them, except
        pictures: numbers (float64 columns when every value is a number, NaN where missing),
        ``bool``, ``complex`` and ``str`` values, the text ``"<thumbnail>"`` for an image and
        ``"<sparkline>"`` for a per-train trend (read them with ``db[run, name].summary()``
        or ``.read()``), the description (such as ``"float64 (4, 5, 6)"``) of arrays without
        a summary, and None (NaN in number columns) for errors, skipped variables and runs not
        processed yet. Columns holding only numbers are float64 (int64 if all are integers);
        the others have ``object`` dtype.
        """
        import pandas as pd
        with self._snapshot() as con:
            runs = con.execute(sql.RUNS_SQL).fetchall()
            variables = self._variable_rows(con)
            value_names = {n for (n,) in con.execute(sql.VALUE_NAMES_SQL)}
            numbers = con.execute(sql.NUMBER_VALUES_SQL).fetchall()
            others = con.execute(sql.OTHER_VALUES_SQL).fetchall()
        nrun = len(runs)
        row_of = {(p, r): i for i, (p, r, *_) in enumerate(runs)}
        names = [v["name"] for v in variables]
        names += sorted(value_names - set(names) - set(FIXED_COLUMNS))
        col_of = {n: j for j, n in enumerate(names)}
        # numbers: one float64 block, filled in one numpy assignment
        num = np.full((nrun, len(names)), np.nan)
        has_num = np.zeros((nrun, len(names)), bool)
        all_int = np.ones(len(names), bool)
        if numbers:
            n = len(numbers)
            ps, rs, ns, vs = zip(*numbers)
            ii = np.fromiter(map(row_of.get, zip(ps, rs), repeat(-1)), np.intp, n)
            jj = np.fromiter(map(col_of.get, ns, repeat(-1)), np.intp, n)
            try:
                vals = np.array(vs, np.float64)      # NULL (a NaN result) -> NaN
            except (TypeError, ValueError):          # text in a number cell
                vals = np.array([decode_value(v, SummaryType.NUMBER) for v in vs], np.float64)
            ok = (ii >= 0) & (jj >= 0)
            num[ii[ok], jj[ok]] = vals[ok]
            has_num[ii[ok], jj[ok]] = True
            not_int = np.fromiter((type(v) is not int for v in vs), bool, n) & ok
            all_int[np.unique(jj[not_int])] = False
        # everything else, decoded one by one (strings, flags, errors, pictures: fewer cells)
        objs: dict[int, dict[int, Any]] = {}
        for p, r, name, st, value in others:
            i, j = row_of.get((p, r)), col_of.get(name)
            if i is None or j is None:
                continue
            v = _table_value(value, st)
            if v is not None:
                objs.setdefault(j, {})[i] = v
        data: dict[str, Any] = {
            "proposal": _proposal_column([t[0] for t in runs]),
            "run": np.array([t[1] for t in runs], dtype=np.int64),
            "start_time": pd.to_datetime(pd.Series([t[2] for t in runs], dtype="float64"),
                                         unit="s", utc=True).astype("datetime64[ns, UTC]"),
            "comment": pd.Series([t[6] for t in runs], dtype=object),
        }
        for j, n in enumerate(names):
            if j not in objs:
                if all_int[j] and has_num[:, j].all() and nrun:
                    data[n] = num[:, j].astype(np.int64)
                else:
                    data[n] = num[:, j]
                continue
            col = [None] * nrun
            for i in np.flatnonzero(has_num[:, j]):
                v = num[i, j]
                col[i] = int(v) if all_int[j] else float(v)
            for i, v in objs[j].items():
                col[i] = v
            data[n] = pd.Series(col, dtype=object)
        df = pd.DataFrame(data)
        if with_titles:
            title = {v["name"]: v["title"] for v in variables}
            titles = [title.get(n, n) for n in names]
            dup = {t for t in titles if titles.count(t) > 1 or t in FIXED_COLUMNS}
            df = df.rename(columns={n: (f"{t} ({n})" if t in dup else t)
                                    for n, t in zip(names, titles)})
        return df

    def stale(self) -> "pandas.DataFrame":
        """The stale values: made by code, manual values or data that changed since they were
        computed (:mod:`backend.store.staleness`; ``amore-proto reprocess all`` recomputes
        them). A ``pandas.DataFrame`` with one row per stale value, ordered by proposal, run
        and name: ``proposal``, ``run`` (int64), ``name`` (str), ``reasons`` (list of str
        among ``"code"``, ``"manual"``, ``"data"``, ``"unknown"``) and ``why`` (str, for
        people, e.g. ``"threshold changed in context.py"``). Empty when nothing is stale (or
        the context file was never loaded by AMORE since provenance is recorded)."""
        import pandas as pd
        from backend.store import staleness
        with self._snapshot() as con:
            st = staleness.stale_cells(con, context_name=self._paths.context_file.name)
            keys = [(p, r, n) for p, r, n in con.execute(
                "SELECT proposal, run, name FROM run_values")] if st.bulk else list(st.cells)
        rows = []
        for p, r, n in sorted(keys, key=lambda k: (str(k[0]), k[1], k[2])):
            cell = st.get(p, r, n)
            if cell is None:
                continue
            rows.append([p, r, n, [name for bit, name in staleness.REASON_NAMES.items()
                                   if cell.reasons & bit], cell.text])
        df = pd.DataFrame(rows, columns=["proposal", "run", "name", "reasons", "why"])
        df["proposal"] = _proposal_column([x[0] for x in rows]) if rows else df["proposal"]
        df["run"] = df["run"].astype(np.int64)
        return df

    # --- indexing --------------------------------------------------------------------------
    def _resolve_run(self, con, proposal: int | str | None, run: int) -> tuple[int | str, int]:
        keys = self._run_keys(con)
        if proposal is None:
            cands = [k for k in keys if k[1] == run]
            mine = [k for k in cands if k[0] == self.proposal]
            cands = mine or cands
        else:
            cands = [k for k in keys if k == (proposal, run)]
        if len(cands) != 1:
            what = f"Run {run}" if proposal is None else f"Run {run} of proposal {proposal}"
            if not cands:
                runs = sorted({r for p, r in keys if proposal is None or p == proposal})
                raise AmoreKeyError(f"{what} is not in the AMORE table of {self.context_dir} "
                                    f"({_describe_runs(runs)})")
            raise AmoreKeyError(f"{what} exists for several proposals "
                                f"({', '.join(str(p) for p, _ in cands)}): "
                                f"use db[proposal, run, name]")
        return cands[0]

    def _resolve_name(self, con, name: str) -> tuple[str, dict | None]:
        """(variable name, its definition or None for a name that only has values)."""
        variables = self._variable_rows(con)
        by_name = {v["name"]: v for v in variables}
        if name in by_name:
            return name, by_name[name]
        by_title = [v for v in variables if v["title"] == name]
        if len(by_title) == 1:
            return by_title[0]["name"], by_title[0]
        if len(by_title) > 1:
            raise AmoreKeyError(f"Title {name!r} is shared by variables "
                                f"{', '.join(v['name'] for v in by_title)}: use a name")
        # a variable no longer defined, with stored values
        if con.execute(sql.NAME_HAS_VALUES_SQL, (name,)).fetchone()[0]:
            return name, None
        raise AmoreKeyError(f"No variable {name!r} in {self.context_dir} (variables: "
                            f"{', '.join(by_name) or 'none'})")

    def __getitem__(self, key) -> "RunVariables | VariableData":
        proposal = name = None
        if isinstance(key, tuple):
            if len(key) == 2:
                run, name = key
            elif len(key) == 3:
                proposal, run, name = key
            else:
                raise TypeError(f"db[...] takes run, (run, name) or (proposal, run, name), not {key!r}")
        else:
            run = key
        if not isinstance(run, (int, np.integer)) or isinstance(run, bool):
            raise TypeError(f"A run number is an int, not {run!r}")
        with self._snapshot() as con:
            try:
                proposal = None if proposal is None else normalize_proposal(proposal)
            except ValueError as e:
                raise TypeError(str(e)) from None
            p, r = self._resolve_run(con, proposal, int(run))
            rv = RunVariables(self, p, r)
            if name is None:
                return rv
            return rv._get(con, name)

    def __contains__(self, run) -> bool:
        return run in self.runs()


class RunVariables:
    """The variables of one run (``db[run]``): index it by variable name or title to get a
    :class:`VariableData`; :meth:`keys` lists the names with a value for this run."""

    def __init__(self, db: AmoreDB, proposal: int | str, run: int):
        self._db = db
        self.proposal = proposal
        self.run = run

    @property
    def file(self) -> Path:
        """The run's HDF5 file (``extracted_data/p<proposal>_r<run>.h5``; may not exist)."""
        return self._db._paths.run_file(self.proposal, self.run)

    def keys(self) -> list[str]:
        """Names of the variables with a stored value (even an error) for this run, in the
        context file's order."""
        with self._db._snapshot() as con:
            have = {name for name, *_ in con.execute(sql.RUN_VALUES_SQL, (self.proposal, self.run))}
            order = [v["name"] for v in self._db._variable_rows(con)]
        return [n for n in order if n in have] + sorted(have - set(order))

    def _get(self, con, name: str) -> "VariableData":
        if not isinstance(name, str):
            raise TypeError(f"A variable is named by a str, not {name!r}")
        vname, info = self._db._resolve_name(con, name)
        row = con.execute(sql.VALUE_SQL, (self.proposal, self.run, vname)).fetchone()
        if row is None:
            st = con.execute(sql.RUN_INFO_SQL, (self.proposal, self.run)).fetchone()
            status = st[2] if st else "unknown"
            raise AmoreKeyError(f"Variable {vname!r} has no value for run {self.run} of "
                                f"proposal {self.proposal} (run status: {status})")
        value, summary_type, attrs = row
        return VariableData(self._db, self.proposal, self.run, vname, info, value, summary_type,
                            json_or(attrs, {}))

    def __getitem__(self, name: str) -> "VariableData":
        with self._db._snapshot() as con:
            return self._get(con, name)

    def _ipython_key_completions_(self):
        return self.keys()

    def __repr__(self) -> str:
        return f"<RunVariables p{self.proposal} r{self.run}>"


class VariableData:
    """One variable of one run (``db[run, name]``): :meth:`read` gives its whole value from
    the run's HDF5 file, :meth:`summary` the value shown in the table.

    Attributes: ``name``, ``title``, ``units`` (str or None), ``proposal``, ``run``,
    ``summary_type`` (a :class:`backend.vocab.SummaryType` value), ``attributes`` (dict stored
    with the table value: units, shape, dtype, error...), ``error`` (the error message if the
    variable failed or was skipped for this run, else None). :meth:`provenance` says how the
    value was made, :attr:`stale` whether what made it changed since.
    """

    def __init__(self, db: AmoreDB, proposal: int | str, run: int, name: str, info: dict | None,
                 value: Any, summary_type: str, attributes: dict):
        self._db = db
        self.proposal = proposal
        self.run = run
        self.name = name
        self.title: str = (info or {}).get("title") or name
        self.units: str | None = attributes.get("units") or (info or {}).get("units")
        self.summary_type = summary_type
        self.attributes = attributes
        self._value = value
        self.error: str | None = None
        if summary_type == SummaryType.ERROR:
            self.error = attributes.get("error") or "error"
        elif summary_type == SummaryType.SKIPPED:
            self.error = "skipped" + (f": {attributes['reason']}" if attributes.get("reason") else "")

    @property
    def file(self) -> Path:
        """The run's HDF5 file, where :meth:`read` finds the whole value."""
        return self._db._paths.run_file(self.proposal, self.run)

    def summary(self) -> Any:
        """The table value, decoded (:func:`backend.store.reader.decode_value`):

        * a number (``int`` or ``float``; NaN where the result was NaN), a ``bool``, a
          ``complex`` or a ``str``;
        * a thumbnail: PNG ``bytes``; a sparkline: a 1-D ``numpy.ndarray`` of float32
          (at most a few hundred points, downsampled from the per-train values);
        * an array without summary: its description, such as ``"float64 (4, 5, 6)"``;
        * None for an error, a skipped variable or a result of None (see :attr:`error`).
        """
        return decode_value(self._value, self.summary_type)

    def read(self) -> Any:
        """The whole stored value, as the context file's function returned it:

        * a ``numpy.ndarray`` (shape and dtype as returned) or numpy scalar / ``str``;
        * an ``xarray.DataArray`` (dims, coordinates and name kept) or ``xarray.Dataset``;
        * PNG ``bytes`` for a matplotlib figure; None for a result of None;
        * a ``plotly.graph_objects.Figure`` for a Plotly figure (rebuilt from the Plotly JSON
          stored in the run's file; ``fig.to_json()`` gives that JSON back);
        * for values imported from DAMNIT (``amore-proto import-damnit``), what DAMNIT's own
          API gives: the same types, plus ``pandas`` objects and, for a matplotlib figure,
          its RGBA image as a ``uint8`` array of shape (height, width, 4).

        Raises :class:`KeyError` (:class:`AmoreKeyError`) naming the run and variable if there
        is no stored value: the variable failed or was skipped for this run (the message gives
        the error), or the run file is missing.
        """
        from backend.ctxrunner.results import read_run_value
        where = f"variable {self.name!r} of run {self.run} (proposal {self.proposal})"
        if self.error is not None:
            raise AmoreKeyError(f"No data for {where}: {self.error}")
        path = self.file
        if not path.is_file():
            raise AmoreKeyError(f"No data for {where}: {path} does not exist")
        try:
            value = read_run_value(path, self.name)
        except KeyError:
            raise AmoreKeyError(f"No data for {where} in {path}") from None
        if isinstance(value, dict):     # a Dataset: its data variables
            import xarray as xr
            value = xr.Dataset(value)
        return value

    def provenance(self) -> dict:
        """How this value was made, read from ``runs.sqlite`` (:mod:`backend.store.staleness`):
        a dict with ``origin`` (``"amore"``, ``"damnit"`` for a value imported from DAMNIT,
        ``"manual"``, ``"built-in"`` or ``"unknown"``), ``code`` (``digest`` of the code that
        made it, its ``parts`` -- function, arguments, module-level names it reads, its
        ``var#`` inputs' digests -- and the ``current`` digest of the context file; None if not
        known), ``inputs`` (manual, ``param#`` and ``mymdc#`` values it was given),
        ``evaluation`` (``started_at`` and ``seconds``, ``host``, ``worker`` -- ``"local
        worker, PID N"`` or ``"Slurm job J"`` --, ``amore_version``, ``python``, ``context``:
        SHA-256 of the context file, ``data``: per kind ``raw``/``proc`` the ``files``,
        ``bytes``, ``mtime`` and ``digest`` of the run's data it read, ``meta``), ``stored_at``
        and ``seconds`` (Unix seconds, seconds), ``stale`` (bool) and ``reasons`` (list of str,
        why it is stale)."""
        from backend.store import staleness
        with self._db._snapshot() as con:
            info = staleness.provenance(con, self.proposal, self.run, self.name,
                                        self._db._paths.context_file.name)
        if info is None:
            raise AmoreKeyError(f"Variable {self.name!r} has no value for run {self.run} any more")
        return info

    @property
    def stale(self) -> bool:
        """True if the code, manual values or data that made this value changed since
        (:meth:`provenance` says why); ``amore-proto reprocess all`` recomputes it."""
        return bool(self.provenance()["stale"])

    def __repr__(self) -> str:
        return f"<VariableData {self.name!r} p{self.proposal} r{self.run} ({self.summary_type})>"

