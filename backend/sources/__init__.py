"""Where runs come from: run sources that announce runs as :class:`~backend.sources.base.RunEvent`.

* :mod:`.base` - the :class:`RunEvent` record and the :class:`RunSource` interface every source implements.
* :mod:`.euxfel` - European XFEL's Kafka run announcements.
* :mod:`.directory` - a watched ``raw/`` tree (offline, no broker).
"""
