"""Where values are stored: ``runs.sqlite``, its schema (defined once), the single writer and the
Alembic migrations.

* :mod:`.schema` - the SQLAlchemy Core tables and the schema revision.
* :mod:`.writer` - :class:`RunDB`, used by the backend (the one writer) and for small edits.
* :mod:`.reader` - fast read-only queries (plain :mod:`sqlite3`), their SQL built from the
  schema tables: used by the GUI and by :mod:`amore.api`.
* ``migrations/`` - Alembic revisions; opening a database upgrades it.
"""
