"""The event log: what a user should know and cannot see in a cell (malformed messages, a broken
context file, a worker that died, a failed job, ...).

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("timestamp", sa.Float, nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("proposal", sa.Integer),
        sa.Column("run", sa.Integer),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("details", sa.Text),
    )
    op.create_index("ix_events_timestamp", "events", ["timestamp"])


def downgrade():
    op.drop_index("ix_events_timestamp", "events")
    op.drop_table("events")
