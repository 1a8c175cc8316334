"""AMORE's run-overview GUI (PyQt5 + pyqtgraph).

Layout: the plain-Python parts (no Qt imports, testable without a display) are
:mod:`amore_gui.table_data` (column arrays, sorting, filtering), :mod:`amore_gui.dbread`
(reading ``runs.sqlite``, watching it for changes), :mod:`amore_gui.formatting`,
:mod:`amore_gui.settings` (per-context-directory settings), :mod:`amore_gui.locate`
(proposal number -> context directory), :mod:`amore_gui.backend_status`,
:mod:`amore_gui.export` (CSV/Excel) and :mod:`amore_gui.context_check` (validating a context
file in a subprocess). The Qt views and widgets are in :mod:`amore_gui._qt`; the entry point
is :func:`amore_gui.app.main` (``amore-proto gui``).
"""
