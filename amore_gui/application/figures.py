"""Figures of a variable for the front-ends, without Qt: what the inspection window shows for a
Plotly figure, and the picture posted to the logbook.

* :func:`read_figure` / :func:`figure_view` - a run's stored figure as a :class:`FigureView`:
  Plotly's JSON (for a front-end that shows Plotly interactively: the browser, a Qt web view)
  and a static PNG (for one that cannot; drawn by matplotlib, no browser needed);
* :func:`variable_png` - a PNG of any variable of a run (a figure, an image, a trend, the table
  thumbnail), e.g. to post it to the logbook.

Everything here reads files and may take a while: call it off the GUI thread.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np

from backend.ctxrunner.figures import figure_json, is_plotly_figure, render_png
from backend.ctxrunner.results import h5_path, read_run_value, thumbnail_png

#: Longest side (pixels) of the static pictures made here.
VIEW_PX = 800


@dataclass
class FigureView:
    """A figure to show: ``kind`` ``"plotly"`` (``json`` holds Plotly's JSON, ``png`` a static
    rendering of it) or ``"png"`` (a matplotlib figure stored as PNG: ``png`` only)."""

    kind: str
    png: bytes
    json: str | None = None


def figure_view(value, px: int = VIEW_PX) -> FigureView | None:
    """The :class:`FigureView` of a value :func:`backend.ctxrunner.results.read_run_value`
    gave (a Plotly figure, or PNG bytes of a matplotlib figure); None for anything else."""
    if is_plotly_figure(value):
        return FigureView("plotly", render_png(value, px=px), figure_json(value))
    if isinstance(value, (bytes, bytearray)) and bytes(value[:8]) == b"\x89PNG\r\n\x1a\n":
        return FigureView("png", bytes(value))
    return None


def read_figure(context_dir: str | os.PathLike, proposal, run: int, name: str,
                px: int = VIEW_PX) -> FigureView | None:
    """The stored figure of variable ``name`` of a run (see :func:`figure_view`); None when the
    variable holds no figure. Raises ``KeyError``/``FileNotFoundError`` like
    :func:`backend.ctxrunner.results.read_run_value`."""
    return figure_view(read_run_value(h5_path(context_dir, proposal, run), name), px)


def _line_png(y: np.ndarray, title: str, px: int) -> bytes:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(px / 100, px / 160), dpi=100)
    ax = fig.add_subplot()
    ax.plot(np.asarray(y, dtype=float))
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def variable_png(context_dir: str | os.PathLike, proposal, run: int, name: str,
                 title: str | None = None, px: int = VIEW_PX) -> bytes:
    """A PNG of variable ``name`` of a run: its figure (Plotly rendered statically, matplotlib
    as stored), a 2-D array as an image, a 1-D array as a line plot, else the table thumbnail.
    Raises ``ValueError`` when the variable has nothing to draw (a number, a text, an error),
    ``KeyError``/``FileNotFoundError`` when it has no stored data."""
    from backend.store import reader
    value = None
    try:
        value = read_run_value(h5_path(context_dir, proposal, run), name)
    except (KeyError, FileNotFoundError, OSError):
        pass
    view = figure_view(value, px) if value is not None else None
    if view is not None:
        return view.png
    arr = np.asarray(getattr(value, "values", value)) if value is not None else None
    if arr is not None and arr.dtype.kind in "biuf":
        if arr.ndim == 2 and min(arr.shape) > 1:
            return thumbnail_png(arr, px)
        if arr.ndim == 1 or (arr.ndim == 2 and min(arr.shape) == 1):
            return _line_png(arr.ravel(), title or name, px)
    con = reader.connect(context_dir, uri_readonly=True)
    try:
        row = con.execute(reader.THUMBNAIL_SQL, (proposal, run, name)).fetchone()
    finally:
        con.close()
    if row is not None and row[0]:
        return bytes(row[0])
    raise ValueError(f"variable {name!r} of run {run} has nothing to draw")
