"""Other facilities' runs: proposals as identifiers, and the ``source_runs`` table.

* Proposals: ESRF (``mx2532``) and SwissFEL (``p18493``) proposals are identifiers, not numbers.
  The proposal columns of ``runs``, ``run_values``, ``comments`` and ``events`` are declared
  INTEGER; SQLite's integer affinity keeps numbers as integers and stores other text as text, so
  these columns take identifiers without rewriting the tables (European XFEL's ``2832`` stays the
  integer it was). The ``proposal`` entry of ``metadata`` is normalised (``" 002832"`` -> ``"2832"``).
* ``source_runs``: which facility run (ESS job id, ESRF metadata.json, SwissFEL request JSON) is
  which AMORE run, with what the source knows of it; ESRF run numbers are synthesised here.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "source_runs",
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("proposal", sa.Integer, nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("info", sa.Text),
        sa.Column("state", sa.Text),
        sa.Column("updated", sa.Float),
        sa.UniqueConstraint("source", "proposal", "run", name="uq_source_runs_run"),
    )
    conn = op.get_bind()
    row = conn.execute(sa.text("SELECT value FROM metadata WHERE key = 'proposal'")).fetchone()
    if row is not None and row[0] is not None:
        v = str(row[0]).strip()
        if v.isdigit():
            v = str(int(v))
        conn.execute(sa.text("UPDATE metadata SET value = :v WHERE key = 'proposal'"), {"v": v})


def downgrade():
    op.drop_table("source_runs")
