"""Initial schema: metadata, runs, run_values, variables, comments.

Revision ID: 0001
Revises:
"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "metadata",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text),
    )
    op.create_table(
        "runs",
        sa.Column("proposal", sa.Integer, primary_key=True),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("start_time", sa.Float),
        sa.Column("added_at", sa.Float),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("status_message", sa.Text),
        sa.Column("comment", sa.Text),
    )
    # value is declared BLOB so SQLite keeps each value's own type (no affinity conversion)
    op.create_table(
        "run_values",
        sa.Column("proposal", sa.Integer, primary_key=True),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.LargeBinary),
        sa.Column("summary_type", sa.Text, nullable=False),
        sa.Column("attributes", sa.Text),
        sa.Column("timestamp", sa.Float, nullable=False),
    )
    op.create_table(
        "variables",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("title", sa.Text),
        sa.Column("description", sa.Text),
        sa.Column("units", sa.Text),
        sa.Column("tags", sa.Text),
        sa.Column("data", sa.Text),
        sa.Column("summary", sa.Text),
    )
    op.create_table(
        "comments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("proposal", sa.Integer),
        sa.Column("run", sa.Integer),
        sa.Column("timestamp", sa.Float, nullable=False),
        sa.Column("author", sa.Text),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_index("ix_run_values_name", "run_values", ["name"])


def downgrade():
    op.drop_index("ix_run_values_name", "run_values")
    for t in ("comments", "variables", "run_values", "runs", "metadata"):
        op.drop_table(t)
