"""Plot windows (pyqtgraph): variables across runs, and per-train correlations of selected runs.

* :class:`ScatterPlotWindow` - one variable against another using the table's summary values
  (optionally only the checked runs), axes can be swapped, or a histogram of one variable;
  hovering a point shows its run and values; the plot refreshes as runs arrive.
* :class:`CorrelationWindow` - for selected runs, the per-train data of two variables read from
  the runs' HDF5 files (off the GUI thread) and matched on train ID
  (:meth:`amore_gui.application.workspace.Workspace.read_per_train`).
"""
from __future__ import annotations


import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QPushButton, QSpinBox,
                             QVBoxLayout, QWidget, QButtonGroup, QRadioButton)

from amore_gui.application.formatting import format_number, format_time
from amore_gui.application.table_data import (C_ADDED, C_RUN, C_START, C_STATUS, C_COMMENT, K_SPARKLINE, NSTATIC)

pg.setConfigOptions(antialias=True, background="w", foreground="#323130",
                    imageAxisOrder="row-major")



def forget_views() -> None:
    """Empty pyqtgraph's registry of plot views before the interpreter exits (otherwise views
    destroyed late try to update menus of views already deleted, printing tracebacks)."""
    pg.ViewBox.AllViews.clear()
    pg.ViewBox.NamedViews.clear()


POINT_BRUSH = pg.mkBrush(47, 109, 181, 200)
POINT_PEN = pg.mkPen(255, 255, 255, 220, width=0.8)
LATEST_BRUSH = pg.mkBrush(194, 65, 12, 230)
RUN_COLORS = ["#2f6db5", "#c2410c", "#107c10", "#8764b8", "#b4009e", "#038387", "#986f0b",
              "#5c2e91", "#d13438", "#498205"]
TIME_KEYS = (C_START, C_ADDED)


class IntAxis(pg.AxisItem):
    """Axis with plain integer tick labels (train IDs, run numbers: no 1.4e+09)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.enableAutoSIPrefix(False)

    def tickStrings(self, values, scale, spacing):
        if spacing >= 1:
            return [f"{int(round(v))}" for v in values]
        return super().tickStrings(values, scale, spacing)


def _label(col) -> str:
    return col.title.replace("/", " › ") + (f" [{col.units}]" if col.units else "")


def _fmt(v, key=None) -> str:
    if key in TIME_KEYS:
        return format_time(v)
    if key == C_RUN:
        return str(int(v))
    return format_number(float(v))


class _PlotBase(QWidget):
    def __init__(self, main, title):
        super().__init__(None, Qt.Window)
        self.main = main
        self.setWindowTitle(title)
        self.setAttribute(Qt.WA_DeleteOnClose, True)
        self.plot = pg.PlotWidget()
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.getPlotItem().getViewBox().setDefaultPadding(0.04)
        self.hover = QLabel(" ")
        self.hover.setObjectName("hint")
        self.hover.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.post_btn = QPushButton("Post to logbook…")
        self.post_btn.setToolTip("Post this plot as it is shown to the beamtime's logbook")
        self.post_btn.clicked.connect(self.post_to_logbook)

    def post_to_logbook(self):
        """Open the logbook dialog with the plot as it is shown now."""
        from amore_gui._qt.posting import widget_png
        title = self.windowTitle().removesuffix(" — AMORE")
        return self.main.posting.post_picture(widget_png(self.plot), "amore-plot.png",
                                              title, parent=self)

    def _combo(self, keys, current):
        cb = QComboBox()
        cb.setMinimumWidth(200)
        d = self.main.model.data_obj
        for k in keys:
            c = d.col_of(k)
            cb.addItem(_label(d.columns[c]), k)
        i = cb.findData(current)
        if i >= 0:
            cb.setCurrentIndex(i)
        return cb


class ScatterPlotWindow(_PlotBase):
    """A variable against another across runs, or a histogram (see module docstring).

    :attr:`points` holds the plotted ``(runs, x, y)`` arrays (histogram: ``(runs, values)``).
    """

    def __init__(self, main, x_key=None, y_key=None, histogram=False):
        super().__init__(main, "AMORE plot")
        d = main.model.data_obj
        self.keys = [c.key for i, c in enumerate(d.columns)
                     if c.key not in (C_STATUS, C_COMMENT) and (i < NSTATIC or d.is_numeric_column(i))]
        var_keys = [k for k in self.keys if not k.startswith("#")]
        if y_key is None:
            y_key = var_keys[0] if var_keys else C_RUN
        if x_key is None:
            x_key = C_RUN
        self.x_combo = self._combo(self.keys, x_key)
        self.y_combo = self._combo(self.keys, y_key)
        self.swap_btn = QPushButton("⇄ Swap")
        self.swap_btn.setToolTip("Swap the axes")
        self.swap_btn.clicked.connect(self.swap_axes)
        self.only_checked = QCheckBox("Checked runs only")
        self.only_checked.setChecked(True)
        self.mode_scatter = QRadioButton("Scatter")
        self.mode_hist = QRadioButton("Histogram")
        grp = QButtonGroup(self)
        grp.addButton(self.mode_scatter)
        grp.addButton(self.mode_hist)
        (self.mode_hist if histogram else self.mode_scatter).setChecked(True)
        self.bins = QSpinBox()
        self.bins.setRange(2, 500)
        self.bins.setValue(30)
        self.bins.setPrefix("bins ")

        top = QHBoxLayout()
        self.y_label = QLabel("Y:")
        top.addWidget(self.y_label)
        top.addWidget(self.y_combo)
        top.addWidget(self.swap_btn)
        self.x_label = QLabel("X:")
        top.addWidget(self.x_label)
        top.addWidget(self.x_combo)
        top.addSpacing(12)
        top.addWidget(self.mode_scatter)
        top.addWidget(self.mode_hist)
        top.addWidget(self.bins)
        top.addSpacing(12)
        top.addWidget(self.only_checked)
        top.addStretch(1)
        top.addWidget(self.post_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.hover)

        self.scatter = pg.ScatterPlotItem(size=8, pen=POINT_PEN, brush=POINT_BRUSH,
                                          hoverable=True, hoverSize=11,
                                          hoverBrush=pg.mkBrush(194, 65, 12, 255),
                                          tip=self._tip)
        self.scatter.sigHovered.connect(self._hovered)
        self.hist_item = pg.PlotDataItem(stepMode="center", fillLevel=0,
                                         brush=pg.mkBrush(47, 109, 181, 110),
                                         pen=pg.mkPen("#2f6db5", width=1.5))
        self.plot.scene().sigMouseMoved.connect(self._mouse_moved)
        self.points = (np.zeros(0), np.zeros(0), np.zeros(0))
        self._hist = None
        self._time_axis = None

        for w in (self.x_combo, self.y_combo):
            w.currentIndexChanged.connect(self.refresh)
        for w in (self.only_checked, self.mode_scatter):
            w.toggled.connect(self.refresh)
        self.bins.valueChanged.connect(self.refresh)
        self._timer = QTimer(self, singleShot=True, interval=300)
        self._timer.timeout.connect(self.refresh)
        m = main.model
        m.runApplied.connect(self.schedule_refresh)
        m.modelReset.connect(self.schedule_refresh)
        m.dataChanged.connect(self.schedule_refresh)
        self.resize(900, 600)
        self.refresh()

    def schedule_refresh(self, *args):
        """Refresh soon (coalesces bursts of updates)."""
        if not self._timer.isActive():
            self._timer.start()

    def swap_axes(self):
        """Exchange the X and Y variables."""
        xi, yi = self.x_combo.currentIndex(), self.y_combo.currentIndex()
        for w in (self.x_combo, self.y_combo):
            w.blockSignals(True)
        self.x_combo.setCurrentIndex(yi)
        self.y_combo.setCurrentIndex(xi)
        for w in (self.x_combo, self.y_combo):
            w.blockSignals(False)
        self.refresh()

    @property
    def x_key(self):
        return self.x_combo.currentData()

    @property
    def y_key(self):
        return self.y_combo.currentData()

    def _rows(self):
        d = self.main.model.data_obj
        rows = np.arange(d.nrows)
        if self.only_checked.isChecked():
            rows = rows[d.included[:d.nrows]]
        return rows

    def _set_time_axis(self, on: bool):
        pi = self.plot.getPlotItem()
        if on and self._time_axis is None:
            self._time_axis = pg.DateAxisItem(orientation="bottom")
            pi.setAxisItems({"bottom": self._time_axis})
        elif not on and self._time_axis is not None:
            self._time_axis = None
            pi.setAxisItems({"bottom": pg.AxisItem(orientation="bottom")})

    def refresh(self):
        """Redraw from the table's current values."""
        d = self.main.model.data_obj
        hist = self.mode_hist.isChecked()
        self.bins.setEnabled(hist)
        self.y_combo.setEnabled(not hist)
        self.swap_btn.setEnabled(not hist)
        self.y_label.setEnabled(not hist)
        xk, yk = self.x_key, self.y_key
        xc, yc = d.col_of(xk), d.col_of(yk)
        if xc is None or yc is None:
            return
        rows = self._rows()
        runs = d.run[rows].astype(float)
        x = d.numeric(xc)[rows]
        pi = self.plot.getPlotItem()
        pi.clear()
        self._set_time_axis(xk in TIME_KEYS and not hist)
        if hist:
            ok = np.isfinite(x)
            vals = x[ok]
            self.points = (runs[ok], vals)
            if len(vals):
                counts, edges = np.histogram(vals, bins=self.bins.value())
                self.hist_item.setData(edges, counts)
                self._hist = (edges, counts)
                pi.addItem(self.hist_item)
            else:
                self._hist = None
            pi.setLabel("bottom", _label(d.columns[xc]))
            pi.setLabel("left", "Runs")
            self.setWindowTitle(f"Histogram of {d.columns[xc].title} — AMORE")
            self.hover.setText(f"{len(vals)} runs" + (" (checked only)" if self.only_checked.isChecked() else ""))
            return
        y = d.numeric(yc)[rows]
        ok = np.isfinite(x) & np.isfinite(y)
        self.points = (runs[ok], x[ok], y[ok])
        brushes = [POINT_BRUSH] * int(ok.sum())
        if len(brushes):
            brushes[int(np.argmax(runs[ok]))] = LATEST_BRUSH
        self.scatter.setData(x=x[ok], y=y[ok], data=runs[ok].astype(int), brush=brushes)
        pi.addItem(self.scatter)
        pi.setLabel("bottom", _label(d.columns[xc]))
        pi.setLabel("left", _label(d.columns[yc]))
        self.setWindowTitle(f"{d.columns[yc].title} vs {d.columns[xc].title} — AMORE")
        self.hover.setText(f"{int(ok.sum())} runs plotted"
                           + (" (checked only)" if self.only_checked.isChecked() else "")
                           + "; the newest run is orange. Hover a point for its run.")

    def _tip(self, x, y, data):
        return self.describe_point(int(data), x, y)

    def describe_point(self, run: int, x: float, y: float) -> str:
        """Hover text of a point."""
        d = self.main.model.data_obj
        xc, yc = d.col_of(self.x_key), d.col_of(self.y_key)
        return (f"Run {run}: {d.columns[xc].title} = {_fmt(x, self.x_key)}, "
                f"{d.columns[yc].title} = {_fmt(y, self.y_key)}")

    def _hovered(self, item, points, ev):
        if len(points):
            p = points[0]
            self.hover.setText(self.describe_point(int(p.data()), p.pos().x(), p.pos().y()))

    def _mouse_moved(self, pos):
        if not self.mode_hist.isChecked() or self._hist is None:
            return
        vb = self.plot.getPlotItem().getViewBox()
        x = vb.mapSceneToView(pos).x()
        edges, counts = self._hist
        i = int(np.searchsorted(edges, x) - 1)
        if 0 <= i < len(counts):
            self.hover.setText(f"{format_number(edges[i])} – {format_number(edges[i + 1])}: "
                               f"{counts[i]} runs")


class CorrelationWindow(_PlotBase):
    """Per-train data of two variables for selected runs, matched on train ID.

    :attr:`result` holds what was plotted: ``{(proposal, run): (train_ids, [x, y])}``.
    """

    def __init__(self, main, runs, x_key=None, y_key=None):
        super().__init__(main, "AMORE per-train plot")
        d = main.model.data_obj
        self.runs = list(runs)
        var_keys = [c.key for c in d.columns[NSTATIC:]]
        per_train = [k for k in var_keys if K_SPARKLINE in d.column_kinds(d.col_of(k))]
        x_key = x_key or (per_train[0] if per_train else (var_keys[0] if var_keys else None))
        y_key = y_key or (per_train[1] if len(per_train) > 1 else x_key)
        self.x_combo = self._combo(var_keys, x_key)
        self.y_combo = self._combo(var_keys, y_key)
        top = QHBoxLayout()
        top.addWidget(QLabel("Y:"))
        top.addWidget(self.y_combo)
        swap = QPushButton("⇄ Swap")
        swap.clicked.connect(self.swap_axes)
        top.addWidget(swap)
        top.addWidget(QLabel("X:"))
        top.addWidget(self.x_combo)
        top.addStretch(1)
        top.addWidget(self.post_btn)
        self.info = QLabel()
        self.info.setObjectName("hint")
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        runs_txt = ", ".join(str(r) for _, r in self.runs[:20]) + (" …" if len(self.runs) > 20 else "")
        lay.addWidget(QLabel(f"Runs: {runs_txt or '(select runs in the table first)'}"))
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.info)
        lay.addWidget(self.hover)
        self.legend = self.plot.getPlotItem().addLegend(offset=(10, 10))
        self.result = None
        self.problems: list[str] = []
        self.x_combo.currentIndexChanged.connect(self.refresh)
        self.y_combo.currentIndexChanged.connect(self.refresh)
        self.resize(900, 620)
        self.refresh()

    def swap_axes(self):
        """Exchange the X and Y variables."""
        xi, yi = self.x_combo.currentIndex(), self.y_combo.currentIndex()
        self.x_combo.blockSignals(True)
        self.x_combo.setCurrentIndex(yi)
        self.x_combo.blockSignals(False)
        self.y_combo.setCurrentIndex(xi)

    def refresh(self):
        """Read the per-train data (worker thread) and plot it."""
        xk, yk = self.x_combo.currentData(), self.y_combo.currentData()
        if not self.runs or xk is None or yk is None:
            self.info.setText("Select runs in the table, then open this plot.")
            return
        self.info.setText("Reading per-train data…")
        self._req = (xk, yk)
        self.main.tasks.submit(self.main.workspace.read_per_train, self.runs, [xk, yk],
                               callback=lambda res, err, req=(xk, yk): self._show(req, res, err))

    def _show(self, req, res, err):
        if req != self._req:
            return
        pi = self.plot.getPlotItem()
        pi.clear()
        self.legend.clear()
        d = self.main.model.data_obj
        xc, yc = d.col_of(req[0]), d.col_of(req[1])
        pi.setLabel("bottom", _label(d.columns[xc]))
        pi.setLabel("left", _label(d.columns[yc]))
        if err:
            self.info.setText(f"Could not read the data: {err}")
            return
        self.result, self.problems = res
        n = 0
        for i, ((p, r), (tids, (x, y))) in enumerate(sorted(self.result.items())):
            color = RUN_COLORS[i % len(RUN_COLORS)]
            sp = pg.ScatterPlotItem(x=x, y=y, data=tids, size=5, pen=None,
                                    brush=pg.mkBrush(color), hoverable=True,
                                    tip=lambda x, y, data, r=r: f"Run {r}, train {data}: "
                                    f"x = {format_number(x)}, y = {format_number(y)}",
                                    name=f"run {r}")
            sp.sigHovered.connect(lambda item, pts, ev, r=r: pts is not None and len(pts) and
                                  self.hover.setText(f"Run {r}, train {pts[0].data()}: "
                                                     f"x = {format_number(pts[0].pos().x())}, "
                                                     f"y = {format_number(pts[0].pos().y())}"))
            pi.addItem(sp)
            n += len(tids)
        txt = f"{n} trains from {len(self.result)} run(s), matched on train ID."
        if self.problems:
            txt += " Not plotted: " + "; ".join(self.problems[:5])
        self.info.setText(txt)
        self.setWindowTitle(f"{d.columns[yc].title} vs {d.columns[xc].title} per train — AMORE")
