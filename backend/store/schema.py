"""The schema of ``runs.sqlite``, defined once: SQLAlchemy Core tables used by the single writer
(:mod:`backend.store.writer`), the fast readers and the Alembic migrations.

Tables (long/narrow):

``metadata``
    key/value text pairs: ``proposal`` (int as text), ``db_id`` (32 hex chars, random at creation).
``runs``
    one row per (proposal, run): ``start_time`` (Unix seconds, UTC, from the first train
    timestamp), ``added_at`` (Unix seconds, when AMORE first heard of the run), ``status``
    (a :class:`backend.vocab.RunStatus`), ``status_message``, ``comment`` (the editable run comment),
    ``changed`` (revision 0009: a change stamp, set by the database's triggers ``runs_stamp_insert``
    and ``runs_stamp_update`` to one more than the table's largest on every insert and every
    update that changes one of the fields before it, so it grows in commit order whichever
    process writes; 0 for runs recorded before 0009; indexed). A reader that saw stamp S finds
    every run changed since with ``changed > S``
    (:class:`amore_gui.application.dbread.DbChangeWatcher`). A new field of ``runs`` must be
    added to ``runs_stamp_update``'s column list (a new migration), or its changes go unseen.
``run_values``
    one row per (proposal, run, variable name): ``value`` (SQLite integer, real, text or blob,
    stored without type conversion), ``summary_type`` (a :class:`backend.vocab.SummaryType`, tells
    how to read ``value``), ``attributes`` (JSON text: units, error type/message, shape, dtype, ...),
    ``timestamp`` (Unix seconds of the write); its provenance (revision 0008,
    :mod:`backend.store.provenance`): ``code`` (id of the ``code_versions`` row of the code
    that made it; NULL for manual values, built-in cells and values from before 0008 whose
    code is not known), ``evaluation`` (id of the ``evaluations`` row: where, when, with which
    data), ``inputs`` (JSON text: the manual values read through ``var#``, directly or
    through the variables it takes, ``{"manual": {column: value}}``, the ``param#`` values
    ``{"param": {...}}`` and ``mymdc#`` answers ``{"mymdc": {...}}`` it was given; NULL when
    none).
``variables``
    the context file's variables: name, title, description, units, tags (JSON list), data
    (``raw``/``proc``), summary.
``comments``
    standalone timestamped comments (``run`` may be NULL).
``source_runs``
    runs as other facilities name them (revision 0004): ``source`` (``ess``, ``esrf``,
    ``swissfel``) and ``key`` (ESS job id, path of an ESRF ``metadata.json`` or a SwissFEL request
    JSON) -> ``proposal``/``run``; ``info`` (JSON text: what the run source knows of the run: files,
    the facility's metadata), ``state`` (``running``, ``ready``, ``failed``), ``updated`` (Unix
    seconds). ESRF run numbers are assigned here, once, in order of discovery.

Proposal columns hold the proposal as :func:`backend.vocab.normalize_proposal` gives it: an integer
(European XFEL ``2832``, ESS) or text (ESRF ``mx2532``, SwissFEL ``p18493``). They are declared
INTEGER, whose SQLite affinity stores numbers as integers and identifiers as text, so comparisons
with either kind of parameter work and existing databases need no rewrite.

``events``
    the event log: ``timestamp`` (Unix seconds), ``level`` (a :class:`backend.vocab.EventLevel`),
    ``source`` (which part of AMORE: ``kafka``, ``watcher``, ``context``, ``worker``...),
    ``proposal``/``run`` (may be NULL), ``message`` (one line for people), ``details`` (JSON text:
    topic, offset, traceback, ...).
``run_snapshots``
    append-only (SQLite triggers refuse UPDATE and DELETE): every message that announced a run
    (``kind`` ``"event"``) and the run's metadata as read from its data (``kind``
    ``"metadata"``): ``received_at`` (Unix seconds), ``source`` (``kafka``, ``watcher``, ...),
    ``location`` (``topic[partition]@offset`` or a file path), ``message`` (JSON text, verbatim,
    unknown fields included).
``file_checksums``
    one row per file of a run (raw and proc) and algorithm: ``path`` (absolute), ``size``
    (bytes), ``mtime`` (Unix seconds), ``digest`` (hex), ``computed_at`` (Unix seconds).
``run_verifications``
    the last ``amore-proto verify`` (or backend checksum pass) of each run: ``verified_at``,
    ``algorithm``, ``changed``/``missing``/``new`` (counts) and ``details`` (JSON: the paths).
``manual_columns``
    columns people fill in by hand (:mod:`backend.store.manual`): ``id``, ``name`` (unique among
    columns not deleted), ``title``, ``type`` (``boolean|integer|number|string|choice``),
    ``units`` (pint-normalised text), ``choices`` (JSON list), ``description``, ``carry_over``
    (0/1: a new run starts with the previous run's value), ``position``, ``created_at``,
    ``deleted_at`` (Unix seconds; NULL while the column exists; deleted columns keep their
    history and can be restored). Their current values are rows of ``run_values`` like any other
    (attributes ``{"manual": true, "carried": bool, "by", "at", "via"}``).
``manual_history``
    every edit of a manual cell: ``column_id``, ``proposal``, ``run``, ``value`` (as stored;
    NULL = cleared), ``text`` (what was typed), ``carried`` (0/1), ``author`` (user@host),
    ``timestamp``, ``via`` (``cli``, ``gui``, ``web``, ``api``, ``carry-over``, ``import``).
``run_logs``
    what one evaluation of a run printed, and its tracebacks: ``proposal``, ``run``,
    ``timestamp``, ``status`` (``done``, ``failed``, ``cancelled``...), ``text``.
``code_versions``
    every code digest AMORE has seen (revision 0008): ``digest`` (16 hex characters,
    :func:`backend.ctxrunner.provenance.code_digests`), ``name`` (the variable), ``parts``
    (JSON text: the digests it is made of -- ``function``, ``arguments``, ``fields`` of a
    group, ``names``: module-level name -> digest, ``inputs``: ``var#`` input -> its code
    digest), ``recorded_at``.
``current_code``
    the code of the context file as last loaded (revision 0008): ``name`` (every variable,
    transient ones and metadata columns too), ``code`` (its ``code_versions`` id), ``data``
    (``raw``/``proc``), ``manual`` (JSON list: the manual columns it reads, also through its
    inputs), ``deps`` (JSON list: the variables it takes directly). What the front-ends compare
    stored values with; the ``metadata`` key ``context_state`` says which file it is.
``evaluations``
    one row per evaluation of a run whose values are stored (revision 0008; rows no value
    refers to any more are dropped): ``origin`` (``amore``, ``damnit`` for imported values),
    ``started_at`` (Unix seconds), ``seconds``, ``host``, ``worker`` (``local worker, PID N``
    or ``Slurm job J``), ``amore_version``, ``python``, ``context`` (SHA-256 of the context
    file's text), ``raw_data``/``proc_data`` (digests of the run's data it read, see
    ``run_data``), ``details`` (JSON: the data's files, sizes and times, ``meta#`` values, the
    processes used).
``run_data``
    the run's data as AMORE last saw it (revision 0008): per ``kind`` (``raw``, ``proc``) the
    ``digest`` of its files' names, sizes and modification times, ``files``, ``bytes``,
    ``mtime`` (newest), ``locations`` (JSON list of the glob patterns listing the files), and
    ``seen_at``. A value whose evaluation read other data is stale.
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

from backend.store.identify import SCHEMA_HEAD  # noqa: F401  (the revision these tables are)


class AnyValue(UserDefinedType):
    """A column stored as SQLite gives it (declared BLOB: no type affinity conversion)."""

    cache_ok = True

    def get_col_spec(self, **kw):
        return "BLOB"


class ProposalId(UserDefinedType):
    """A proposal column: declared INTEGER (SQLite integer affinity); holds integers (European
    XFEL, ESS) and text identifiers (ESRF ``mx2532``, SwissFEL ``p18493``) side by side."""

    cache_ok = True

    def get_col_spec(self, **kw):
        return "INTEGER"


metadata_obj = sa.MetaData()

metadata_table = sa.Table(
    "metadata", metadata_obj,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text),
)
runs_table = sa.Table(
    "runs", metadata_obj,
    sa.Column("proposal", ProposalId, primary_key=True),
    sa.Column("run", sa.Integer, primary_key=True),
    sa.Column("start_time", sa.Float),
    sa.Column("added_at", sa.Float),
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("status_message", sa.Text),
    sa.Column("comment", sa.Text),
    sa.Column("changed", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_runs_changed", "changed"),
)
run_values_table = sa.Table(
    "run_values", metadata_obj,
    sa.Column("proposal", ProposalId, primary_key=True),
    sa.Column("run", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", AnyValue),
    sa.Column("summary_type", sa.Text, nullable=False),
    sa.Column("attributes", sa.Text),
    sa.Column("timestamp", sa.Float, nullable=False),
    sa.Column("code", sa.Integer),
    sa.Column("evaluation", sa.Integer),
    sa.Column("inputs", sa.Text),
    sa.Index("ix_run_values_name_code", "name", "code"),
    sa.Index("ix_run_values_timestamp", "timestamp"),
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
    sa.Column("proposal", ProposalId),
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
    sa.Column("proposal", ProposalId),
    sa.Column("run", sa.Integer),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("details", sa.Text),
    sa.Index("ix_events_timestamp", "timestamp"),
)

run_snapshots_table = sa.Table(
    "run_snapshots", metadata_obj,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("proposal", ProposalId, nullable=False),
    sa.Column("run", sa.Integer, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("location", sa.Text),
    sa.Column("message", sa.Text, nullable=False),
    sa.Index("ix_run_snapshots_run", "proposal", "run"),
)
file_checksums_table = sa.Table(
    "file_checksums", metadata_obj,
    sa.Column("proposal", ProposalId, primary_key=True),
    sa.Column("run", sa.Integer, primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("algorithm", sa.Text, primary_key=True),
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("mtime", sa.Float, nullable=False),
    sa.Column("computed_at", sa.Float, nullable=False),
)
run_verifications_table = sa.Table(
    "run_verifications", metadata_obj,
    sa.Column("proposal", ProposalId, primary_key=True),
    sa.Column("run", sa.Integer, primary_key=True),
    sa.Column("verified_at", sa.Float, nullable=False),
    sa.Column("algorithm", sa.Text, nullable=False),
    sa.Column("changed", sa.Integer, nullable=False),
    sa.Column("missing", sa.Integer, nullable=False),
    sa.Column("new", sa.Integer, nullable=False),
    sa.Column("details", sa.Text),
)

source_runs_table = sa.Table(
    "source_runs", metadata_obj,
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("proposal", ProposalId, nullable=False),
    sa.Column("run", sa.Integer, nullable=False),
    sa.Column("info", sa.Text),
    sa.Column("state", sa.Text),
    sa.Column("updated", sa.Float),
    sa.UniqueConstraint("source", "proposal", "run", name="uq_source_runs_run"),
)
manual_columns_table = sa.Table(
    "manual_columns", metadata_obj,
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
manual_history_table = sa.Table(
    "manual_history", metadata_obj,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("column_id", sa.Integer, nullable=False),
    sa.Column("proposal", ProposalId, nullable=False),
    sa.Column("run", sa.Integer, nullable=False),
    sa.Column("value", AnyValue),
    sa.Column("text", sa.Text),
    sa.Column("carried", sa.Integer, nullable=False, server_default="0"),
    sa.Column("author", sa.Text),
    sa.Column("timestamp", sa.Float, nullable=False),
    sa.Column("via", sa.Text),
    sa.Index("ix_manual_history_cell", "column_id", "proposal", "run"),
)
run_logs_table = sa.Table(
    "run_logs", metadata_obj,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("proposal", ProposalId, nullable=False),
    sa.Column("run", sa.Integer, nullable=False),
    sa.Column("timestamp", sa.Float, nullable=False),
    sa.Column("status", sa.Text),
    sa.Column("text", sa.Text),
    sa.Index("ix_run_logs_run", "proposal", "run"),
)
slurm_jobs_table = sa.Table(
    "slurm_jobs", metadata_obj,
    sa.Column("task_id", sa.Text, primary_key=True),
    sa.Column("job_id", sa.Text, nullable=False),
    sa.Column("proposal", ProposalId, nullable=False),
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
    sa.Index("ix_slurm_jobs_run", "proposal", "run"),
    sa.Index("ix_slurm_jobs_done", "done"),
)

code_versions_table = sa.Table(
    "code_versions", metadata_obj,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("parts", sa.Text),
    sa.Column("recorded_at", sa.Float, nullable=False),
    sa.UniqueConstraint("digest", name="uq_code_versions_digest"),
)
current_code_table = sa.Table(
    "current_code", metadata_obj,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("code", sa.Integer, nullable=False),
    sa.Column("data", sa.Text),
    sa.Column("manual", sa.Text),
    sa.Column("deps", sa.Text),
)
evaluations_table = sa.Table(
    "evaluations", metadata_obj,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("proposal", ProposalId, nullable=False),
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
    sa.Index("ix_evaluations_run", "proposal", "run"),
)
run_data_table = sa.Table(
    "run_data", metadata_obj,
    sa.Column("proposal", ProposalId, primary_key=True),
    sa.Column("run", sa.Integer, primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("files", sa.Integer),
    sa.Column("bytes", sa.Integer),
    sa.Column("mtime", sa.Float),
    sa.Column("locations", sa.Text),
    sa.Column("seen_at", sa.Float, nullable=False),
)
