"""Fixtures for the GUI tests: context directories filled by the real backend from real mock runs.

``gui_base`` (session): a proposal tree with 4 mock runs (backend.testing.mockdata), a context directory
with the demo context file plus a variable that fails for odd runs, all runs processed by the
real worker pool (backend.processing.local). ``gui_ctx`` (function): a private copy of it, with
extra-data and AMORE pointed at the copy's proposal tree, Kafka off and a private GUI settings
file. ``process_runs(ctx, runs, publish=None)`` processes (new) runs with the real backend.
"""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

GUI_PROPOSAL = 4321
GUI_RUNS = (1, 2, 3, 4)

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
