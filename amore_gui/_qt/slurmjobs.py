"""A run's Slurm jobs in the GUI: their state and log (read on the task pool) and Cancel
(:class:`amore_gui.application.reprocess.CancelJob`, ``amore-proto cancel``, in a
``QProcess``, so nothing blocks the GUI thread)."""
from __future__ import annotations

from qtpy.QtCore import QProcess, Qt
from qtpy.QtWidgets import (QDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                             QPlainTextEdit, QPushButton, QVBoxLayout)

from amore_gui.application.reprocess import CancelJob
from amore_gui.application.slurmjobs import ACTIVE


class SlurmJobsDialog(QDialog):
    """Jobs of one run (state, node, elapsed, variables), the selected job's log, Cancel."""

    def __init__(self, main, proposal: int | str, run: int):
        super().__init__(None, Qt.Window)
        self.setAttribute(Qt.WA_DeleteOnClose, True)
        self.main, self.proposal, self.run = main, proposal, run
        self.setWindowTitle(f"Slurm jobs of run {run} — AMORE")
        lay = QVBoxLayout(self)
        self.summary = QLabel("Reading…")
        lay.addWidget(self.summary)
        self.jobs = QListWidget()
        self.jobs.setMaximumHeight(120)
        self.jobs.currentItemChanged.connect(lambda *_: self._show_log())
        lay.addWidget(self.jobs)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setLineWrapMode(QPlainTextEdit.NoWrap)
        lay.addWidget(self.log, 1)
        row = QHBoxLayout()
        self.refresh_btn = QPushButton("Refresh")
        self.refresh_btn.clicked.connect(self.refresh)
        self.cancel_btn = QPushButton("Cancel job")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel_jobs)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        row.addWidget(self.refresh_btn)
        row.addStretch(1)
        row.addWidget(self.cancel_btn)
        row.addWidget(close)
        lay.addLayout(row)
        self.proc: QProcess | None = None
        self.rows: list[dict] = []
        self.last_action = ""
        self.resize(760, 520)
        self.refresh()

    def refresh(self) -> None:
        self.main.tasks.submit(self.main.workspace.slurm_jobs, self.proposal, self.run,
                               callback=self._got_jobs)

    def _got_jobs(self, rows, error) -> None:
        if error:
            self.summary.setText(f"Cannot read the jobs: {error}")
            return
        self.rows = rows or []
        self.jobs.clear()
        for r in self.rows:
            el = "" if r["elapsed"] is None else f", {int(r['elapsed'])} s"
            text = (f"{r['task_id']}  {r['state']}" + (f" on {r['node']}" if r["node"] else "")
                    + el + f"  —  {', '.join(r['names'])}")
            it = QListWidgetItem(text)
            it.setData(Qt.UserRole, r)
            if r["message"]:
                it.setToolTip(r["message"])
            self.jobs.addItem(it)
        active = [r for r in self.rows if not r["done"] and r["state"] in ACTIVE]
        text = (f"{len(self.rows)} Slurm job(s) for run {self.run}, {len(active)} unfinished"
                if self.rows else f"No Slurm job for run {self.run}.")
        self.summary.setText(text + (f" — {self.last_action}" if self.last_action else ""))
        self.cancel_btn.setEnabled(bool(active) and self.proc is None)
        if self.rows:
            self.jobs.setCurrentRow(0)

    def _show_log(self) -> None:
        it = self.jobs.currentItem()
        if it is None:
            self.log.clear()
            return
        r = it.data(Qt.UserRole)
        self.main.tasks.submit(self.main.workspace.read_log_tail, r["log_file"],
                               callback=lambda text, err: self.log.setPlainText(
                                   err or f"{r['log_file']}\n\n{text}"))

    def cancel_jobs(self) -> None:
        argv = self.main.workspace.cancel_job([self.run]).argv
        self.cancel_btn.setEnabled(False)
        self.proc = QProcess(self)
        self.proc.setProcessChannelMode(QProcess.MergedChannels)
        self.proc.finished.connect(self._cancelled)
        self.proc.start(argv[0], argv[1:])

    def _cancelled(self, code, _status) -> None:
        self.last_action = CancelJob.summary(bytes(self.proc.readAll()), code)
        self.summary.setText(self.last_action)
        self.proc = None
        self.refresh()

    def closeEvent(self, ev):
        if self.proc is not None:
            self.proc.waitForFinished(3000)
        super().closeEvent(ev)
