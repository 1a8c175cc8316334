"""One decoding of stored table values (:func:`backend.store.reader.decode_value`): the read API
(``amore.api``), the GUI's run table (its sparklines through
:func:`amore_gui.application.table_data.sparkline_points`) and the terminal table
(``amore-proto show``) give the same value for every summary type, as the backend stored it --
including text in a number cell."""
import math
import sqlite3

import numpy as np
import pytest

import amore.api
from amore.cli.table import render_table
from amore_gui.application.dbread import load_table
from amore_gui.application.table_data import sparkline_points
from backend.ctxrunner.results import table_value
from backend.formatting import sparkline_text
from backend.store.reader import decode_value
from backend.store.writer import RunDB
from backend.vocab import StoredValue, VariableInfo
from tests.conftest import PROPOSAL

NAN = object()  # expected: NaN

#: name -> (what the backend stores, the decoded value, the terminal's text)
CASES = {
    "energy": (table_value(3.25), 3.25, "3.25"),
    "count": (table_value(np.int64(7)), 7, "7"),
    "ok": (table_value(True), True, "✓"),
    "sample": (table_value("Au foil"), "Au foil", "Au foil"),
    "z": (table_value(1 + 2j), 1 + 2j, "(1+2j)"),
    "cube": (table_value(np.ones((2, 3, 4))), "float64 (2, 3, 4)", "float64 (2, 3, 4)"),
    "trend": (table_value(np.arange(5.0)), np.arange(5, dtype=np.float32), None),
    "image": (table_value(np.ones((8, 8))), bytes, "▦ image"),
    "nothing": (table_value(float("nan")), NAN, "NaN"),
    "typed": (StoredValue("12.5", "number"), 12.5, "12.5"),
    "garbled": (StoredValue("n/a", "number"), NAN, "NaN"),
    "failed": (StoredValue(None, "error", {"error": "boom", "error_type": "KeyError"}), None,
               "error: KeyError"),
    "skipped": (StoredValue(None, "skipped", {"reason": "no XGM"}), None, "–"),
}


def _same(got, expected) -> bool:
    if expected is NAN:
        return isinstance(got, float) and math.isnan(got)
    if expected is bytes:
        return isinstance(got, bytes) and got.startswith(b"\x89PNG")
    if isinstance(expected, np.ndarray):
        return isinstance(got, np.ndarray) and got.dtype == expected.dtype \
            and np.array_equal(got, expected)
    return type(got) is type(expected) and got == expected


@pytest.fixture
def stored(tmp_path):
    d = tmp_path / "ctx"
    db = RunDB.create(d, PROPOSAL)
    db.ensure_run(PROPOSAL, 1)
    db.set_variables([VariableInfo(name, name) for name in CASES])
    db.write_values(PROPOSAL, 1, {name: sv for name, (sv, _, _) in CASES.items()})
    db.close()
    return d


def test_api_gui_and_terminal_decode_stored_values_alike(stored):
    con = sqlite3.connect(stored / "runs.sqlite")
    rows = {n: (v, st) for n, v, st in con.execute(
        "SELECT name, value, summary_type FROM run_values")}
    con.close()
    decoded = {n: decode_value(*rows[n]) for n in CASES}
    wrong = {n: decoded[n] for n, (_, want, _) in CASES.items() if not _same(decoded[n], want)}
    assert not wrong, wrong

    # the read API: VariableData.summary()
    db = amore.api.open(stored)
    api = {n: db[1, n].summary() for n in CASES}
    assert {n: v for n, v in api.items() if not _same(v, CASES[n][1])} == {}
    assert db[1, "failed"].error == "boom"

    # the GUI's table: numbers and flags decoded, text as stored, sparklines drawn from bytes
    data = load_table(stored).data
    row = data.row_of[(PROPOSAL, 1)]
    gui = {n: data.value(row, data.col_of(n)) for n in CASES}
    assert gui["energy"] == 3.25 and gui["count"] == 7 and gui["typed"] == 12.5
    assert gui["ok"] is True
    assert gui["nothing"] is None and gui["garbled"] is None     # NaN: an empty export cell
    assert (gui["sample"], gui["z"], gui["cube"]) == ("Au foil", "(1+2j)", "float64 (2, 3, 4)")
    assert gui["failed"] == "error: boom"
    spark = data.obj[row, data.var_of("trend")]
    assert _same(decode_value(spark, "sparkline"), api["trend"])
    # ... through the application layer's decoder, which the Qt table paints and tips from
    assert _same(sparkline_points(spark), api["trend"])
    assert sparkline_points(data.obj[row, data.var_of("sample")]) is None

    # the terminal table (amore-proto show)
    table = render_table(stored, width=None)
    text = {str(c.header): list(c.cells)[0] for c in table.columns}
    want = {n: t for n, (_, _, t) in CASES.items() if t is not None}
    assert {n: text[n] for n in want} == want
    assert text["trend"] == sparkline_text(api["trend"], 8)
