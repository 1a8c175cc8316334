"""Plotly figures returned by a variable: stored as Plotly's JSON, shown as a static PNG.

A variable may return a ``plotly.graph_objects.Figure`` (as DAMNIT users do). AMORE stores it
as Plotly's own JSON (``fig.to_json()``, no pickle) in the run's HDF5 file
(:mod:`backend.ctxrunner.results`, ``amore_type = "plotly"``) and shows a PNG rendering of it in
the table. The rendering needs no browser (Plotly's own image export, kaleido, starts Chrome,
which the cluster does not have): :func:`render_png` draws the figure's traces with matplotlib.
It covers what variables return in practice - ``scatter``/``scattergl`` (lines, markers),
``bar``, ``histogram``, ``heatmap`` and ``image`` traces, the title and axis titles, log axes
- and draws other traces' names as text; the figure itself (the JSON) is kept whole for
front-ends that show Plotly interactively.

Everything here works on the figure's JSON dict, so a front-end needs no ``plotly`` package to
show the PNG; :func:`figure_from_json` gives a ``plotly.graph_objects.Figure`` where Plotly is
installed.
"""
from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np

#: Longest side (pixels) of the PNG shown in the table (as DAMNIT's Plotly thumbnails).
THUMBNAIL_PX = 300

_DTYPES = {"f8": "<f8", "f4": "<f4", "i1": "i1", "u1": "u1", "i2": "<i2", "u2": "<u2",
           "i4": "<i4", "u4": "<u4", "i8": "<i8", "u8": "<u8"}


def is_plotly_figure(value) -> bool:
    """True for a ``plotly.graph_objects.Figure`` (without importing Plotly)."""
    return type(value).__module__.startswith("plotly") and hasattr(value, "to_json") \
        and hasattr(value, "to_plotly_json")


def figure_json(fig) -> str:
    """Plotly's JSON of a figure (``fig.to_json()``; a dict is serialised as it is)."""
    if isinstance(fig, dict):
        return json.dumps(fig)
    return fig.to_json()


def figure_dict(fig_or_json) -> dict:
    """The figure as Plotly's JSON structure (``{"data": [...], "layout": {...}}``), from a
    Figure, its JSON text/bytes or a dict."""
    if isinstance(fig_or_json, dict):
        return fig_or_json
    if isinstance(fig_or_json, (bytes, bytearray, memoryview)):
        return json.loads(bytes(fig_or_json).decode("utf-8"))
    if isinstance(fig_or_json, str):
        return json.loads(fig_or_json)
    return json.loads(figure_json(fig_or_json))


def figure_from_json(text: str | bytes):
    """A ``plotly.graph_objects.Figure`` from Plotly's JSON (``plotly.io.from_json``). Raises
    ``ImportError`` without Plotly."""
    import plotly.io as pio
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8")
    return pio.from_json(text)


def decode_array(v) -> np.ndarray | None:
    """A Plotly data array as numpy: a list, or Plotly's typed array ``{"dtype": "f8", "bdata":
    base64, "shape": "3, 4"}`` (how plotly.py >= 6 writes numpy arrays). None for nothing."""
    if v is None:
        return None
    if isinstance(v, dict) and "bdata" in v:
        raw = base64.b64decode(v["bdata"])
        arr = np.frombuffer(raw, dtype=_DTYPES.get(v.get("dtype", "f8"), "<f8"))
        shape = v.get("shape")
        if shape:
            dims = [int(s) for s in str(shape).replace(" ", "").split(",") if s]
            arr = arr.reshape(dims)
        return arr
    try:
        return np.asarray(v)
    except (TypeError, ValueError):
        return None


def _text(v) -> str:
    if isinstance(v, dict):
        return str(v.get("text") or "")
    return "" if v is None else str(v)


def _numeric(a: np.ndarray | None) -> bool:
    return a is not None and a.dtype.kind in "biuf"


def _xy(trace: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
    x, y = decode_array(trace.get("x")), decode_array(trace.get("y"))
    if y is None and x is not None:
        x, y = None, x
    if y is not None and x is None:
        x = np.arange(len(y))
    if x is not None and not _numeric(x) and x.dtype.kind not in "US":
        x = x.astype(str)
    return x, y


def _color(trace: dict, key: str):
    c = (trace.get(key) or {}).get("color")
    return c if isinstance(c, str) else None


def _draw(ax, trace: dict) -> bool:
    """Draw one trace on a matplotlib Axes; False if its type is not drawn."""
    kind = trace.get("type") or "scatter"
    name = trace.get("name") or None
    if kind in ("scatter", "scattergl"):
        x, y = _xy(trace)
        if y is None:
            return True
        mode = trace.get("mode") or ("lines" if len(y) > 20 else "lines+markers")
        style = ("-" if "lines" in mode else "") + ("o" if "markers" in mode else "")
        ax.plot(x, y, style or "-", label=name, color=_color(trace, "line")
                or _color(trace, "marker"), markersize=3)
        return True
    if kind == "bar":
        x, y = _xy(trace)
        if y is None:
            return True
        if trace.get("orientation") == "h":
            ax.barh(y if not _numeric(y) else y, x, label=name)
        else:
            ax.bar(x, y, label=name, color=_color(trace, "marker"))
        return True
    if kind == "histogram":
        x = decode_array(trace.get("x"))
        if x is not None and _numeric(x):
            ax.hist(x[np.isfinite(x)], bins=int(trace.get("nbinsx") or 30), label=name)
        return True
    if kind in ("heatmap", "image"):
        src = trace.get("source")
        if isinstance(src, str) and src.startswith("data:image/"):
            from PIL import Image
            img = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
            ax.imshow(img, aspect="auto")
            return True
        z = decode_array(trace.get("z"))
        if z is None:
            return True
        if z.ndim == 3:
            ax.imshow(z.astype(np.uint8) if z.dtype.kind in "iu" else z, aspect="auto")
        else:
            z = np.asarray(z, dtype=float)
            finite = z[np.isfinite(z)]
            lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
            ax.imshow(z, aspect="auto", origin="lower" if kind == "heatmap" else "upper",
                      cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1)
        return True
    return False


def render_png(fig, px: int = THUMBNAIL_PX, dpi: float = 100.0) -> bytes:
    """A static PNG of a Plotly figure (a Figure, its JSON or dict) drawn with matplotlib, the
    longest side about ``px`` pixels; works without a browser or a display. Traces that are not
    drawn (see the module docstring) are named in the picture instead."""
    from matplotlib.figure import Figure

    d = figure_dict(fig)
    layout = d.get("layout") or {}
    w, h = float(layout.get("width") or 700), float(layout.get("height") or 450)
    scale = px / max(w, h)
    mfig = Figure(figsize=(w * scale / dpi, h * scale / dpi), dpi=dpi)
    ax = mfig.add_subplot()
    small = px < 400
    fontsize = 6 if small else 9
    skipped = []
    for trace in d.get("data") or []:
        if not _draw(ax, trace):
            skipped.append(str(trace.get("type")))
    title = _text(layout.get("title"))
    if title:
        ax.set_title(title, fontsize=fontsize + 1)
    for axis, setter, scale_setter in (("xaxis", ax.set_xlabel, ax.set_xscale),
                                       ("yaxis", ax.set_ylabel, ax.set_yscale)):
        a = layout.get(axis) or {}
        label = _text(a.get("title"))
        if label:
            setter(label, fontsize=fontsize)
        if a.get("type") == "log":
            scale_setter("log")
    if skipped:
        ax.text(0.5, 0.5, "Plotly: " + ", ".join(sorted(set(skipped))), transform=ax.transAxes,
                ha="center", va="center", fontsize=fontsize)
    ax.tick_params(labelsize=fontsize)
    if not small and any(t.get("name") for t in d.get("data") or []):
        ax.legend(fontsize=fontsize)
    mfig.tight_layout()
    buf = io.BytesIO()
    mfig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def describe(fig) -> dict[str, Any]:
    """A short description of a figure: ``title`` and the trace ``types``."""
    d = figure_dict(fig)
    return {"title": _text((d.get("layout") or {}).get("title")),
            "types": [str(t.get("type") or "scatter") for t in d.get("data") or []]}
