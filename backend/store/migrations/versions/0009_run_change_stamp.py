"""A change stamp on ``runs``: which runs changed since a reader last looked, without reading
them all.

``runs.changed`` (INTEGER, 0 for the runs recorded before this revision) is set by the
database itself: a trigger after each INSERT, and after each UPDATE that changes one of the
run's fields (start time, time added, status, status message, comment), sets the row's stamp to
one more than the largest in the table. SQLite runs one write transaction at a time and the
trigger reads the largest stamp inside it, so stamps grow in the order transactions commit,
whichever process writes: a reader that saw stamp S has seen every change stamped up to S, and
``WHERE changed > S`` (the index ``ix_runs_changed``) finds exactly what came after. Nothing
that writes ``runs`` has to know about it. Runs are never deleted.

The column is added with ``ALTER TABLE ... ADD COLUMN`` (no copy of a large table).

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Kept here (not imported from schema.py) so that this revision never changes.
_NEXT = "(SELECT ifnull(max(changed), 0) + 1 FROM runs)"
_FIELDS = ("start_time", "added_at", "status", "status_message", "comment")
_TRIGGERS = (
    "CREATE TRIGGER runs_stamp_insert AFTER INSERT ON runs BEGIN "
    f"UPDATE runs SET changed = {_NEXT} WHERE rowid = NEW.rowid; END",
    f"CREATE TRIGGER runs_stamp_update AFTER UPDATE OF {', '.join(_FIELDS)} ON runs "
    f"WHEN {' OR '.join(f'OLD.{f} IS NOT NEW.{f}' for f in _FIELDS)} BEGIN "
    f"UPDATE runs SET changed = {_NEXT} WHERE rowid = NEW.rowid; END",
)


def upgrade():
    op.add_column("runs", sa.Column("changed", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_runs_changed", "runs", ["changed"])
    for sql in _TRIGGERS:
        op.execute(sql)


def downgrade():
    op.execute("DROP TRIGGER IF EXISTS runs_stamp_update")
    op.execute("DROP TRIGGER IF EXISTS runs_stamp_insert")
    op.drop_index("ix_runs_changed", "runs")
    with op.batch_alter_table("runs") as b:
        b.drop_column("changed")
