"""AMORE, the Automated Run Overview: what users import.

* :mod:`amore.context` - the context-file API (``Variable``, ``Cell``, ``Skip``, ``Group``, ...).
* :mod:`amore.api` - reading a proposal's results from Python.
* :mod:`amore.cli` - the ``amore-proto`` command line.
"""
__version__ = "0.1.0"
