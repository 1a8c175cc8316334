"""Inspection window of one table cell: the run's full data from its HDF5 file.

1-D data is drawn against train ID (or its own coordinate / index), 2-D data as an image with
colour map, levels and histogram (``pyqtgraph.ImageView``), 3-D as an image stack, figures as
the stored PNG, and scalars and strings plainly. Errors show their message. The file is read on
a worker thread.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import Qt
from qtpy.QtGui import QFont, QImage, QPixmap
from qtpy.QtWidgets import (QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QScrollArea,
                             QTabWidget, QVBoxLayout, QWidget)

from amore_gui.application.figures import FigureView, figure_view
from amore_gui.application.formatting import format_number
from amore_gui.application.table_data import K_ERROR, K_SKIPPED
from amore_gui.application.values import line_axis
from amore_gui._qt import plots  # noqa: F401  (pyqtgraph configuration)

#: What :attr:`InspectWindow.kind` a picture can be posted of.
PICTURE_KINDS = ("line", "image", "stack", "figure", "plotly", "tabs")


def _read_for_inspection(workspace, proposal, run: int, name: str):
    """(In a worker thread) the variable's stored value; a Plotly figure as a
    :class:`~amore_gui.application.figures.FigureView` (drawn to PNG here, off the GUI thread)."""
    v = workspace.read_value(proposal, run, name)
    view = figure_view(v) if not isinstance(v, (bytes, bytearray)) else None
    return view if view is not None else v


class InspectWindow(QWidget):
    """Shows one variable of one run (see module docstring). :attr:`kind` says what is shown
    (``line``, ``image``, ``stack``, ``figure``, ``plotly``, ``text``, ``error``, ``tabs``) and
    :attr:`value` the data read."""

    def __init__(self, main, proposal: int, run: int, name: str):
        super().__init__(None, Qt.Window)
        self.setAttribute(Qt.WA_DeleteOnClose, True)
        self.main = main
        self.proposal, self.run, self.name = proposal, run, name
        d = main.model.data_obj
        c = d.col_of(name)
        self.column = d.columns[c]
        self.units = self.column.units
        title = self.column.title.replace("/", " › ")
        self.setWindowTitle(f"Run {run} · {title} — AMORE")
        self.kind = None
        self.value = None
        lay = QVBoxLayout(self)
        head = QLabel(f"<b>Run {run}</b> · {title}" + (f" [{self.units}]" if self.units else "")
                      + f" <span style='color:#797775'>({name})</span>")
        top = QHBoxLayout()
        top.addWidget(head, 1)
        self.post_btn = QPushButton("Post to logbook…")
        self.post_btn.setToolTip("Post this picture to the beamtime's logbook")
        self.post_btn.setEnabled(False)
        self.post_btn.clicked.connect(self.post_to_logbook)
        self.post_btn.setVisible(getattr(main, "posting", None) is not None)
        top.addWidget(self.post_btn)
        lay.addLayout(top)
        self.body = QVBoxLayout()
        lay.addLayout(self.body, 1)
        self.info = QLabel("Reading…")
        self.info.setObjectName("hint")
        self.info.setWordWrap(True)
        lay.addWidget(self.info)
        row = d.row_of.get((proposal, run))
        kind = d.cell_kind(row, c) if row is not None else None
        self.resize(820, 620)
        if kind in (K_ERROR, K_SKIPPED):
            self._show_text(d.tooltip(row, c) or "error", error=True)
            self.info.setText("")
            return
        self._fallback = d.display(row, c) if row is not None else ""
        main.tasks.submit(_read_for_inspection, main.workspace, proposal, run, name,
                          callback=self._loaded)

    def _loaded(self, value, err):
        if err:
            self.kind = "text"
            self._show_text(self._fallback or "(no value)")
            self.info.setText(f"Full data not available ({err}); showing the table value.")
            return
        self.value = value
        self._show(value, self.body)
        self.post_btn.setEnabled(self.kind in PICTURE_KINDS)

    def picture_png(self) -> bytes | None:
        """The picture shown, as PNG: a stored figure as stored (a Plotly figure drawn
        statically), anything else drawn as it is shown now; None for text and errors."""
        if self.kind not in PICTURE_KINDS:
            return None
        v = self.value
        if isinstance(v, FigureView):
            return v.png
        if isinstance(v, (bytes, bytearray)):
            return bytes(v)
        from amore_gui._qt.posting import widget_png
        return widget_png(self.body.itemAt(0).widget())

    def post_to_logbook(self):
        """Open the logbook dialog with this window's picture."""
        png = self.picture_png()
        if png is None:
            return None
        title = f"Run {self.run} · {self.column.title.replace('/', ' › ')}"
        return self.main.posting.post_picture(png, f"r{self.run}_{self.name}.png", title,
                                              parent=self)

    def _show(self, v, layout, top=True):
        if isinstance(v, dict):
            tabs = QTabWidget()
            for k, sub in v.items():
                w = QWidget()
                lay = QVBoxLayout(w)
                self._show(sub, lay, top=False)
                tabs.addTab(w, str(k))
            layout.addWidget(tabs)
            self.kind = "tabs"
            return
        plotly = isinstance(v, FigureView) and v.kind == "plotly"
        if isinstance(v, FigureView):
            v = v.png
        if isinstance(v, (bytes, bytearray)):
            img = QImage()
            img.loadFromData(bytes(v), "PNG")
            lab = QLabel()
            lab.setAlignment(Qt.AlignCenter)
            lab.setPixmap(QPixmap.fromImage(img))
            sa = QScrollArea()
            sa.setWidget(lab)
            sa.setWidgetResizable(True)
            layout.addWidget(sa)
            self.kind = "plotly" if plotly else "figure"
            self.info.setText(
                "Plotly figure, drawn statically here (the browser view, amore-proto web, shows "
                "it interactively)" if plotly else f"Figure, {img.width()} × {img.height()} px")
            return
        arr = np.asarray(getattr(v, "values", v))
        if arr.ndim == 0:
            item = arr.item()
            if isinstance(item, (float, int, np.floating, np.integer)) and not isinstance(item, bool):
                text = format_number(item) + (f" {self.units}" if self.units else "")
                full = repr(item)
            else:
                text, full = str(item), str(item)
            self._show_text(text, big=True, layout=layout)
            self.kind = "text"
            self.info.setText(f"Value: {full}")
            return
        if arr.dtype.kind in "US" or arr.dtype == object:
            self._show_text("\n".join(map(str, arr.ravel()[:10000])), layout=layout)
            self.kind = "text"
            self.info.setText(f"{arr.size} strings")
            return
        if np.iscomplexobj(arr):
            arr = np.abs(arr)
        if arr.ndim == 1:
            x, xlabel = line_axis(v, len(arr))
            pw = pg.PlotWidget(axisItems={"bottom": plots.IntAxis(orientation="bottom")}
                               if xlabel in ("Train ID", "Pulse ID") else None)
            pw.showGrid(x=True, y=True, alpha=0.15)
            pw.plot(x.astype(float) if x.dtype.kind in "iuf" else np.arange(len(arr)),
                    arr.astype(float), pen=pg.mkPen("#2f6db5", width=1.5))
            pw.setLabel("bottom", xlabel)
            pw.setLabel("left", self.column.title.split("/")[-1]
                        + (f" [{self.units}]" if self.units else ""))
            layout.addWidget(pw)
            self.plot_widget = pw
            self.kind = "line"
            with np.errstate(all="ignore"):
                self.info.setText(f"{len(arr)} points · mean {format_number(float(np.nanmean(arr)))}"
                                  f" · min {format_number(float(np.nanmin(arr)))}"
                                  f" · max {format_number(float(np.nanmax(arr)))}")
            return
        if arr.ndim in (2, 3):
            view = pg.PlotItem()
            view.setLabel("bottom", "x [pixel]")
            view.setLabel("left", "y [pixel]")
            iv = pg.ImageView(view=view)
            view.invertY(True)
            view.setAspectLocked(True)
            iv.setColorMap(pg.colormap.get("viridis"))
            data = arr.astype(float)
            finite = data[np.isfinite(data)]
            levels = (np.percentile(finite, [1, 99.5]) if finite.size else (0, 1))
            iv.setImage(data, levels=tuple(float(x) for x in levels), autoHistogramRange=True)
            iv.ui.roiBtn.hide()
            iv.ui.menuBtn.hide()
            layout.addWidget(iv)
            self.image_view = iv
            self.kind = "image" if arr.ndim == 2 else "stack"
            self.info.setText(f"{' × '.join(map(str, arr.shape))} {arr.dtype} · levels "
                              f"{format_number(float(levels[0]))} – "
                              f"{format_number(float(levels[1]))} (drag the histogram to change)")
            return
        self._show_text(f"{arr.dtype} array of shape {arr.shape}", layout=layout)
        self.kind = "text"
        self.info.setText("Arrays with more than 3 dimensions are not drawn.")

    def _show_text(self, text, big=False, error=False, layout=None):
        layout = layout or self.body
        if big and len(text) < 80:
            lab = QLabel(text)
            f = QFont(lab.font())
            f.setPointSizeF(f.pointSizeF() * 2.2)
            lab.setFont(f)
            lab.setAlignment(Qt.AlignCenter)
            lab.setTextInteractionFlags(Qt.TextSelectableByMouse)
            layout.addWidget(lab, 1)
            self.text_widget = lab
        else:
            te = QPlainTextEdit(text)
            te.setReadOnly(True)
            if error:
                te.setStyleSheet("color: #a4262c;")
            layout.addWidget(te, 1)
            self.text_widget = te
        if error:
            self.kind = "error"
