"""The GUI's session model without a display (no Qt): filters, column layout remembered between
sessions, live source and backend state, comment edits written through the storage layer - on a
database filled by the real backend from real mock runs."""
import subprocess
import sys

import numpy as np

from amore_gui.application import dbread
from amore_gui.application.backend_status import BackendIndicator
from amore_gui.application.session import Session
from amore_gui.application.settings import Settings
from amore_gui.application.table_data import (C_RUN, NumberRange, OnlyIncluded, RowView,
                                             TextContains)
from tests.gui_fixtures import GUI_PROPOSAL, GUI_RUNS


class Recorder:
    """Connects to every event of a session and records (name, args)."""

    def __init__(self, session):
        self.seen = []
        for name in session.events.names:
            getattr(session.events, name).connect(
                lambda *args, name=name: self.seen.append((name, args)))

    def names(self):
        return [n for n, _ in self.seen]

    def last(self, name):
        return [a for n, a in self.seen if n == name][-1]


def open_session(gui_ctx, **kw):
    s = Session(gui_ctx["ctx"], Settings(gui_ctx["settings"]), **kw)
    res = dbread.load_table(gui_ctx["ctx"])
    s.table_loaded(res.metadata, res.data, res.seconds)
    s.load_finished(res.seconds)
    return s, res.data


def test_session_model_has_no_qt(gui_ctx):
    code = ("import sys; from amore_gui.application.session import Session; "
            f"s = Session({str(gui_ctx['ctx'])!r}); s.set_search('x'); "
            "assert not any(m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6', 'pyqtgraph') for m in sys.modules), "
            "sorted(m for m in sys.modules if 'Qt' in m)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**__import__("os").environ, "AMORE_GUI_CONFIG": str(gui_ctx["settings"])})
    assert r.returncode == 0, r.stderr


def test_filters_are_events_the_view_applies(gui_ctx):
    s, d = open_session(gui_ctx)
    rec = Recorder(s)
    view = RowView(d)
    s.events.filters.connect(view.set_filters)       # what the Qt model does
    runs = lambda: [int(d.run[r]) for r in view.order]  # noqa: E731
    x = d.numeric(d.col_of("xgm_energy"))
    lo = float(np.median(x))
    f = NumberRange("xgm_energy", lo, None)
    s.add_filter(f)
    assert sorted(runs()) == sorted(int(d.run[r]) for r in range(d.nrows) if x[r] >= lo)
    assert len(runs()) < len(GUI_RUNS)
    s.set_search("  ")                                # blank search filters nothing more
    assert [type(g) for g in s.filters()] == [NumberRange]
    d.included[d.row_of[(GUI_PROPOSAL, 1)]] = False
    s.set_only_checked(True)
    assert isinstance(s.filters()[-1], OnlyIncluded) and 1 not in runs()
    s.set_only_checked(True)                          # no change, no event
    assert rec.names().count("filters") == 3
    s.remove_filter(f)
    assert len(runs()) == len(GUI_RUNS) - 1
    sample = d.obj[d.row_of[(GUI_PROPOSAL, 3)], d.var_of("sample")]
    s.set_search(sample[:6])
    assert isinstance(s.filters()[-2], TextContains) and 3 in runs()
    s.clear_filters()
    assert rec.last("filters") == ([],) and sorted(runs()) == sorted(GUI_RUNS)
    assert s.search_text == "" and not s.only_checked
    assert s.find_run(d, "3") == (GUI_PROPOSAL, 3)
    assert s.find_run(d, 99) is None and s.find_run(d, "abc") is None


def test_column_layout_is_remembered_per_directory(gui_ctx):
    s, d = open_session(gui_ctx)
    rec = Recorder(s)
    keys = [c.key for c in d.columns]
    order, hidden, widths = s.initial_layout(d)
    assert order == keys and hidden == {"#proposal"} and widths == {}   # one proposal
    s.set_column_hidden("sample", True)
    assert rec.names() == ["columns", "save_requested"]
    assert s.is_hidden(d.columns[d.col_of("sample")])
    s.set_tag("camera")
    cam, xgm = d.columns[d.col_of("cam_mean")], d.columns[d.col_of("xgm_energy")]
    assert not s.is_hidden(cam) and s.is_hidden(xgm) and not s.is_hidden(d.columns[d.col_of(C_RUN)])
    assert s.tags(d) == sorted({t for c in d.columns for t in c.tags}) and "camera" in s.tags(d)
    new_order = ["cam_peak"] + [k for k in keys if k != "cam_peak"]
    s.column_resized_by_user("cam_peak")
    d.included[d.row_of[(GUI_PROPOSAL, 2)]] = False
    s.remember(d, new_order, {"cam_peak": 123, "sample": 77}, "motor_start", False)
    s.set_tall_rows(True)
    s.set_logbook_visible(True)
    s.save()

    # a new session (GUI restarted) on the same settings file
    s2 = Session(gui_ctx["ctx"], Settings(gui_ctx["settings"]))
    res = dbread.load_table(gui_ctx["ctx"])
    d2 = res.data
    s2.table_loaded(res.metadata, d2, res.seconds)
    assert not d2.included[d2.row_of[(GUI_PROPOSAL, 2)]]          # unchecked run remembered
    assert d2.included[d2.row_of[(GUI_PROPOSAL, 3)]]
    order2, hidden2, widths2 = s2.initial_layout(d2)
    assert order2 == new_order and hidden2 == {"#proposal", "sample"}
    assert widths2 == {"cam_peak": 123}          # widths only of columns the user resized
    assert s2.sort == ("motor_start", False) and s2.tag == "camera"
    assert s2.tall_rows(default=False) and s2.logbook_visible
    assert s2.proposal == GUI_PROPOSAL and f"p{GUI_PROPOSAL}" in s2.title
    # a fresh directory: newest run first, compact rows unless there are thumbnails
    s3 = Session(gui_ctx["ctx"], Settings(gui_ctx["settings"].parent / "other.json"))
    assert s3.sort == (C_RUN, True) and s3.tall_rows(default=True)
    s3.remember(d2, order2, {}, C_RUN, True)          # nothing remembered before loading
    assert "columns" not in s3.dir_settings


def test_counts_text_follows_loading_and_statuses(gui_ctx):
    s = Session(gui_ctx["ctx"], Settings(gui_ctx["settings"]))
    res = dbread.load_table(gui_ctx["ctx"])
    d = res.data
    s.table_loaded(res.metadata, d, res.seconds)
    assert s.counts_text(d, d.nrows).endswith("loading older runs…")
    s.load_finished(0.1)
    n_fail = int(np.count_nonzero(d.status[:d.nrows] == 3))
    d.status[d.row_of[(GUI_PROPOSAL, 1)]] = 1
    txt = s.counts_text(d, 2)
    assert txt.startswith(f"{len(GUI_RUNS)} runs, 2 shown · {d.nvars} variables · 1 processing")
    assert ("failed" in txt) == bool(n_fail)


def test_live_source_and_backend_state(gui_ctx):
    s = Session(gui_ctx["ctx"], Settings(gui_ctx["settings"]), offer_backend=True)
    rec = Recorder(s)
    s.set_source("db", "Live: watching runs.sqlite (no broker configured)")
    assert s.update_mode == "db" and "twice a second" in s.source_tooltip
    assert not s.live_ready
    s.set_live_ready()
    assert s.live_ready and "live_ready" in rec.names()
    assert s.backend_actions() == {"start": False, "stop": False, "restart": False}
    stopped = BackendIndicator("stopped", "Backend: stopped")
    s.set_backend_state(stopped)
    assert rec.last("backend") == (stopped, True)
    text, force = rec.last("offer_backend")
    assert "No AMORE backend is running" in text and force is False
    assert s.backend_actions() == {"start": True, "stop": False, "restart": False}
    s.set_backend_busy("start")
    assert s.backend_actions() == {"start": False, "stop": False, "restart": False}
    assert s.busy_text("start") == "Starting the backend…"
    running = BackendIndicator("running_here", "Backend: running", host="here")
    s.set_backend_state(running)
    assert rec.last("backend") == (running, False)
    assert rec.names().count("offer_backend") == 1         # offered once only
    assert s.backend_actions() == {"start": False, "stop": True, "restart": True}
    text, force = s.offer_text(BackendIndicator("stale", "Backend: stale", host="gone.example"))
    assert "gone.example" in text and force is True


def test_comment_edits_go_through_the_storage_layer(gui_ctx):
    from backend.store.writer import RunDB
    published = []
    s, d = open_session(gui_ctx)
    rec = Recorder(s)
    s.edit_comment(GUI_PROPOSAL, 3, "sample moved")       # no live source yet: not announced
    assert rec.last("comment_saved") == (GUI_PROPOSAL, 3) and published == []
    s.publisher = lambda kind, data: published.append((kind, data)) or True
    s.edit_comment(GUI_PROPOSAL, 4, "beam lost")
    db = RunDB(gui_ctx["ctx"])
    try:
        assert db.get_run(GUI_PROPOSAL, 3)["comment"] == "sample moved"
        assert db.get_run(GUI_PROPOSAL, 4)["comment"] == "beam lost"
    finally:
        db.close()
    assert published == [("comment_changed", {"proposal": GUI_PROPOSAL, "run": 4})]
    s.add_logbook_comment("shift change", author="ana")
    assert "logbook_changed" in rec.names()
    book = s.read_logbook()
    assert [(c["text"], c["author"]) for c in book] == [("shift change", "ana")]
    assert published[-1][0] == "comment_changed" and "id" in published[-1][1]
    # a write that fails is reported, nothing raised into the GUI
    broken = Session(gui_ctx["ctx"].parent / "no-such-dir", Settings(gui_ctx["settings"]))
    rec2 = Recorder(broken)
    broken.edit_comment(GUI_PROPOSAL, 3, "lost?")
    msg, error = rec2.last("message")
    assert error and "not saved" in msg and "No AMORE database" in msg
    assert "comment_saved" not in rec2.names()


def test_session_uses_the_runner_it_is_given(gui_ctx):
    """The GUI passes its thread pool: the write runs there, the callback when it says."""
    queued = []
    s, _ = open_session(gui_ctx, runner=lambda fn, cb: queued.append((fn, cb)))
    rec = Recorder(s)
    s.edit_comment(GUI_PROPOSAL, 2, "later")
    assert len(queued) == 1 and "comment_saved" not in rec.names()   # nothing written yet
    fn, cb = queued[0]
    cb(fn(), None)
    assert rec.last("comment_saved") == (GUI_PROPOSAL, 2)
