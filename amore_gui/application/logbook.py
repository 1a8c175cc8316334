"""Posting to the beamtime's logbook from a front-end, without Qt: selected rows as a Markdown
table (with their run numbers, split under the message size limit) and a picture
(:mod:`backend.logbook` does the posting: the facility's logbook proxy from ``zulip.cfg``, or a
Zulip server). Also used by ``amore-proto post``.

A front-end's "post to the logbook" dialog: :func:`logbook_setup` (stream, topics, default
topic, message limit; or why posting is not possible and, when nothing is set up,
:func:`setup_help`), then for rows :func:`table_columns`, :func:`rows_by_run` and
:func:`table_messages` (the preview: formatting only, any thread) and :func:`post_text` to post
exactly those messages; for a picture :func:`post_figure`.

Calls that talk to the logbook (:func:`logbook_setup`, :func:`logbook_choices`, ``post_*``)
block: call them off the GUI thread. Keys are never part of what they return or raise.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from amore_gui.application.export import markdown_table
from amore_gui.application.table_data import (C_PROPOSAL, C_RUN, C_STATUS, K_MISSING,
                                              K_SPARKLINE, K_THUMBNAIL, NSTATIC, TableData)
from backend.logbook import MESSAGE_LIMIT, PROXY_CONFIG, LogbookError, Posted, logbook_for, \
    post_messages, split_markdown_table

__all__ = ["LogbookError", "Posted", "LogbookSetup", "logbook_choices", "logbook_setup",
           "setup_help", "message_limit", "default_topic", "table_columns", "rows_by_run",
           "table_messages",
           "post_table", "post_text", "post_figure"]


def message_limit(context_dir: str | os.PathLike) -> int:
    """The longest message to post (characters): ``[logbook] message_limit`` (Zulip's 10000).
    Reads the configuration."""
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


@dataclass
class LogbookSetup:
    """What a "post to the logbook" dialog shows before anything is posted.

    ``stream`` (the beamtime's stream, as the logbook answered), ``topics`` (the set-up's list),
    ``topic`` (the default), ``limit`` (longest message, characters); or ``error``: why posting
    is not possible (no logbook set up, unreachable, refused; never with a key), and ``help``:
    what to put where, when nothing is set up at all."""

    stream: str = ""
    topics: list[str] = field(default_factory=list)
    topic: str = ""
    limit: int = MESSAGE_LIMIT
    error: str | None = None
    help: str | None = None

    @property
    def ok(self) -> bool:
        """Posting can go ahead."""
        return self.error is None


def setup_help(context_dir: str | os.PathLike) -> str:
    """What to put where so that posting works from ``context_dir`` (plain text, several
    lines): the facility's ``zulip.cfg`` next to ``context.py`` (as DAMNIT has it), or a Zulip
    server named in ``amore.toml``."""
    d = Path(context_dir)
    return (f"At European XFEL, put the facility's logbook set-up (as DAMNIT has it) in\n"
            f"    {d / PROXY_CONFIG}\n"
            f"  [ZULIP]\n"
            f"  key = <the logbook proxy's API key>\n"
            f"  url = <the logbook proxy's address>\n"
            f'  topics = ["shift 1", "alignment"]\n'
            f"(a directory imported from DAMNIT has DAMNIT's already).\n"
            f"Elsewhere, name a Zulip server in {d / 'amore.toml'}:\n"
            f"  [logbook]\n"
            f'  zuliprc = "~/.zuliprc"    # a bot\'s [api] email, key, site; chmod 600\n'
            f'  stream = "<the beamtime\'s stream>"\n'
            f'  topic = "<the default topic>"')


def _set_up(context_dir) -> bool:
    """Is any logbook set up for ``context_dir`` (whether or not it works)?"""
    from backend.config import load_config
    if (Path(context_dir) / PROXY_CONFIG).is_file():
        return True
    return bool(load_config(context_dir)["logbook"].get("zuliprc"))


def logbook_setup(context_dir: str | os.PathLike) -> LogbookSetup:
    """:func:`logbook_choices` and :func:`message_limit` for a dialog, never raising for what
    the set-up or the logbook says: a :class:`LogbookSetup` with ``error`` (and ``help`` when
    nothing is set up) instead. Blocks: asks the logbook (proxy: ``GET {url}/me``)."""
    from backend.config import ConfigError
    try:
        limit = message_limit(context_dir)
        choices = logbook_choices(context_dir)
    except (LogbookError, ConfigError) as e:
        try:
            helpful = None if _set_up(context_dir) else setup_help(context_dir)
        except ConfigError:
            helpful = None
        return LogbookSetup(error=str(e), help=helpful)
    return LogbookSetup(choices["stream"], choices["topics"], choices["topic"], limit)


def table_columns(data: TableData, rows: Iterable[int], cols: Iterable[int]) -> list[int]:
    """The table columns worth posting of ``cols`` (e.g. the visible ones, in their order) for
    data rows ``rows``: the run number first, then the others except Status and Proposal and
    except columns that hold only pictures there (thumbnails, sparklines: a Markdown table
    cannot show them; post a picture instead)."""
    rows = [int(r) for r in rows]
    run = data.col_of(C_RUN)
    pictures = {K_THUMBNAIL, K_SPARKLINE}
    out = [run]
    for c in cols:
        if c == run or data.columns[c].key in (C_STATUS, C_PROPOSAL):
            continue
        if c >= NSTATIC and rows:
            kinds = set(data.kind[rows, c - NSTATIC].tolist())
            if kinds & pictures and kinds <= pictures | {K_MISSING}:
                continue
        out.append(c)
    return out


def rows_by_run(data: TableData, rows: Iterable[int]) -> list[int]:
    """Data rows ``rows`` in run order (oldest first, as a logbook reads)."""
    return sorted((int(r) for r in rows), key=lambda r: (str(data.proposal[r]), int(data.run[r])))


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
    return post_text(context_dir, topic, table_messages(data, rows, cols, title,
                                                        message_limit(context_dir)), book=book)


def post_text(context_dir: str | os.PathLike, topic: str, messages: list[str],
              book=None) -> Posted:
    """Post Markdown ``messages`` (e.g. :func:`table_messages` as a dialog previewed them), in
    order, to the logbook of ``context_dir``. Raises :class:`LogbookError` (nothing or only the
    first messages posted) on failure. Blocks."""
    return post_messages(book or logbook_for(context_dir), topic, list(messages))


def post_figure(context_dir: str | os.PathLike, png: bytes, topic: str, title: str = "",
                name: str = "figure.png", book=None) -> Posted:
    """Post a picture (PNG bytes: an inspection window's figure,
    :func:`amore_gui.application.figures.variable_png`) with ``title`` as its text."""
    return post_messages(book or logbook_for(context_dir), topic, [title], png, name)
