"""DAMNIT's table values as AMORE's (:class:`backend.vocab.StoredValue`), so that AMORE shows them
as it shows its own.

=========================================  ==================================================
DAMNIT ``run_variables`` row               AMORE table value (``summary_type``)
=========================================  ==================================================
integer, real                              ``number`` (``bool`` for a numpy bool)
text                                       ``string``
PNG blob (thumbnail of an image, a         ``thumbnail`` (the same PNG)
figure, a Plotly figure)
``trendline`` (``.npy`` of x and y)        ``sparkline`` (y, at most ``sparkline_points``)
``numpy`` (``.npy``): 0-d / 1-d / other    ``number`` or ``string`` / ``sparkline`` / ``array``
``complex`` (two little-endian doubles)    ``complex`` (text such as ``"(1+2j)"``)
``timestamp`` (Unix seconds)               ``string`` (local time, ``YYYY-MM-DD HH:MM:SS``;
                                           attribute ``timestamp`` keeps the seconds)
NULL with ``error``/``error_cls``          ``error`` (``error``, ``error_type``), or
                                           ``skipped`` (``reason``) for DAMNIT's ``Skip``
NULL otherwise                             nothing (DAMNIT's way of clearing a value)
=========================================  ==================================================

Attributes carried over: ``units``, ``bold``, ``background``; ``damnit_timestamp`` records
when DAMNIT wrote the value (``--update`` uses it to tell values still as imported from values
AMORE has written since).
"""
from __future__ import annotations

import io
import struct
import time
from typing import Any

import numpy as np

from backend.ctxrunner.results import downsample_1d, scalar_value
from backend.damnit.source import DamnitCell
from backend.vocab import StoredValue, SummaryType

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
#: Attributes of a DAMNIT value kept with the AMORE value.
KEPT_ATTRIBUTES = ("units", "bold", "background")
#: Attribute of an imported value: DAMNIT's write time (Unix seconds).
IMPORTED_AT = "damnit_timestamp"


def _number_or_text(v) -> StoredValue:
    sv = scalar_value(v)
    return sv if sv is not None else StoredValue(str(v), SummaryType.STRING.value)


def _array(arr: np.ndarray, trendline: bool, points: int) -> StoredValue:
    if trendline and arr.ndim == 2 and arr.shape[0] == 2:
        arr = arr[1]
    if arr.ndim == 0:
        return _number_or_text(arr.item())
    if arr.dtype.kind in "biuf" and arr.ndim == 1:
        return StoredValue(downsample_1d(arr, points).astype("<f4").tobytes(),
                           SummaryType.SPARKLINE.value)
    return StoredValue(f"{arr.dtype} {tuple(arr.shape)}", SummaryType.ARRAY.value,
                       {"shape": list(arr.shape), "dtype": str(arr.dtype)})


def local_time(seconds: float) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in local time (how DAMNIT shows its timestamps)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(seconds)))


def stored_value(cell: DamnitCell, sparkline_points: int = 100) -> StoredValue | None:
    """The AMORE table value of one DAMNIT value (see the module docstring); None when DAMNIT
    holds no value (NULL without an error)."""
    a = cell.attributes or {}
    v, st = cell.value, cell.summary_type
    if v is None:
        if "error" not in a:
            return None
        msg = str(a.get("error") or "error")
        if a.get("error_cls") == "Skip":
            out = StoredValue(None, SummaryType.SKIPPED.value, {"reason": msg})
        else:
            out = StoredValue(None, SummaryType.ERROR.value,
                              {"error": msg, "error_type": str(a.get("error_cls") or "")})
    elif isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        if st == "complex" and len(b) == 16:
            out = StoredValue(str(complex(*struct.unpack("<dd", b))), SummaryType.COMPLEX.value)
        elif b.startswith(PNG_MAGIC):
            out = StoredValue(b, SummaryType.THUMBNAIL.value)
        elif b.startswith(NPY_MAGIC) or st in ("numpy", "trendline"):
            try:
                arr = np.load(io.BytesIO(b), allow_pickle=False)
            except (ValueError, OSError) as e:
                out = StoredValue(None, SummaryType.ERROR.value,
                                  {"error": f"unreadable DAMNIT array: {e}",
                                   "error_type": "ImportError"})
            else:
                out = _array(arr, st == "trendline", sparkline_points)
        else:
            out = StoredValue(f"bytes ({len(b)})", SummaryType.ARRAY.value)
    elif st == "timestamp" and isinstance(v, (int, float)):
        out = StoredValue(local_time(v), SummaryType.STRING.value, {"timestamp": float(v)})
    else:
        out = _number_or_text(v)
    for k in KEPT_ATTRIBUTES:
        if a.get(k) is not None:
            out.attributes[k] = a[k]
    if cell.timestamp is not None:
        out.attributes[IMPORTED_AT] = cell.timestamp
    return out


def as_python(cell: DamnitCell) -> Any:
    """A user-editable value as Python (``bool`` stays int 0/1; ``timestamp`` -> local time
    text); None for no value."""
    v = cell.value
    if v is None:
        return None
    if cell.summary_type == "timestamp" and isinstance(v, (int, float)):
        return local_time(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return None
    return v


def damnit_table(source) -> tuple[list, list[dict], dict]:
    """DAMNIT's run table, read without changing anything, as AMORE shows its own:
    ``(variables, runs, values)`` - :class:`backend.vocab.VariableInfo` of the computed then the
    user-editable variables, runs as dicts (``proposal``, ``run``, ``start_time``, ``added_at``,
    ``status``, ``comment``) and ``(proposal, run) -> {name: StoredValue}``
    (:func:`stored_value`; user-editable values too)."""
    from backend.damnit.source import COMMENT_NAME
    from backend.vocab import VariableInfo
    with source.snapshot() as con:
        dvars = source.variables(con)
        runs = source.runs(con)
        cells = list(source.cells(con))
    values: dict[tuple, dict] = {}
    comments: dict[tuple, str] = {}
    units: dict[str, str] = {}
    for c in cells:
        if c.name == COMMENT_NAME:
            comments[(c.proposal, c.run)] = c.value
            continue
        sv = stored_value(c)
        if sv is not None:
            values.setdefault((c.proposal, c.run), {})[c.name] = sv
            if sv.attributes.get("units"):
                units.setdefault(c.name, str(sv.attributes["units"]))
    order = [v for v in dvars if not v.user_editable] + [v for v in dvars if v.user_editable]
    variables = [VariableInfo(v.name, v.title or None, v.description or None, units.get(v.name),
                              list(v.tags)) for v in order if v.name != COMMENT_NAME]
    rows = [{"proposal": p, "run": r, "start_time": st, "added_at": added,
             "status": "done" if (p, r) in values else "pending",
             "comment": comments.get((p, r))} for p, r, st, added in runs]
    return variables, rows, values
