"""The application layer: everything a front-end does, without Qt.

Every front-end - the Qt GUI (:mod:`amore_gui._qt`) and the browser front-end - calls this
layer and nothing below it (an import-linter contract forbids front-ends importing
``backend``); it is tested without a display. Nothing here imports Qt, and nothing here runs an
event loop: calls that **block** (database, HDF5 files, tmux, a process) say so, and a
front-end runs them off its event loop (Qt: :class:`amore_gui._qt.workers.Tasks` or a
``QThread``; asyncio: ``asyncio.to_thread``). Nothing is imported by this package itself:
import the modules below.

Opening (:mod:`~amore_gui.application.opening`)
    ``locate(arg) -> Target``                 a directory or proposal -> context directory (blocks)
    ``create_context_dir(dir, proposal, template) -> Created``  the one way to make one (also
                                              ``amore-proto init``); keeps a lone context.py
    ``templates()``, ``has_database(dir)``    what the Open/Create dialogs show; ``LocateError``

One context directory (:mod:`~amore_gui.application.workspace`)
    ``Workspace(dir)``                        shared by all views of a directory; no state but
                                              the path, any thread may call it. Its methods:
    ``iter_load()`` / ``load()``              the run table (:class:`dbread.LoadResult`, then
                                              :class:`dbread.ValueChunk` s); ``ensure_schema()``
    ``read_columns()``                        column definitions and stale values, no values
                                              (:class:`dbread.ColumnsRead`: taken in place)
    ``read_run_update(p, r)``                 one run's row and values (:class:`table_data.RunUpdate`)
    ``connect()``, ``read_thumbnail(con, p, r, name)``  thumbnail PNGs
    ``read_value(p, r, name)``                a run's full stored value (HDF5; xarray/numpy/PNG)
    ``read_per_train(runs, names)``           per-train data matched on train ID
    ``live_updates(loaded, since) -> LiveUpdates``  follow changes (see below)
    ``set_comment``, ``add_logbook_comment``, ``read_logbook``  comments
    ``write_manual_values``, ``add_manual_column``, ``manual_history``, ``run_log``
    ``backend_status()``, ``backend_action("start"|"stop"|"restart")``, ``backend_log()``
    ``reprocess_job(runs, names, slurm) -> ReprocessJob``, ``cancel_job(runs) -> CancelJob``
    ``slurm_jobs(p, r)``, ``read_log_tail(path)``   a run's Slurm jobs and a job's log
    ``event_log() -> EventLogState``          the event log (``poll()`` blocks, ``apply()`` not)
    ``read_context_file()``, ``check_context(code)``, ``save_context_file(text)``

One view's state (:mod:`~amore_gui.application.session`)
    ``Session(dir, settings, runner, workspace=)``  filters, column layout (remembered per
                                              directory), tag, live source, backend state and
                                              allowed actions, comment edits; tells the view
                                              through ``session.events`` (:mod:`.events`);
                                              writes through ``runner(fn, callback)``
    ``manual_edit.set_manual_values(session, ...)``, ``add_manual_column(session, ...)``,
    ``group_rows(data, rows, by)``            manual edits through a session's runner; grouping

Following live updates (:mod:`~amore_gui.application.live`)
    ``LiveUpdates``                           the policy: Kafka update messages or
                                              ``data_version`` polling, backstop, catch-up after a
                                              reconnect, status "reconnecting"; ``run()`` blocks
                                              in a thread of the front-end's; events
                                              ``source/updates/reload/comments/backend/ready``
                                              arrive in that thread; ``stop()``, ``poke()``,
                                              ``publish()`` from any thread

Commands run as processes (:mod:`~amore_gui.application.reprocess`)
    ``ReprocessJob``                          ``argv``, ``cwd``, ``feed(bytes)`` -> lines to show
                                              and progress, ``finish(code)``; ``TERMINATE_GRACE``
    ``CancelJob``                             ``argv``, ``summary(output, code)``
    ``slurm_available()``, ``compact_runs()``

The table and its cells (:mod:`~amore_gui.application.table_data`, :mod:`.dbread`,
:mod:`.query`, :mod:`.formatting`, :mod:`.export`, :mod:`.vocabulary`)
    ``TableData`` (columnar table), ``RowView`` (sort + filters), ``RunUpdate``/``CellValue``,
    filters (``NumberRange``, ``TextContains``, ``OnlyIncluded``, ``query.search_filter``),
    ``format_number``/``format_time``, ``export_table``/``tsv_text``/``markdown_table``,
    ``vocabulary_for(dir)`` (the facility's words)

The beamtime's logbook (:mod:`~amore_gui.application.logbook`)
    ``logbook_setup(dir) -> LogbookSetup``    stream, topics, limit, or why not (blocks);
                                              ``setup_help(dir)`` what to put where
    ``table_columns``, ``rows_by_run``, ``table_messages``  the rows' Markdown messages (no I/O)
    ``post_text(dir, topic, messages)``, ``post_figure(dir, png, topic, title)``  (block)

DAMNIT's directory (:mod:`~amore_gui.application.damnit`)
    ``damnit_dir(path) -> DamnitDir | None``  what it is, the import's destination (blocks
                                              briefly); ``damnit_dir_of(locate error)``
    ``read_table(path) -> DamnitTable``       DAMNIT's table read-only, as TableData (blocks)
    ``ImportJob(src, dest, update)``          ``import-damnit`` as a process: ``argv``, ``cwd``,
                                              ``feed(bytes)`` -> lines and progress, ``finish``

The backend's state (:mod:`~amore_gui.application.backend_status`)
    ``BackendIndicator`` (state, text, colour, detail), ``backend_status``, ``backend_action``,
    ``BackendLog``, ``setup_logging``

Also: :mod:`.eventlog` (``EventLogState``), :mod:`.slurmjobs` (``ACTIVE`` states),
:mod:`.context_check` (``CheckResult``; ``check_command`` for running the check as a process),
:mod:`.settings` (the user's GUI settings file), :mod:`.values`, :mod:`.process`
(``steady_memory()``: a front-end's process hands large freed blocks back at once).
"""
