"""Fixtures for the GUI tests: context directories filled by the real backend from real mock runs.
A pytest plugin registered by ``tests/conftest.py`` (no Qt import at module level): test modules
use its fixtures by name as arguments and never import them.

``gui_base`` (session): a proposal tree with 4 mock runs (backend.testing.mockdata), a context directory
with the demo context file plus a variable that fails for odd runs, all runs processed by the
real worker pool (backend.processing.local). ``gui_ctx`` (function): a private copy of it, with
extra-data and AMORE pointed at the copy's proposal tree, Kafka off and a private GUI settings
file. ``open_window`` (function): opens main windows on it. ``process_runs(ctx, runs,
publish=None)`` processes (new) runs with the real backend; ``synthetic_table(n, seed)`` is a
:class:`TableData` of ``n`` made-up runs. The Qt helpers are in ``tests/gui_helpers.py``.
"""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

GUI_PROPOSAL = 4321
GUI_RUNS = (1, 2, 3, 4)
#: Milliseconds a GUI test waits for a window to load or a cell to change (a generous bound).
WAIT = 15000

EXTRA_VARIABLES = '''

@Variable(title="Checks/Flaky", units="V", tags=["checks"])
def flaky(run, run_no: "meta#run_number"):
    """Fails for odd runs (to test error cells)."""
    if run_no % 2:
        raise ValueError(f"odd run {run_no} has no flaky signal")
    return run_no * 1.5


@Variable(title="Checks/Motor per train", units="mm", tags=["checks", "motor"])
def motor_trend(run):
    """Motor position per train (a second per-train variable for correlations)."""
    return run[MOTOR, "actualPosition"].xarray()
'''


def context_code() -> str:
    import context_templates
    return context_templates.path("demo").read_text() + EXTRA_VARIABLES


def make_tree(base: Path) -> dict:
    """Proposal tree + context directory (no runs processed yet)."""
    from backend.store.init import init_context_dir
    from backend.testing.mockdata import proposal_dir
    root = base / "exp"
    pdir = proposal_dir(root, "MID", "202401", GUI_PROPOSAL)
    (pdir / "raw").mkdir(parents=True, exist_ok=True)
    ctx = pdir / "usr" / "Shared" / "amore"
    src = base / "context-src.py"
    src.write_text(context_code())
    init_context_dir(ctx, GUI_PROPOSAL, context_file=src)
    (ctx / "amore.toml").write_text(f'[data]\nroot = "{root}"\n\n[processing]\njobs = 2\n')
    return {"root": root, "pdir": pdir, "ctx": ctx}


def write_runs(pdir: Path, runs, ntrains: int = 40) -> None:
    from backend.testing.mockdata import write_run
    for r in runs:
        write_run(pdir, GUI_PROPOSAL, r, ntrains=ntrains, seed=r)


def process_runs(ctx: Path, runs, publish=None, names=None) -> list:
    """Process runs with the real backend (worker pool + RunProcessor); returns outcomes."""
    from backend.config import load_config
    from backend.processing.local import WorkerPool
    from backend.processing.runpath import RunProcessor
    from backend.store.writer import RunDB
    cfg = load_config(ctx)
    pool = WorkerPool(ctx, cfg, min(2, len(runs)) or 1)
    pool.start()
    db = RunDB(ctx)
    try:
        proc = RunProcessor(ctx, cfg, db, pool, publish=publish)
        err = proc.load_context()
        assert err is None, err
        return [proc.process(GUI_PROPOSAL, r, "all", names) for r in runs]
    finally:
        pool.stop()
        db.close()


def change_flaky(ctx: Path) -> None:
    """Change the function of ``flaky`` in the context file and let AMORE load it (``reprocess
    all --dry-run`` records the new code and computes nothing): its 4 values are stale."""
    import subprocess
    from tests.conftest import amore_cmd
    f = ctx / "context.py"
    text = f.read_text()
    assert "return run_no * 1.5" in text
    f.write_text(text.replace("return run_no * 1.5", "return run_no * 2.5"))
    r = subprocess.run(amore_cmd("reprocess", "all", "--dry-run", "-d", str(ctx)),
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "Stale: 4 run(s), 4 value(s)" in r.stdout, r.stdout + r.stderr


@pytest.fixture(scope="session")
def gui_base(tmp_path_factory):
    """A processed context directory (read-only for tests: copy it with ``gui_ctx``)."""
    base = tmp_path_factory.mktemp("gui-base")
    sw = base / "sw"
    sw.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXTRA_DATA_SW_ROOT", str(sw))
        mp.setenv("AMORE_BROKER", "none")
        mp.setenv("MPLBACKEND", "Agg")
        tree = make_tree(base)
        mp.setenv("EXTRA_DATA_DATA_ROOT", str(tree["root"]))
        write_runs(tree["pdir"], GUI_RUNS)
        outs = process_runs(tree["ctx"], GUI_RUNS)
    assert all(o.status == "done" for o in outs), outs
    con = sqlite3.connect(tree["ctx"] / "runs.sqlite")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    tree["base"] = base
    return tree


@pytest.fixture
def gui_ctx(gui_base, tmp_path, monkeypatch):
    """A private copy of the processed tree; returns a dict with ``ctx``, ``pdir``, ``root``
    and ``settings`` (a GUI settings file path)."""
    base = tmp_path / "copy"
    shutil.copytree(gui_base["base"], base, symlinks=True)
    root = base / "exp"
    pdir = gui_base["pdir"].relative_to(gui_base["base"])
    ctx = base / pdir / "usr" / "Shared" / "amore"
    (ctx / "amore.toml").write_text(f'[data]\nroot = "{root}"\n\n[processing]\njobs = 2\n')
    monkeypatch.setenv("EXTRA_DATA_DATA_ROOT", str(root))
    monkeypatch.setenv("EXTRA_DATA_SW_ROOT", str(base / "sw"))
    monkeypatch.setenv("AMORE_BROKER", "none")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("AMORE_GUI_NO_DIALOGS", "1")
    settings = tmp_path / "gui.json"
    monkeypatch.setenv("AMORE_GUI_CONFIG", str(settings))
    return {"ctx": ctx, "pdir": base / pdir, "root": root, "settings": settings}


@pytest.fixture
def open_window(qtbot, gui_ctx):
    """``open_window(ctx=None, **kw)`` -> a loaded MainWindow (closed after the test)."""
    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui.application.settings import Settings
    wins = []

    def open_(ctx=None, wait_live=True, **kw):
        kw.setdefault("settings", Settings(gui_ctx["settings"]))
        w = MainWindow(ctx or gui_ctx["ctx"], **kw)
        wins.append(w)
        qtbot.addWidget(w)
        w.resize(1200, 700)
        w.show()
        qtbot.waitUntil(lambda: w.is_fully_loaded, timeout=WAIT)
        if wait_live and w.live_updates:
            qtbot.waitUntil(lambda: w.live_ready, timeout=WAIT)
        return w
    yield open_
    for w in wins:
        w.close()


def synthetic_table(n=200, seed=1):
    """A :class:`TableData` of runs 1..n of proposal 1 (no database): ``a`` a normal random
    number (NaN every 7th run), ``s`` a string ``"sample <0-8>"``, ``b`` run % 5."""
    import math

    import numpy as np

    from amore_gui.application.table_data import (K_NUMBER, K_STRING, CellValue, Column,
                                                  RunUpdate, TableData)
    rng = np.random.default_rng(seed)
    d = TableData([Column("a", "A"), Column("s", "S"), Column("b", "B")], capacity=8)
    for r in range(1, n + 1):
        upd = RunUpdate(1, r, {"start_time": 1e9 + r, "status": "done"})
        a = float(rng.normal()) if r % 7 else math.nan
        upd.values["a"] = CellValue(K_NUMBER, a)
        upd.values["s"] = CellValue(K_STRING, obj=f"sample {rng.integers(0, 9)}")
        upd.values["b"] = CellValue(K_NUMBER, float(r % 5))
        d.apply_update(upd)
    return d
