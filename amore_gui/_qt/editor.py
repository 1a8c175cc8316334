"""The context-file editor: line numbers, Python highlighting, validation before saving.

Validation runs :mod:`amore_gui.application.context_check` in a ``QProcess`` (the user's code never runs in
the GUI process); errors are shown with their line number and the line is highlighted. Saving
writes the file atomically (:meth:`amore_gui.application.workspace.Workspace.save_context_file`);
the backend notices the change and reloads it.
"""
from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from qtpy.QtCore import QProcess, QProcessEnvironment, QRect, QRegularExpression, QSize, Qt, Signal
from qtpy.QtGui import (QColor, QFont, QPainter, QSyntaxHighlighter, QTextCharFormat,
                         QTextCursor, QTextFormat)
from qtpy.QtWidgets import (QAction, QLabel, QMainWindow, QMessageBox, QPlainTextEdit,
                             QSplitter, QTextEdit, QToolBar, QWidget)

from amore_gui.application import context_check
from amore_gui._qt.app import monospace_font


def open_in_external_editor(path: Path) -> bool:
    """Open ``path`` in ``$VISUAL``, ``$EDITOR`` (in a terminal when one is available) or
    ``xdg-open``; returns False if none could be started."""
    from qtpy.QtCore import QProcess as P
    path = str(path)
    vis = os.environ.get("VISUAL")
    if vis:
        cmd = shlex.split(vis)
        return P.startDetached(cmd[0], cmd[1:] + [path])
    ed = os.environ.get("EDITOR")
    if ed:
        cmd = shlex.split(ed)
        term = shutil.which("x-terminal-emulator") or shutil.which("xterm")
        if term:
            return P.startDetached(term, ["-e"] + cmd + [path])
        return P.startDetached(cmd[0], cmd[1:] + [path])
    xdg = shutil.which("xdg-open")
    if xdg:
        return P.startDetached(xdg, [path])
    return False


class PythonHighlighter(QSyntaxHighlighter):
    """Minimal Python highlighting: keywords, strings, comments, decorators, numbers."""

    KEYWORDS = ("and as assert break class continue def del elif else except False finally for "
                "from global if import in is lambda None nonlocal not or pass raise return True "
                "try while with yield").split()

    def __init__(self, doc):
        super().__init__(doc)

        def fmt(color, bold=False, italic=False):
            f = QTextCharFormat()
            f.setForeground(QColor(color))
            if bold:
                f.setFontWeight(QFont.Bold)
            f.setFontItalic(italic)
            return f
        self.rules = [(QRegularExpression(r"\b(%s)\b" % "|".join(self.KEYWORDS)), fmt("#0033b3", True)),
                      (QRegularExpression(r"@\w+"), fmt("#9e880d")),
                      (QRegularExpression(r"\b[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?\b"), fmt("#1750eb")),
                      (QRegularExpression(r"\"[^\"]*\"|'[^']*'"), fmt("#067d17")),
                      (QRegularExpression(r"#[^\n]*"), fmt("#8c8c8c", italic=True))]

    def highlightBlock(self, text):
        for rx, f in self.rules:
            it = rx.globalMatch(text)
            while it.hasNext():
                m = it.next()
                self.setFormat(m.capturedStart(), m.capturedLength(), f)


class _LineNumbers(QWidget):
    def __init__(self, editor):
        super().__init__(editor)
        self.editor = editor

    def sizeHint(self):
        return QSize(self.editor.number_width(), 0)

    def paintEvent(self, ev):
        self.editor.paint_numbers(ev)


class CodeEditor(QPlainTextEdit):
    """Plain-text editor with line numbers and an error-line highlight."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFont(monospace_font(10))
        self.setLineWrapMode(QPlainTextEdit.NoWrap)
        self.setTabStopDistance(4 * self.fontMetrics().horizontalAdvance(" "))
        self.numbers = _LineNumbers(self)
        self.error_line: int | None = None
        self.blockCountChanged.connect(lambda _: self.setViewportMargins(self.number_width(), 0, 0, 0))
        self.updateRequest.connect(self._update_numbers)
        self.cursorPositionChanged.connect(self._highlight)
        self.setViewportMargins(self.number_width(), 0, 0, 0)
        self.highlighter = PythonHighlighter(self.document())

    def number_width(self) -> int:
        """Width of the line-number margin in pixels."""
        digits = len(str(max(1, self.blockCount())))
        return 14 + self.fontMetrics().horizontalAdvance("9") * max(3, digits)

    def _update_numbers(self, rect, dy):
        if dy:
            self.numbers.scroll(0, dy)
        else:
            self.numbers.update(0, rect.y(), self.numbers.width(), rect.height())

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        cr = self.contentsRect()
        self.numbers.setGeometry(QRect(cr.left(), cr.top(), self.number_width(), cr.height()))

    def paint_numbers(self, ev):
        """Paint the line numbers (error line in red)."""
        p = QPainter(self.numbers)
        p.fillRect(ev.rect(), QColor("#f5f6f7"))
        block = self.firstVisibleBlock()
        n = block.blockNumber()
        top = int(self.blockBoundingGeometry(block).translated(self.contentOffset()).top())
        bottom = top + int(self.blockBoundingRect(block).height())
        h = self.fontMetrics().height()
        while block.isValid() and top <= ev.rect().bottom():
            if block.isVisible() and bottom >= ev.rect().top():
                err = self.error_line == n + 1
                p.setPen(QColor("#a4262c") if err else QColor("#a19f9d"))
                p.drawText(0, top, self.numbers.width() - 6, h, Qt.AlignRight, str(n + 1))
            block = block.next()
            top = bottom
            bottom = top + int(self.blockBoundingRect(block).height())
            n += 1

    def _highlight(self):
        sels = []
        cur = QTextEdit.ExtraSelection()
        cur.format.setBackground(QColor("#f6f8fa"))
        cur.format.setProperty(QTextFormat.FullWidthSelection, True)
        cur.cursor = self.textCursor()
        cur.cursor.clearSelection()
        sels.append(cur)
        if self.error_line:
            block = self.document().findBlockByNumber(self.error_line - 1)
            if block.isValid():
                e = QTextEdit.ExtraSelection()
                e.format.setBackground(QColor("#fde7e9"))
                e.format.setProperty(QTextFormat.FullWidthSelection, True)
                e.cursor = QTextCursor(block)
                sels.append(e)
        self.setExtraSelections(sels)

    def set_error_line(self, line: int | None):
        """Highlight an error line (None clears) and move the cursor there."""
        self.error_line = line
        self._highlight()
        self.numbers.update()
        if line:
            block = self.document().findBlockByNumber(line - 1)
            if block.isValid():
                c = QTextCursor(block)
                self.setTextCursor(c)
                self.centerCursor()


class ContextEditor(QMainWindow):
    """Edits ``context.py`` of a context directory (see module docstring).

    Signals: ``checked(CheckResult)`` after each validation; ``saved(path)``.
    """

    checked = Signal(object)
    saved = Signal(str)

    def __init__(self, workspace, parent_window=None):
        super().__init__(None)
        self.setAttribute(Qt.WA_DeleteOnClose, True)
        self.workspace = workspace
        self.context_dir = workspace.context_dir
        self.path = workspace.context_file
        self.editor = CodeEditor()
        self.messages = QPlainTextEdit()
        self.messages.setReadOnly(True)
        self.messages.setMaximumBlockCount(500)
        self.messages.setFont(monospace_font(9.5))
        split = QSplitter(Qt.Vertical)
        split.addWidget(self.editor)
        split.addWidget(self.messages)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 1)
        self.setCentralWidget(split)
        tb = QToolBar("Editor")
        tb.setMovable(False)
        self.addToolBar(tb)
        self.act_check = QAction("Check", self, triggered=lambda: self.validate())
        self.act_check.setToolTip("Load the file in a separate Python process and report errors")
        self.act_save = QAction("Save", self, triggered=lambda: self.save(), shortcut="Ctrl+S")
        self.act_reload = QAction("Revert", self, triggered=self.load)
        self.act_ext = QAction("Open in external editor", self,
                               triggered=lambda: open_in_external_editor(self.path))
        for a in (self.act_check, self.act_save, self.act_reload, self.act_ext):
            tb.addAction(a)
        self.status = QLabel()
        self.statusBar().addWidget(self.status, 1)
        self.proc: QProcess | None = None
        self._tmp: Path | None = None
        self._save_after = False
        self.last_result = None
        self.editor.document().modificationChanged.connect(self._title)
        self.load()
        self.resize(900, 760)

    def _title(self, *a):
        mod = "• " if self.editor.document().isModified() else ""
        self.setWindowTitle(f"{mod}{self.path} — AMORE context file")

    def load(self):
        try:
            text = self.workspace.read_context_file()
        except OSError as e:
            text = ""
            self.messages.setPlainText(f"Cannot read {self.path}: {e}")
        self.editor.setPlainText(text)
        self.editor.document().setModified(False)
        self.editor.set_error_line(None)
        self._title()

    def validate(self, then_save: bool = False):
        """Start checking the current text (asynchronous; ``checked`` is emitted)."""
        if self.proc is not None:
            return
        self._save_after = then_save
        self._tmp = context_check.write_temp_copy(self.editor.toPlainText())
        argv, env = context_check.check_command(self.context_dir, self._tmp)
        self.proc = QProcess(self)
        qenv = QProcessEnvironment()
        for k, v in env.items():
            qenv.insert(k, v)
        self.proc.setProcessEnvironment(qenv)
        self.proc.setWorkingDirectory(str(self.context_dir))
        self.proc.finished.connect(self._check_done)
        self.status.setText("Checking…")
        self.act_check.setEnabled(False)
        self.act_save.setEnabled(False)
        self.proc.start(argv[0], argv[1:])

    def _check_done(self, *args):
        out = bytes(self.proc.readAllStandardOutput()).decode(errors="replace")
        err = bytes(self.proc.readAllStandardError()).decode(errors="replace")
        self.proc.deleteLater()
        self.proc = None
        res = context_check.parse_check_output(out, err, self._tmp)
        self._tmp.unlink(missing_ok=True)
        self.act_check.setEnabled(True)
        self.act_save.setEnabled(True)
        self.last_result = res
        if res.ok:
            self.editor.set_error_line(None)
            self.messages.setStyleSheet("color: #107c10;")
            self.messages.setPlainText(f"OK: {len(res.variables)} variables "
                                       f"({', '.join(res.variables)})")
            self.status.setText("No errors")
        else:
            self.editor.set_error_line(res.line)
            self.messages.setStyleSheet("color: #a4262c;")
            self.messages.setPlainText(res.error)
            self.status.setText(f"Error on line {res.line}" if res.line else "Error")
        self.checked.emit(res)
        if self._save_after:
            self._save_after = False
            if res.ok or self._confirm_save_broken(res):
                self._write()

    def _confirm_save_broken(self, res) -> bool:
        if os.environ.get("AMORE_GUI_NO_DIALOGS"):
            return False
        ans = QMessageBox.question(
            self, "Context file has errors",
            (f"Line {res.line}: " if res.line else "") + res.error[:600]
            + "\n\nSave anyway? The backend keeps recording runs and computes them once the "
              "file is fixed.", QMessageBox.Save | QMessageBox.Cancel, QMessageBox.Cancel)
        return ans == QMessageBox.Save

    def save(self):
        """Validate, then write the file if it is valid (or the user insists)."""
        self.validate(then_save=True)

    def _write(self):
        try:
            self.workspace.save_context_file(self.editor.toPlainText())
        except OSError as e:
            QMessageBox.warning(self, "AMORE", f"Could not save {self.path}: {e}")
            return
        self.editor.document().setModified(False)
        self.status.setText("Saved; the backend reloads the context file by itself")
        self.saved.emit(str(self.path))

    def closeEvent(self, ev):
        if self.editor.document().isModified() and not os.environ.get("AMORE_GUI_NO_DIALOGS"):
            ans = QMessageBox.question(self, "AMORE", "Discard the changes to the context file?",
                                       QMessageBox.Discard | QMessageBox.Cancel)
            if ans != QMessageBox.Discard:
                ev.ignore()
                return
        if self.proc is not None:
            self.proc.kill()
            self.proc.waitForFinished(2000)
        super().closeEvent(ev)
