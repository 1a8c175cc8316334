"""Qt views and widgets of the AMORE GUI (PyQt5; pyqtgraph only in the plot windows).

Everything here is a thin layer over the plain-Python modules of :mod:`amore_gui`.
"""
