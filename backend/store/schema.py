"""The schema of ``runs.sqlite``, defined once: SQLAlchemy Core tables used by the single writer
(:mod:`backend.store.writer`), the fast readers and the Alembic migrations.

Tables (long/narrow):

``metadata``
    key/value text pairs: ``proposal`` (int as text), ``db_id`` (32 hex chars, random at creation).
``runs``
    one row per (proposal, run): ``start_time`` (Unix seconds, UTC, from the first train
    timestamp), ``added_at`` (Unix seconds, when AMORE first heard of the run), ``status``
    (a :class:`backend.vocab.RunStatus`), ``status_message``, ``comment`` (the editable run comment).
``run_values``
    one row per (proposal, run, variable name): ``value`` (SQLite integer, real, text or blob,
    stored without type conversion), ``summary_type`` (a :class:`backend.vocab.SummaryType`, tells
    how to read ``value``), ``attributes`` (JSON text: units, error type/message, shape, dtype, ...),
    ``timestamp`` (Unix seconds of the write).
``variables``
    the context file's variables: name, title, description, units, tags (JSON list), data
    (``raw``/``proc``), summary.
``comments``
    standalone timestamped comments (``run`` may be NULL).
``events``
    the event log: ``timestamp`` (Unix seconds), ``level`` (a :class:`backend.vocab.EventLevel`),
    ``source`` (which part of AMORE: ``kafka``, ``watcher``, ``context``, ``worker``...),
    ``proposal``/``run`` (may be NULL), ``message`` (one line for people), ``details`` (JSON text:
    topic, offset, traceback, ...).
``slurm_jobs``
    one row per Slurm task and run (a task may compute several runs, one after the other):
    ``task_id`` (``"<job>"`` or ``"<array job>_<task>"``),
    ``job_id`` (the job or array job), ``proposal``/``run``, ``names`` (JSON list of the
    variables it computes), ``data``, ``origin`` (``backend`` or ``reprocess``), ``state``
    (Slurm's: ``PENDING``, ``RUNNING``, ``COMPLETED``, ``TIMEOUT``, ...), ``node``,
    ``submitted_at``/``started_at``/``ended_at`` (Unix seconds), ``log_file``, ``message``,
    ``done`` (1 once its outcome is in ``run_values``).
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.types import UserDefinedType

#: Alembic revision this code writes and reads; a database at another revision is migrated
#: when opened with :class:`backend.store.writer.RunDB`.
SCHEMA_HEAD = "0007"


class AnyValue(UserDefinedType):
    """A column stored as SQLite gives it (declared BLOB: no type affinity conversion)."""

    cache_ok = True

    def get_col_spec(self, **kw):
        return "BLOB"


metadata_obj = sa.MetaData()

metadata_table = sa.Table(
    "metadata", metadata_obj,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text),
)
runs_table = sa.Table(
    "runs", metadata_obj,
    sa.Column("proposal", sa.Integer, primary_key=True),
    sa.Column("run", sa.Integer, primary_key=True),
    sa.Column("start_time", sa.Float),
    sa.Column("added_at", sa.Float),
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("status_message", sa.Text),
    sa.Column("comment", sa.Text),
)
run_values_table = sa.Table(
    "run_values", metadata_obj,
    sa.Column("proposal", sa.Integer, primary_key=True),
    sa.Column("run", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", AnyValue),
    sa.Column("summary_type", sa.Text, nullable=False),
    sa.Column("attributes", sa.Text),
    sa.Column("timestamp", sa.Float, nullable=False),
)
variables_table = sa.Table(
    "variables", metadata_obj,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("title", sa.Text),
    sa.Column("description", sa.Text),
    sa.Column("units", sa.Text),
    sa.Column("tags", sa.Text),
    sa.Column("data", sa.Text),
    sa.Column("summary", sa.Text),
)
comments_table = sa.Table(
    "comments", metadata_obj,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("proposal", sa.Integer),
    sa.Column("run", sa.Integer),
    sa.Column("timestamp", sa.Float, nullable=False),
    sa.Column("author", sa.Text),
    sa.Column("text", sa.Text, nullable=False),
)
events_table = sa.Table(
    "events", metadata_obj,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("timestamp", sa.Float, nullable=False),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("proposal", sa.Integer),
    sa.Column("run", sa.Integer),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("details", sa.Text),
)
slurm_jobs_table = sa.Table(
    "slurm_jobs", metadata_obj,
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
