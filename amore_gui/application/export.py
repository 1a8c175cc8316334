"""Export of the visible table to CSV, Excel and Markdown, and copying cells as TSV or Markdown
(plain Python, pandas/openpyxl; no Qt).

The exported table has the visible columns in their visual order (headers: title with units)
and the visible rows in their displayed order. Numbers stay numbers, booleans booleans; images
and sparklines are left empty; errors are written as ``error: <message>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from amore_gui.application.table_data import C_STATUS, TableData


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
    """Write the rows/columns to ``path``: Excel for ``.xlsx``, Markdown for ``.md``, CSV
    otherwise. Returns the path.

    Raises ``OSError`` if the file cannot be written.
    """
    path = Path(path)
    if path.suffix.lower() in (".md", ".markdown"):
        path.write_text(markdown_table(data, rows, cols), encoding="utf-8")
        return path
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


def _cell_text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _headers(data: TableData, cols) -> list[str]:
    return list(visible_frame(data, [], cols).columns)


def markdown_table(data: TableData, rows: Iterable[int], cols: Iterable[int]) -> str:
    """The rows/columns as a GitHub-flavoured Markdown table (for e-logs and chats): header
    row, ``---`` row (numbers right-aligned), one line per run; ``|`` and newlines escaped."""
    rows, cols = [int(r) for r in rows], list(cols)

    def esc(t: str) -> str:
        return t.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    heads = [esc(h) for h in _headers(data, cols)]
    body = [[data.value(r, c) for c in cols] for r in rows]
    numeric = [bool(body) and all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool)
                                  for row in body if row[i] is not None)
               and any(row[i] is not None for row in body) for i in range(len(cols))]
    lines = ["| " + " | ".join(heads) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for row in body:
        lines.append("| " + " | ".join(esc(_cell_text(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"


def tsv_text(data: TableData, rows: Iterable[int], cols: Iterable[int],
             header: bool = True) -> str:
    """The cells as tab-separated text (for pasting into a spreadsheet): a header line with
    titles and units if ``header``, then one line per row; tabs/newlines in text become spaces."""
    rows, cols = [int(r) for r in rows], list(cols)

    def clean(t: str) -> str:
        return t.replace("\t", " ").replace("\n", " ")
    lines = ["\t".join(clean(h) for h in _headers(data, cols))] if header else []
    for r in rows:
        lines.append("\t".join(clean(_cell_text(data.value(r, c))) for c in cols))
    return "\n".join(lines) + "\n"
