"""Trust the table: append-only run snapshots (announcing messages, run metadata), file
checksums and the last verification of each run.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Kept here (not imported from schema.py) so that this revision never changes.
_TRIGGERS = (
    "CREATE TRIGGER run_snapshots_no_update BEFORE UPDATE ON run_snapshots "
    "BEGIN SELECT RAISE(ABORT, 'run_snapshots is append-only'); END",
    "CREATE TRIGGER run_snapshots_no_delete BEFORE DELETE ON run_snapshots "
    "BEGIN SELECT RAISE(ABORT, 'run_snapshots is append-only'); END",
)


def upgrade():
    op.create_table(
        "run_snapshots",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("proposal", sa.Integer, nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("location", sa.Text),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_run_snapshots_run", "run_snapshots", ["proposal", "run"])
    for sql in _TRIGGERS:
        op.execute(sql)
    op.create_table(
        "file_checksums",
        sa.Column("proposal", sa.Integer, primary_key=True),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("algorithm", sa.Text, primary_key=True),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("mtime", sa.Float, nullable=False),
        sa.Column("computed_at", sa.Float, nullable=False),
    )
    op.create_table(
        "run_verifications",
        sa.Column("proposal", sa.Integer, primary_key=True),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("verified_at", sa.Float, nullable=False),
        sa.Column("algorithm", sa.Text, nullable=False),
        sa.Column("changed", sa.Integer, nullable=False),
        sa.Column("missing", sa.Integer, nullable=False),
        sa.Column("new", sa.Integer, nullable=False),
        sa.Column("details", sa.Text),
    )


def downgrade():
    op.drop_table("run_verifications")
    op.drop_table("file_checksums")
    op.execute("DROP TRIGGER IF EXISTS run_snapshots_no_update")
    op.execute("DROP TRIGGER IF EXISTS run_snapshots_no_delete")
    op.drop_index("ix_run_snapshots_run", "run_snapshots")
    op.drop_table("run_snapshots")
