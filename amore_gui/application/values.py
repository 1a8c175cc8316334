"""A run's full stored values, as inspection windows and per-train plots show them (no Qt).

The table holds summaries; the full result of every variable is in the run's HDF5 file
``extracted_data/p<proposal>_r<run>.h5``, written by the context-file worker and read back with
:func:`backend.ctxrunner.results.read_run_value` (the one module of the application layer that
reads those files). Every function here reads files: call it off the event loop.
"""
from __future__ import annotations

import os

import numpy as np


def read_run_value(context_dir: str | os.PathLike, proposal: int | str, run: int, name: str):
    """The full result of variable ``name`` for one run, from its HDF5 file: a numpy array /
    scalar / str, an ``xarray.DataArray`` (dims and coordinates such as ``trainId``), a dict of
    DataArrays (an ``xarray.Dataset``), PNG ``bytes`` (a figure) or None.

    Raises ``FileNotFoundError`` if the run has no file, ``KeyError`` if the variable is not in
    it, ``OSError`` if it cannot be read."""
    from backend.ctxrunner.results import h5_path, read_run_value as read
    return read(h5_path(context_dir, proposal, run), name)


def train_series(v) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(train IDs as int64, values as float64) of a 1-D per-train result (a DataArray with a
    ``trainId`` coordinate, or its one dimension's coordinate), else (None, None)."""
    dims = getattr(v, "dims", None)
    if dims is not None:
        if v.ndim != 1:
            return None, None
        dim = dims[0]
        if "trainId" in v.coords:
            tid = np.asarray(v.coords["trainId"].values)
        elif dim in v.coords:
            tid = np.asarray(v.coords[dim].values)
        else:
            return None, None
        return tid.astype(np.int64), np.asarray(v.values, float)
    return None, None


def read_per_train(context_dir: str | os.PathLike, runs, names: list[str]) -> tuple[dict, list[str]]:
    """Per-train data of variables ``names`` for ``(proposal, run)`` pairs ``runs``, matched on
    train ID: returns ``(result, problems)``, ``result[(proposal, run)] = (train_ids,
    [array per name])`` (int64 train IDs, float64 values, the trains all names have) and a
    list of texts saying which runs were left out and why (no file, no such variable, not
    per-train data). Never raises for one run's problem."""
    out, problems = {}, []
    for p, r in runs:
        series = []
        try:
            for n in names:
                tids, vals = train_series(read_run_value(context_dir, p, r, n))
                if tids is None:
                    raise ValueError(f"{n} is not per-train data")
                series.append((tids, vals))
        except (OSError, KeyError, ValueError) as e:
            problems.append(f"run {r}: {e if not isinstance(e, KeyError) else 'no ' + str(e)}")
            continue
        common = series[0][0]
        for t, _ in series[1:]:
            common = np.intersect1d(common, t)
        arrays = []
        for t, vals in series:
            _, idx, _ = np.intersect1d(t, common, return_indices=True)
            arrays.append(np.asarray(vals, float)[idx])
        out[(p, r)] = (common, arrays)
    return out, problems


def axis_values(x: np.ndarray, dim: str) -> tuple[np.ndarray, str]:
    """x values and axis label for 1-D data along ``dim`` where there are no trains: times
    (datetime64, e.g. an ESS NXlog) become seconds (float) since the first point; SwissFEL
    pulse IDs (``pulse_id``/``pulseId``) keep their integers ("Pulse ID")."""
    if x.dtype.kind == "M" and len(x):
        first = x[0]
        secs = (x - first) / np.timedelta64(1, "s")
        return secs.astype(float), f"{dim} [s since {np.datetime_as_string(first, unit='s')}]"
    if dim.replace("_", "").lower() == "pulseid":
        return x, "Pulse ID"
    return x, dim
