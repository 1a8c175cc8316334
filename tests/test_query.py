"""The query language on real tables filled by the real backend (tests/gui_fixtures.py) plus manual
columns set from the command line: comparisons with units, ranges, text matching, has/failed,
titles, parse errors pointing at the position, and ``amore-proto show --where``."""
import subprocess

import numpy as np
import pytest

from amore_gui.application import dbread
from amore_gui.application.query import ExpressionFilter, Query, QueryError, filter_rows
from amore_gui.application.table_data import RowView
from backend.store.writer import RunDB

from tests.conftest import amore_cmd
from tests.gui_fixtures import GUI_PROPOSAL


def cli(ctx, *args, check=True):
    p = subprocess.run(amore_cmd(*args), capture_output=True, text=True, timeout=60,
                       env={**__import__("os").environ, "COLUMNS": "200"})
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture
def table(gui_ctx):
    ctx = gui_ctx["ctx"]
    cli(ctx, "column", "add", "crystal", "--type", "choice", "--choices", "lysozyme,buffer",
        "-d", ctx)
    cli(ctx, "column", "add", "distance", "--type", "number", "--units", "mm",
        "--title", "Detector distance", "-d", ctx)
    cli(ctx, "column", "add", "good", "--type", "boolean", "-d", ctx)
    cli(ctx, "set", "1,2", "crystal", "lysozyme", "-d", ctx)
    cli(ctx, "set", "3", "crystal", "buffer", "-d", ctx)
    cli(ctx, "set", "1-4", "distance", "15 mm", "-d", ctx)
    cli(ctx, "set", "3-4", "distance", "2.5 cm", "-d", ctx)
    cli(ctx, "set", "2,4", "good", "yes", "-d", ctx)
    cli(ctx, "set", "1", "good", "no", "-d", ctx)
    data = dbread.load_table(ctx).data
    return ctx, data


def runs(data, expr):
    return sorted(int(data.run[r]) for r in filter_rows(data, expr))


def check_manual_columns_are_table_columns_with_units(ctx, data):
    col = data.columns[data.col_of("distance")]
    assert col.units == "mm" and col.title == "Detector distance"
    assert col.manual["type"] == "number"
    assert data.columns[data.col_of("crystal")].manual["choices"] == ["lysozyme", "buffer"]


def check_expressions_over_computed_and_manual_columns(ctx, data):
    db = RunDB(ctx)
    xgm = {r: db.get_values(GUI_PROPOSAL, r)["xgm_energy"].value for r in (1, 2, 3, 4)}
    srt = sorted(xgm.values())
    cut = (srt[1] + srt[2]) / 2            # µJ; between the 2nd and 3rd run's energy
    above = sorted(r for r, v in xgm.items() if v > cut)
    assert len(above) == 2
    # quantities with units, converted to the column's units (µJ)
    assert runs(data, f"xgm_energy > {cut / 1000} mJ") == above
    assert runs(data, f"xgm_energy > {cut}") == above
    assert runs(data, f"`Pulse energy` > {cut * 1e-6} J") == above      # by title
    assert runs(data, f"`XGM/Pulse energy` <= {cut} uJ") == sorted(set(xgm) - set(above))
    assert runs(data, f"{cut} < xgm_energy") == above      # literal on the left
    assert runs(data, "distance >= 2 cm") == [3, 4]
    assert runs(data, "`detector distance` == 15 mm") == [1, 2]
    # ranges, text matching (case-insensitive), booleans, none, has/failed
    assert runs(data, "run in 2..3") == [2, 3]
    assert runs(data, 'crystal ~ "LYSO"') == [1, 2]
    assert runs(data, 'crystal !~ "lyso"') == [3]
    assert runs(data, "good") == [2, 4]
    assert runs(data, "good == false") == [1]
    assert runs(data, "not has(good)") == [3]
    assert runs(data, "crystal == none") == [4]
    assert runs(data, "failed(flaky)") == [1, 3]          # the fixture's variable fails for odd runs
    assert runs(data, "has flaky") == [2, 4]
    assert runs(data, "flaky > 2 V") == [2, 4]
    assert runs(data, 'crystal in ("buffer", "lysozyme") and not (run == 1 or good)') == [3]
    assert runs(data, '(distance > 10 mm and crystal == "Lysozyme") or status == "failed"') == [1, 2]


BAD = [
    ("xgm_energy > 0.5 s", "cannot compare a column in µJ with s", 13),
    ("n_trains > 3 mm", "has units, but the column has none", 11),
    ("distance > 3 parsecz", "unknown unit 'parsecz'", 13),
    ("nosuch > 3", "no column named 'nosuch'", 0),
    ("run in 1..", "ends too early", 10),
    ("(run > 3", "ends too early", 8),
    ("run > > 3", "unexpected '>'", 6),
    ("run == @", "unexpected character '@'", 7),
]


def check_bad_expressions_say_why_and_where(ctx, data):
    for expr, words, pos in BAD:
        with pytest.raises(QueryError) as ei:
            Query(expr, data)
        assert words in str(ei.value), expr
        assert ei.value.pos == pos, (expr, str(ei.value))
        caret_line = str(ei.value).splitlines()[-1]
        assert caret_line.index("^") - 2 == pos


def check_expression_filter_in_the_view_and_live_update(ctx, data):
    view = RowView(data)
    view.set_filters([ExpressionFilter("distance >= 2 cm")])
    assert sorted(int(data.run[r]) for r in view.rows()) == [3, 4]
    # a manual edit arrives as a one-run update and moves run 1 into the view
    cli(ctx, "set", "1", "distance", "30 mm", "-d", ctx)
    upd = dbread.read_run_update(ctx, GUI_PROPOSAL, 1)
    row, changed, new, _ = data.apply_update(upd)
    ch = view.update_row(row, changed, new)
    assert ch.kind == "inserted"
    assert sorted(int(data.run[r]) for r in view.rows()) == [1, 3, 4]


def test_query_language_on_a_real_table(table):
    """One table (filled by the real backend, manual columns set with the CLI) for all checks:
    setting it up costs several command-line calls."""
    ctx, data = table
    check_manual_columns_are_table_columns_with_units(ctx, data)
    check_expressions_over_computed_and_manual_columns(ctx, data)
    check_bad_expressions_say_why_and_where(ctx, data)
    check_markdown_and_tsv(ctx, data)
    check_grouping(ctx, data)
    check_expression_filter_in_the_view_and_live_update(ctx, data)   # changes run 1


def check_markdown_and_tsv(ctx, data):
    from amore_gui.application.export import export_table, markdown_table, tsv_text
    rows = filter_rows(data, "run in 1..2")
    cols = [data.col_of("#run"), data.col_of("distance"), data.col_of("crystal"),
            data.col_of("good")]
    md = markdown_table(data, rows, cols).splitlines()
    assert md[0] == "| Run | Detector distance [mm] | crystal | good |"
    assert md[1] == "|---:|---:|---|---|"
    assert md[2:] == ["| 1 | 15 | lysozyme | no |", "| 2 | 15 | lysozyme | yes |"]
    tsv = tsv_text(data, rows, cols).splitlines()
    assert tsv[1].split("\t") == ["1", "15", "lysozyme", "no"]
    out = export_table(ctx / "runs.md", data, rows, cols)
    assert out.read_text().splitlines() == md


def test_show_where_on_the_command_line(table):
    ctx, _ = table
    out = cli(ctx, "show", ctx, "--where", 'distance >= 2 cm and crystal ~ "buf"').stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("│")]
    assert len(lines) == 1 and lines[0].split("│")[1].strip() == "3"
    p = cli(ctx, "show", ctx, "--where", "distance > 2 s", check=False)
    assert p.returncode == 2 and "cannot compare a column in mm with s" in p.stderr
    assert "^" in p.stderr


def check_grouping(ctx, data):
    """Group rows by one or more columns (numbers within a tolerance): counts and means."""
    from amore_gui.application.manual_edit import group_rows
    rows = filter_rows(data, "run in 1..4")
    dist, crystal, trains = (data.col_of(k) for k in ("distance", "crystal", "n_trains"))
    groups = {g.label: g for g in group_rows(data, rows, [dist], mean_cols=[trains, dist])}
    assert {k: g.count for k, g in groups.items()} == {("15",): 2, ("25",): 2}
    assert groups[("25",)].means[dist] == 25.0 and groups[("15",)].means[trains] == 40.0
    two = {g.label: g.count for g in group_rows(data, rows, [crystal, dist])}
    assert two == {("lysozyme", "15"): 2, ("buffer", "25"): 1, ("(empty)", "25"): 1}
    # 15 mm and 15.1 mm are one group within 1 %, two groups without tolerance
    from amore_gui.application.table_data import NSTATIC
    data.num[int(rows[0]), dist - NSTATIC] = 15.1
    within = {g.label: g.count for g in group_rows(data, rows, [dist], tolerance=0.01)}
    assert within == {("15–15.1",): 2, ("25",): 2}
    assert len(group_rows(data, rows, [dist], tolerance=0.0)) == 3
