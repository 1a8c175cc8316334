"""European XFEL, the default facility (its plug-in: :mod:`.facility`).

* :mod:`.source` - the facility's Kafka run events (migration, correction, online topics);
* :mod:`.directory` - offline: runs seen appearing in the proposal's ``raw/`` and ``proc/``;
* :mod:`.run` - worker side: the run opened with extra-data, after :mod:`.filemap` wrote its
  run files map;
* :mod:`.check` - the data check: every source has data for every train.

Its demo is ``amore-proto demo`` itself (:mod:`amore.cli.demo`, runs from
:mod:`backend.testing.mockdata`). Nothing is imported here: the context-file worker imports this
package on the way to :mod:`.run`.
"""
