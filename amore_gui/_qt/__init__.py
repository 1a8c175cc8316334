"""Qt views and widgets of the AMORE GUI (through qtpy: PyQt5 by default, PyQt6 where only it is
installed or ``QT_API=pyqt6``; pyqtgraph only in the plot windows).

Everything here is a thin layer over the plain-Python modules of :mod:`amore_gui`.
"""
