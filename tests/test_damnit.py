"""A beamtime that runs DAMNIT moves to AMORE without losing anything: AMORE never changes a
database it did not create (every command, the GUI's open path, amore.api), and
``amore-proto import-damnit`` brings a directory made by DAMNIT 0.4.0's own commands across
whole (values, stored data, comments, user columns, context file, settings) and ``--update``
what DAMNIT computed since. DAMNIT runs from a venv of its own (``damnit_venv``)."""
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import PROPOSAL, amore_cmd, copy_damnit_tree, tree_state

pytestmark = pytest.mark.timeout(1200)   # the first test waits for DAMNIT's venv and runs

DAMNIT_SAYS = "holds a DAMNIT database (data format 4); AMORE does not change it"


@pytest.fixture
def tree(damnit_made, tmp_path, monkeypatch):
    """A private copy of the DAMNIT-made proposal tree, the data root pointing at it."""
    t = copy_damnit_tree(damnit_made, tmp_path / "tree")
    monkeypatch.setenv("EXTRA_DATA_DATA_ROOT", str(t["root"]))
    monkeypatch.setenv("AMORE_BROKER", "none")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return t


def cli(*args, check=None):
    # AMORE_GUI_NO_DIALOGS: the GUI may not ask, so it refuses DAMNIT's directory as every
    # command does (when it may, it shows the directory read-only and offers the import:
    # tests/test_gui_damnit.py)
    env = {**os.environ, "COLUMNS": "200", "QT_QPA_PLATFORM": "offscreen",
           "AMORE_GUI_NO_DIALOGS": "1"}
    r = subprocess.run(amore_cmd(*args), capture_output=True, text=True, timeout=300, env=env)
    if check is not None:
        assert r.returncode == check, f"exit {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def damnit_rows(d) -> list[tuple]:
    """DAMNIT's own run_variables rows (read through SQLite's read-only mode on a copy)."""
    con = sqlite3.connect(f"file:{d / 'runs.sqlite'}?mode=ro", uri=True)
    try:
        return con.execute("SELECT proposal, run, name, value, summary_type, attributes "
                           "FROM run_variables ORDER BY run, name").fetchall()
    finally:
        con.close()


# --- nothing AMORE does changes DAMNIT's directory ------------------------------------------

COMMANDS = [
    ("show", "{d}", "--where", "run > 1"),
    ("listen", "{d}", "--once"),
    ("reprocess", "1", "-d", "{d}"),
    ("set", "1", "good_run", "yes", "-d", "{d}"),
    ("column", "list", "-d", "{d}"),
    ("column", "add", "x", "--type", "number", "-d", "{d}"),
    ("history", "1", "good_run", "-d", "{d}"),
    ("init", "{d}", "--proposal", str(PROPOSAL)),
    ("proposal", "-d", "{d}"),
    ("backend", "status", "{d}"),
    ("backend", "start", "{d}"),
    ("logs", "1", "-d", "{d}"),
    ("events", "-d", "{d}"),
    ("check", "1", "-d", "{d}"),
    ("jobs", "-d", "{d}"),
    ("gui", "{d}"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_command_leaves_a_damnit_directory_as_it_was(tree, args):
    d = tree["damnit"]
    before = tree_state(d)
    r = cli(*[a.format(d=d) for a in args])
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert DAMNIT_SAYS in r.stderr, out
    assert f"amore-proto import-damnit {d} {tree['pdir'] / 'usr/Shared/amore-proto'}" in r.stderr
    assert "Traceback" not in out
    assert tree_state(d) == before


def test_show_reads_damnit_table_without_changing_it(tree):
    d = tree["damnit"]
    before = tree_state(d)
    r = cli("show", d, check=0)
    rows = [l for l in r.stdout.splitlines() if re.match(r"^│\s+\d+ │", l)]
    assert len(rows) == 2 and "hello" in r.stdout and "XGM energy" in r.stdout
    assert "DAMNIT's table, read without changing it" in r.stderr and DAMNIT_SAYS in r.stderr
    assert tree_state(d) == before


def test_python_entry_points_refuse_a_damnit_directory_and_leave_it_as_it_was(tree):
    import amore.api
    from amore_gui.application import dbread
    from backend.locate import ForeignDatabaseError, LocateError, resolve
    from backend.store.identify import NotAmoreDatabase
    from backend.store.init import init_context_dir
    from backend.store.writer import ForeignDatabase, RunDB
    d = tree["damnit"]
    before = tree_state(d)
    with pytest.raises(LocateError, match="DAMNIT database"):
        amore.api.open(d)
    with pytest.raises(ForeignDatabaseError, match="import-damnit"):
        resolve(d)                                  # the GUI's open path (and its Open dialog)
    with pytest.raises(NotAmoreDatabase, match="DAMNIT database"):
        dbread.ensure_schema(d)                     # the GUI's table load
    with pytest.raises(NotAmoreDatabase):
        dbread.connect(d)
    with pytest.raises(ForeignDatabase, match="DAMNIT database"):
        RunDB(d)
    with pytest.raises(ForeignDatabase):
        RunDB.create(d, PROPOSAL)
    with pytest.raises(ForeignDatabase, match="DAMNIT database"):
        init_context_dir(d, PROPOSAL)
    assert tree_state(d) == before


def test_a_proposal_with_damnit_opens_amore_beside_it(tree):
    """gui/amore.api.open of a proposal number: AMORE's directory is usr/Shared/amore-proto,
    never DAMNIT's usr/Shared/amore; without one the error names the import."""
    import amore.api
    from backend.locate import resolve
    before = tree_state(tree["damnit"])
    t = resolve(str(PROPOSAL))
    assert t.context_dir == tree["pdir"] / "usr/Shared/amore-proto" and not t.exists
    assert t.damnit_dir == tree["damnit"]
    with pytest.raises(FileNotFoundError, match=f"holds DAMNIT's.*import-damnit {tree['damnit']}"):
        amore.api.open(PROPOSAL)
    # init --proposal makes AMORE's directory there, and then the proposal opens it
    r = cli("init", "--proposal", str(PROPOSAL), check=0)
    assert "usr/Shared/amore-proto" in r.stdout
    assert amore.api.open(PROPOSAL).context_dir == tree["pdir"] / "usr/Shared/amore-proto"
    assert tree_state(tree["damnit"]) == before


def test_an_amore_directory_in_usr_shared_amore_keeps_working(tmp_path, data_root, proposal_dir):
    import amore.api
    from backend.store.init import init_context_dir
    old = proposal_dir / "usr/Shared/amore"
    init_context_dir(old, PROPOSAL)
    assert amore.api.open(PROPOSAL).context_dir == old
    assert "0 runs" in cli("show", old, check=0).stdout


def test_a_damnit_database_in_wal_mode_gets_no_new_files(tree):
    """An older AMORE switched DAMNIT databases to WAL mode: reading such a database at rest
    must not create -wal/-shm files (SQLite does even for mode=ro)."""
    import amore.api
    from backend.store.identify import DbKind, identify
    d = tree["damnit"]
    con = sqlite3.connect(d / "runs.sqlite")
    assert con.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    con.close()
    assert not (d / "runs.sqlite-wal").exists()
    before = tree_state(d)
    ident = identify(d)
    assert ident.kind is DbKind.DAMNIT and ident.wal and ident.data_format == 4
    for args in (("listen", d, "--once"), ("column", "list", "-d", d)):
        r = cli(*args)
        assert r.returncode != 0 and DAMNIT_SAYS in r.stderr
    assert "hello" in cli("show", d, check=0).stdout     # its table, read as it is
    with pytest.raises(Exception, match="DAMNIT"):
        amore.api.open(d)
    assert tree_state(d) == before
    # and the import reads it the same way
    assert cli("import-damnit", d, tree["pdir"] / "usr/Shared/amore-proto").returncode == 0
    assert tree_state(d) == before


@pytest.mark.parametrize("kind", ["newer", "other", "not-sqlite"])
def test_other_databases_are_named_and_left_alone(tmp_path, kind, data_root):
    from backend.store.init import init_context_dir
    from backend.store.writer import ForeignDatabase, RunDB
    d = tmp_path / "ctx"
    if kind == "newer":
        init_context_dir(d, PROPOSAL)
        con = sqlite3.connect(d / "runs.sqlite")
        con.execute("UPDATE alembic_version SET version_num = '9999'")
        con.commit()
        con.close()
        said = "written by a newer AMORE (schema revision 9999"
    elif kind == "other":
        d.mkdir()
        con = sqlite3.connect(d / "runs.sqlite")
        con.execute("CREATE TABLE samples (name TEXT)")
        con.commit()
        con.close()
        said = "is not an AMORE database (tables samples)"
    else:
        d.mkdir()
        (d / "runs.sqlite").write_text("not a database")
        said = "is not an AMORE database (not an SQLite database)"
    before = tree_state(d)
    with pytest.raises(ForeignDatabase, match=re.escape(said)):
        RunDB(d)
    for args in (("show", d), ("listen", d, "--once"), ("set", "1", "x", "1", "-d", d)):
        r = cli(*args)
        assert r.returncode == 1 and said in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert tree_state(d) == before


# --- import-damnit ---------------------------------------------------------------------------

def _imported(tree, tmp_path):
    src = tree["damnit"]
    before = tree_state(src)
    r = cli("import-damnit", src, check=0)      # DEST by convention: usr/Shared/amore-proto
    dest = tree["pdir"] / "usr/Shared/amore-proto"
    assert f"Imported {dest} from DAMNIT's {src}" in r.stdout
    assert tree_state(src) == before
    return src, dest, r.stdout


def test_import_brings_a_damnit_directory_across_whole(tree, tmp_path):
    import amore.api
    import xarray as xr
    from damnit import Damnit
    src, dest, out = _imported(tree, tmp_path)
    # DAMNIT's API (the real package) reads a copy, DAMNIT's database being changed by it
    ref = tmp_path / "damnit-api-copy"
    shutil.copytree(src, ref)
    dmn = Damnit(ref)
    db = amore.api.open(dest)

    # the summary
    assert "runs:          2 new (2 in DAMNIT)" in out
    assert "comments:      1 run comments, 2 time comments" in out
    assert "user columns:  4 new manual columns, 6 values" in out
    assert "[slurm] max_concurrent = 15" in out

    # every table value as AMORE shows it, against DAMNIT's own rows
    table = db.table()
    assert list(table["run"]) == [1, 2]
    users = {"good_run", "att", "sample", "ratio", "comment"}
    seen = set()
    for p, r, name, value, st, attrs in damnit_rows(ref):
        if name in users or name == "start_time":
            continue
        attrs = json.loads(attrs) if attrs else {}
        v = db[r, name]
        seen.add(name)
        if value is None:
            if attrs.get("error_cls") == "Skip":
                assert v.summary_type == "skipped" and v.error == "skipped: " + attrs["error"]
            else:
                assert v.summary_type == "error" and v.error == attrs["error"], name
        elif isinstance(value, bytes) and value.startswith(b"\x89PNG"):
            assert v.summary_type == "thumbnail" and v.summary() == value, name
        elif st == "trendline":
            spark = v.summary()
            y = dmn[r, name].summary()[1]
            assert v.summary_type == "sparkline" and len(spark) <= 100
            assert spark.min() >= y.min() - 1e-6 and spark.max() <= y.max() + 1e-6
        elif st == "complex":
            assert v.summary() == dmn[r, name].summary() == 1 + 2j
        elif isinstance(value, float):
            assert v.summary() == pytest.approx(value) and v.summary_type == "number"
        else:
            assert v.summary() == value, name
    assert seen == {"xgm", "number", "text", "image", "trend", "cplx", "parts", "broken",
                    "missing", "fig"}
    assert db[1, "xgm"].units == "μJ"           # DAMNIT's units, from the value's attributes

    # the stored data: the same arrays through amore.api as through DAMNIT's API
    for r in (1, 2):
        xr.testing.assert_identical(db[r, "xgm"].read(), dmn[r, "xgm"].read())
        xr.testing.assert_identical(db[r, "parts"].read(), dmn[r, "parts"].read())
        np.testing.assert_array_equal(db[r, "image"].read(), dmn[r, "image"].read())
        np.testing.assert_array_equal(db[r, "trend"].read(), dmn[r, "trend"].read())
        assert db[r, "number"].read() == dmn[r, "number"].read() == r
        assert db[r, "text"].read() == "hello"
        fig = db[r, "fig"].read()
        assert type(fig).__name__ == "Figure" and fig.to_dict() == dmn[r, "fig"].read().to_dict()
    # ... and the GUI's inspection window reads them the same way
    from amore_gui.application.values import read_run_value
    xr.testing.assert_identical(read_run_value(dest, PROPOSAL, 1, "xgm"), dmn[1, "xgm"].read())

    # comments, time comments with their times
    assert table.loc[table["run"] == 1, "comment"].item() == "first good run"
    c = db.comments()
    assert list(c["text"]) == ["beam is back", "changed sample"]
    assert [t.timestamp() for t in c["timestamp"]] == [1700000000.5, 1700003600.0]

    # titles, descriptions, tags, units
    v = db.variables().set_index("name")
    assert v.loc["xgm", "title"] == "XGM energy" and v.loc["xgm", "units"] == "μJ"
    assert sorted(v.loc["xgm", "tags"]) == ["beam", "xgm"]
    assert v.loc["number", "description"] == "The run's number"

    # user-editable variables: typed manual columns, their values, history from DAMNIT
    from backend.store.manual import ManualStore
    from backend.store.writer import RunDB
    rdb = RunDB(dest)
    m = ManualStore(rdb)
    cols = {c.name: c for c in m.columns()}
    assert {n: c.type for n, c in cols.items()} == {"good_run": "boolean", "att": "integer",
                                                   "sample": "string", "ratio": "number"}
    assert cols["att"].title == "Attenuator" and cols["att"].description == "foils in"
    assert table.loc[table["run"] == 1, "good_run"].item() == 1
    assert table.loc[table["run"] == 2, "good_run"].item() == 0
    assert table.loc[table["run"] == 2, "sample"].item() == "buffer"
    assert table.loc[table["run"] == 2, "ratio"].item() == pytest.approx(0.25)
    hist = m.history(1, "att")
    assert [(h["author"], h["via"]) for h in hist] == [("DAMNIT import", "import")]
    runs = {r["run"]: r for r in rdb.runs()}
    assert runs[1]["status"] == "done" and runs[1]["status_message"] == "imported from DAMNIT"
    con = sqlite3.connect(f"file:{ref / 'runs.sqlite'}?mode=ro", uri=True)
    assert runs[1]["start_time"] == pytest.approx(con.execute(
        "SELECT start_time FROM run_info WHERE run = 1").fetchone()[0])
    con.close()
    rdb.close()

    # context.py as it was; the settings that mean something in AMORE; zulip.cfg kept private
    assert (dest / "context.py").read_bytes() == (src / "context.py").read_bytes()
    toml = (dest / "amore.toml").read_text()
    assert f'context_python = "{tree_python(src)}"' in toml
    assert "max_concurrent = 15" in toml
    assert (dest / "zulip.cfg").read_text() == (src / "zulip.cfg").read_text()
    assert not stat.S_IMODE((dest / "zulip.cfg").stat().st_mode) & 0o007

    # the GUI's table shows thumbnails, sparklines, errors and the manual columns
    from amore_gui.application import dbread
    from amore_gui.application.table_data import K_ERROR, K_THUMBNAIL
    data = dbread.load_table(dest).data
    row = data.row_of[(PROPOSAL, 1)]
    assert data.kind[row, data.var_of("image")] == K_THUMBNAIL
    assert data.kind[row, data.var_of("broken")] == K_ERROR
    assert {c.key for c in data.columns if c.manual} == {"good_run", "att", "sample", "ratio"}


def tree_python(damnit_dir) -> str:
    con = sqlite3.connect(f"file:{damnit_dir / 'runs.sqlite'}?mode=ro", uri=True)
    try:
        return con.execute("SELECT value FROM metameta WHERE key = 'context_python'").fetchone()[0]
    finally:
        con.close()


def test_imported_directory_computes_a_new_run_with_the_imported_context_file(tree, tmp_path):
    import amore.api
    from backend.testing.mockdata import write_run
    src, dest, _ = _imported(tree, tmp_path)
    write_run(tree["pdir"], PROPOSAL, 4, ntrains=30)
    cli("reprocess", "4", "-d", dest, check=0)
    db = amore.api.open(dest)
    assert db[4, "number"].summary() == 4
    assert db[4, "text"].summary() == "hello"
    assert db[4, "xgm"].units in ("uJ", "μJ") and db[4, "xgm"].summary() > 0
    assert db[4, "broken"].error == "no good"
    assert db[4, "fig"].summary_type == "thumbnail"
    assert type(db[4, "fig"].read()).__name__ == "Figure"
    assert db[1, "number"].summary() == 1        # the imported runs are still there


def test_update_brings_what_damnit_computed_since_and_keeps_amore_edits(tree, damnit_made,
                                                                        tmp_path):
    import amore.api
    from backend.store.manual import ManualStore
    from backend.store.writer import RunDB
    from backend.vocab import StoredValue
    src, dest, _ = _imported(tree, tmp_path)
    # AMORE's side of the hand-over: an edit of a manual value, a value computed again
    db = RunDB(dest)
    ManualStore(db).set_values([2], "sample", "buffer (AMORE)", via="cli")
    db.write_values(PROPOSAL, 2, {"text": StoredValue("from AMORE", "string")})
    db.close()
    # DAMNIT went on meanwhile: its directory now is the 'later' one
    shutil.rmtree(src)
    later = copy_damnit_tree(damnit_made, tmp_path / "later", "later")
    shutil.copytree(later["damnit"], src)
    shutil.copytree(later["pdir"] / "raw" / "r0003", tree["pdir"] / "raw" / "r0003",
                    dirs_exist_ok=True)
    before = tree_state(src)
    r = cli("import-damnit", src, dest, "--update", check=0)
    assert "runs:          1 new (3 in DAMNIT)" in r.stdout, r.stdout
    assert tree_state(src) == before
    a = amore.api.open(dest)
    t = a.table()
    assert list(t["run"]) == [1, 2, 3]
    assert a[3, "number"].summary() == 3 and a[3, "xgm"].read().shape == (30,)
    assert a[3, "image"].summary_type == "thumbnail"
    assert t.loc[t["run"] == 3, "comment"].item() == "third run"
    assert list(a.comments()["text"]) == ["beam is back", "changed sample", "end of shift"]
    # DAMNIT's new values where AMORE had the imported one; AMORE's own values kept
    assert a[1, "text"].summary() == "again"
    assert a[2, "text"].summary() == "from AMORE"
    assert t.loc[t["run"] == 3, "sample"].item() == "crystal"
    assert t.loc[t["run"] == 1, "att"].item() == 5
    assert t.loc[t["run"] == 2, "sample"].item() == "buffer (AMORE)"
    assert "kept:          2 values AMORE has written since" in r.stdout
    # a second update changes nothing
    r = cli("import-damnit", src, dest, "--update", check=0)
    assert "runs:          0 new" in r.stdout and "values:        0 " in r.stdout
    assert list(amore.api.open(dest).comments()["text"]) == ["beam is back", "changed sample",
                                                              "end of shift"]


def test_import_refuses_what_it_cannot_do_and_changes_nothing(tree, tmp_path):
    src = tree["damnit"]
    before = tree_state(src)
    # an older data format, named
    old = tmp_path / "old"
    shutil.copytree(src, old)
    con = sqlite3.connect(old / "runs.sqlite")
    con.execute("UPDATE metameta SET value = 3 WHERE key = 'data_format_version'")
    con.commit()
    con.close()
    old_state = tree_state(old)
    r = cli("import-damnit", old, tmp_path / "dest")
    assert r.returncode == 1 and "data format 3" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "dest").exists() and tree_state(old) == old_state
    # not a DAMNIT directory
    r = cli("import-damnit", tmp_path, tmp_path / "dest")
    assert r.returncode == 1 and "No DAMNIT database" in r.stderr
    # DEST inside DAMNIT's directory
    r = cli("import-damnit", src, src / "amore")
    assert r.returncode == 1 and "inside DAMNIT's directory" in r.stderr
    # importing twice into the same DEST; --update of a DEST never imported
    cli("import-damnit", src, tmp_path / "dest", check=0)
    r = cli("import-damnit", src, tmp_path / "dest")
    assert r.returncode == 1 and "--update" in r.stderr
    r = cli("import-damnit", src, tmp_path / "fresh", "--update")
    assert r.returncode == 1 and "import first" in r.stderr
    assert tree_state(src) == before


def test_column_import_damnit_is_the_same_code_path(tree, tmp_path, data_root):
    """``column import-damnit`` brings the user columns into an existing AMORE directory,
    with the import's rules (AMORE edits kept)."""
    from backend.store.init import init_context_dir
    ctx = tmp_path / "ctx"
    init_context_dir(ctx, PROPOSAL)
    cli("column", "add", "sample", "--type", "string", "-d", ctx, check=0)
    from backend.store.manual import ManualStore
    from backend.store.writer import RunDB
    ManualStore(RunDB(ctx)).set_values([2], "sample", "mine", via="cli", create_runs=True)
    before = tree_state(tree["damnit"])
    r = cli("column", "import-damnit", tree["damnit"], "-d", ctx, check=0)
    assert "Imported 3 DAMNIT user-editable variable(s)" in r.stdout
    assert "1 value(s) edited in AMORE kept" in r.stdout
    assert "mine" in cli("show", ctx, check=0).stdout
    assert tree_state(tree["damnit"]) == before
