"""The QApplication with AMORE's calm look (Fusion style, light palette, readable font), and the
dark theme it can switch to."""
from __future__ import annotations

import sys

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QFont, QKeySequence, QPalette
from qtpy.QtWidgets import QAction, QApplication

from amore_gui.application.process import one_heap

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
    one_heap()              # before Qt and AMORE start their threads
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


def make_action(parent, text: str, slot, shortcut: str | None = None, tip: str | None = None,
                checkable: bool = False) -> QAction:
    """A ``QAction`` of ``parent`` (a window: it holds the action's shortcut) calling ``slot``
    when triggered (with the checked state if ``checkable``), with its shortcut and its tooltip
    (also shown in the status bar)."""
    a = QAction(text, parent)
    if shortcut:
        a.setShortcut(QKeySequence(shortcut))
    if tip:
        a.setToolTip(tip)
        a.setStatusTip(tip)
    a.setCheckable(checkable)
    a.triggered.connect(slot)
    return a


def dark_palette() -> QPalette:
    """The palette of the dark theme."""
    p = QPalette()
    base, alt, text = QColor(35, 38, 41), QColor(45, 49, 53), QColor(230, 230, 230)
    p.setColor(QPalette.Window, QColor(49, 54, 59))
    p.setColor(QPalette.WindowText, text)
    p.setColor(QPalette.Base, base)
    p.setColor(QPalette.AlternateBase, alt)
    p.setColor(QPalette.ToolTipBase, QColor(60, 64, 70))
    p.setColor(QPalette.ToolTipText, text)
    p.setColor(QPalette.Text, text)
    p.setColor(QPalette.Button, QColor(49, 54, 59))
    p.setColor(QPalette.ButtonText, text)
    p.setColor(QPalette.BrightText, QColor(255, 80, 80))
    p.setColor(QPalette.Link, QColor(90, 170, 255))
    p.setColor(QPalette.Highlight, QColor(61, 174, 233))
    p.setColor(QPalette.HighlightedText, QColor(20, 20, 20))
    p.setColor(QPalette.Disabled, QPalette.Text, QColor(128, 128, 128))
    p.setColor(QPalette.Disabled, QPalette.ButtonText, QColor(128, 128, 128))
    return p


_LIGHT: dict = {}


def set_dark_theme(on: bool) -> None:
    """Switch the application's palette and style to dark (``on``) or back to the light ones
    it had."""
    app = QApplication.instance()
    if "palette" not in _LIGHT:
        _LIGHT["palette"] = QPalette(app.palette())
        _LIGHT["style"] = app.style().objectName()
    if on:
        app.setStyle("Fusion")
        app.setPalette(dark_palette())
    else:
        app.setStyle(_LIGHT["style"] or "Fusion")
        app.setPalette(_LIGHT["palette"])
