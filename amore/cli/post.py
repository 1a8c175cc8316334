"""``amore-proto post``: rows of the run table (a Markdown table with run numbers) or a picture
to the beamtime's logbook (:mod:`amore_gui.application.logbook`; the facility's logbook proxy
from ``zulip.cfg`` as DAMNIT has it, or a Zulip server from ``[logbook]``)."""
from __future__ import annotations

import sys

from amore.cli.common import context_dir, parse_runs


def cmd_post(a) -> int:
    from amore_gui.application import dbread
    from amore_gui.application.figures import variable_png
    from amore_gui.application.logbook import LogbookError, default_topic, post_figure, \
        post_table
    from backend.logbook import logbook_for
    from amore_gui.application.table_data import C_RUN
    d = context_dir(a.dir)
    try:
        book = logbook_for(d)
        topic = a.topic or default_topic(d, book)
        if a.image or a.figure:
            if a.image:
                with open(a.image, "rb") as f:
                    png, name = f.read(), a.image.rsplit("/", 1)[-1]
            else:
                run, var = int(a.figure[0]), a.figure[1]
                data = dbread.load_table(d).data
                p = next(p for (p, r) in data.row_of if r == run)
                png, name = variable_png(d, p, run, var, title=a.title), f"r{run}_{var}.png"
            posted = post_figure(d, png, topic, a.title or "", name, book=book)
        else:
            dbread.ensure_schema(d)
            data = dbread.load_table(d).data
            known = sorted(int(data.run[i]) for i in range(data.nrows))
            runs = parse_runs(a.runs.replace(",", " ").split(), known) if a.runs else known
            rows = [data.row_of[k] for k in sorted(data.row_of, key=lambda k: k[1])
                    if k[1] in set(runs)]
            if not rows:
                print("amore-proto post: no such runs in the table", file=sys.stderr)
                return 2
            if a.columns:
                cols = []
                for name in a.columns.split(","):
                    c = data.col_of(name.strip())
                    if c is None:
                        print(f"amore-proto post: no column {name.strip()!r}", file=sys.stderr)
                        return 2
                    cols.append(c)
            else:
                cols = [c for c in range(len(data.columns))
                        if data.columns[c].variable or data.columns[c].key == C_RUN]
            posted = post_table(d, data, rows, cols, topic, a.title or "", book=book)
    except (LogbookError, ValueError, KeyError, OSError, StopIteration) as e:
        print(f"amore-proto post: {e if not isinstance(e, StopIteration) else 'no such run'}",
              file=sys.stderr)
        return 1
    print(f"Posted {posted.messages} message(s) to {posted.stream} > {posted.topic}")
    return 0


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    s = sub.add_parser("post", help="post table rows or a figure to the beamtime's logbook",
                       description="Post rows of the run table (a Markdown table with their "
                                   "run numbers, split under the message size limit) or a "
                                   "picture to the logbook: the facility's logbook proxy "
                                   "(zulip.cfg next to context.py, as DAMNIT has it) or a Zulip "
                                   "server ([logbook] zuliprc, stream in amore.toml).")
    s.add_argument("-d", "--dir")
    s.add_argument("--topic", help="topic (default: the set-up's first, or [logbook] topic)")
    s.add_argument("--title", help="a heading above the table / the picture's text")
    s.add_argument("--runs", help="runs: 5, 3-7, 3,5,8 or all (default: all)")
    s.add_argument("--columns", help="comma-separated variable names (default: all)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--figure", nargs=2, metavar=("RUN", "NAME"),
                   help="post a picture of variable NAME of run RUN instead of a table")
    g.add_argument("--image", metavar="PNG", help="post this PNG file instead of a table")
    s.set_defaults(func=cmd_post)
