"""SwissFEL (its plug-in: :mod:`.facility`).

* :mod:`.source` - the acquisition request JSONs sf_daq_broker saves (both layouts);
* :mod:`.run` - worker side: an acquisition as a ``FacilityRun`` (request, data folder, files);
* :mod:`.check` - the data check: every channel has every pulse id the request asked for;
* :mod:`.demo` - requests and data files as sf_daq_broker saves them (tests, the demo).

Nothing is imported here: the context-file worker imports this package on the way to :mod:`.run`.
"""
