"""Save PNG screenshots of the AMORE GUI with demo data (offscreen Qt).

    python scripts/screenshots.py OUTDIR [--demo-dir DIR] [--runs 16] [--only NAME,...] [--palette]

Without ``--demo-dir`` a demo proposal is made first with ``amore-proto demo DIR --no-gui``
(real mock runs processed by the real backend, no broker). A few comments, one unchecked run
and one run marked as being processed are added to that demo database so the screenshots show
those states. Writes:

* ``main.png`` - the run table;
* ``main-scrolled.png`` - the table scrolled to the image/sparkline columns;
* ``plot.png`` - camera spot peak against pulse energy across runs;
* ``histogram.png`` - histogram of the pulse energy;
* ``inspect-image.png`` - a 2-D camera image (colour map, levels, histogram);
* ``inspect-line.png`` - per-train pulse energy against train ID;
* ``editor.png`` - the context-file editor after a check found an error;
* ``reprocess.png`` - the reprocess dialog.

``--only main,plot`` saves only the named ones; ``--palette`` saves 8-bit palette PNGs (Pillow,
which matplotlib brings), about 2.5 times smaller, as kept under ``docs/_static/screenshots/``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: The screenshots this script makes, by name (``<name>.png``).
SHOTS = ("main", "main-scrolled", "plot", "histogram", "inspect-image", "inspect-line", "editor",
         "reprocess")


def make_demo(base: Path, runs: int) -> Path:
    """Run ``amore-proto demo`` (no GUI, no broker) and return the context directory."""
    sys.path.insert(0, str(REPO))
    from amore.cli.demo import demo_paths
    sw = Path(tempfile.mkdtemp(prefix="amore-sw-"))
    env = dict(os.environ, AMORE_BROKER="none", EXTRA_DATA_SW_ROOT=str(sw),
               PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "amore.cli", "demo", str(base), "--runs", str(runs),
                    "--interval", "0.3", "--no-gui"], env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=900)
    return demo_paths(base)["context_dir"]


def decorate(ctx: Path) -> None:
    """Comments and states that make the screenshots representative."""
    from backend.store.writer import RunDB
    db = RunDB(ctx)
    runs = db.run_numbers()
    notes = {runs[0]: "alignment, attenuator 50 %", runs[2]: "beam lost at the end",
             runs[-3]: "good sample position, keep", runs[-1]: ""}
    for r, t in notes.items():
        if t:
            db.set_comment(db.proposal, r, t)
    if len(runs) > 4:
        db.set_run_status(db.proposal, runs[-1], "processing")
        db.set_run_status(db.proposal, runs[-4], "failed",
                          "context worker process was killed by SIGKILL")
    if len(runs) > 6:
        db.set_run_status(db.proposal, runs[-6], "waiting",
                          "waiting for a working context file: SyntaxError in context.py, line 12")
    if not db.comments():
        db.add_comment("Beamtime start: shift crew A, sample holder 2 mounted", author="mid-op")
        db.add_comment("Detector gain switched to medium", author="mid-op")
    db.close()


def save(widget, out: Path, name: str, only: set[str] | None, palette: bool, *note) -> None:
    """Save ``widget`` as ``out/<name>.png`` unless ``only`` leaves it out."""
    if only is not None and name not in only:
        return
    path = out / f"{name}.png"
    widget.grab().save(str(path))
    if palette:
        from PIL import Image
        Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
    print("saved", path, *note)


def settle(app, seconds: float) -> None:
    t = time.time()
    while time.time() - t < seconds:
        app.processEvents()
        time.sleep(0.02)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir")
    p.add_argument("--demo-dir", help="existing demo base directory or context directory")
    p.add_argument("--runs", type=int, default=16)
    p.add_argument("--only", help="comma-separated names of the screenshots to save (default: all)")
    p.add_argument("--palette", action="store_true", help="save 8-bit palette PNGs (smaller)")
    a = p.parse_args(argv)
    only = set(a.only.split(",")) if a.only else None
    if only is not None and only - set(SHOTS):
        p.error(f"unknown screenshot(s) {', '.join(sorted(only - set(SHOTS)))}; "
                f"known: {', '.join(SHOTS)}")
    out = Path(a.outdir)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["AMORE_BROKER"] = "none"
    os.environ["AMORE_GUI_NO_DIALOGS"] = "1"
    os.environ["AMORE_GUI_CONFIG"] = str(Path(tempfile.mkdtemp(prefix="amore-gui-cfg-")) / "gui.json")
    sys.path.insert(0, str(REPO))

    if a.demo_dir:
        d = Path(a.demo_dir)
        ctx = d if (d / "runs.sqlite").exists() else None
        if ctx is None:
            from amore.cli.demo import demo_paths
            ctx = demo_paths(d)["context_dir"]
    else:
        ctx = make_demo(Path(tempfile.mkdtemp(prefix="amore-shots-")) / "demo", a.runs)
        decorate(ctx)

    from qtpy.QtCore import QEventLoop, QTimer
    from amore_gui._qt.app import make_app
    from amore_gui._qt.mainwindow import MainWindow

    app = make_app([])
    win = MainWindow(ctx, use_kafka=False)
    win.resize(1600, 860)
    win.show()
    loop = QEventLoop()
    win.fully_loaded.connect(loop.quit)
    QTimer.singleShot(30000, loop.quit)
    if not win.is_fully_loaded:
        loop.exec()
    m = win.model
    d = m.data_obj
    # uncheck one run so the Status column shows both states
    if d.nrows > 3:
        m.set_included([(int(d.proposal[1]), int(d.run[1]))], False)
    win.comments_dock.setVisible(False)
    settle(app, 2.0)
    save(win, out, "main", only, a.palette)

    # scrolled to the images/sparklines
    col = m.column_of("cam_mean")
    if col >= 0:
        win.comments_dock.setVisible(True)
        settle(app, 0.5)
        sb = win.table.horizontalScrollBar()
        sb.setValue(sb.maximum())
        settle(app, 1.5)
        save(win, out, "main-scrolled", only, a.palette)
        win.comments_dock.setVisible(False)

    plot = win.open_plot("xgm_energy", "cam_peak")
    plot.only_checked.setChecked(False)
    plot.resize(900, 600)
    settle(app, 1.0)
    save(plot, out, "plot", only, a.palette)
    plot.mode_hist.setChecked(True)
    plot.bins.setValue(10)
    settle(app, 0.8)
    save(plot, out, "histogram", only, a.palette)
    plot.close()

    run_row = m.view_row_of(int(d.proposal[0]), int(d.run[d.nrows - 2]))
    for name, fname in (("cam_mean", "inspect-image"), ("xgm_energy", "inspect-line")):
        c = m.column_of(name)
        if c < 0:
            continue
        w = win.inspect(m.index(run_row, c))
        w.resize(860, 640)
        t = time.time()
        while w.kind is None and time.time() - t < 20:
            settle(app, 0.1)
        settle(app, 0.8)
        save(w, out, fname, only, a.palette, "kind", w.kind)
        w.close()

    ed = win.open_editor()
    ed.resize(900, 700)
    text = ed.editor.toPlainText()
    ed.editor.setPlainText(text.replace("return len(run.train_ids)", "return len(run.train_ids",
                                        1))
    res = {}
    ed.checked.connect(lambda r: res.setdefault("r", r))
    ed.validate()
    t = time.time()
    while "r" not in res and time.time() - t < 60:
        settle(app, 0.1)
    settle(app, 0.5)
    save(ed, out, "editor", only, a.palette, res.get("r"))
    ed.editor.document().setModified(False)
    ed.close()

    win.table.selectRow(0)
    rp = win.open_reprocess()
    rp.resize(520, 560)
    settle(app, 0.5)
    save(rp, out, "reprocess", only, a.palette)
    rp.close()
    win.close()
    settle(app, 0.5)         # let closed windows be deleted before the interpreter exits
    from amore_gui._qt.plots import forget_views
    forget_views()
    return 0


if __name__ == "__main__":
    sys.exit(main())
