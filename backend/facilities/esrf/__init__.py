"""ESRF (its plug-in: :mod:`.facility`).

* :mod:`.source` - every collection's ``metadata.json`` under the beamtime folder (run numbers
  synthesised in the database);
* :mod:`.run` - worker side: a collection as a ``FacilityRun`` (metadata, data folder, files);
* :mod:`.demo` - collections as MXCuBE leaves them (tests, the demo).

Nothing is imported here: the context-file worker imports this package on the way to :mod:`.run`.
"""
