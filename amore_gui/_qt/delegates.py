"""Painting of the run table's cells.

:class:`CellDelegate` paints variable cells straight from the model's column arrays: text with
the number formatting of :mod:`amore_gui.application.formatting`, sparklines drawn with ``QPainter`` from the
float32 bytes (once per value and cell size, into a cached pixmap: an antialiased polyline is
the slowest thing a repaint does), thumbnails from :class:`ThumbnailCache` (PNG decoded off the GUI thread, only for
cells that get painted), errors in a distinct colour. The Status column (checkbox) and the
editable comment use the standard delegate behaviour.

:class:`ManualDelegate` (the table's delegate) adds editors that fit the type of a manual
column: a check box (boolean), a spin box showing the units (integer, number), a combo box
(choice), a line edit (string).
"""
from __future__ import annotations

from collections import OrderedDict

import math

import numpy as np
from qtpy.QtCore import QPointF, QRect, QRectF, Qt, Signal, QObject
from qtpy.QtGui import QColor, QImage, QPainter, QPen, QPixmap, QPolygonF
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox, QStyle,
                             QStyledItemDelegate)

from amore_gui.application.table_data import (C_COMMENT, C_STATUS, K_BOOL, K_ERROR, K_NUMBER, K_SKIPPED,
                          K_SPARKLINE, K_THUMBNAIL, NSTATIC, S_DONE, sparkline_points)
from amore_gui._qt.model import ERROR_FG, SKIPPED_FG, STATUS_FG

SPARK_COLOR = QColor("#2f6db5")
SPARK_LAST = QColor("#c2410c")
PLACEHOLDER = QColor("#e8e8e8")
#: The mark of a stale value (made by code, inputs or data that changed since).
STALE_MARK = QColor("#d97706")


class ThumbnailCache(QObject):
    """Decoded thumbnails by ``(proposal, run, name)``, most recently used kept (LRU): at
    most ``max_images`` and ``max_bytes`` of image data (the newest one always).

    :meth:`get` returns a ``QImage`` or None; a miss asks ``request(key, height)`` (the
    thumbnail loader thread) once, and ``loaded`` is emitted when the image arrives.

    3 MB are ~220 thumbnails of the compact image rows (58 px), several screens of a few
    image columns, fewer of taller ones; 300 small ones are ~12 screens of one column. A
    count of 600 alone kept ~8 MB at 58 px, more for larger images, and made a window's
    memory grow for the first 600 runs it showed as they arrived (issue 23's soak).
    """

    changed = Signal(object)    # key

    #: bytes of decoded images kept
    MAX_BYTES = 3 * 2**20
    #: images kept
    MAX_IMAGES = 300

    def __init__(self, request=None, max_bytes: int = MAX_BYTES, max_images: int = MAX_IMAGES,
                 parent=None):
        super().__init__(parent)
        self.request = request
        self.max_bytes = max_bytes
        self.max_images = max_images
        self._images: OrderedDict = OrderedDict()
        self._asked: set = set()
        #: bytes of the images in ``_images``
        self.nbytes = 0

    def get(self, key, height: int):
        img = self._images.get(key)
        if img is not None:
            self._images.move_to_end(key)
            if abs(img.height() - height) <= 2 or img.height() < height:
                return img
        if key not in self._asked and self.request is not None:
            self._asked.add(key)
            self.request(key, height)
        return img

    def put(self, key, image: QImage) -> None:
        self._asked.discard(key)
        if image is None or image.isNull():
            return
        self.invalidate(key)
        self._images[key] = image
        self.nbytes += image.sizeInBytes()
        while len(self._images) > 1 and (self.nbytes > self.max_bytes
                                         or len(self._images) > self.max_images):
            _k, old = self._images.popitem(last=False)
            self.nbytes -= old.sizeInBytes()
        self.changed.emit(key)

    def invalidate(self, key) -> None:
        img = self._images.pop(key, None)
        if img is not None:
            self.nbytes -= img.sizeInBytes()
        self._asked.discard(key)

    def clear(self) -> None:
        self._images.clear()
        self._asked.clear()
        self.nbytes = 0


class CellDelegate(QStyledItemDelegate):
    """Paints variable cells from the model's arrays (see module docstring)."""

    PAD = 6
    #: sparkline pixmaps kept (LRU; ~12 kB each at 100 x 30 px): a few screens of rows
    SPARK_CACHE = 400

    def __init__(self, model_getter, thumbs: ThumbnailCache, parent=None):
        super().__init__(parent)
        self._model = model_getter
        self.thumbs = thumbs
        #: (data row, column) -> (bytes object drawn, size, selected, dpr, QPixmap): a sparkline
        #: is drawn (antialiased polyline, the slow part of a repaint) once per value and size;
        #: a new value is a new bytes object, so identity tells when to draw again
        self._sparks: OrderedDict = OrderedDict()

    def paint(self, painter: QPainter, option, index):
        model = self._model()
        col = index.column()
        d = model.data_obj
        key = d.columns[col].key
        if key in (C_STATUS, C_COMMENT):
            super().paint(painter, option, index)
            return
        row = int(model.view.order[index.row()])
        self._paint_value(painter, option, model, d, row, col, key)
        if col >= NSTATIC and d.stale_info(row, col - NSTATIC) is not None:
            self._paint_stale_mark(painter, option.rect)

    @staticmethod
    def _paint_stale_mark(painter: QPainter, rect: QRect) -> None:
        """A stale value: a small triangle in the cell's top right corner (the tooltip says
        what changed)."""
        size = max(5, min(9, rect.height() // 3))
        tri = QPolygonF([QPointF(rect.right() - size, rect.top()),
                         QPointF(rect.right() + 1, rect.top()),
                         QPointF(rect.right() + 1, rect.top() + size + 1)])
        painter.save()
        painter.setRenderHint(QPainter.Antialiasing, True)
        painter.setPen(Qt.NoPen)
        painter.setBrush(STALE_MARK)
        painter.drawPolygon(tri)
        painter.restore()

    def _paint_value(self, painter: QPainter, option, model, d, row: int, col: int, key: str):
        """The value of a variable cell: background, then a sparkline, a thumbnail or text."""
        rect = option.rect
        selected = bool(option.state & QStyle.State_Selected)
        if selected:
            painter.fillRect(rect, option.palette.highlight())
        else:
            bg = model.cell_background(row, col)
            if bg is not None:
                painter.fillRect(rect, bg)
        kind = d.cell_kind(row, col)
        if kind == K_SPARKLINE:
            self._paint_sparkline_cached(painter, rect, d.obj[row, col - NSTATIC], (row, col),
                                         selected, option)
            return
        if kind == K_THUMBNAIL:
            prop = d.proposal[row]  # int, or str such as 'mx2532'
            prop = int(prop) if isinstance(prop, (int, np.integer)) else prop
            self._paint_thumbnail(painter, rect, (prop, int(d.run[row]), key))
            return
        text = d.display(row, col)
        if not text:
            return
        painter.save()
        if selected:
            painter.setPen(option.palette.highlightedText().color())
        elif kind == K_ERROR:
            painter.setPen(ERROR_FG)
        elif kind == K_SKIPPED:
            painter.setPen(SKIPPED_FG)
        else:
            painter.setPen(option.palette.text().color())
        a = d.cell_attrs(row, col)
        font = option.font
        if a and (a.get("bold") or a.get("carried")):
            font = type(option.font)(option.font)
            font.setBold(bool(a.get("bold")))
            font.setItalic(bool(a.get("carried")))   # a manual value carried over
        painter.setFont(font)
        if kind == K_BOOL:
            align = Qt.AlignHCenter | Qt.AlignVCenter
        elif kind == K_NUMBER or col < NSTATIC:
            align = Qt.AlignRight | Qt.AlignVCenter
        else:
            align = Qt.AlignLeft | Qt.AlignVCenter
        r = rect.adjusted(self.PAD, 0, -self.PAD, 0)
        fm = painter.fontMetrics()
        if fm.horizontalAdvance(text) > r.width():
            text = fm.elidedText(text, Qt.ElideRight, r.width())
        painter.drawText(r, int(align), text)
        painter.restore()

    def _paint_sparkline_cached(self, painter, rect: QRect, raw, key, selected, option):
        """Paint a sparkline from a pixmap drawn once per (value, cell size, selection)."""
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            return
        dev = painter.device()
        dpr = dev.devicePixelRatioF() if dev is not None else 1.0
        size = (rect.width(), rect.height())
        hit = self._sparks.get(key)
        if (hit is not None and hit[0] is raw and hit[1] == size and hit[2] == selected
                and hit[3] == dpr):
            self._sparks.move_to_end(key)
            pm = hit[4]
        else:
            pm = QPixmap(max(1, int(round(size[0] * dpr))), max(1, int(round(size[1] * dpr))))
            pm.setDevicePixelRatio(dpr)
            pm.fill(Qt.transparent)
            p = QPainter(pm)
            try:
                self._paint_sparkline(p, QRect(0, 0, size[0], size[1]),
                                      sparkline_points(raw), selected, option)
            finally:
                p.end()
            self._sparks[key] = (raw, size, selected, dpr, pm)
            while len(self._sparks) > self.SPARK_CACHE:
                self._sparks.popitem(last=False)
        painter.drawPixmap(rect.topLeft(), pm)

    def clear_sparklines(self) -> None:
        """Forget the drawn sparklines (after the table was replaced)."""
        self._sparks.clear()

    def _paint_sparkline(self, painter, rect: QRect, pts, selected, option):
        if pts is None or len(pts) < 2:
            return
        finite = np.isfinite(pts)
        if finite.sum() < 2:
            return
        lo, hi = float(np.min(pts[finite])), float(np.max(pts[finite]))
        span = (hi - lo) or 1.0
        r = QRectF(rect).adjusted(self.PAD, 5, -self.PAD, -5)
        if r.width() < 8 or r.height() < 4:
            return
        n = len(pts)
        xs = r.left() + np.arange(n) * (r.width() / (n - 1))
        ys = r.bottom() - (np.where(finite, pts, lo) - lo) / span * r.height()
        poly = QPolygonF([QPointF(x, y) for x, y in zip(xs.tolist(), ys.tolist())])
        painter.save()
        painter.setRenderHint(QPainter.Antialiasing, True)
        color = option.palette.highlightedText().color() if selected else SPARK_COLOR
        pen = QPen(color, 1.3)
        painter.setPen(pen)
        painter.drawPolyline(poly)
        if not selected:
            painter.setPen(Qt.NoPen)
            painter.setBrush(SPARK_LAST)
            painter.drawEllipse(QPointF(xs[-1], ys[-1]), 2.0, 2.0)
        painter.restore()

    def _paint_thumbnail(self, painter, rect: QRect, key):
        h = rect.height() - 4
        # decoded at the screen's pixel size (twice the rows' height at QT_SCALE_FACTOR=2), so
        # high-DPI screens show it sharp
        dev = painter.device()
        dpr = dev.devicePixelRatioF() if dev is not None else 1.0
        img = self.thumbs.get(key, int(round(h * dpr)))
        maxw = rect.width() - 2 * self.PAD
        if img is None:
            r = QRect(rect.left() + self.PAD, rect.top() + 2, min(h, maxw), h)
            painter.fillRect(r, PLACEHOLDER)
            return
        aspect = img.width() / max(1, img.height())
        hh, w = h, int(round(h * aspect))
        if w > maxw:
            w, hh = maxw, int(round(maxw / max(aspect, 1e-6)))
        target = QRect(rect.left() + self.PAD, rect.top() + (rect.height() - hh) // 2, w, hh)
        painter.save()
        painter.setRenderHint(QPainter.SmoothPixmapTransform, True)
        painter.drawImage(target, img)
        painter.restore()

    def initStyleOption(self, option, index):
        super().initStyleOption(option, index)
        model = self._model()
        if model.data_obj.columns[index.column()].key == C_STATUS:
            row = int(model.view.order[index.row()])
            s = int(model.data_obj.status[row])
            if s != S_DONE:
                c = STATUS_FG.get(s)
                if c is not None:
                    option.palette.setColor(option.palette.Text, c)


class ManualDelegate(CellDelegate):
    """The table's delegate, with type-fitting editors for manual columns."""

    def _manual(self, index):
        return self._model().data_obj.columns[index.column()].manual

    def createEditor(self, parent, option, index):
        m = self._manual(index)
        if not m:
            return super().createEditor(parent, option, index)
        col = self._model().data_obj.columns[index.column()]
        t = m["type"]
        if t == "boolean":
            w = QCheckBox(col.title, parent)
            w.setAutoFillBackground(True)
        elif t == "choice":
            w = QComboBox(parent)
            w.addItem("", None)
            for c in m.get("choices") or []:
                w.addItem(c, c)
        elif t == "integer":
            w = QSpinBox(parent)
            w.setRange(-2_000_000_000, 2_000_000_000)
        elif t == "number":
            w = QDoubleSpinBox(parent)
            w.setDecimals(6)
            w.setRange(-1e15, 1e15)
        else:
            w = QLineEdit(parent)
        if t in ("integer", "number") and col.units:
            w.setSuffix(f" {col.units}")
        w.setObjectName(f"manual-editor-{t}")
        return w

    def setEditorData(self, editor, index):
        m = self._manual(index)
        if not m:
            return super().setEditorData(editor, index)
        v = index.data(Qt.EditRole)
        if isinstance(editor, QCheckBox):
            editor.setChecked(bool(v))
        elif isinstance(editor, QComboBox):
            i = editor.findData(v)
            editor.setCurrentIndex(max(i, 0))
        elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                editor.setValue(int(v) if isinstance(editor, QSpinBox) else float(v))
        else:
            editor.setText("" if v is None else str(v))

    def setModelData(self, editor, model, index):
        m = self._manual(index)
        if not m:
            return super().setModelData(editor, model, index)
        if isinstance(editor, QCheckBox):
            value = editor.isChecked()
        elif isinstance(editor, QComboBox):
            value = editor.currentData()
        elif isinstance(editor, QSpinBox):
            value = int(editor.value())
        elif isinstance(editor, QDoubleSpinBox):
            value = float(editor.value())
        else:
            value = editor.text()
        model.setData(index, value, Qt.EditRole)
