"""Moving a beamtime from DAMNIT to AMORE: reading a DAMNIT context directory without changing it
and importing it whole into a new AMORE directory (``amore-proto import-damnit SRC [DEST]``).

* :mod:`.source` - a DAMNIT 0.4.0 directory (data format 4) read-only: ``runs.sqlite`` (its
  ``metameta``, ``run_info``, ``run_variables``, ``variables``, ``tags``, ``time_comments``)
  and ``extracted_data/p<P>_r<R>.h5``;
* :mod:`.values` - DAMNIT's table values as AMORE's (:class:`backend.vocab.StoredValue`);
* :mod:`.user_columns` - DAMNIT's user-editable variables as AMORE's manual columns (also
  ``amore-proto column import-damnit``);
* :mod:`.importer` - the whole import and ``--update``.

DAMNIT's files are only ever read: the database through
:func:`backend.store.identify.open_untouched`, the HDF5 files with ``h5py`` in read mode (and
copied whole into the AMORE directory).
"""
