"""Manual columns (typed, with units and an edit history) and per-run processing logs.

Revision ID: 0006
Revises: 0005

The ``proposal`` columns are declared INTEGER like the other tables' (SQLite integer affinity:
European XFEL numbers stay integers, ESRF/SwissFEL identifiers such as ``mx2532`` are kept as text),
matching :class:`backend.store.schema.ProposalId`.
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "manual_columns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("units", sa.Text),
        sa.Column("choices", sa.Text),
        sa.Column("description", sa.Text),
        sa.Column("carry_over", sa.Integer, nullable=False, server_default="0"),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float),
        sa.Column("deleted_at", sa.Float),
    )
    op.create_table(
        "manual_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("column_id", sa.Integer, nullable=False),
        sa.Column("proposal", sa.Integer, nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("value", sa.LargeBinary),  # BLOB: SQLite keeps each value's own type
        sa.Column("text", sa.Text),
        sa.Column("carried", sa.Integer, nullable=False, server_default="0"),
        sa.Column("author", sa.Text),
        sa.Column("timestamp", sa.Float, nullable=False),
        sa.Column("via", sa.Text),
    )
    op.create_index("ix_manual_history_cell", "manual_history", ["column_id", "proposal", "run"])
    op.create_table(
        "run_logs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("proposal", sa.Integer, nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("timestamp", sa.Float, nullable=False),
        sa.Column("status", sa.Text),
        sa.Column("text", sa.Text),
    )
    op.create_index("ix_run_logs_run", "run_logs", ["proposal", "run"])


def downgrade():
    op.drop_index("ix_run_logs_run", "run_logs")
    op.drop_table("run_logs")
    op.drop_index("ix_manual_history_cell", "manual_history")
    op.drop_table("manual_history")
    op.drop_table("manual_columns")
