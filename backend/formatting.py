"""Plain-text rendering of table values (terminal run table; shared formatting rules with the GUI).

:func:`format_value` turns a decoded table value (:func:`backend.store.reader.decode_value`)
into the short text a scientist reads: numbers with 4-5 significant digits, booleans as ✓/✗,
sparklines as block characters, thumbnails as ``▦ image``.
"""
from __future__ import annotations

import math

import numpy as np

from backend.vocab import SummaryType

_BLOCKS = "▁▂▃▄▅▆▇█"


def format_number(v, digits: int = 4) -> str:
    """Readable number: integers as is, floats with ``digits`` significant digits (whole numbers
    from 1e4 to 1e6), scientific notation outside 1e-3..1e6. None means NaN."""
    if v is None:
        return "NaN"
    if isinstance(v, (bool, np.bool_)):
        return "✓" if v else "✗"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    f = float(v)
    if math.isnan(f) or math.isinf(f):
        return str(f)
    if f == 0:
        return "0"
    if 1e4 <= abs(f) < 1e6:
        return f"{f:.0f}"
    if 1e-3 <= abs(f) < 1e6:
        return f"{f:.{digits}g}"
    return f"{f:.{digits - 1}e}"


def sparkline_text(points: np.ndarray, width: int = 12) -> str:
    """Unicode block sparkline of ``points`` resampled to ``width`` characters."""
    pts = np.asarray(points, dtype=float)
    if pts.size == 0:
        return ""
    if pts.size > width:
        idx = np.linspace(0, pts.size, width + 1).astype(int)
        pts = np.array([np.nanmean(pts[a:b]) if b > a else np.nan for a, b in zip(idx[:-1], idx[1:])])
    finite = pts[np.isfinite(pts)]
    if finite.size == 0:
        return " " * len(pts)
    lo, hi = finite.min(), finite.max()
    span = (hi - lo) or 1.0
    return "".join(" " if not np.isfinite(p) else _BLOCKS[int((p - lo) / span * (len(_BLOCKS) - 1))]
                   for p in pts)


def format_value(value, summary_type: str | None, attributes: dict | None = None) -> str:
    """Short text of a table value (see module docstring): ``value`` as
    :func:`backend.store.reader.decode_value` gives it for ``summary_type``; ``attributes``
    the value's (an error shows its ``error_type``). Empty for no value (``summary_type``
    None)."""
    t = summary_type
    if t == SummaryType.NUMBER:
        return "NaN" if isinstance(value, float) and math.isnan(value) else format_number(value)
    if t == SummaryType.BOOL:
        return "✓" if value else "✗"
    if t in (SummaryType.STRING, SummaryType.COMPLEX, SummaryType.ARRAY):
        return str(value)
    if t == SummaryType.SPARKLINE:
        return "" if value is None else sparkline_text(value, 8)
    if t == SummaryType.THUMBNAIL:
        return "▦ image"
    if t == SummaryType.ERROR:
        return f"error: {(attributes or {}).get('error_type', '')}"
    if t == SummaryType.SKIPPED:
        return "–"
    return ""
