"""Slurm jobs: one row per task and run, so the GUI and ``amore-proto jobs`` show their state.

The ``proposal`` column is declared INTEGER like the other tables' (SQLite integer affinity:
numbers stay numbers, identifiers such as ``mx2532`` are kept as text).

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "slurm_jobs",
        sa.Column("task_id", sa.Text, primary_key=True),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("proposal", sa.Integer, nullable=False),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("names", sa.Text),
        sa.Column("data", sa.Text),
        sa.Column("origin", sa.Text),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("node", sa.Text),
        sa.Column("submitted_at", sa.Float),
        sa.Column("started_at", sa.Float),
        sa.Column("ended_at", sa.Float),
        sa.Column("log_file", sa.Text),
        sa.Column("message", sa.Text),
        sa.Column("done", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_slurm_jobs_run", "slurm_jobs", ["proposal", "run"])
    op.create_index("ix_slurm_jobs_done", "slurm_jobs", ["done"])


def downgrade():
    op.drop_index("ix_slurm_jobs_done", "slurm_jobs")
    op.drop_index("ix_slurm_jobs_run", "slurm_jobs")
    op.drop_table("slurm_jobs")
