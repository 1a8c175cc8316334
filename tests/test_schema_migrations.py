"""``backend/store/schema.py`` and the Alembic migrations (``backend/store/migrations/``) describe
the same database: every migration run on an empty SQLite file gives exactly the tables, columns,
types, nullability, server defaults, indexes, unique constraints and primary keys that
``schema.py`` declares. A column added to one and not the other fails here, named.

What SQLite and Alembic compare reliably, and what is compared by hand:

* Alembic's ``compare_metadata`` (``compare_type=True``, ``compare_server_default=True``): tables,
  columns, column types (as SQLite declares them: ``ProposalId`` is ``INTEGER``, ``AnyValue`` is
  ``BLOB``, ``LargeBinary`` is ``BLOB``), nullability, server defaults (Alembic's SQLite
  comparison strips SQLite's quotes), named indexes and named unique constraints.
* Primary keys: Alembic's autogenerate never compares them, so this test reads them with the
  inspector and compares them itself.
* Not compared, on purpose: the ``run_snapshots`` triggers of revision 0005 (SQLAlchemy metadata
  cannot declare triggers; ``tests/test_trust.py`` checks that UPDATE and DELETE are refused on a
  database made by the migrations), the ``runs`` change-stamp triggers of revision 0009
  (``tests/test_storage.py`` checks what they do) and column order (SQLite cannot reorder columns; readers
  select columns by name).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from backend.store.schema import metadata_obj
from backend.store.writer import upgrade_schema


def _show(value) -> str:
    """A column's type, server default or nullability as SQL says it."""
    if isinstance(value, sa.types.TypeEngine):
        return str(value)
    arg = getattr(value, "arg", value)              # a server default: DefaultClause(arg)
    return repr(getattr(arg, "text", arg))


def _describe(diff) -> str:
    """One line for a difference that ``compare_metadata`` reports: what it is, where, and the
    value on each side (database made by the migrations / ``schema.py``)."""
    if isinstance(diff, list):          # column modifications come as a list of tuples
        return "\n".join(_describe(d) for d in diff)
    kind = diff[0]
    if kind.startswith("modify_"):
        _, _, table, column, info, migrated, declared = diff
        return (f"{kind[len('modify_'):]} of {table}.{column}: migrations give "
                f"{_show(migrated)}, schema.py declares {_show(declared)}")
    obj = diff[-1]
    if kind in ("add_table", "remove_table"):
        where = "only in schema.py" if kind == "add_table" else "only in the migrations"
        return f"table {obj.name} {where}"
    if kind in ("add_column", "remove_column"):
        where = "only in schema.py" if kind == "add_column" else "only in the migrations"
        return f"column {diff[2]}.{obj.name} ({obj.type}) {where}"
    if kind in ("add_index", "remove_index", "add_constraint", "remove_constraint"):
        where = "only in schema.py" if kind.startswith("add_") else "only in the migrations"
        cols = ", ".join(c.name for c in obj.columns)
        what = "index" if kind.endswith("index") else type(obj).__name__
        return f"{what} {obj.name} on {obj.table.name}({cols}) {where}"
    return repr(diff)


def _migrated_engine(tmp_path) -> sa.engine.Engine:
    path = tmp_path / "runs.sqlite"
    upgrade_schema(path)          # every revision, from an empty file to the head
    return sa.create_engine(f"sqlite:///{path}")


def test_migrations_give_the_schema_that_schema_py_declares(tmp_path):
    engine = _migrated_engine(tmp_path)
    try:
        with engine.connect() as conn:
            mc = MigrationContext.configure(conn, opts={"compare_type": True,
                                                        "compare_server_default": True})
            diffs = compare_metadata(mc, metadata_obj)
    finally:
        engine.dispose()
    assert not diffs, ("schema.py and the migrations differ (fix with a new migration, or "
                       "correct schema.py where the migrations are right):\n"
                       + "\n".join(_describe(d) for d in diffs))


def test_migrations_give_the_primary_keys_that_schema_py_declares(tmp_path):
    """Alembic's comparison leaves primary keys out: compared here, table by table."""
    engine = _migrated_engine(tmp_path)
    try:
        insp = sa.inspect(engine)
        migrated = {t: insp.get_pk_constraint(t)["constrained_columns"]
                    for t in insp.get_table_names() if t != "alembic_version"}
    finally:
        engine.dispose()
    declared = {t.name: [c.name for c in t.primary_key.columns]
                for t in metadata_obj.sorted_tables}
    differ = [f"{t}: migrations {migrated.get(t)}, schema.py {declared.get(t)}"
              for t in sorted(set(migrated) | set(declared)) if migrated.get(t) != declared.get(t)]
    assert not differ, "primary keys differ:\n" + "\n".join(differ)
