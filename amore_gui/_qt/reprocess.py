"""Reprocessing runs from the GUI: the dialog runs the job of
:class:`amore_gui.application.reprocess.ReprocessJob` (``amore-proto reprocess``) in a
``QProcess`` and shows its progress.

The command's log lines (``Run N: ...``, ``Run N failed``) advance the progress bar; the new
values reach the table through the normal live-update path.
"""
from __future__ import annotations

from qtpy.QtCore import QProcess, Qt, QTimer, Signal
from qtpy.QtWidgets import (QButtonGroup, QCheckBox, QDialog, QHBoxLayout, QLabel, QLineEdit,
                            QListWidget, QListWidgetItem, QPlainTextEdit, QProgressBar,
                            QPushButton, QRadioButton, QVBoxLayout)

from amore_gui.application.reprocess import TERMINATE_GRACE, compact_runs, slurm_available
from amore_gui.application.table_data import NSTATIC


class ReprocessDialog(QDialog):
    """Choose runs and variables, run the reprocess job, show its progress.

    Signals: ``finished_job(exit_code)``.
    """

    finished_job = Signal(int)

    def __init__(self, main, selected_runs: list[tuple[int, int]]):
        super().__init__(None, Qt.Window)
        self.setAttribute(Qt.WA_DeleteOnClose, True)
        self.main = main
        self.setWindowTitle("Reprocess runs — AMORE")
        lay = QVBoxLayout(self)
        self.sel_runs = [r for _, r in selected_runs]
        self.rb_sel = QRadioButton(
            f"Selected: run {compact_runs(self.sel_runs)}" if len(self.sel_runs) == 1 else
            f"Selected: runs {compact_runs(self.sel_runs)}" if self.sel_runs else
            "Selected runs (none selected)")
        self.rb_sel.setEnabled(bool(self.sel_runs))
        self.rb_all = QRadioButton(f"All {main.model.data_obj.nrows} runs")
        self.rb_list = QRadioButton("Runs:")
        self.runs_edit = QLineEdit()
        self.runs_edit.setPlaceholderText("e.g. 3-7 12")
        self.runs_edit.textEdited.connect(lambda _: self.rb_list.setChecked(True))
        grp = QButtonGroup(self)
        for b in (self.rb_sel, self.rb_all, self.rb_list):
            grp.addButton(b)
        (self.rb_sel if self.sel_runs else self.rb_all).setChecked(True)
        lay.addWidget(QLabel("<b>Runs</b>"))
        lay.addWidget(self.rb_sel)
        lay.addWidget(self.rb_all)
        stale = main.model.data_obj.stale_count()
        self.cb_force = QCheckBox("Recompute every value of all runs, not only the stale ones"
                                  + (f" ({stale} now)" if stale else ""))
        self.cb_force.setToolTip(
            "All runs: only the values whose code, manual inputs or data changed (and what "
            "depends on them) are computed, unless this is checked (amore-proto reprocess "
            "all --force). Selected or listed runs are always computed whole.")
        row = QHBoxLayout()
        row.addSpacing(20)
        row.addWidget(self.cb_force)
        lay.addLayout(row)
        self.rb_all.toggled.connect(self.cb_force.setEnabled)
        self.cb_force.setEnabled(self.rb_all.isChecked())
        row = QHBoxLayout()
        row.addWidget(self.rb_list)
        row.addWidget(self.runs_edit, 1)
        lay.addLayout(row)
        lay.addWidget(QLabel("<b>Where</b>"))
        self.rb_local = QRadioButton("On this machine (small work in the running backend's workers)")
        self.rb_local.setToolTip(
            "A few named runs, or a 'Reprocess all' of a few seconds of stale work, are computed "
            "by the backend running on this machine, in its warm workers; anything larger, or "
            "with no backend here, in worker processes of their own.")
        self.rb_slurm = QRadioButton("On Slurm, as array jobs ([slurm] settings)")
        has_sbatch = slurm_available()
        self.rb_slurm.setEnabled(has_sbatch)
        if not has_sbatch:
            self.rb_slurm.setToolTip("sbatch not found on this machine")
        where = QButtonGroup(self)
        where.addButton(self.rb_local)
        where.addButton(self.rb_slurm)
        self.rb_local.setChecked(True)
        lay.addWidget(self.rb_local)
        lay.addWidget(self.rb_slurm)
        lay.addWidget(QLabel("<b>Variables</b>"))
        self.vars = QListWidget()
        d = main.model.data_obj
        for c in d.columns[NSTATIC:]:
            it = QListWidgetItem(c.title + f"  ({c.key})")
            it.setData(Qt.UserRole, c.key)
            it.setFlags(it.flags() | Qt.ItemIsUserCheckable)
            it.setCheckState(Qt.Checked)
            self.vars.addItem(it)
        lay.addWidget(self.vars, 1)
        row = QHBoxLayout()
        for label, st in (("All", Qt.Checked), ("None", Qt.Unchecked)):
            b = QPushButton(label)
            b.clicked.connect(lambda _=False, s=st: [self.vars.item(i).setCheckState(s)
                                                     for i in range(self.vars.count())])
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        lay.addWidget(self.progress)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setVisible(False)
        lay.addWidget(self.log, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        self.start_btn = QPushButton("Reprocess")
        self.start_btn.setDefault(True)
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Close")
        self.cancel_btn.clicked.connect(self._cancel_or_close)
        row.addWidget(self.start_btn)
        row.addWidget(self.cancel_btn)
        lay.addLayout(row)
        self.proc: QProcess | None = None
        self.job = None
        self.exit_code = None
        self.resize(520, 620)

    def chosen_runs(self) -> list[str]:
        """Run arguments for the command (numbers, ranges or 'all')."""
        if self.rb_sel.isChecked():
            return [str(r) for r in self.sel_runs]
        if self.rb_all.isChecked():
            return ["all"]
        return self.runs_edit.text().replace(",", " ").split()

    def chosen_names(self) -> list[str] | None:
        """Chosen variable names, or None for all of them."""
        names = [self.vars.item(i).data(Qt.UserRole) for i in range(self.vars.count())
                 if self.vars.item(i).checkState() == Qt.Checked]
        return None if len(names) == self.vars.count() else names

    def start(self):
        """Start the reprocess job."""
        runs = self.chosen_runs()
        names = self.chosen_names()
        if not runs or names == []:
            self.log.setVisible(True)
            self.log.setPlainText("Choose at least one run and one variable.")
            return
        job = self.job = self.main.workspace.reprocess_job(
            runs, names, slurm=self.rb_slurm.isChecked(), all_runs=self.main.model.data_obj.nrows,
            force=self.cb_force.isChecked())
        self.progress.setRange(0, job.expected)
        self.progress.setValue(0)
        self.progress.setFormat(f"%v / {job.expected} runs")
        self.progress.setVisible(True)
        self.log.setVisible(True)
        self.log.appendPlainText(job.command_text)
        argv = job.argv
        self.proc = QProcess(self)
        self.proc.setProcessChannelMode(QProcess.MergedChannels)
        self.proc.setWorkingDirectory(str(job.cwd))
        self.proc.readyRead.connect(self._read)
        self.proc.finished.connect(self._finished)
        self.start_btn.setEnabled(False)
        self.cancel_btn.setText("Cancel")
        self.proc.start(argv[0], argv[1:])

    def _read(self):
        for line in self.job.feed(bytes(self.proc.readAll())):
            self.log.appendPlainText(line)
        if self.progress.maximum() != self.job.expected:   # reprocess all: the stale runs
            self.progress.setRange(0, self.job.expected)
            self.progress.setFormat(f"%v / {self.job.expected} runs")
        self.progress.setValue(self.job.progress)

    def _finished(self, code, status):
        self._read()
        self.exit_code = code
        self.log.appendPlainText(self.job.finish(code))
        self.progress.setValue(self.job.progress)
        self.start_btn.setEnabled(True)
        self.cancel_btn.setText("Close")
        self.proc = None
        self.main.live.poke()
        self.finished_job.emit(code)

    @property
    def done_runs(self) -> set[int]:
        """Runs the job has finished so far."""
        return self.job.done_runs if self.job is not None else set()

    def _cancel_or_close(self):
        if self.proc is not None:
            # SIGTERM; a run handed to the backend is cancelled there when the command goes
            # away. Killed after a grace time if still running; the event loop never blocks.
            proc = self.proc
            proc.terminate()
            QTimer.singleShot(int(TERMINATE_GRACE * 1000), lambda: _kill_if_running(proc))
            return
        self.close()

    def closeEvent(self, ev):
        if self.proc is not None:
            self.proc.kill()
            self.proc.waitForFinished(3000)
        super().closeEvent(ev)


def _kill_if_running(proc: QProcess) -> None:
    try:
        if proc.state() != QProcess.NotRunning:
            proc.kill()
    except RuntimeError:  # the dialog and its process are gone already
        pass
