"""The public read API (amore.api) against a demo proposal processed by the real backend
(tests.gui_fixtures: mock runs of proposal 4321, the demo context file plus a variable that fails
for odd runs), compared with what the database and the raw run data hold."""
import math
import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest

import amore.api
from tests.gui_fixtures import GUI_PROPOSAL, GUI_RUNS

XGM = "SA2_XTD1_XGM/XGM/DOOCS"
CAM = "MID_EXP_SAM/CAM/CAM1:daqOutput"


def _rundb(ctx):
    from backend.store.writer import RunDB
    return RunDB(ctx)


def test_open_by_proposal_and_by_directory(gui_ctx):
    ctx = gui_ctx["ctx"]
    db = amore.api.open(GUI_PROPOSAL)
    assert db.context_dir == ctx and db.proposal == GUI_PROPOSAL
    for loc in (ctx, str(ctx), gui_ctx["pdir"], ctx / "runs.sqlite", f"p{GUI_PROPOSAL:06d}"):
        d = amore.api.open(loc)
        assert d.context_dir == ctx and d.proposal == GUI_PROPOSAL
    assert db.runs() == list(GUI_RUNS)
    with pytest.raises(amore.api.LocateError, match="Proposal 777 not found"):
        amore.api.open(777)
    with pytest.raises(FileNotFoundError, match="No AMORE database"):
        amore.api.open(gui_ctx["root"])


def test_table_matches_database(gui_ctx):
    ctx = gui_ctx["ctx"]
    rdb = _rundb(ctx)
    rdb.set_comment(GUI_PROPOSAL, 2, "sample moved")
    variables = rdb.get_variables()
    db = amore.api.open(ctx)
    df = db.table()
    names = [v.name for v in variables]
    assert list(df.columns) == ["proposal", "run", "start_time", "comment"] + names
    assert df["run"].tolist() == list(GUI_RUNS)
    assert (df["proposal"] == GUI_PROPOSAL).all()
    assert df["comment"].tolist() == [None, "sample moved", None, None]
    assert str(df["start_time"].dtype) == "datetime64[ns, UTC]"
    seen = set()
    for i, r in enumerate(GUI_RUNS):
        info = rdb.get_run(GUI_PROPOSAL, r)
        assert df["start_time"][i] == pd.Timestamp(info["start_time"], unit="s", tz="UTC")
        values = rdb.get_values(GUI_PROPOSAL, r)
        assert set(values) <= set(names)
        for name, sv in values.items():
            cell = df[name][i]
            seen.add(sv.summary_type)
            if sv.summary_type == "number":
                assert cell == pytest.approx(sv.value, rel=1e-12), name
            elif sv.summary_type == "bool":
                assert cell is bool(sv.value) and df[name].dtype == object, name
            elif sv.summary_type == "string":
                assert cell == sv.value, name
            elif sv.summary_type == "sparkline":
                assert cell == "<sparkline>", name
            elif sv.summary_type == "thumbnail":
                assert cell == "<thumbnail>", name
            elif sv.summary_type in ("error", "skipped"):
                assert cell is None or (isinstance(cell, float) and math.isnan(cell)), name
            # the table shows what summary() gives (pictures as placeholders)
            s = db[r, name].summary()
            if sv.summary_type in ("number", "bool", "string"):
                assert s == cell or (isinstance(s, float) and math.isnan(s) and math.isnan(cell))
    assert {"number", "bool", "string", "sparkline", "thumbnail", "error"} <= seen
    # numbers make float columns; the flaky variable is NaN where it failed (odd runs)
    assert df["flaky"].dtype == np.float64
    assert df["n_trains"].dtype == np.int64 and (df["n_trains"] == 40).all()
    assert math.isnan(df["flaky"][0]) and df["flaky"][1] == pytest.approx(3.0)
    # named by title
    dt = db.table(with_titles=True)
    titles = {v.name: v.title or v.name for v in variables}
    assert list(dt.columns) == ["proposal", "run", "start_time", "comment"] + \
        [titles[n] for n in names]
    assert "XGM/Pulse energy" in dt.columns and "Checks/Flaky" in dt.columns
    pd.testing.assert_series_equal(dt["XGM/Pulse energy"], df["xgm_energy"], check_names=False)
    rdb.close()


def test_variables_and_comments(gui_ctx):
    ctx = gui_ctx["ctx"]
    rdb = _rundb(ctx)
    rdb.add_comment("beam lost", author="ops", timestamp=1700000000.0, proposal=GUI_PROPOSAL, run=3)
    rdb.add_comment("shift change", timestamp=1700000100.0)
    db = amore.api.open(ctx)
    vs = db.variables()
    assert list(vs.columns) == ["name", "title", "units", "tags", "description"]
    expect = rdb.get_variables()
    assert vs["name"].tolist() == [v.name for v in expect]
    for row, v in zip(vs.itertuples(), expect):
        assert row.title == (v.title or v.name)
        assert row.units == v.units and list(row.tags) == list(v.tags)
        assert row.description == v.description
    flaky = vs.set_index("name").loc["flaky"]
    assert flaky.title == "Checks/Flaky" and flaky.units == "V" and list(flaky.tags) == ["checks"]
    assert "odd runs" in flaky.description
    cm = db.comments()
    assert cm["text"].tolist() == ["beam lost", "shift change"]
    assert cm["author"][0] == "ops" and cm["run"][0] == 3
    assert cm["timestamp"][0] == pd.Timestamp(1700000000, unit="s", tz="UTC")
    assert str(cm["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert cm["run"][1] is None
    rdb.close()


def test_read_whole_values(gui_ctx):
    import extra_data
    db = amore.api.open(GUI_PROPOSAL)
    raw = extra_data.open_run(GUI_PROPOSAL, 2)
    # an xarray DataArray, per train, with its train IDs
    energy = db[2, "xgm_energy"].read()
    expect = raw[XGM, "pulseEnergy.photonFlux"].xarray()
    assert energy.dims == expect.dims
    np.testing.assert_array_equal(energy.values, expect.values)
    np.testing.assert_array_equal(energy.coords["trainId"].values, expect.coords["trainId"].values)
    # its table value is the summary named in the context file (nanmean)
    v = db[2, "xgm_energy"]
    assert v.summary() == pytest.approx(float(np.nanmean(expect.values)))
    assert v.units == "µJ" and v.title == "XGM/Pulse energy"
    # a 2-D numpy array (thumbnail in the table: PNG bytes from summary())
    img = db[2, "cam_mean"].read()
    assert isinstance(img, np.ndarray) and img.ndim == 2
    np.testing.assert_allclose(img, raw[CAM, "data.image.pixels"].ndarray().mean(axis=0))
    assert db[2, "cam_mean"].summary()[:8] == b"\x89PNG\r\n\x1a\n"
    # scalars
    assert db[2, "n_trains"].read() == len(raw.train_ids) == db[2, "n_trains"].summary()
    assert db[2, "flaky"].read() == pytest.approx(3.0)
    assert db[2, "Checks/Flaky"].read() == pytest.approx(3.0)     # by title
    # a sparkline summary is the float32 trend
    trend = db[2, "xgm_trend"].summary()
    assert trend.dtype == np.float32 and trend.ndim == 1 and len(trend) > 1
    assert db[2].keys()[0] == "n_trains" and "flaky" in db[2].keys()


def test_values_without_a_variable_definition(gui_ctx):
    """Values of a variable no longer in the context file still show (after the defined ones);
    a column mixing numbers and text keeps both."""
    from backend.vocab import StoredValue
    ctx = gui_ctx["ctx"]
    rdb = _rundb(ctx)
    rdb.write_values(GUI_PROPOSAL, 1, {"old_var": StoredValue(2.5, "number")})
    rdb.write_values(GUI_PROPOSAL, 3, {"old_var": StoredValue("n/a", "string")})
    names = [v.name for v in rdb.get_variables()]
    rdb.close()
    db = amore.api.open(ctx)
    df = db.table()
    assert list(df.columns)[-1] == "old_var" and list(df.columns)[4:-1] == names
    assert df["old_var"].tolist() == [2.5, None, "n/a", None]
    v = db[1, "old_var"]
    assert v.summary() == 2.5 and v.title == "old_var"
    assert db.table(with_titles=True).columns[-1] == "old_var"


def test_clear_key_errors(gui_ctx):
    db = amore.api.open(gui_ctx["ctx"])
    with pytest.raises(KeyError, match=r"Run 99 is not in the AMORE table .* runs 1, 2, 3, 4"):
        db[99, "n_trains"]
    with pytest.raises(KeyError, match=r"Run 99"):
        db[99]
    with pytest.raises(KeyError, match=r"No variable 'nope' in .*n_trains"):
        db[2, "nope"]
    failed = db[1, "flaky"]
    assert failed.summary() is None and "odd run 1 has no flaky signal" in failed.error
    with pytest.raises(KeyError, match=r"No data for variable 'flaky' of run 1 .*odd run 1"):
        failed.read()
    with pytest.raises(TypeError):
        db["2", "n_trains"]
    # the message is the plain text
    try:
        db[2, "nope"]
    except KeyError as e:
        assert str(e).startswith("No variable 'nope'")


def test_read_only_and_safe_while_the_backend_writes(gui_ctx):
    from backend.store import reader
    from backend.vocab import StoredValue
    ctx = gui_ctx["ctx"]
    con = reader.connect(ctx, uri_readonly=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
        con.execute("DELETE FROM runs")
    con.close()
    db = amore.api.open(ctx)
    rdb = _rundb(ctx)
    stop = threading.Event()
    written = []

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            rdb.write_values(GUI_PROPOSAL, 4, {"flaky": StoredValue(float(i), "number")})
            written.append(i)

    t = threading.Thread(target=writer)
    t.start()
    try:
        while not written:          # the backend is writing before the first read
            threading.Event().wait(0.01)
        seen = []
        for _ in range(20):
            df = db.table()
            assert len(df) == len(GUI_RUNS)
            seen.append(df["flaky"].iloc[3])
    finally:
        stop.set()
        t.join()
    rdb.close()
    # every read saw one committed value, never an older one after a newer one
    assert set(seen) <= {float(i) for i in written}, (seen, written[-1])
    assert seen == sorted(seen)
    assert db[4, "flaky"].summary() == float(written[-1])


def test_proposal_identifiers_of_other_facilities(tmp_path):
    """ESRF/SwissFEL proposals are identifiers ("mx2532"): the read API keeps them as str,
    the table's proposal column holds them, db[proposal, run, name] finds the cell."""
    from backend.store.writer import RunDB
    from backend.vocab import RunStatus, StoredValue, VariableInfo
    ctx = tmp_path / "amore"
    rdb = RunDB.create(ctx, "mx2532")
    rdb.set_variables([VariableInfo("energy", title="Energy", units="keV")])
    rdb.write_values("mx2532", 3, {"energy": StoredValue(12.4, "number", {"units": "keV"})},
                     status=RunStatus.DONE.value)
    rdb.ensure_run("mx2532", 4)
    rdb.set_run_status("mx2532", 4, RunStatus.RUNNING.value, None)
    db = amore.api.open(ctx)
    assert db.proposal == "mx2532"
    assert db.runs() == [3, 4]
    df = db.table()
    assert df["proposal"].tolist() == ["mx2532", "mx2532"]
    assert df["run"].tolist() == [3, 4]
    assert df["energy"][0] == 12.4 and math.isnan(df["energy"][1])
    assert db[3, "energy"].summary() == 12.4
    assert db["mx2532", 3, "energy"].summary() == 12.4
    assert db[" mx2532 ", 3, "energy"].proposal == "mx2532"
    with pytest.raises(amore.api.AmoreKeyError, match="Run 3 of proposal mx2533"):
        db["mx2533", 3, "energy"]
