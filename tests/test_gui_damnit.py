"""A DAMNIT directory opened in the GUI (made by DAMNIT 0.4.0's own commands, ``damnit_made``):
a window says it is DAMNIT's and that AMORE never changes it, shows DAMNIT's table read-only,
and offers the ways on - the import (``amore-proto import-damnit`` run as a process with
progress, then the imported directory's run table) or an AMORE directory. DAMNIT's directory is
left byte for byte as it was (a digest of every file, :func:`tests.conftest.tree_state`)."""
import pytest
from qtpy.QtCore import Qt

from tests.conftest import PROPOSAL, copy_damnit_tree, tree_state
from tests.gui_helpers import qtbot_wait_until

pytestmark = pytest.mark.timeout(1200)   # the first test waits for DAMNIT's venv and runs

SAYS = "holds a DAMNIT database (data format 4); AMORE does not change it"


@pytest.fixture
def tree(damnit_made, tmp_path, monkeypatch):
    """A private copy of the DAMNIT-made proposal tree; the data root, GUI settings and
    environment pointed at it (no broker, no dialogs)."""
    t = copy_damnit_tree(damnit_made, tmp_path / "tree")
    monkeypatch.setenv("EXTRA_DATA_DATA_ROOT", str(t["root"]))
    monkeypatch.setenv("AMORE_BROKER", "none")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("AMORE_GUI_NO_DIALOGS", "1")
    monkeypatch.setenv("AMORE_GUI_CONFIG", str(tmp_path / "gui.json"))
    t["before"] = tree_state(t["damnit"])
    return t


@pytest.fixture
def windows(qtbot):
    """Windows opened through :func:`amore_gui._qt.mainwindow.open_choice`; those still open
    are closed after the test."""
    from amore_gui._qt.mainwindow import _top_level
    yield _top_level
    for w in list(_top_level):
        try:
            w.close()
        except RuntimeError:        # deleted on close already
            pass
    qtbot.wait(50)


def _window(found):
    from amore_gui._qt.mainwindow import open_choice
    # offer_backend=False: the imported directory's window would ask (a modal question) to
    # start its backend, as it does for a user
    w = open_choice(found, use_kafka=False, offer_backend=False)
    qtbot_wait_until(lambda: w.table is not None, timeout=60000)
    return w


# --- the application layer (no Qt) -----------------------------------------------------------

def test_damnit_table_reads_as_amore_shows_its_own_and_changes_nothing(tree):
    from amore_gui.application import damnit
    from amore_gui.application.table_data import K_ERROR, K_SKIPPED, K_SPARKLINE, K_THUMBNAIL
    d = tree["damnit"]
    found = damnit.damnit_dir(d)
    assert (found.path, found.data_format, found.readable) == (d, 4, True)
    assert found.dest == tree["pdir"] / "usr/Shared/amore-proto" and SAYS in found.message
    assert not found.dest_has_amore()
    assert damnit.damnit_dir(tree["pdir"] / "usr") is None
    t = damnit.read_table(d)
    data = t.data
    assert t.proposal == PROPOSAL and sorted(int(r) for r in data.run[:data.nrows]) == [1, 2]
    row = data.row_of[(PROPOSAL, 1)]

    def kind(name):
        return data.cell_kind(row, data.col_of(name))
    assert data.value(row, data.col_of("text")) == "hello"
    assert data.value(row, data.col_of("number")) == 1
    assert data.comment[row] == "first good run"
    assert data.columns[data.col_of("xgm")].title == "XGM energy"
    assert data.columns[data.col_of("xgm")].units == "μJ"      # as DAMNIT stored it
    assert (kind("image"), kind("trend"), kind("broken"), kind("missing")) == \
        (K_THUMBNAIL, K_SPARKLINE, K_ERROR, K_SKIPPED)
    assert t.thumbnails[(PROPOSAL, 1, "image")][:8] == b"\x89PNG\r\n\x1a\n"
    assert data.value(row, data.col_of("sample")) == "lysozyme"      # a user-editable value
    assert tree_state(d) == tree["before"]


def test_import_job_reads_the_commands_progress():
    from amore_gui.application.damnit import ImportJob, progress_line
    job = ImportJob("/p/usr/Shared/amore", "/p/usr/Shared/amore-proto")
    assert job.argv[-5:] == ["import-damnit", "/p/usr/Shared/amore", "/p/usr/Shared/amore-proto",
                             "--progress", "json"]
    assert job.command_text == ("amore-proto import-damnit /p/usr/Shared/amore "
                                "/p/usr/Shared/amore-proto")
    out = job.feed((progress_line("runs", 3, 10) + "\nImported /p/usr").encode())
    assert out == [] and (job.stage_text, job.done, job.total) == ("Runs and values", 3, 10)
    assert job.feed(b"/Shared/amore-proto from DAMNIT's\n") == [
        "Imported /p/usr/Shared/amore-proto from DAMNIT's"]
    assert job.finish(0) == "Imported into /p/usr/Shared/amore-proto."
    job = ImportJob("/p/a", "/p/b", update=True)
    assert job.argv[-1] == "--update"
    job.feed(b"amore-proto import-damnit: /p/b holds no AMORE directory to update")
    assert job.finish(1) == "The import failed: /p/b holds no AMORE directory to update"


# --- the GUI ---------------------------------------------------------------------------------

def test_gui_opening_damnits_directory_shows_what_it_is_read_only(windows, tree):
    from amore_gui._qt.opening import resolve_or_ask
    from amore_gui.application.damnit import DamnitDir
    d = tree["damnit"]
    found = resolve_or_ask(str(d))
    assert isinstance(found, DamnitDir) and found.path == d
    w = _window(found)
    assert "This is DAMNIT's directory" in w.heading.text() and str(d) in w.heading.text()
    assert "AMORE never changes anything in DAMNIT's directory" in w.heading.text()
    assert w.dest.text() == str(tree["pdir"] / "usr/Shared/amore-proto")
    qtbot_wait_until(lambda: w.import_btn.isEnabled())
    assert w.import_btn.text() == "Import and open" and w.open_btn.isEnabled()
    assert not w.open_dest_btn.isVisible()
    m = w.model
    assert [m.run_at(i)[1] for i in range(m.rowCount())] == [2, 1]
    assert "read-only: 2 runs" in w.counts.text()
    c = m.column_of("text")
    idx = m.index(m.view_row_of(PROPOSAL, 1), c)
    assert m.data(idx) == "hello"
    # nothing can be edited: no comment, no user value, no Status box
    for key in ("#comment", "sample", "#status", "text"):
        i = m.index(0, m.column_of(key))
        assert not m.flags(i) & (Qt.ItemIsEditable | Qt.ItemIsUserCheckable)
        assert not m.setData(i, "x", Qt.EditRole)
    # a thumbnail cell is drawn from DAMNIT's PNG; a cell's data is inspected from its run file
    w.resize(1200, 700)
    w.show()
    img = m.index(m.view_row_of(PROPOSAL, 1), m.column_of("image"))
    w.view.scrollTo(img)
    qtbot_wait_until(lambda: (w.thumbs.get((PROPOSAL, 1, "image"), 40) is not None))
    insp = w.inspect(img)
    qtbot_wait_until(lambda: insp.kind is not None)
    assert insp.kind == "image" and insp.value.shape == (20, 20)
    assert not insp.post_btn.isVisibleTo(insp)
    insp.close()
    # a proposal whose AMORE directory does not exist yet beside DAMNIT's: the same window
    found = resolve_or_ask(str(PROPOSAL))
    assert isinstance(found, DamnitDir) and found.path == d
    assert found.dest == tree["pdir"] / "usr/Shared/amore-proto"
    w.close()
    assert tree_state(d) == tree["before"]


def test_gui_imports_damnits_directory_with_progress_and_opens_it(windows, tree):
    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui.application.damnit import damnit_dir
    d = tree["damnit"]
    dest = tree["pdir"] / "usr/Shared/amore-proto"
    w = _window(damnit_dir(d))
    qtbot_wait_until(lambda: w.import_btn.isEnabled())
    stages = set()
    w.progress.valueChanged.connect(lambda _v: stages.add(w.job.stage))
    w.import_btn.click()
    assert not w.import_btn.isEnabled() and not w.open_btn.isEnabled()
    assert w.progress.isVisible()
    qtbot_wait_until(lambda: w.job.exit_code is not None, timeout=300000)
    assert w.job.exit_code == 0, "\n".join(w.job.lines)
    assert w.opened == dest and "runs" in stages
    assert any(line.startswith(f"Imported {dest} from DAMNIT's {d}") for line in w.job.lines)
    main = [x for x in windows if isinstance(x, MainWindow)]
    assert len(main) == 1 and main[0].context_dir == dest
    qtbot_wait_until(lambda: main[0].is_fully_loaded, timeout=60000)
    m = main[0].model
    assert sorted(m.run_at(i)[1] for i in range(m.rowCount())) == [1, 2]
    assert m.data(m.index(m.view_row_of(PROPOSAL, 1), m.column_of("text"))) == "hello"
    main[0].close()
    assert tree_state(d) == tree["before"]

    # opened again: the AMORE directory is there, so open it or bring it up to date
    w = _window(damnit_dir(d))
    qtbot_wait_until(lambda: w.import_btn.text() == "Update from DAMNIT and open")
    assert w.open_dest_btn.isVisible() and not w.empty_btn.isEnabled()
    w.import_btn.click()
    qtbot_wait_until(lambda: w.job.exit_code is not None, timeout=300000)
    assert w.job.exit_code == 0 and w.job.update, "\n".join(w.job.lines)
    assert any(line.startswith(f"Updated {dest}") for line in w.job.lines)
    for x in windows:
        if isinstance(x, MainWindow):
            x.close()
    assert tree_state(d) == tree["before"]


def test_gui_says_why_an_import_failed_and_changes_nothing(windows, tree):
    from amore_gui.application.damnit import damnit_dir
    d = tree["damnit"]
    w = _window(damnit_dir(d))
    w.dest.setText(str(d / "inside"))            # refused: inside DAMNIT's directory
    qtbot_wait_until(lambda: w.import_btn.isEnabled())
    w.import_btn.click()
    qtbot_wait_until(lambda: w.job.exit_code is not None, timeout=120000)
    assert w.job.exit_code == 1 and w.opened is None and w.isVisible()
    assert w.progress_text.text() == (f"The import failed: {d / 'inside'} is inside DAMNIT's "
                                      f"directory {d}, which AMORE does not change: choose a "
                                      f"directory elsewhere")
    assert w.import_btn.isEnabled()
    w.close()
    assert tree_state(d) == tree["before"]


def test_amore_proto_gui_of_damnits_directory_opens_its_window(tree, monkeypatch):
    """``amore-proto gui usr/Shared/amore`` shows DAMNIT's directory (and keeps running) instead
    of refusing; it writes nothing there. Where it may not ask ($AMORE_GUI_NO_DIALOGS) it
    refuses as every other command does (test_damnit's every-command test)."""
    import os
    import signal
    import subprocess
    import time
    from tests.conftest import amore_cmd
    monkeypatch.delenv("AMORE_GUI_NO_DIALOGS")
    p = subprocess.Popen(amore_cmd("gui", tree["damnit"]), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    try:
        time.sleep(6)
        assert p.poll() is None, p.stdout.read().decode()
    finally:
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=30)[0].decode()
    assert "Traceback" not in out, out
    assert tree_state(tree["damnit"]) == tree["before"]
