"""Names and the schema revision of ``runs.sqlite``, importable without SQLAlchemy (the GUI's
fast reading path uses them)."""

DB_FILE_NAME = "runs.sqlite"
#: Alembic revision this code writes and reads; a database at another revision is migrated
#: when opened with :class:`backend.storage.RunDB`.
SCHEMA_HEAD = "0002"
