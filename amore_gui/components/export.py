"""Export of the visible table to CSV and Excel (plain Python, pandas/openpyxl; no Qt).

The exported table has the visible columns in their visual order (headers: title with units)
and the visible rows in their displayed order. Numbers stay numbers, booleans booleans; images
and sparklines are left empty; errors are written as ``error: <message>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from amore_gui.components.table_data import C_STATUS, TableData


def visible_frame(data: TableData, rows: Iterable[int], cols: Iterable[int]):
    """A pandas DataFrame of the given data rows and table columns."""
    import pandas as pd

    rows = [int(r) for r in rows]
    cols = [c for c in cols]
    headers, seen = [], {}
    for c in cols:
        col = data.columns[c]
        h = col.header.replace("\n", " / ") if col.variable else col.title
        if col.key == C_STATUS:
            h = "Status"
        n = seen.get(h, 0)
        seen[h] = n + 1
        headers.append(h if n == 0 else f"{h} ({n + 1})")
    table = {h: [data.value(r, c) for r in rows] for h, c in zip(headers, cols)}
    return pd.DataFrame(table, columns=headers)


def export_table(path: str | Path, data: TableData, rows: Iterable[int], cols: Iterable[int]) -> Path:
    """Write the rows/columns to ``path``: Excel for ``.xlsx``, CSV otherwise. Returns the path.

    Raises ``OSError`` if the file cannot be written.
    """
    path = Path(path)
    df = visible_frame(data, rows, cols)
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        with __import__("pandas").ExcelWriter(path, engine="openpyxl") as xw:
            df.to_excel(xw, index=False, sheet_name="Runs")
            ws = xw.sheets["Runs"]
            ws.freeze_panes = "A2"
            for i, h in enumerate(df.columns, start=1):
                width = min(40, max(8, len(str(h)) + 2))
                ws.column_dimensions[_excel_col(i)].width = width
    else:
        df.to_csv(path, index=False)
    return path


def _excel_col(i: int) -> str:
    s = ""
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s
