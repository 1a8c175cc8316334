"""Where runs come from: what every run source shares. Each facility's own sources are in its
folder of :mod:`backend.facilities` (``backend/facilities/<name>/source.py``).

* :mod:`.base` - the :class:`RunEvent` record and the :class:`RunSource` interface every source implements.
* :mod:`.kafka` - run announcements on Kafka, whatever their format (at-least-once consumption).
* :mod:`.jsonfiles` - watching a tree for JSON files that announce runs (watchdog plus a slow rescan).
"""
