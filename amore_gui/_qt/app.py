"""The QApplication with AMORE's calm look (Fusion style, light palette, readable font)."""
from __future__ import annotations

import sys

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QFont, QPalette
from qtpy.QtWidgets import QApplication

STYLE_SHEET = """
QTableView { gridline-color: #e6e6e6; selection-background-color: #cfe3fa;
             selection-color: #1b1b1b; }
QHeaderView::section { background: #f5f6f7; color: #323130; padding: 3px 14px 3px 6px;
                       border: none; border-right: 1px solid #e1e1e1;
                       border-bottom: 1px solid #c8c8c8; }
QHeaderView::up-arrow, QHeaderView::down-arrow { subcontrol-origin: padding;
    subcontrol-position: center right; width: 8px; height: 8px; right: 2px; }
QToolBar { spacing: 6px; padding: 3px; border: none; border-bottom: 1px solid #e1e1e1; }
QStatusBar { color: #484644; }
QStatusBar QLabel { padding: 0 6px; }
QToolButton#chip { background: #eef4fb; border: 1px solid #c7dcf3; border-radius: 9px;
                   padding: 1px 8px; color: #1d4f91; }
QToolButton#chip:hover { background: #dde9f7; }
QLabel#hint { color: #797775; }
"""


def make_app(argv=None) -> QApplication:
    """The application object (created once; reused if it exists)."""
    app = QApplication.instance()
    if app is not None:
        return app
    for attr in ("AA_EnableHighDpiScaling", "AA_UseHighDpiPixmaps"):  # always on in Qt 6
        if hasattr(Qt, attr):
            QApplication.setAttribute(getattr(Qt, attr), True)
    app = QApplication(list(argv) if argv is not None else sys.argv[:1])
    app.setApplicationName("AMORE")
    app.setOrganizationName("AMORE")
    app.setStyle("Fusion")
    pal = QPalette()
    pal.setColor(QPalette.Window, QColor("#fafafa"))
    pal.setColor(QPalette.Base, QColor("#ffffff"))
    pal.setColor(QPalette.AlternateBase, QColor("#f7f9fb"))
    pal.setColor(QPalette.Text, QColor("#1f1f1f"))
    pal.setColor(QPalette.WindowText, QColor("#1f1f1f"))
    pal.setColor(QPalette.Button, QColor("#f3f3f3"))
    pal.setColor(QPalette.ButtonText, QColor("#1f1f1f"))
    pal.setColor(QPalette.Highlight, QColor("#cfe3fa"))
    pal.setColor(QPalette.HighlightedText, QColor("#1b1b1b"))
    pal.setColor(QPalette.ToolTipBase, QColor("#ffffe8"))
    pal.setColor(QPalette.ToolTipText, QColor("#1f1f1f"))
    app.setPalette(pal)
    f = app.font()
    if f.pointSizeF() < 10:
        f.setPointSizeF(10)
    app.setFont(f)
    app.setStyleSheet(STYLE_SHEET)
    return app


def monospace_font(size: float | None = None) -> QFont:
    """A monospace font (for code and logs), optionally of a point size."""
    f = QFont("DejaVu Sans Mono")
    f.setStyleHint(QFont.Monospace)
    if size:
        f.setPointSizeF(size)
    return f
