"""Helpers of the Qt GUI tests (they import Qt: only the GUI test modules import this): read a
cell of a main window, the runs in its view, wait for a condition while Qt runs."""
from qtpy.QtCore import Qt

from tests.gui_fixtures import GUI_PROPOSAL, WAIT


def cell(w, run, key, role=Qt.DisplayRole):
    m = w.model
    return m.data(m.index(m.view_row_of(GUI_PROPOSAL, run), m.column_of(key)), role)


def runs_in_view(w):
    return [w.model.run_at(i)[1] for i in range(w.model.rowCount())]


def qtbot_wait_until(pred, timeout=WAIT, what=None, seen=None):
    """Run Qt's event loop until ``pred()`` is true; after ``timeout`` ms raise AssertionError
    naming ``what`` was waited for and, if given, what ``seen()`` shows then."""
    from qtpy.QtTest import QTest
    import time
    t = time.time()
    while not pred():
        if time.time() - t > timeout / 1000:
            msg = f"condition not met in time ({timeout / 1000:g} s)"
            if what:
                msg += f": {what}"
            if seen is not None:
                msg += f"; seen: {seen()!r}"
            raise AssertionError(msg)
        QTest.qWait(20)
