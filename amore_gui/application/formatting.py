"""Text of table cells and column headers (plain Python, no Qt).

Numbers use :func:`backend.formatting.format_number`, the same rules as the terminal table
(4 significant digits, whole numbers from 1e4 to 1e6, scientific notation outside 1e-3..1e6,
booleans as ✓/✗).
"""
from __future__ import annotations

import math
import time


from backend.formatting import format_number  # noqa: F401  (re-exported for the GUI)


def format_time(t: float | None, with_date: bool = True) -> str:
    """Unix seconds as local time ``YYYY-MM-DD HH:MM:SS`` (or ``HH:MM:SS``); empty if None."""
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S", time.localtime(t))


def format_time_short(t: float | None, now: float | None = None) -> str:
    """Compact local time for table cells: ``"01 Feb 08:10:53"``, with the year
    (``"01 Feb 2025 08:10"``) when it is not the current one. Empty if None."""
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return ""
    lt = time.localtime(t)
    if lt.tm_year != time.localtime(now).tm_year:
        return time.strftime("%d %b %Y %H:%M", lt)
    return time.strftime("%d %b %H:%M:%S", lt)


def split_title(title: str) -> tuple[str, str]:
    """``"XGM/Pulse energy"`` -> ``("XGM", "Pulse energy")``; no group -> ``("", title)``."""
    if "/" in title:
        group, _, name = title.rpartition("/")
        return group, name
    return "", title


def header_text(title: str, units: str | None, two_lines: bool = True) -> str:
    """Column header: the title's last part with units in brackets, the group on its own
    first line when ``two_lines`` (``"XGM\\nPulse energy [µJ]"``)."""
    group, name = split_title(title)
    label = f"{name} [{units}]" if units else name
    if group and two_lines:
        return f"{group}\n{label}"
    if group:
        return f"{group} › {label}"
    return label


def cell_colour(spec) -> str | tuple[int, ...] | None:
    """A ``Cell(background=...)`` value as a colour name or ``#rrggbb`` text (as given), or an
    RGB(A) tuple of ints 0-255 (from 0-255 or 0-1 numbers); None if it is neither."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return spec
    try:
        vals = [float(x) for x in spec]
    except (TypeError, ValueError):
        return None
    if len(vals) not in (3, 4):
        return None
    if all(v <= 1.0 for v in vals):
        vals = [v * 255 for v in vals]
    return tuple(int(max(0, min(255, v))) for v in vals)
