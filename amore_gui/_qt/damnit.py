"""A DAMNIT directory opened in the GUI: what it is, the ways on, and DAMNIT's table read-only.

At European XFEL a proposal's ``usr/Shared/amore`` is DAMNIT's context directory. Opened in the
GUI (``amore-proto gui usr/Shared/amore``, the Open dialog, or a proposal whose AMORE directory
does not exist yet beside DAMNIT's), :class:`DamnitWindow` says plainly that this is DAMNIT's
directory and that AMORE never changes it, and offers:

* **Import into AMORE** - ``amore-proto import-damnit SRC DEST`` run as a process of its own
  (``QProcess``; :class:`amore_gui.application.damnit.ImportJob` reads its progress), then the
  run table of DEST opens. When DEST holds an AMORE directory already: open it, or bring it up
  to date (``--update``) and open it.
* **Open an AMORE directory** - the Open dialog.
* **Start an empty AMORE directory** at DEST (a context file from a template), without DAMNIT's
  history.

Below that it shows DAMNIT's run table as it is (read off the GUI thread in one read
transaction, :func:`amore_gui.application.damnit.read_table`): sortable, cells inspectable,
nothing editable. Nothing is ever written into DAMNIT's directory.
"""
from __future__ import annotations

import os
from pathlib import Path

from qtpy.QtCore import QProcess, Qt, QTimer
from qtpy.QtWidgets import (QAbstractItemView, QFileDialog, QFrame, QHBoxLayout, QLabel,
                             QLineEdit, QMainWindow, QMessageBox, QProgressBar, QPushButton,
                             QVBoxLayout, QWidget)

from amore_gui.application import damnit as damnit_mod
from amore_gui.application.damnit import DamnitDir
from amore_gui.application.table_data import C_PROPOSAL, C_RUN, K_THUMBNAIL, NSTATIC
from amore_gui.application.workspace import Workspace
from amore_gui._qt.columns import auto_widths
from amore_gui._qt.delegates import CellDelegate, ThumbnailCache
from amore_gui._qt.model import RunTableModel
from amore_gui._qt.table import ROW_COMPACT, ROW_IMAGES, RunTable
from amore_gui._qt.workers import Tasks, thumbnail_image

BANNER_STYLE = ("QFrame#damnit-banner { background: #fff8e5; border-bottom: 1px solid #e8d9a8; }"
                " QLabel#damnit-error { color: #a4262c; }")


class ReadOnlyModel(RunTableModel):
    """The run table model with nothing editable (no comment, manual cell or Status box)."""

    def flags(self, index):
        return Qt.ItemIsEnabled | Qt.ItemIsSelectable if index.isValid() else Qt.NoItemFlags

    def setData(self, index, value, role=Qt.EditRole):
        return False


class DamnitWindow(QMainWindow):
    """DAMNIT's directory ``damnit`` (a :class:`~amore_gui.application.damnit.DamnitDir`): see
    the module docstring. ``open_choice(path)`` opens an AMORE directory's run table (given
    a :class:`~amore_gui.application.damnit.DamnitDir`: another DAMNIT directory's window);
    :func:`amore_gui._qt.opening.open_choice` keeps the windows. This window closes once it
    opened one.
    ``settings``: the user's GUI settings (the Open dialog's recent directories).

    State for tests and scripts: :attr:`table` (a
    :class:`~amore_gui.application.damnit.DamnitTable` once read), :attr:`job` (the running or
    last :class:`~amore_gui.application.damnit.ImportJob`), :attr:`opened` (the directory
    opened from here)."""

    def __init__(self, damnit: DamnitDir, open_choice, settings=None, parent=None):
        super().__init__(parent)
        self.setAttribute(Qt.WA_DeleteOnClose, True)
        self.damnit = damnit
        self.open_choice = open_choice
        self._dest_has_amore = False
        self._dest_known: Path | None = None
        self.settings = settings
        self.tasks = Tasks(self)
        #: for the inspection window: DAMNIT's run files are read (h5py, read-only)
        self.workspace = Workspace(damnit.path)
        self.posting = None          # nothing is posted from a read-only view
        self.table = None
        self.job: damnit_mod.ImportJob | None = None
        self.proc: QProcess | None = None
        self.opened: Path | None = None
        self._windows: list = []
        self.setWindowTitle(f"DAMNIT's table (read-only) — {damnit.path} — AMORE")

        central = QWidget(self)
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self._banner())
        self.model = ReadOnlyModel(parent=self)
        self.view = RunTable(self)
        self.view.setModel(self.model)
        self.view.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.thumbs = ThumbnailCache(self._request_thumbnail, parent=self)
        self.thumbs.changed.connect(self._thumbnail_loaded)
        self.view.setItemDelegate(CellDelegate(lambda: self.model, self.thumbs, self.view))
        self.view.doubleClicked.connect(self.inspect)
        self.view.horizontalHeader().sortIndicatorChanged.connect(self._sort)
        lay.addWidget(self.view, 1)
        self.setCentralWidget(central)
        self.counts = QLabel("Reading DAMNIT's table…")
        self.statusBar().addWidget(self.counts, 1)
        self.resize(1280, 800)
        self._update_dest()
        if damnit.readable:
            self.tasks.submit(damnit_mod.read_table, damnit.path, callback=self._loaded)
        else:
            self.counts.setText("DAMNIT's table cannot be shown (see above).")

    # -- the banner: what this is, the ways on --------------------------------------------
    def _banner(self) -> QFrame:
        d = self.damnit
        box = QFrame()
        box.setObjectName("damnit-banner")
        box.setStyleSheet(BANNER_STYLE)
        lay = QVBoxLayout(box)
        lay.setContentsMargins(14, 10, 14, 10)
        self.heading = QLabel(
            f"<h3 style='margin:0'>This is DAMNIT's directory</h3>"
            f"<p style='margin:4px 0 0 0'><b>{d.path}</b> holds DAMNIT's run table (data format "
            f"{d.data_format}). AMORE never changes anything in DAMNIT's directory: the table "
            f"below is shown as it is and cannot be edited here.</p>")
        self.heading.setWordWrap(True)
        self.heading.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.heading)
        if not d.readable:
            hint = ("Use an AMORE that knows the newer format." if d.data_format > 4 else
                    "DAMNIT 0.4.0 upgrades older formats when it opens the database.")
            why = QLabel(f"AMORE reads DAMNIT's data format 4 (DAMNIT 0.4.0), not "
                         f"{d.data_format}: it can neither show nor import this table. {hint}")
            why.setObjectName("damnit-error")
            why.setWordWrap(True)
            lay.addWidget(why)
        self.ways = QLabel(
            "To work on this beamtime with AMORE, import it into a directory of AMORE's own: "
            "every run, value, stored array, comment and user column comes across, and DAMNIT "
            "can keep running meanwhile (<i>Update</i> brings in what it computed since). Or "
            "open an AMORE directory you already have.")
        self.ways.setWordWrap(True)
        lay.addWidget(self.ways)
        row = QHBoxLayout()
        row.addWidget(QLabel("AMORE directory:"))
        self.dest = QLineEdit(str(d.dest) if d.dest is not None else "")
        self.dest.setPlaceholderText("where AMORE's directory goes (outside DAMNIT's)")
        self.dest.textChanged.connect(lambda _t: self._update_dest())
        row.addWidget(self.dest, 1)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(browse)
        self.import_btn = QPushButton("Import and open")
        self.import_btn.setDefault(True)
        self.import_btn.clicked.connect(lambda: self.start_import(update=self._dest_has_amore))
        row.addWidget(self.import_btn)
        self.open_dest_btn = QPushButton("Open it")
        self.open_dest_btn.clicked.connect(lambda: self._open(self.dest_path()))
        row.addWidget(self.open_dest_btn)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.open_btn = QPushButton("Open an AMORE directory…")
        self.open_btn.clicked.connect(self.open_other)
        row.addWidget(self.open_btn)
        self.empty_btn = QPushButton("Start an empty AMORE directory…")
        self.empty_btn.setToolTip("A new AMORE directory with a context file from a template, "
                                  "without DAMNIT's history")
        self.empty_btn.clicked.connect(self.create_empty)
        row.addWidget(self.empty_btn)
        row.addSpacing(12)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.progress.setMinimumWidth(240)     # room for "Runs and values: 120 of 1000"
        self.progress.setMaximumWidth(320)
        row.addWidget(self.progress)
        self.progress_text = QLabel("")
        self.progress_text.setWordWrap(True)
        self.progress_text.setTextInteractionFlags(Qt.TextSelectableByMouse)
        row.addWidget(self.progress_text, 1)
        lay.addLayout(row)
        for w in (self.dest, browse, self.import_btn, self.open_dest_btn):
            w.setEnabled(d.readable)
        self._dest_widgets = (self.dest, browse)
        return box

    def dest_path(self) -> Path | None:
        """The AMORE directory chosen (absolute), or None."""
        t = self.dest.text().strip()
        return Path(t).expanduser().absolute() if t else None

    def _update_dest(self):
        """Ask (task pool) whether the chosen AMORE directory exists, then fit the buttons."""
        dest = self.dest_path()
        if dest != self._dest_known:
            self._dest_known, self._dest_has_amore = None, False
            self._fit_buttons()
            if dest is not None:
                self.tasks.submit(self.damnit.dest_has_amore, dest,
                                  callback=lambda has, _err, d=dest: self._dest_answer(d, has))
            return
        self._fit_buttons()

    def _dest_answer(self, dest, has):
        if dest != self.dest_path():
            return              # the user typed on meanwhile
        self._dest_known, self._dest_has_amore = dest, bool(has)
        self._fit_buttons()

    def _fit_buttons(self):
        dest = self._dest_known
        busy = self.proc is not None
        ok = self.damnit.readable and dest is not None and not busy
        self.import_btn.setText("Update from DAMNIT and open" if self._dest_has_amore
                                else "Import and open")
        self.import_btn.setToolTip(
            f"amore-proto import-damnit {self.damnit.path} {dest or 'DEST'}"
            + (" --update" if self._dest_has_amore else ""))
        self.import_btn.setEnabled(ok)
        self.open_dest_btn.setVisible(self._dest_has_amore)
        self.open_dest_btn.setEnabled(self._dest_has_amore and not busy)
        self.empty_btn.setEnabled(dest is not None and not self._dest_has_amore and not busy)
        self.open_btn.setEnabled(not busy)
        for w in self._dest_widgets:
            w.setEnabled(self.damnit.readable and not busy)

    def _browse(self):
        d = QFileDialog.getExistingDirectory(self, "Where AMORE's directory goes",
                                             str((self.dest_path() or self.damnit.path).parent))
        if d:
            self.dest.setText(d)

    # -- the import ------------------------------------------------------------------------
    def start_import(self, update: bool = False) -> None:
        """Run ``amore-proto import-damnit SRC DEST`` (``update``: ``--update``) as a process;
        open DEST when it succeeded."""
        dest = self.dest_path()
        if dest is None or self.proc is not None:
            return
        self.job = job = damnit_mod.ImportJob(self.damnit.path, dest, update=update)
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.MergedChannels)
        proc.setWorkingDirectory(str(job.cwd))
        proc.readyReadStandardOutput.connect(self._output)
        proc.finished.connect(self._finished)
        self.proc = proc
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self._say(f"{'Updating' if update else 'Importing'}… ({job.command_text})")
        self._fit_buttons()
        proc.start(job.argv[0], job.argv[1:])

    def _output(self):
        if self.proc is None:
            return
        self.job.feed(bytes(self.proc.readAllStandardOutput()))
        job = self.job
        if job.total:
            self.progress.setRange(0, job.total)
            self.progress.setValue(job.done)
            self.progress.setFormat(f"{job.stage_text}: %v of %m")
        else:
            self.progress.setRange(0, 0)

    def _finished(self, code, _status=None):
        self._output()
        said = self.job.finish(int(code))
        self.proc.deleteLater()
        self.proc = None
        self.progress.setVisible(False)
        self._dest_known = None         # it may exist now
        self._update_dest()
        if code == 0:
            self._say(said)
            self._open(self.job.dest)
        else:
            self._say(said, error=True)

    def _say(self, text: str, error: bool = False):
        self.progress_text.setStyleSheet("color: #a4262c;" if error else "")
        self.progress_text.setText(text)

    # -- the other ways on -----------------------------------------------------------------
    def _open(self, path: Path | None) -> None:
        if path is None:
            return
        self.opened = Path(path)
        self.open_choice(self.opened)
        self.close()

    def open_other(self) -> None:
        """The Open dialog; a chosen AMORE directory opens (another DAMNIT directory too)."""
        from amore_gui._qt.opening import choose_target
        from amore_gui.application.settings import Settings
        choice = choose_target(self.settings or Settings(), self)
        if choice is not None:
            self.opened = choice if isinstance(choice, Path) else None
            self.open_choice(choice)
            self.close()

    def create_empty(self) -> None:
        """Offer to create an empty AMORE directory at DEST (context file from a template);
        open it."""
        from amore_gui._qt.opening import offer_to_create
        from amore_gui.application.opening import Target
        dest = self.dest_path()
        if dest is None:
            return
        proposal = self.table.proposal if self.table is not None else None
        if offer_to_create(Target(dest, proposal), self):
            self._open(dest)

    # -- DAMNIT's table, read-only ---------------------------------------------------------
    def _loaded(self, table, err):
        if err:
            self.counts.setText(f"Could not read DAMNIT's table: {err}")
            return
        self.table = table
        data = table.data
        self.model.set_table(data, C_RUN, True)
        hh = self.view.horizontalHeader()
        hh.setSectionHidden(data.col_of(C_PROPOSAL), True)
        for key, w in auto_widths(self.view, self.model).items():
            hh.resizeSection(data.col_of(key), int(w))
        hh.setSortIndicator(data.col_of(C_RUN), Qt.DescendingOrder)
        images = any(K_THUMBNAIL in data.column_kinds(c) for c in range(NSTATIC, len(data.columns)))
        self.view.verticalHeader().setDefaultSectionSize(ROW_IMAGES if images else ROW_COMPACT)
        self.counts.setText(f"DAMNIT's table, read-only: {data.nrows} runs × {table.variables} "
                            f"variables (double-click a cell to inspect it)")

    def _sort(self, col, order):
        if self.table is None:
            return
        self.model.set_table(self.model.data_obj, self.model.data_obj.columns[col].key,
                             order == Qt.DescendingOrder)

    def _request_thumbnail(self, key, height):
        png = self.table.thumbnails.get(key) if self.table is not None else None

        QTimer.singleShot(0, lambda: self.thumbs.put(key, thumbnail_image(png, height)))

    def _thumbnail_loaded(self, key):
        p, r, name = key
        vr, c = self.model.view_row_of(p, r), self.model.column_of(name)
        if vr >= 0 and c >= 0:
            self.view.update(self.model.index(vr, c))

    def inspect(self, idx):
        """Open an inspection window for a variable cell (DAMNIT's run file, read-only)."""
        if not idx.isValid() or idx.column() < NSTATIC:
            return None
        from amore_gui._qt.inspect import InspectWindow
        from amore_gui._qt.model import KeyRole
        p, r, key = self.model.data(idx, KeyRole)
        w = InspectWindow(self, p, r, key)
        self._windows.append(w)
        w.show()
        return w

    def message(self, text: str, error: bool = False) -> None:
        """Tell the user something (status bar; a message box unless dialogs are off)."""
        self.statusBar().showMessage(text, 10000)
        if not os.environ.get("AMORE_GUI_NO_DIALOGS"):
            (QMessageBox.warning if error else QMessageBox.information)(self, "AMORE", text)

    def closeEvent(self, ev):
        if self.proc is not None:
            if os.environ.get("AMORE_GUI_NO_DIALOGS") or QMessageBox.question(
                    self, "AMORE", "The import is still running. Stop it? (The AMORE "
                    "directory it was making stays incomplete; DAMNIT's is not touched.)"
            ) == QMessageBox.Yes:
                proc, self.proc = self.proc, None
                proc.finished.disconnect()
                proc.terminate()
                proc.waitForFinished(5000)
            else:
                ev.ignore()
                return
        for w in self._windows:
            try:
                w.close()
            except RuntimeError:
                pass
        self.tasks.wait(5000)
        super().closeEvent(ev)
