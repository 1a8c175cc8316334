"""Where runs come from: run sources that announce runs as :class:`~backend.sources.base.RunEvent`.

* :mod:`.base` - the :class:`RunEvent` record and the :class:`RunSource` interface every source implements.
* :mod:`.euxfel` - European XFEL's Kafka run announcements.
* :mod:`.directory` - a watched ``raw/`` tree (offline, no broker).
* :mod:`.ess` - the ESS file writer (pl72 / 6s4t / wrdn flatbuffers on Kafka).
* :mod:`.esrf` - ESRF metadata.json files (run numbers synthesised in the database).
* :mod:`.swissfel` - SwissFEL acquisition request JSONs (run_info and run*/meta layouts).
* :mod:`.jsonfiles` - watching a tree for JSON files (watchdog plus a slow rescan).
"""
