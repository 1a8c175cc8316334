"""Reprocessing runs from the GUI: ``amore-proto reprocess`` in a ``QProcess`` with progress.

The command's log lines (``Run N: ...``, ``Run N failed``) advance the progress bar; the new
values reach the table through the normal live-update path.
"""
from __future__ import annotations

import shutil

from qtpy.QtCore import QProcess, Qt, QTimer, Signal
from qtpy.QtWidgets import (QButtonGroup, QDialog, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                             QListWidgetItem, QPlainTextEdit, QProgressBar, QPushButton,
                             QRadioButton, QVBoxLayout)

from amore_gui.application.reprocess_job import read_lines, reprocess_argv
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
            f"Selected: run {_compact(self.sel_runs)}" if len(self.sel_runs) == 1 else
            f"Selected: runs {_compact(self.sel_runs)}" if self.sel_runs else
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
        row = QHBoxLayout()
        row.addWidget(self.rb_list)
        row.addWidget(self.runs_edit, 1)
        lay.addLayout(row)
        lay.addWidget(QLabel("<b>Where</b>"))
        self.rb_local = QRadioButton("Here, in local worker processes")
        self.rb_slurm = QRadioButton("On Slurm, as array jobs ([slurm] settings)")
        has_sbatch = shutil.which("sbatch") is not None
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
        self.done_runs: set[int] = set()
        self.exit_code = None
        self._buf = b""
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

    def _expected(self, runs) -> int:
        if runs == ["all"]:
            return self.main.model.data_obj.nrows
        n = 0
        for t in runs:
            if "-" in t:
                a, _, b = t.partition("-")
                try:
                    n += int(b) - int(a) + 1
                except ValueError:
                    pass
            else:
                n += 1
        return max(n, 1)

    def start(self):
        """Start the reprocess job."""
        runs = self.chosen_runs()
        names = self.chosen_names()
        if not runs or names == []:
            self.log.setVisible(True)
            self.log.setPlainText("Choose at least one run and one variable.")
            return
        argv = reprocess_argv(self.main.context_dir, runs, names, self.rb_slurm.isChecked())
        self.expected = self._expected(runs)
        self.progress.setRange(0, self.expected)
        self.progress.setValue(0)
        self.progress.setFormat(f"%v / {self.expected} runs")
        self.progress.setVisible(True)
        self.log.setVisible(True)
        self.log.appendPlainText("$ amore-proto " + " ".join(argv[3:]))
        self.done_runs = set()
        self.proc = QProcess(self)
        self.proc.setProcessChannelMode(QProcess.MergedChannels)
        self.proc.setWorkingDirectory(str(self.main.context_dir))
        self.proc.readyRead.connect(self._read)
        self.proc.finished.connect(self._finished)
        self.start_btn.setEnabled(False)
        self.cancel_btn.setText("Cancel")
        self.proc.start(argv[0], argv[1:])

    def _read(self):
        self._buf += bytes(self.proc.readAll())
        whole, _, self._buf = self._buf.rpartition(b"\n")
        for line in read_lines(whole, self.done_runs):
            self.log.appendPlainText(line)
        self.progress.setValue(min(len(self.done_runs), self.expected))

    def _finished(self, code, status):
        self._read()
        self.exit_code = code
        self.progress.setValue(self.expected if code == 0 else len(self.done_runs))
        self.log.appendPlainText("Done." if code == 0 else f"Finished with exit code {code}.")
        self.start_btn.setEnabled(True)
        self.cancel_btn.setText("Close")
        self.proc = None
        if self.main.update_thread is not None:
            self.main.update_thread.poke()
        self.finished_job.emit(code)

    def _cancel_or_close(self):
        if self.proc is not None:
            # SIGTERM; a run handed to the backend is cancelled there when the command goes
            # away. Killed after 3 s if still running; the event loop is never blocked.
            proc = self.proc
            proc.terminate()
            QTimer.singleShot(3000, lambda: _kill_if_running(proc))
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


def _compact(runs: list[int]) -> str:
    runs = sorted(runs)
    parts, i = [], 0
    while i < len(runs):
        j = i
        while j + 1 < len(runs) and runs[j + 1] == runs[j] + 1:
            j += 1
        parts.append(str(runs[i]) if i == j else f"{runs[i]}–{runs[j]}")
        i = j + 1
    s = ", ".join(parts)
    return s if len(s) < 60 else s[:57] + "…"
