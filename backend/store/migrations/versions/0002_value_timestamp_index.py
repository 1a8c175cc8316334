"""Index run_values by timestamp: readers watching the database find new values without a scan.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_run_values_timestamp", "run_values", ["timestamp"])


def downgrade():
    op.drop_index("ix_run_values_timestamp", "run_values")
