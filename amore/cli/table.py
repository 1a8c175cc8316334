"""The run table in a terminal (``amore-proto show`` and the demo without a display), with rich."""
from __future__ import annotations

import json
import time
from pathlib import Path


#: What follows a stale value in the terminal table.
STALE_MARK = " *"


def render_table(d: Path, max_rows: int | None = None, width: int | None = None,
                 only: set | None = None):
    """A rich Table of the run table of context directory ``d`` (newest run first), its
    variables then its manual columns; ``only``: the ``(proposal, run)`` pairs to show.

    With ``width`` (terminal columns), only as many variable columns as fit are shown, in
    context-file order; the caption says how many were left out.
    """
    from backend.store.writer import RunDB
    from backend.vocab import StoredValue, SummaryType, VariableInfo

    db = RunDB(d)
    from backend.store.manual import ManualStore
    variables = db.get_variables() + [VariableInfo(c.name, c.title, units=c.units)
                                      for c in ManualStore(db).columns()]
    all_runs = db.runs()
    values: dict[tuple[int, int], dict] = {}
    for p, r, name, value, st, attrs in db.all_values():
        attrs = json.loads(attrs) if st == SummaryType.ERROR and attrs else None  # error_type
        values.setdefault((p, r), {})[name] = StoredValue(value, st, attrs or {})
    stale = _staleness(db)
    db.close()
    return render_rows(variables, all_runs, values, max_rows=max_rows, width=width, only=only,
                       stale=stale)


def _staleness(db):
    """The database's stale values (:mod:`backend.store.staleness`)."""
    from backend.store import reader, staleness
    con = reader.connect(db.path, uri_readonly=True)
    try:
        return staleness.stale_cells(con, context_name=staleness.context_name(db.path.parent))
    finally:
        con.close()


def render_rows(variables, all_runs: list[dict], values: dict, max_rows: int | None = None,
                width: int | None = None, only: set | None = None, stale=None):
    """A rich Table of runs (dicts with ``proposal``, ``run``, ``start_time``, ``status``; in
    run order), ``variables`` (:class:`backend.vocab.VariableInfo`, in column order) and
    ``values`` (``(proposal, run) -> {name: StoredValue}``, values as stored), newest run
    first; see :func:`render_table`. ``stale``: a
    :class:`backend.store.staleness.Staleness`; stale values are marked with
    :data:`STALE_MARK` and counted in the caption."""
    from rich.markup import escape
    from rich.table import Table

    from backend.formatting import format_value
    from backend.store.reader import decode_value

    def cell(sv) -> str:
        if sv is None:
            return ""
        return format_value(decode_value(sv.value, sv.summary_type), sv.summary_type,
                            sv.attributes)

    if only is not None:
        all_runs = [r for r in all_runs if (r["proposal"], r["run"]) in only]
    runs = all_runs[::-1][:max_rows] if max_rows else all_runs[::-1]
    fixed = [("Run", [str(r["run"]) for r in runs]),
             ("Start", [time.strftime("%H:%M:%S", time.localtime(r["start_time"]))
                        if r["start_time"] else "" for r in runs]),
             ("Status", [r["status"] for r in runs])]
    columns = []
    n_stale = 0
    for v in variables:
        header = escape((v.title or v.name).split("/")[-1] + (f" [{v.units}]" if v.units else ""))
        cells = []
        for r in runs:
            sv = values.get((r["proposal"], r["run"]), {}).get(v.name)
            text = cell(sv)
            if sv is not None and stale is not None and stale.get(r["proposal"], r["run"],
                                                                   v.name) is not None:
                text = f"{text}{STALE_MARK}"
                n_stale += 1
            cells.append(text)
        columns.append((header, cells))
    max_w = 16

    def col_width(header, cells):
        return min(max([len(header)] + [len(c) for c in cells]), max_w) + 3  # padding + border

    shown = columns
    if width:
        used = 1 + sum(col_width(h, c) for h, c in fixed)
        shown = []
        for h, c in columns:
            used += col_width(h, c)
            if used > width:
                break
            shown.append((h, c))
    hidden = len(columns) - len(shown)
    caption = [f"{hidden} more variable(s) not shown: widen the terminal or open the GUI"
               if hidden else "",
               f"{n_stale} stale value(s) marked{STALE_MARK} (run-info RUN --var NAME says "
               f"why; reprocess all recomputes them)" if n_stale else ""]
    t = Table(title=f"Proposal {all_runs[0]['proposal'] if all_runs else ''} — {len(all_runs)} runs",
              header_style="bold", caption="\n".join(c for c in caption if c) or None)
    for h, _ in fixed:
        t.add_column(h, justify="right" if h == "Run" else "left", no_wrap=True)
    for h, _ in shown:
        t.add_column(h, justify="right", no_wrap=True, overflow="ellipsis", max_width=max_w)
    for i in range(len(runs)):
        t.add_row(*[c[i] for _, c in fixed], *[c[i] for _, c in shown])
    return t
