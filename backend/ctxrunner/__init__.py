"""Where user code runs: evaluating a context file on one run, in the user's Python.

Everything in this package may run in a different interpreter (``processing.context_python``)
with only numpy, h5py, extra-data and the standard library; it never imports SQLAlchemy, Kafka or
Qt (an import-linter contract checks this). See ``README.md`` beside this file.

* :mod:`.api` - the context-file API in one module (re-exported as ``amore.context``), made of
  :mod:`.variables` (``Variable``, ``Cell``, ``Skip``, ``RunData``), :mod:`.groups` (``Group``),
  :mod:`.compat` (DAMNIT's and the prototype's module names), :mod:`.context` (loading and
  checking a context file: ``ContextFile``), :mod:`.evaluation` (computing its variables on one
  run) and :mod:`.pipeline` (``Pipeline``: evaluating from a notebook).
* :mod:`.results` - reducing results to table values, writing the run's HDF5 file.
* :mod:`.worker` - the long-lived worker process the backend talks to over JSON lines.
* :mod:`.mymdc` - the facility metadata service for ``mymdc#`` inputs.
* :mod:`.facilities` - how the worker opens a run the facility's way (each facility's
  ``backend/facilities/<name>/run.py``) and what those share; metadata columns.
"""
