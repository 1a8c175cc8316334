"""Posting to the beamtime's logbook (its Zulip stream) from the GUI, as DAMNIT users do it:
selected rows of the table as a Markdown table with their run numbers, and the picture of a
plot or inspection window.

:class:`PostController` (one per main window) offers "Post selected runs to the logbook…" in
the File menu and the table's context menu, and :meth:`PostController.post_picture` to the plot
and inspection windows; it remembers the last topic and the columns chosen, as DAMNIT does.
:class:`PostDialog` shows the beamtime's stream, the topic (the set-up's topics, editable), a
title, for rows the columns to post and a preview of the messages exactly as they will be sent
(split between rows under the message size limit), for a picture the picture.

Everything that talks to the logbook runs on the window's task pool through the application
layer (:mod:`amore_gui.application.logbook`: the facility's logbook proxy from ``zulip.cfg``,
or a Zulip server): asking for the stream when the dialog opens, and sending. When no logbook
is set up, or the logbook refuses, the dialog says so in plain words (and what to put where);
keys are never shown, logged or stored.
"""
from __future__ import annotations

from qtpy.QtCore import QBuffer, QByteArray, QIODevice, QObject, Qt, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel,
                             QLineEdit, QListWidget, QListWidgetItem, QPlainTextEdit, QSplitter,
                             QVBoxLayout, QWidget)

from amore_gui.application import logbook as logbook_mod
from amore_gui._qt.app import make_action, monospace_font
from amore_gui._qt.dialogs import check_all_buttons

ERROR_STYLE = "color: #a4262c;"


def widget_png(widget) -> bytes:
    """What ``widget`` shows now, as PNG bytes (GUI thread)."""
    return image_png(widget.grab().toImage())


def image_png(image: QImage) -> bytes:
    """A ``QImage`` as PNG bytes."""
    ba = QByteArray()
    buf = QBuffer(ba)
    buf.open(QIODevice.WriteOnly)
    image.save(buf, "PNG")
    buf.close()
    return bytes(ba)


def _alive(widget) -> bool:
    """Is the C++ side of ``widget`` still there (not deleted with its window)?"""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True


def _reason(err: str) -> str:
    """An error of the task pool (``"LogbookError: why"``) as the reason alone."""
    for prefix in ("LogbookError: ", "ConfigError: "):
        if err.startswith(prefix):
            return err[len(prefix):]
    return err


class PostDialog(QDialog):
    """Post rows (``data``, data ``rows``, table columns ``cols`` to choose from) or a picture
    (``png`` bytes, ``image_name``) to the logbook of the controller's directory (see the
    module docstring). ``title``: the title to start with.

    State for tests and scripts: :attr:`setup` (the
    :class:`~amore_gui.application.logbook.LogbookSetup` once asked), :attr:`messages` (what
    Send posts), :attr:`sending`. Signal ``posted(Posted)`` after a successful post (the
    dialog then closes)."""

    posted = Signal(object)

    def __init__(self, controller: "PostController", *, data=None, rows=(), cols=(),
                 png: bytes | None = None, image_name: str = "figure.png", title: str = "",
                 parent=None):
        super().__init__(parent)
        self.setAttribute(Qt.WA_DeleteOnClose, True)
        self.controller = controller
        self.context_dir = controller.context_dir
        self.data, self.png, self.image_name = data, png, image_name
        self.rows = logbook_mod.rows_by_run(data, rows) if data is not None else []
        self.setup: logbook_mod.LogbookSetup | None = None
        self.messages: list[str] = []
        self.sending = False
        is_table = data is not None
        n = len(self.rows)
        self.setWindowTitle("Post to the logbook — AMORE")
        lay = QVBoxLayout(self)
        head = (f"<b>Post {n} run{'s' if n != 1 else ''} to the logbook</b> (a Markdown table "
                f"with run numbers)" if is_table else "<b>Post a picture to the logbook</b>")
        lay.addWidget(QLabel(head))

        form = QFormLayout()
        self.stream = QLabel("asking the logbook…")
        self.stream.setObjectName("hint")
        self.stream.setTextInteractionFlags(Qt.TextSelectableByMouse)
        form.addRow("Stream:", self.stream)
        self.topic = QComboBox()
        self.topic.setEditable(True)
        self.topic.setMinimumWidth(280)
        self.topic.lineEdit().setPlaceholderText("topic (required)")
        self.topic.editTextChanged.connect(lambda _t: self._update_send())
        form.addRow("Topic:", self.topic)
        self.title = QLineEdit(title)
        self.title.setPlaceholderText("a heading above the table" if is_table
                                      else "the text posted with the picture")
        form.addRow("Title:", self.title)
        lay.addLayout(form)

        self.columns = None
        self.preview = None
        if is_table:
            split = QSplitter(Qt.Horizontal)
            left = QWidget()
            ll = QVBoxLayout(left)
            ll.setContentsMargins(0, 0, 0, 0)
            ll.addWidget(QLabel("Columns:"))
            self.columns = QListWidget()
            remembered = controller.columns
            offered = logbook_mod.table_columns(data, self.rows, cols)
            run_col = offered[0]
            for c in offered:
                col = data.columns[c]
                it = QListWidgetItem(col.title + (f" [{col.units}]" if col.units else ""))
                it.setData(Qt.UserRole, c)
                if c == run_col:         # always posted
                    it.setFlags(it.flags() & ~Qt.ItemIsEnabled)
                    it.setCheckState(Qt.Checked)
                else:
                    it.setFlags(it.flags() | Qt.ItemIsUserCheckable)
                    it.setCheckState(Qt.Checked if remembered is None or col.key in remembered
                                     else Qt.Unchecked)
                self.columns.addItem(it)
            self.columns.itemChanged.connect(lambda _it: self._update_preview())
            ll.addWidget(self.columns, 1)
            ll.addLayout(check_all_buttons((("All", Qt.Checked), ("None", Qt.Unchecked)),
                                           self._check_all))
            split.addWidget(left)
            right = QWidget()
            rl = QVBoxLayout(right)
            rl.setContentsMargins(0, 0, 0, 0)
            self.preview_info = QLabel("Preview:")
            rl.addWidget(self.preview_info)
            self.preview = QPlainTextEdit()
            self.preview.setReadOnly(True)
            self.preview.setLineWrapMode(QPlainTextEdit.NoWrap)
            self.preview.setFont(monospace_font(9))
            rl.addWidget(self.preview, 1)
            split.addWidget(right)
            split.setSizes([230, 520])
            lay.addWidget(split, 1)
            self.title.textChanged.connect(lambda _t: self._update_preview())
        else:
            img = QImage()
            img.loadFromData(png or b"", "PNG")
            self.picture = QLabel()
            self.picture.setAlignment(Qt.AlignCenter)
            self.picture.setMinimumSize(320, 200)
            if not img.isNull():
                self.picture.setPixmap(QPixmap.fromImage(img).scaled(
                    640, 420, Qt.KeepAspectRatio, Qt.SmoothTransformation))
            lay.addWidget(self.picture, 1)
            self.preview_info = QLabel(f"{image_name}, {img.width()} × {img.height()} px")
            self.preview_info.setObjectName("hint")
            lay.addWidget(self.preview_info)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.status)
        self.help = QPlainTextEdit()
        self.help.setReadOnly(True)
        self.help.setFont(monospace_font(9))
        self.help.setVisible(False)
        self.help.setMaximumHeight(200)
        lay.addWidget(self.help)
        bb = QDialogButtonBox(QDialogButtonBox.Cancel)
        self.send_btn = bb.addButton("Send", QDialogButtonBox.AcceptRole)
        self.send_btn.setEnabled(False)
        bb.accepted.connect(self.send)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)
        self.resize(820, 560 if is_table else 600)
        if is_table:
            self._update_preview()
        controller.tasks.submit(logbook_mod.logbook_setup, self.context_dir,
                                callback=self._set_up)

    # -- the set-up, asked when the dialog opens ------------------------------------------
    def _set_up(self, setup, err):
        if not _alive(self):
            return              # closed before the logbook answered
        if err:
            setup = logbook_mod.LogbookSetup(error=_reason(err))
        self.setup = setup
        if not setup.ok:
            self.stream.setText("(not available)")
            self._say(f"Posting is not possible: {setup.error}", error=True)
            if setup.help:
                self.help.setPlainText(setup.help)
                self.help.setVisible(True)
            self._update_send()
            return
        self.stream.setText(setup.stream)
        topics = list(setup.topics)
        last = self.controller.last_topic
        for t in (setup.topic, last):
            if t and t not in topics:
                topics.append(t)
        self.topic.addItems(topics)
        self.topic.setCurrentText(last or setup.topic or "")
        if self.data is not None:
            self._update_preview()
        self._update_send()

    # -- rows: the preview is what Send posts ---------------------------------------------
    def chosen_columns(self) -> list[int]:
        """The table columns checked, in the list's order (the run number first)."""
        return [self.columns.item(i).data(Qt.UserRole) for i in range(self.columns.count())
                if self.columns.item(i).checkState() == Qt.Checked]

    def _check_all(self, state):
        for i in range(1, self.columns.count()):
            self.columns.item(i).setCheckState(state)

    def _update_preview(self):
        limit = self.setup.limit if self.setup is not None and self.setup.ok \
            else logbook_mod.MESSAGE_LIMIT
        cols = self.chosen_columns()
        try:
            self.messages = logbook_mod.table_messages(self.data, self.rows, cols,
                                                       self.title.text().strip(), limit)
        except ValueError as e:          # a single row longer than a message
            self.messages = []
            self.preview.setPlainText("")
            self._say(f"Cannot post this: {e}. Choose fewer columns.", error=True)
            self._update_send()
            return
        n = len(self.messages)
        sep = "\n──── message {} of {} ────\n"
        self.preview.setPlainText("".join((sep.format(i + 1, n) if n > 1 else "") + m
                                          for i, m in enumerate(self.messages)))
        self.preview_info.setText(
            f"Preview: {len(self.rows)} run(s) × {len(cols)} column(s) in {n} message(s) "
            f"(at most {limit:,} characters each)")
        if self.setup is None or self.setup.ok:
            self._say("")
        self._update_send()

    # -- sending ---------------------------------------------------------------------------
    def _update_send(self):
        ok = (self.setup is not None and self.setup.ok and not self.sending
              and bool(self.topic.currentText().strip())
              and (self.png is not None or bool(self.messages)))
        self.send_btn.setEnabled(ok)

    def _say(self, text: str, error: bool = False):
        self.status.setStyleSheet(ERROR_STYLE if error else "")
        self.status.setText(text)

    def send(self):
        """Post (task pool); the dialog closes when the logbook took it, or says why not."""
        if not self.send_btn.isEnabled():
            return
        topic = self.topic.currentText().strip()
        title = self.title.text().strip()
        columns = ({self.data.columns[c].key for c in self.chosen_columns()}
                   if self.columns is not None else None)
        self.sending = True
        self._update_send()
        self._say("Sending…")

        def sent(posted, err):
            self.controller.posted(topic, columns, posted, err)
            if _alive(self):        # the user may have closed the dialog (or its window)
                self._sent(posted, err)
        if self.png is not None:
            self.controller.tasks.submit(logbook_mod.post_figure, self.context_dir, self.png,
                                         topic, title, self.image_name, callback=sent)
        else:
            self.controller.tasks.submit(logbook_mod.post_text, self.context_dir, topic,
                                         list(self.messages), callback=sent)

    def _sent(self, posted, err):
        self.sending = False
        if err:
            self._say(f"Not posted: {_reason(err)}", error=True)
            self._update_send()
            return
        self.posted.emit(posted)
        self.accept()


class PostController(QObject):
    """Posting to the logbook from ``window`` (a
    :class:`~amore_gui._qt.mainwindow.MainWindow`: its directory, table and task pool); see
    the module docstring. :attr:`act_post_rows` posts the selected runs."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        #: the topic of the last post (offered first next time)
        self.last_topic: str | None = None
        #: the column keys chosen for the last post of rows (None: all)
        self.columns: set[str] | None = None
        self.act_post_rows = make_action(
            window, "Post selected runs to the logbook…", self.post_selection, None,
            "Post the selected runs as a Markdown table to the beamtime's logbook (Zulip)")
        window.table_view.add_menu_section(self._menu)

    context_dir = property(lambda self: self.window.context_dir)
    tasks = property(lambda self: self.window.tasks)

    def _menu(self, menu, index, keys):
        if keys:
            menu.addAction(f"Post {len(keys)} selected run(s) to the logbook…",
                           self.post_selection)

    def posted(self, topic: str, columns: set[str] | None, posted, err) -> None:
        """A post ended (``err`` None: it went through): remember the topic and the columns,
        say so in the window's status bar (the dialog may be closed by now)."""
        if err:
            self.window.statusBar().showMessage(f"Not posted to the logbook: {_reason(err)}",
                                                10000)
            return
        self.last_topic = topic
        if columns is not None:
            self.columns = columns
        self.window.statusBar().showMessage(
            f"Posted {posted.messages} message(s) to the logbook: {posted.stream} › "
            f"{posted.topic}", 8000)

    def post_selection(self) -> PostDialog | None:
        """Open the dialog for the selected runs (the visible columns to choose from)."""
        rows, _cols = self.window.table_view.selection_cells()
        if not rows:
            self.window.message("Select the runs to post first.")
            return None
        return self.window.show_dialog(PostDialog(
            self, data=self.window.model.data_obj, rows=rows,
            cols=self.window.visible_columns(), parent=self.window))

    def post_picture(self, png: bytes, name: str = "figure.png", title: str = "",
                     parent=None) -> PostDialog:
        """Open the dialog for a picture (PNG bytes) of a plot or inspection window."""
        return self.window.show_dialog(PostDialog(self, png=png, image_name=name, title=title,
                                                  parent=parent or self.window))
