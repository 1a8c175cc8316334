"""Posting to the beamtime's logbook from a front-end, without Qt: selected rows as a Markdown
table (with their run numbers, split under the message size limit) and a picture
(:mod:`backend.logbook` does the posting: the facility's logbook proxy from ``zulip.cfg``, or a
Zulip server). Also used by ``amore-proto post``.

Every call here talks to a server: call it off the GUI thread.
"""
from __future__ import annotations

import os
from typing import Iterable

from amore_gui.application.export import markdown_table
from amore_gui.application.table_data import C_RUN, TableData
from backend.logbook import LogbookError, Posted, logbook_for, post_messages, \
    split_markdown_table  # noqa: F401 - LogbookError for callers

__all__ = ["LogbookError", "Posted", "logbook_choices", "default_topic", "table_messages",
           "post_table", "post_figure"]


def _limit(context_dir) -> int:
    from backend.config import load_config
    return int(load_config(context_dir)["logbook"]["message_limit"])


def default_topic(context_dir: str | os.PathLike, book) -> str:
    """The topic to post to when none is chosen: the set-up's first (``zulip.cfg`` topics,
    ``[logbook] topics``), else ``[logbook] topic``."""
    from backend.config import load_config
    return book.topics[0] if book.topics else str(load_config(context_dir)["logbook"]["topic"])


def logbook_choices(context_dir: str | os.PathLike) -> dict:
    """What a "post to logbook" dialog offers: ``stream`` (asks the proxy, so it also tells
    whether posting works), ``topics`` (the set-up's list) and ``topic`` (the default).
    Raises :class:`LogbookError` when no logbook is set up or it cannot be reached."""
    book = logbook_for(context_dir)
    return {"stream": book.stream(), "topics": list(book.topics),
            "topic": default_topic(context_dir, book)}


def table_messages(data: TableData, rows: Iterable[int], cols: Iterable[int], title: str = "",
                   limit: int = 10000) -> list[str]:
    """The Markdown messages for table rows ``rows`` and columns ``cols`` (the run number column
    first, added if missing), each at most ``limit`` characters, split between rows."""
    cols = list(cols)
    run_col = data.col_of(C_RUN)
    if run_col not in cols:
        cols = [run_col, *cols]
    return split_markdown_table(markdown_table(data, rows, cols), limit, title)


def post_table(context_dir: str | os.PathLike, data: TableData, rows: Iterable[int],
               cols: Iterable[int], topic: str, title: str = "", book=None) -> Posted:
    """Post rows of the table (see :func:`table_messages`) to the logbook of ``context_dir``
    (``book``: one :func:`backend.logbook.logbook_for` gave, if at hand). Raises
    :class:`LogbookError` (nothing or only the first messages posted) on failure."""
    book = book or logbook_for(context_dir)
    return post_messages(book, topic, table_messages(data, rows, cols, title,
                                                     _limit(context_dir)))


def post_figure(context_dir: str | os.PathLike, png: bytes, topic: str, title: str = "",
                name: str = "figure.png", book=None) -> Posted:
    """Post a picture (PNG bytes: an inspection window's figure,
    :func:`amore_gui.application.figures.variable_png`) with ``title`` as its text."""
    return post_messages(book or logbook_for(context_dir), topic, [title], png, name)
