"""A run's full stored values, as inspection windows and per-train plots show them (no Qt).

The table holds summaries; the full result of every variable is in the run's HDF5 file
``extracted_data/p<proposal>_r<run>.h5``, written by the context-file worker and read back with
:func:`backend.ctxrunner.results.read_run_value` (the one module of the application layer that
reads those files). The functions that read files (:func:`read_run_value`,
:func:`read_per_train`) block: call them off the event loop. :func:`describe_value` turns a
value into plain JSON-able data for front-ends that draw in another process (the browser): a
line against train ID, time or pulse ID, an image with its colour levels, a stored figure, a
Plotly figure as itself, text, one entry per Dataset variable.
"""
from __future__ import annotations

import base64
import json
import math
import os

import numpy as np

from amore_gui.application.formatting import format_number

#: Most points of a line sent to a front-end (longer lines are decimated, min/max kept).
MAX_LINE_POINTS = 20_000
#: Largest side of an image sent to a front-end (larger images are binned).
MAX_IMAGE_SIDE = 1024


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


def line_axis(v, n: int) -> tuple[np.ndarray, str]:
    """x values and label of 1-D data ``v`` with ``n`` points: its train IDs (``Train ID``),
    else its dimension's coordinate (see :func:`axis_values`), else the index (``Index``)."""
    dims = getattr(v, "dims", None)
    if dims is not None:
        if "trainId" in v.coords:
            return np.asarray(v.coords["trainId"].values), "Train ID"
        if dims[0] in v.coords:
            return axis_values(np.asarray(v.coords[dims[0]].values), str(dims[0]))
    return np.arange(n), "Index"


def _finite_list(a: np.ndarray) -> list:
    """Floats as a JSON-able list (NaN/inf -> None)."""
    a = np.asarray(a, float)
    out = a.tolist()
    if not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a))
        for i in bad.tolist():
            out[i] = None
    return out


def _plotly_figure(v) -> dict | None:
    """A Plotly figure's JSON (dict with ``data``), if ``v`` is one (a ``Figure``, as
    :func:`read_run_value` gives it, or its JSON text or dict)."""
    if hasattr(v, "to_json") and hasattr(v, "to_plotly_json"):     # plotly.graph_objects.Figure
        v = v.to_json()                 # Plotly's own encoder (numpy arrays -> lists)
    if isinstance(v, (bytes, bytearray)) and v[:1] == b"{":
        v = bytes(v).decode("utf-8", "replace")
    if isinstance(v, str) and v.lstrip().startswith("{"):
        try:
            v = json.loads(v)
        except ValueError:
            return None
    if isinstance(v, dict) and isinstance(v.get("data"), list) and \
            isinstance(v.get("layout", {}), dict):
        return {"data": v["data"], "layout": v.get("layout", {})}
    return None


def _decimate(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points of a line: min and max of each bucket, in x order."""
    if len(y) <= n:
        return x, y
    buckets = n // 2
    edges = np.linspace(0, len(y), buckets + 1).astype(int)
    keep = []
    for a, b in zip(edges[:-1], edges[1:]):
        seg = y[a:b]
        if not len(seg) or not np.isfinite(seg).any():
            keep.append(a)
            continue
        i, j = a + int(np.nanargmin(seg)), a + int(np.nanargmax(seg))
        keep += sorted({i, j})
    idx = np.array(keep)
    return x[idx], y[idx]


def _bin_image(a: np.ndarray, side: int) -> tuple[np.ndarray, int]:
    """An image binned (mean) so that neither side exceeds ``side``; the bin factor."""
    f = max(1, math.ceil(max(a.shape) / side))
    if f == 1:
        return a, 1
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    with np.errstate(all="ignore"):
        return np.nanmean(a[:h, :w].reshape(h // f, f, w // f, f), axis=(1, 3)), f


def describe_value(v, title: str = "", units: str | None = None) -> dict:
    """What to draw for a result read by :func:`read_run_value`, as JSON-able data.

    Returns a dict with ``kind`` and, by kind:

    * ``line``: ``x``, ``y`` (lists; None for NaN), ``xlabel`` (``Train ID``, ``Pulse ID``, a
      time axis in seconds, a coordinate or ``Index``), ``ylabel``, ``integer_x`` (bool),
      ``info`` (points, mean, min, max);
    * ``image``: ``z`` (rows of floats), ``zmin``/``zmax`` (the 1st and 99.5th percentiles),
      ``shape`` (before binning), ``binned`` (factor), ``frames`` (3-D: the first frame is
      drawn), ``info``;
    * ``figure``: ``png`` (base64 PNG of a stored matplotlib figure);
    * ``plotly``: ``figure`` (``{"data", "layout"}``, drawn as itself);
    * ``text``: ``text`` (a scalar formatted as the table does, with units; strings);
    * ``tabs``: ``tabs`` (name -> description) for a Dataset.
    """
    fig = _plotly_figure(v)
    if fig is not None:
        return {"kind": "plotly", "figure": fig}
    if isinstance(v, dict):
        return {"kind": "tabs", "tabs": {str(k): describe_value(sub, f"{title} {k}", units)
                                         for k, sub in v.items()}}
    if isinstance(v, (bytes, bytearray)):
        return {"kind": "figure", "png": base64.b64encode(bytes(v)).decode("ascii")}
    if v is None:
        return {"kind": "text", "text": "(no value)", "info": ""}
    arr = np.asarray(getattr(v, "values", v))
    if arr.ndim == 0:
        item = arr.item()
        if isinstance(item, (float, int, np.floating, np.integer)) and not isinstance(item, bool):
            return {"kind": "text", "text": format_number(item) + (f" {units}" if units else ""),
                    "info": f"Value: {item!r}"}
        return {"kind": "text", "text": str(item), "info": ""}
    if arr.dtype.kind in "USO":
        return {"kind": "text", "text": "\n".join(map(str, arr.ravel()[:10000])),
                "info": f"{arr.size} strings"}
    if np.iscomplexobj(arr):
        arr = np.abs(arr)
    ylabel = (title.split("/")[-1] if title else "") + (f" [{units}]" if units else "")
    if arr.ndim == 1:
        x, xlabel = line_axis(v, len(arr))
        if x.dtype.kind not in "iuf":
            x, xlabel = np.arange(len(arr)), "Index"
        y = arr.astype(float)
        with np.errstate(all="ignore"):
            info = (f"{len(arr)} points · mean {format_number(float(np.nanmean(y)))}"
                    f" · min {format_number(float(np.nanmin(y)))}"
                    f" · max {format_number(float(np.nanmax(y)))}") if len(y) else "no points"
        xs, ys = _decimate(np.asarray(x), y, MAX_LINE_POINTS)
        return {"kind": "line", "x": _finite_list(xs) if xs.dtype.kind == "f" else xs.tolist(),
                "y": _finite_list(ys), "xlabel": xlabel, "ylabel": ylabel,
                "integer_x": xlabel in ("Train ID", "Pulse ID") or x.dtype.kind in "iu",
                "info": info}
    if arr.ndim in (2, 3):
        frames = arr.shape[0] if arr.ndim == 3 else 1
        img = (arr[0] if arr.ndim == 3 else arr).astype(float)
        data = arr.astype(float)
        finite = data[np.isfinite(data)]
        levels = np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0)
        z, f = _bin_image(img, MAX_IMAGE_SIDE)
        info = (f"{' × '.join(map(str, arr.shape))} {arr.dtype} · levels "
                f"{format_number(float(levels[0]))} – {format_number(float(levels[1]))}"
                + (f" · shown binned {f} × {f}" if f > 1 else "")
                + (f" · first of {frames} frames" if arr.ndim == 3 else ""))
        return {"kind": "image", "z": [_finite_list(r) for r in z], "zmin": float(levels[0]),
                "zmax": float(levels[1]), "shape": list(arr.shape), "binned": f,
                "frames": frames, "info": info}
    return {"kind": "text", "text": f"{arr.dtype} array of shape {arr.shape}",
            "info": "Arrays with more than 3 dimensions are not drawn."}
