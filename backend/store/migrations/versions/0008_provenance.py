"""Provenance of every stored value: the code that made it, where, when, from which data.

* ``run_values`` gains ``code`` (the ``code_versions`` id of the code that made the value),
  ``evaluation`` (the ``evaluations`` row: where, when, with which data) and ``inputs`` (JSON:
  manual, ``param#`` and ``mymdc#`` values it was given). Values stored before this revision
  keep NULL there (their code is not known; see :mod:`backend.store.provenance`).
* The index on ``run_values(name)`` becomes one on ``(name, code)``: it serves the same
  lookups by name, and finds the values whose code differs from the current one without
  reading the others.
* ``code_versions``, ``current_code``, ``evaluations`` and ``run_data``: see
  :mod:`backend.store.schema`.

Columns are added with ``ALTER TABLE ... ADD COLUMN`` (no copy of a large table).

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("run_values", sa.Column("code", sa.Integer))
    op.add_column("run_values", sa.Column("evaluation", sa.Integer))
    op.add_column("run_values", sa.Column("inputs", sa.Text))
    op.drop_index("ix_run_values_name", "run_values")
    op.create_index("ix_run_values_name_code", "run_values", ["name", "code"])
    op.create_table(
        "code_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("parts", sa.Text),
        sa.Column("recorded_at", sa.Float, nullable=False),
        sa.UniqueConstraint("digest", name="uq_code_versions_digest"),
    )
    op.create_table(
        "current_code",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("code", sa.Integer, nullable=False),
        sa.Column("data", sa.Text),
        sa.Column("manual", sa.Text),
        sa.Column("deps", sa.Text),
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("proposal", sa.Integer, nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("seconds", sa.Float),
        sa.Column("host", sa.Text),
        sa.Column("worker", sa.Text),
        sa.Column("amore_version", sa.Text),
        sa.Column("python", sa.Text),
        sa.Column("context", sa.Text),
        sa.Column("raw_data", sa.Text),
        sa.Column("proc_data", sa.Text),
        sa.Column("details", sa.Text),
    )
    op.create_index("ix_evaluations_run", "evaluations", ["proposal", "run"])
    op.create_table(
        "run_data",
        sa.Column("proposal", sa.Integer, primary_key=True),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("files", sa.Integer),
        sa.Column("bytes", sa.Integer),
        sa.Column("mtime", sa.Float),
        sa.Column("locations", sa.Text),
        sa.Column("seen_at", sa.Float, nullable=False),
    )


def downgrade():
    op.drop_table("run_data")
    op.drop_index("ix_evaluations_run", "evaluations")
    op.drop_table("evaluations")
    op.drop_table("current_code")
    op.drop_table("code_versions")
    op.drop_index("ix_run_values_name_code", "run_values")
    op.create_index("ix_run_values_name", "run_values", ["name"])
    with op.batch_alter_table("run_values") as b:
        b.drop_column("inputs")
        b.drop_column("evaluation")
        b.drop_column("code")
