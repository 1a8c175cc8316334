"""Where values are stored: ``runs.sqlite``, its schema (defined once), the single writer and the
Alembic migrations.

* :mod:`.schema` - the SQLAlchemy Core tables and the schema revision.
* :mod:`.writer` - :class:`RunDB`, used by the backend (the one writer) and for small edits.
* ``migrations/`` - Alembic revisions; opening a database upgrades it.
"""
