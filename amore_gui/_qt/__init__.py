"""Qt views and widgets of the AMORE GUI (through qtpy: PyQt5 by default, PyQt6 where only it is
installed or ``QT_API=pyqt6``; pyqtgraph only in the plot windows).

Everything here is a thin layer over the plain-Python modules of :mod:`amore_gui`.
"""
import os as _os

import qtpy as _qtpy

# pyqtgraph picks a binding of its own (PyQt6 first) unless told: use qtpy's, so that the two
# never load different Qt libraries into one process.
_os.environ["PYQTGRAPH_QT_LIB"] = _qtpy.API_NAME
