"""The GUI's plain-Python layer (no Qt): loading, sorting/filtering, watching, export, settings,
locating, context checks, backend status - against databases filled by the real backend."""
import numpy as np
import pytest

from amore_gui.application import dbread
from amore_gui.application.table_data import (C_RUN, K_BOOL, K_ERROR, K_NUMBER,
                                  K_SPARKLINE, K_STRING, K_THUMBNAIL, NSTATIC, CellValue,
                                  NumberRange, OnlyIncluded, RowView, RunUpdate, TextContains)
from tests.gui_fixtures import GUI_PROPOSAL, GUI_RUNS, synthetic_table


# --- loading ----------------------------------------------------------------------------------

def test_load_table_matches_database(gui_ctx):
    from backend.store.writer import RunDB
    ctx = gui_ctx["ctx"]
    res = dbread.load_table(ctx)
    d = res.data
    db = RunDB(ctx)
    assert d.nrows == len(GUI_RUNS)
    assert res.metadata["proposal"] == str(GUI_PROPOSAL)
    assert [c.key for c in d.columns[NSTATIC:]] == [v.name for v in db.get_variables()]
    kinds_seen = set()
    for r in GUI_RUNS:
        row = d.row_of[(GUI_PROPOSAL, r)]
        info = db.get_run(GUI_PROPOSAL, r)
        assert d.start_time[row] == pytest.approx(info["start_time"])
        for name, sv in db.get_values(GUI_PROPOSAL, r).items():
            v = d.var_of(name)
            k = int(d.kind[row, v])
            kinds_seen.add(k)
            assert k == {"number": K_NUMBER, "bool": K_BOOL, "string": K_STRING,
                         "sparkline": K_SPARKLINE, "thumbnail": K_THUMBNAIL,
                         "error": K_ERROR}.get(sv.summary_type, k), name
            if sv.summary_type == "number":
                assert d.num[row, v] == pytest.approx(sv.value, rel=1e-12), name
            elif sv.summary_type in ("string", "sparkline"):
                assert d.obj[row, v] == sv.value
            elif sv.summary_type == "error":
                assert d.tooltip(row, NSTATIC + v) == sv.attributes["error"]
            elif sv.summary_type == "thumbnail":
                assert d.obj[row, v] is None      # loaded lazily
                con = dbread.connect(ctx)
                assert dbread.read_thumbnail(con, GUI_PROPOSAL, r, name) == sv.value
                con.close()
    assert {K_NUMBER, K_BOOL, K_STRING, K_SPARKLINE, K_THUMBNAIL, K_ERROR} <= kinds_seen
    db.close()
    # the progressive loader gives the same table
    it = dbread.iter_load(ctx, first=1, size=1)
    first = next(it)
    for ch in it:
        ch.merge_into(first.data)
    assert np.array_equal(first.data.kind[:d.nrows], d.kind[:d.nrows])
    assert np.allclose(first.data.num[:d.nrows], d.num[:d.nrows], equal_nan=True)


def test_changed_columns_are_taken_in_place_or_need_a_full_read(gui_ctx):
    """A change of the variables' descriptions (titles, units, tags, a manual column's
    choices) or columns added at the end is taken into the table as it is, values kept; a
    column that went away or moved needs the whole table read again, and nothing is changed."""
    from backend.store.manual import ManualStore
    from backend.store.writer import RunDB, VariableInfo
    ctx = gui_ctx["ctx"]
    d = dbread.load_table(ctx).data
    d.apply_update(RunUpdate(GUI_PROPOSAL, 1, values={"amore.extra": CellValue(K_NUMBER, 7.0)}))
    before = (d.num.copy(), d.kind.copy(), dict(d.attrs), d.nrows)
    names = d.names
    db = RunDB(ctx)
    old = db.get_variables()
    db.set_variables([VariableInfo(v.name, (v.title or v.name) + " (new)", v.description,
                                   "keV" if i == 0 else v.units, ["retitled"])
                      for i, v in enumerate(old)])
    ManualStore(db).add_column("crystal", "choice", choices=["lysozyme", "buffer"])
    cols = dbread.read_columns(ctx)
    added = cols.apply_to(d)
    assert added == [NSTATIC + len(names)]            # the new manual column, after the extra
    assert d.names == names + ["crystal"]
    first = d.columns[NSTATIC]
    assert first.title.endswith(" (new)") and first.units == "keV" and first.tags == ("retitled",)
    assert d.columns[d.col_of("amore.extra")].title == "amore.extra"
    assert d.columns[d.col_of("crystal")].manual["choices"] == ["lysozyme", "buffer"]
    n = len(names)
    assert np.array_equal(d.num[:before[3], :n], before[0][:before[3], :n], equal_nan=True)
    assert np.array_equal(d.kind[:before[3], :n], before[1][:before[3], :n])
    assert d.attrs == before[2] and d.nrows == before[3]
    assert not d.kind[:d.nrows, d.var_of("crystal")].any()
    # one variable gone: the table must be read again, and is left as it was
    db.set_variables(db.get_variables()[1:])
    keep = list(d.columns)
    assert dbread.read_columns(ctx).apply_to(d) is None
    assert d.columns == keep
    db.close()


def test_number_formatting_is_readable(gui_ctx):
    from amore_gui.application.formatting import format_number, header_text
    assert format_number(0.1 + 0.2) == "0.3"
    assert format_number(12345.678) == "12346"
    assert format_number(1.23456789e-7) == "1.235e-07"
    assert format_number(7) == "7"
    assert header_text("XGM/Pulse energy", "µJ") == "XGM\nPulse energy [µJ]"
    d = dbread.load_table(gui_ctx["ctx"]).data
    row = d.row_of[(GUI_PROPOSAL, 2)]
    text = d.display(row, d.col_of("xgm_energy"))
    assert 1 <= len(text.replace(".", "")) <= 5, text     # no 17-digit floats


# --- sorting and filtering ------------------------------------------------------------------

def test_rowview_sorts_filters_and_places_one_row():
    d = synthetic_table()
    v = RowView(d)                        # newest first
    assert list(d.run[v.order[:3]]) == [200, 199, 198]
    ca = d.col_of("a")
    v.set_sort("a", False)
    vals = d.numeric(ca)[v.order]
    finite = vals[np.isfinite(vals)]
    assert np.all(np.diff(finite) >= 0) and np.isnan(vals[-1])      # NaN last
    v.set_sort("a", True)
    vals = d.numeric(ca)[v.order]
    assert np.all(np.diff(vals[np.isfinite(vals)]) <= 0) and np.isnan(vals[-1])
    v.set_sort("s", False)
    texts = [d.display(r, d.col_of("s")) for r in v.order]
    assert texts == sorted(texts, key=str.lower)

    v.set_sort("a", True)
    v.set_filters([NumberRange("b", 1, 3)])
    assert set(d.numeric(d.col_of("b"))[v.order]) == {1.0, 2.0, 3.0}
    # one-run updates: each result equals a full rebuild
    rng = np.random.default_rng(5)
    for i in range(60):
        row = int(rng.integers(0, d.nrows))
        upd = RunUpdate(1, int(d.run[row]))
        which = i % 3
        if which == 0:
            upd.values["a"] = CellValue(K_NUMBER, float(rng.normal() * 3))
        elif which == 1:
            upd.values["b"] = CellValue(K_NUMBER, float(rng.integers(0, 5)))
        else:
            upd.values["s"] = CellValue(K_STRING, obj="changed")
        _, changed, new, _ = d.apply_update(upd)
        ch = v.update_row(row, changed, new)
        ref = RowView(d, v.sort_key, v.descending)
        ref.set_filters(v.filters)
        assert list(v.order) == list(ref.order), (i, ch)
        assert all(v.pos[r] == p for p, r in enumerate(v.order))
        if which == 2:
            assert ch.kind in ("changed", "none")      # neither sort nor filter column
    # a new run is inserted at its place
    upd = RunUpdate(1, 999, {"status": "pending"})
    upd.values["a"] = CellValue(K_NUMBER, 100.0)
    upd.values["b"] = CellValue(K_NUMBER, 2.0)
    row, changed, new, _ = d.apply_update(upd)
    ch = v.update_row(row, changed, new)
    assert new and ch.kind == "inserted" and ch.pos == 0


def test_text_and_included_filters():
    d = synthetic_table(50)
    d.comment[d.row_of[(1, 7)]] = "Beam lost"
    v = RowView(d)
    v.set_filters([TextContains(None, "beam")])
    assert list(d.run[v.order]) == [7]
    v.set_filters([TextContains("s", "sample 3")])
    assert all("sample 3" in d.display(r, d.col_of("s")) for r in v.order) and len(v.order)
    d.included[:] = True
    d.included[d.row_of[(1, 10)]] = False
    v.set_filters([OnlyIncluded()])
    assert 10 not in set(d.run[v.order]) and len(v.order) == 49


# --- watching the database ------------------------------------------------------------------

def test_db_change_watcher_sees_other_writers(gui_ctx):
    from backend.store.writer import RunDB, StoredValue, VariableInfo
    ctx = gui_ctx["ctx"]
    res = dbread.load_table(ctx)
    w = dbread.DbChangeWatcher(ctx, res.data.max_timestamp, res.runs, res.variables_sig,
                               res.comments_sig)
    w.poll(force=True)              # catch-up of the overlap window (already known values)
    assert not w.poll()
    db = RunDB(ctx)
    db.write_values(GUI_PROPOSAL, 3, {"cam_peak": StoredValue(1234.5, "number")})
    ch = w.poll()
    assert [(u.proposal, u.run) for u in ch.updates] == [(GUI_PROPOSAL, 3)]
    assert ch.updates[0].values["cam_peak"].num == 1234.5
    assert not ch.variables_changed and not ch.comments_changed
    db.set_comment(GUI_PROPOSAL, 2, "hello")
    ch = w.poll()
    assert [(u.run, u.info["comment"]) for u in ch.updates] == [(2, "hello")]
    db.add_comment("standalone")
    assert w.poll().comments_changed
    db.set_variables(db.get_variables() + [VariableInfo("new_var", "New")])
    assert w.poll().variables_changed
    db.close()
    w.close()


def test_db_change_watcher_forgets_values_older_than_its_overlap(gui_ctx, monkeypatch):
    """The watcher remembers the values it read only as long as a poll can read them again
    (the timestamp overlap), so a window following thousands of runs does not keep thousands
    of entries; each value is still reported once."""
    import time

    from backend.store.writer import RunDB, StoredValue
    ctx = gui_ctx["ctx"]
    res = dbread.load_table(ctx)
    w = dbread.DbChangeWatcher(ctx, res.data.max_timestamp, res.runs, res.variables_sig,
                               res.comments_sig)
    w.poll(force=True)
    monkeypatch.setattr(dbread, "TIMESTAMP_OVERLAP", 0.0)
    db = RunDB(ctx)
    for k, run in enumerate((2, 3, 4)):
        time.sleep(0.01)
        db.write_values(GUI_PROPOSAL, run, {f"extra_{i}": StoredValue(float(k), "number")
                                            for i in range(600)})
        ups = w.poll().updates
        assert [(u.run, len(u.values)) for u in ups] == [(run, 600)]
        assert not w.poll(force=True).updates            # nothing reported twice
    assert len(w._seen) <= 1000, f"{len(w._seen)} values remembered"
    db.close()
    w.close()


def _big_table(ctx, n: int):
    """A database of ``n`` runs (all done), a manual column ``sample``; returns the writer."""
    from backend.store.manual import ManualStore
    from backend.store.writer import RunDB
    db = RunDB.create(ctx, GUI_PROPOSAL)
    db.set_run_statuses((GUI_PROPOSAL, r, "done", None) for r in range(1, n + 1))
    ManualStore(db).add_column("sample", "string")
    return db


def test_db_change_watcher_finds_changed_runs_by_their_stamp_on_a_big_table(tmp_path,
                                                                          monkeypatch):
    """On a database with change stamps (revision 0009) a poll reads only the runs changed
    since its last look, never the whole runs table: a status change, a run comment, a manual
    value and a new run each come as that one run's update; a write that changes nothing in
    a run's fields (the same status again) is no update."""
    from backend.store.manual import ManualStore
    ctx = tmp_path / "ctx"
    db = _big_table(ctx, 2000)
    res = dbread.load_table(ctx)
    assert res.runs_stamp is not None and res.data.nrows == 2000
    w = dbread.DbChangeWatcher(ctx, res.data.max_timestamp, res.runs, res.variables_sig,
                               res.comments_sig, res.runs_stamp)

    def whole_table(con):
        raise AssertionError("the watcher read the whole runs table")
    monkeypatch.setattr(dbread, "read_runs", whole_table)
    w.poll(force=True)
    assert not w.poll()

    def one(ch):
        assert [(u.proposal, u.run) for u in ch.updates] == [(GUI_PROPOSAL, run)], ch.updates
        return ch.updates[0]

    run = 1500
    db.set_run_status(GUI_PROPOSAL, run, "failed", "disk full")
    u = one(w.poll())
    assert (u.info["status"], u.info["status_message"]) == ("failed", "disk full")
    run = 7
    db.set_comment(GUI_PROPOSAL, run, "beam lost")
    assert one(w.poll()).info["comment"] == "beam lost"
    run = 1999
    ManualStore(db).set_values([run], "sample", "Cu foil", via="cli")
    u = one(w.poll())
    assert u.values["sample"].obj == "Cu foil" and u.info["status"] == "done"
    run = 2001
    db.ensure_run(GUI_PROPOSAL, run, start_time=1.5e9)
    u = one(w.poll())
    assert (u.info["status"], u.info["start_time"]) == ("pending", 1.5e9)
    db.set_run_status(GUI_PROPOSAL, 1500, "failed", "disk full")     # no change
    assert not w.poll().updates
    db.close()
    w.close()


def test_db_change_watcher_without_stamps_reads_the_whole_table_until_migrated(tmp_path):
    """A database older than revision 0009 (no change stamps: one the backend has not
    migrated yet) is watched by comparing the whole runs table, as before; once migrated
    while watched, the watcher continues with the stamps and still misses nothing."""
    import sqlite3

    from backend.store.writer import RunDB, upgrade_schema
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    path = ctx / "runs.sqlite"
    upgrade_schema(path, "0008")
    con = sqlite3.connect(path)
    con.executemany("INSERT INTO runs(proposal, run, status) VALUES (?, ?, 'done')",
                    [(GUI_PROPOSAL, r) for r in range(1, 51)])
    con.execute("INSERT INTO metadata VALUES ('proposal', ?)", (str(GUI_PROPOSAL),))
    con.commit()
    res = dbread.load_table(ctx)
    assert res.runs_stamp is None and res.data.nrows == 50
    w = dbread.DbChangeWatcher(ctx, res.data.max_timestamp, res.runs, res.variables_sig,
                               res.comments_sig, res.runs_stamp)
    assert not w.poll(force=True)
    with con:
        con.execute("UPDATE runs SET status = 'failed', comment = 'old' WHERE run = 5")
    ups = w.poll().updates
    assert [(u.run, u.info["status"], u.info["comment"]) for u in ups] == [(5, "failed", "old")]
    con.close()
    db = RunDB(ctx)                         # the backend opens it: migrated to the head
    db.set_comment(GUI_PROPOSAL, 6, "after the migration")
    ups = w.poll().updates
    assert [(u.run, u.info["comment"]) for u in ups] == [(6, "after the migration")]
    db.set_run_status(GUI_PROPOSAL, 51, "processing")
    ups = w.poll().updates
    assert [(u.run, u.info["status"]) for u in ups] == [(51, "processing")]
    assert w.runs is None, "still comparing the whole table after the migration"
    db.close()
    w.close()


# --- export, settings, locating, checks, backend status -------------------------------------

def test_export_csv_and_excel(tmp_path):
    import pandas as pd
    from amore_gui.application.export import export_table
    d = synthetic_table(10)
    v = RowView(d)
    cols = [d.col_of(C_RUN), d.col_of("a"), d.col_of("s")]
    csv = export_table(tmp_path / "t.csv", d, v.order, cols)
    df = pd.read_csv(csv)
    assert list(df.columns) == ["Run", "A", "S"]
    assert list(df["Run"]) == list(range(10, 0, -1))
    xl = export_table(tmp_path / "t.xlsx", d, v.order[:4], cols)
    df2 = pd.read_excel(xl)
    assert list(df2["Run"]) == [10, 9, 8, 7]
    assert df2["A"].iloc[0] == pytest.approx(d.num[d.row_of[(1, 10)], d.var_of("a")])


def test_settings_roundtrip_and_layout(tmp_path):
    from amore_gui.application.settings import Settings, apply_column_layout
    s = Settings(tmp_path / "g.json")
    s.for_dir(tmp_path)["columns"] = {"order": ["#run", "b", "a"], "hidden": ["a"]}
    s.add_recent(tmp_path)
    s.save()
    s2 = Settings(tmp_path / "g.json")
    assert s2.recent == [str(tmp_path.resolve())]
    order, hidden = apply_column_layout(["#run", "a", "b", "c", "z"], s2.for_dir(tmp_path)["columns"])
    # new columns follow their natural predecessor
    assert order == ["#run", "b", "c", "z", "a"] and hidden == {"a"}
    (tmp_path / "bad.json").write_text("{not json")
    assert Settings(tmp_path / "bad.json").recent == []


def test_locate_proposal_and_directories(gui_ctx):
    from backend.locate import LocateError, resolve
    t = resolve(str(GUI_PROPOSAL))
    assert t.context_dir == gui_ctx["ctx"] and t.proposal == GUI_PROPOSAL and t.exists
    assert resolve(f"p{GUI_PROPOSAL:06d}").context_dir == gui_ctx["ctx"]
    assert resolve(str(gui_ctx["pdir"])).context_dir == gui_ctx["ctx"]
    t = resolve(str(gui_ctx["ctx"]))
    assert t.proposal == GUI_PROPOSAL
    with pytest.raises(LocateError, match="Proposal 777 not found"):
        resolve("777")


def test_context_check_in_subprocess(gui_ctx):
    from amore_gui.application.context_check import validate
    code = (gui_ctx["ctx"] / "context.py").read_text()
    ok = validate(code, gui_ctx["ctx"])
    assert ok.ok and "xgm_energy" in ok.variables
    bad = validate(code.replace("return len(run.train_ids)", "return len(run.train_ids", 1),
                   gui_ctx["ctx"])
    assert not bad.ok and bad.line is not None and "context.py" in bad.error
    line = code.splitlines()[bad.line - 1]
    assert "train_ids" in line
    cyc = validate("from amore.context import Variable\n@Variable\ndef a(run, b: 'var#b'):\n"
                   "    return b\n@Variable\ndef b(run, a: 'var#a'):\n    return a\n", gui_ctx["ctx"])
    assert not cyc.ok and "cycle" in cyc.error
    boom = validate("import os\nx = 1\nraise RuntimeError('at import')\n", gui_ctx["ctx"])
    assert not boom.ok and boom.line == 3


def test_cli_has_gui_command():
    from amore.cli.gui import cmd_gui
    from amore.cli.main import build_parser
    a = build_parser().parse_args(["gui", "2832", "--no-kafka"])
    assert a.func is cmd_gui and a.target == "2832" and a.no_kafka
