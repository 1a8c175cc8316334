"""The GUI opens a context directory of each facility: ESS (runs from the file writer, computed
by `amore-proto reprocess`), ESRF and SwissFEL (played by `amore-proto demo --facility`), with the
facility's words for proposals and runs."""
import os
import subprocess

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from backend.store.writer import RunDB  # noqa: E402
from backend.facilities.ess import demo as ess_demo  # noqa: E402
from tests.conftest import amore_cmd  # noqa: E402


def _ess_context(tmp_path):
    from backend.store.init import init_context_dir
    raw = tmp_path / "ess" / "raw"
    ctx = tmp_path / "ess-ctx"
    init_context_dir(ctx, 999999, facility="ess")
    db = RunDB(ctx)
    for n in (11465, 11466):
        name = ess_demo.ess_file_name("ymir", 999999, n)
        ess_demo.write_ess_nexus(raw / name, proposal=999999, counter=n, job_id=f"job-{n}",
                           title=f"scan {n}")
        db.register_source_run("ess", f"job-{n}", 999999, {
            "file": str(raw / name), "file_name": name, "job_id": f"job-{n}",
            "run_name": f"scan {n}", "start_time": 1.7e9 + n, "stop_time": 1.7e9 + n + 60},
            state="ready", run=n, start_time=1.7e9 + n)
    out = subprocess.run(amore_cmd("reprocess", "all", "-d", ctx), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return ctx


def _demo_context(tmp_path, facility):
    out = subprocess.run(amore_cmd("demo", tmp_path, "--facility", facility, "--runs", "2",
                                   "--interval", "0.3", "--no-gui"),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    return next((tmp_path / facility).rglob("runs.sqlite")).parent


@pytest.mark.parametrize("facility,proposal,title", [
    ("ess", 999999, "Proposal 999999"), ("esrf", "mx2532", "Experiment mx2532"),
    ("swissfel", "p18493", "pgroup p18493")])
def test_gui_opens_each_facilitys_context_dir(qtbot, tmp_path, facility, proposal, title):
    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui.application.settings import Settings
    from amore_gui.application.table_data import C_PROPOSAL
    ctx = _ess_context(tmp_path) if facility == "ess" else _demo_context(tmp_path, facility)
    db = RunDB(ctx)
    assert all(r["status"] == "done" for r in db.runs()) and len(db.runs()) == 2
    w = MainWindow(ctx, settings=Settings(tmp_path / "settings.json"), live_updates=False)
    qtbot.addWidget(w)
    w.resize(1100, 360)
    w.show()
    qtbot.waitUntil(lambda: w.is_fully_loaded, timeout=15000)
    assert title in w.windowTitle()
    m = w.model
    runs = [m.run_at(i) for i in range(m.rowCount())]
    assert sorted(runs) == sorted((proposal, r["run"]) for r in db.runs())
    col = m.column_of(C_PROPOSAL)
    assert m.data(m.index(0, col)) == str(proposal)
    from qtpy.QtCore import Qt
    from amore_gui.application.table_data import C_RUN
    run_word = {"esrf": "Collection"}.get(facility, "Run")
    assert m.headerData(m.column_of(C_RUN), Qt.Horizontal, Qt.DisplayRole) == run_word
    for v in db.get_variables():          # every variable has a column with a value
        assert m.column_of(v.name) >= 0
    if facility == "ess":
        assert m.data(m.index(m.view_row_of(proposal, 11466), m.column_of("title"))) == "scan 11466"
    w.grab().save(str(tmp_path.parent / f"gui-{facility}.png"))
    w.close()


def test_gui_finds_a_context_dir_by_proposal_at_esrf_and_swissfel(tmp_path, monkeypatch):
    from backend.locate import LocateError, resolve
    from backend.store.init import init_context_dir
    visitor, sf = tmp_path / "visitor", tmp_path / "sf"
    old = visitor / "mx2532" / "id29" / "20240131" / "PROCESSED_DATA" / "amore"
    new = visitor / "mx2532" / "id29" / "20240201" / "PROCESSED_DATA" / "amore"
    for d in (old, new):
        init_context_dir(d, "mx2532", facility="esrf")
    pg = sf / "alvra" / "data" / "p18493" / "res" / "amore"
    init_context_dir(pg, "p18493", facility="swissfel")
    site = tmp_path / "site.toml"
    site.write_text(f'facility = "esrf"\n[esrf]\nvisitor_root = "{visitor}"\n')
    monkeypatch.setenv("AMORE_SITE_CONFIG", str(site))
    t = resolve("mx2532")
    assert (t.context_dir, t.proposal, t.exists) == (new, "mx2532", True)
    with pytest.raises(LocateError, match="No AMORE context directory for mx9999"):
        resolve("mx9999")
    site.write_text(f'facility = "swissfel"\n[swissfel]\ndata_root = "{sf}"\n')
    t = resolve("p18493")
    assert (t.context_dir, t.proposal) == (pg, "p18493")
    assert resolve(str(pg)).context_dir == pg     # a directory is still a directory


def test_inspect_plots_one_d_data_against_time_or_pulse_id(qtbot, tmp_path):
    """Where there are no trains (ESS NXlogs, SwissFEL channels), 1-D results are drawn
    against their time (seconds from the first point) or pulse ID."""
    import numpy as np

    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui.application.settings import Settings
    from backend.ctxrunner.results import h5_path, read_run_value
    from backend.store.init import init_context_dir
    src = tmp_path / "ctx.py"
    src.write_text('''
import h5py, numpy as np, xarray as xr
from amore.context import Variable

@Variable(title="Temperature", units="K")
def temperature(run):
    log = run["/entry/instrument/cryostat/temperature"]
    t = log["time"][::2].astype("datetime64[ns]")      # every other sample: 2 s apart
    return xr.DataArray(log["value"][::2], dims=["time"], coords={"time": t})

@Variable(title="Intensity")
def intensity(run):
    pid = np.arange(11884948775, 11884948785)
    return xr.DataArray(np.linspace(0, 1, 10), dims=["pulse_id"], coords={"pulse_id": pid})
''')
    raw = tmp_path / "raw"
    ctx = tmp_path / "ctx"
    init_context_dir(ctx, 999999, facility="ess", context_file=src)
    name = ess_demo.ess_file_name("ymir", 999999, 7)
    ess_demo.write_ess_nexus(raw / name, proposal=999999, counter=7, job_id="j7",
                       temperatures=[290, 291, 293, 296])
    RunDB(ctx).register_source_run("ess", "j7", 999999, {"file": str(raw / name)}, run=7)
    out = subprocess.run(amore_cmd("reprocess", "all", "-d", ctx), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    w = MainWindow(ctx, settings=Settings(tmp_path / "settings.json"), live_updates=False)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.is_fully_loaded, timeout=15000)
    m = w.model
    for key, xs, label in (("temperature", [0, 2], "time [s since "),
                           ("intensity", np.arange(11884948775, 11884948785), "Pulse ID")):
        iw = w.inspect(m.index(m.view_row_of(999999, 7), m.column_of(key)))
        qtbot.waitUntil(lambda: iw.kind is not None, timeout=15000)
        assert iw.kind == "line"
        item = iw.plot_widget.getPlotItem().listDataItems()[0]
        assert np.allclose(item.xData, xs)
        assert np.allclose(item.yData, read_run_value(h5_path(ctx, 999999, 7), key).values)
        assert iw.plot_widget.getPlotItem().getAxis("bottom").labelText.startswith(label)
        iw.close()
    w.close()
