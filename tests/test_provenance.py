"""Every stored value knows how it was made, and ``amore-proto reprocess all`` recomputes only
what changed (issue 22).

What a scientist would notice: after changing one function (or one module-level constant) of
the context file, exactly its values and those of the variables depending on them are marked
stale (``amore.api``, ``amore-proto show``) and ``reprocess all`` computes exactly those -- the
functions' calls are counted -- and nothing else; the same for an edited manual value (that run
only) and for new proc data (the proc variables of that run only); ``--force`` computes
everything, and with nothing stale the command says so without starting a worker (the context
file's module-level code is not even run). ``run-info --var`` shows where, when, how long, with
which code, inputs and data a value was made; it survives a backend restart; nothing is pickled.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import pytest

from backend.store.writer import RunDB
from tests.conftest import PROPOSAL, amore_cmd

CONTEXT = '''
from pathlib import Path
from amore.context import Variable

HERE = Path(__file__).parent
with open(HERE / "loads.txt", "a") as f:     # the module-level code ran (a worker loaded it)
    f.write("load\\n")

THRESHOLD = 10
SCALE = 2.0


def called(name, run):
    with open(HERE / "calls.txt", "a") as f:
        f.write(f"{name} {run}\\n")


def above(x):
    return x > THRESHOLD


@Variable(title="Trains")
def n_trains(run, r: "meta#run_number"):
    called("n_trains", r)
    return len(run.train_ids)


@Variable(title="Doubled", units="counts")
def doubled(run, n: "var#n_trains", r: "meta#run_number"):
    called("doubled", r)
    return n * SCALE


@Variable(title="Many")
def many(run, n: "var#doubled", r: "meta#run_number"):
    called("many", r)
    return above(n)


@Variable(title="Motor")
def motor(run, r: "meta#run_number"):
    called("motor", r)
    return 1.5
'''


def cli(*args, check=0, timeout=180):
    r = subprocess.run(amore_cmd(*args), capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "COLUMNS": "200"})
    if check is not None:
        assert r.returncode == check, f"exit {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def calls(ctx: Path) -> list[tuple[str, int]]:
    """The functions called since the last call of this helper (and forget them)."""
    f = ctx / "calls.txt"
    if not f.exists():
        return []
    out = sorted((n, int(r)) for n, r in (line.split() for line in f.read_text().split("\n")
                                         if line))
    f.unlink()
    return out


def stale(ctx: Path) -> set[tuple[int, str]]:
    import amore.api
    df = amore.api.open(ctx).stale()
    return {(int(r), n) for r, n in zip(df["run"], df["name"])}


def edit(ctx: Path, old: str, new: str) -> None:
    f = ctx / "context.py"
    text = f.read_text()
    assert old in text, old
    f.write_text(text.replace(old, new))


@pytest.fixture
def two_runs(make_context_dir, write_run):
    ctx = make_context_dir(CONTEXT)
    for r in (1, 2):
        write_run(r, ntrains=20)
    cli("reprocess", "1", "2", "-d", ctx)
    assert calls(ctx) == sorted((n, r) for n in ("n_trains", "doubled", "many", "motor")
                                for r in (1, 2))
    assert stale(ctx) == set()
    return ctx


def test_changing_one_function_marks_exactly_its_values_and_its_dependents(two_runs):
    ctx = two_runs
    # not a change of what is stored: title, docstring, comments, blank lines
    edit(ctx, 'title="Doubled"', 'title="Twice"')
    edit(ctx, "def above(x):\n", "# a comment\n\n\ndef above(x):\n    \"\"\"Doc.\"\"\"\n")
    out = cli("reprocess", "all", "-d", ctx)
    assert "Nothing to reprocess" in out.stdout and calls(ctx) == []
    assert stale(ctx) == set()
    # the function of doubled: doubled and what takes it (many) are stale, in both runs
    edit(ctx, "return n * SCALE", "return n * SCALE + 1")
    out = cli("reprocess", "all", "-d", ctx, "--dry-run")
    assert "Stale: 2 run(s), 4 value(s) to compute" in out.stdout, out.stdout
    assert stale(ctx) == {(r, n) for r in (1, 2) for n in ("doubled", "many")}
    import amore.api
    p = amore.api.open(ctx)[1, "doubled"].provenance()
    assert p["stale"] and p["reasons"] == ["function doubled changed in context.py"]
    assert amore.api.open(ctx)[1, "many"].provenance()["reasons"] == [
        "function doubled changed in context.py (through input doubled)"]
    assert calls(ctx) == []                        # --dry-run computes nothing
    before = RunDB(ctx).get_values(PROPOSAL, 1)
    cli("reprocess", "all", "-d", ctx)
    # exactly the stale values were computed: n_trains was read back, not called
    assert calls(ctx) == [("doubled", 1), ("doubled", 2), ("many", 1), ("many", 2)]
    after = RunDB(ctx).get_values(PROPOSAL, 1)
    assert after["doubled"].value == 41 and before["doubled"].value == 40
    assert stale(ctx) == set()
    # a module-level constant marks only what reads it (many, through the helper above)
    edit(ctx, "THRESHOLD = 10", "THRESHOLD = 100")
    out = cli("reprocess", "all", "-d", ctx)
    assert "Stale: 2 run(s), 2 value(s) to compute" in out.stdout, out.stdout
    assert calls(ctx) == [("many", 1), ("many", 2)]
    assert RunDB(ctx).get_values(PROPOSAL, 2)["many"].value == 0
    # --force computes everything, as before
    cli("reprocess", "all", "--force", "-d", ctx)
    assert calls(ctx) == sorted((n, r) for n in ("n_trains", "doubled", "many", "motor")
                                for r in (1, 2))


def test_nothing_stale_starts_no_worker(two_runs):
    ctx = two_runs
    loads = (ctx / "loads.txt").read_text().count("load")
    out = cli("reprocess", "all", "-d", ctx)
    assert out.stdout.startswith("Nothing to reprocess: every value of the 2 run(s) is up to "
                                 "date"), out.stdout
    assert (ctx / "loads.txt").read_text().count("load") == loads   # context file not loaded
    assert calls(ctx) == []


def test_reprocess_all_with_a_backend_running_computes_what_is_stale_in_its_workers(
        make_context_dir, write_run, backend):
    ctx = make_context_dir(CONTEXT)
    for r in (1, 2):
        write_run(r, ntrains=20)
    cli("reprocess", "1", "2", "-d", ctx)
    b = backend(ctx)
    workers = {p.pid for p in b.workers()}
    calls(ctx)
    # the change is made and 'reprocess all' run at once: the backend loads the file first
    edit(ctx, "return n * SCALE", "return n * SCALE + 1")
    out = cli("reprocess", "all", "-d", ctx)
    assert "Stale: 2 run(s), 4 value(s) to compute" in out.stdout, out.stdout
    assert f"in the running backend, PID {b.proc.pid}" in out.stdout, out.stdout
    assert calls(ctx) == [("doubled", 1), ("doubled", 2), ("many", 1), ("many", 2)]
    assert RunDB(ctx).get_values(PROPOSAL, 2)["doubled"].value == 41
    assert stale(ctx) == set()
    assert {p.pid for p in b.workers()} == workers      # its warm workers did it
    assert "Reprocess of what is stale requested by PID" in b.log.read_text()
    out = cli("reprocess", "all", "-d", ctx)
    assert out.stdout.startswith("Nothing to reprocess: every value of the 2 run(s) is up to "
                                 "date"), out.stdout
    assert calls(ctx) == []
    # --force is the command's own work, as before
    out = cli("reprocess", "all", "--force", "-d", ctx)
    assert "running backend" not in out.stdout and len(calls(ctx)) == 8
    assert b.stop() == 0
    # a backend whose workers take no such work from new runs: the command computes it
    with open(ctx / "amore.toml", "a") as f:
        f.write("\n[processing]\nhandover_seconds = 0\n")
    b = backend(ctx)
    edit(ctx, "THRESHOLD = 10", "THRESHOLD = 100")
    out = cli("reprocess", "all", "-d", ctx)
    assert "Stale: 2 run(s), 2 value(s) to compute" in out.stdout, out.stdout
    assert "running backend" not in out.stdout, out.stdout
    assert calls(ctx) == [("many", 1), ("many", 2)]
    assert "left to the command: 2 run(s)" in b.log.read_text()
    assert stale(ctx) == set()


def test_editing_a_manual_value_marks_its_readers_in_that_run_only(make_context_dir, write_run):
    code = CONTEXT + textwrap.dedent('''
        @Variable(title="At distance")
        def at_distance(run, d: "var#distance", r: "meta#run_number"):
            called("at_distance", r)
            return d * 2
    ''')
    ctx = make_context_dir(code)
    for r in (1, 2):
        write_run(r, ntrains=20)
    cli("column", "add", "distance", "--type", "number", "--units", "mm", "-d", ctx)
    cli("reprocess", "1", "2", "-d", ctx)          # the runs are in the table
    cli("set", "1-2", "distance", "5", "-d", ctx)
    cli("reprocess", "1", "2", "-d", ctx)
    calls(ctx)
    assert stale(ctx) == set()
    cli("set", "1", "distance", "7", "-d", ctx)
    assert stale(ctx) == {(1, "at_distance")}
    import amore.api
    assert amore.api.open(ctx)[1, "at_distance"].provenance()["reasons"] == [
        "manual value distance edited (5 -> 7)"]
    cli("reprocess", "all", "-d", ctx)
    assert calls(ctx) == [("at_distance", 1)]
    assert RunDB(ctx).get_values(PROPOSAL, 1)["at_distance"].value == 14
    assert stale(ctx) == set()


def test_new_proc_data_marks_the_proc_variables_of_that_run(make_context_dir, write_run,
                                                             proposal_dir):
    code = CONTEXT + textwrap.dedent('''
        @Variable(title="Corrected files", data="proc")
        def corrected(run, r: "meta#run_number"):
            called("corrected", r)
            return len([f for f in run.files if "/proc/" in f.filename])
    ''')
    ctx = make_context_dir(code)
    for r in (1, 2):
        write_run(r, ntrains=20, agipd_modules=1, proc=True)
    cli("reprocess", "1", "2", "-d", ctx)
    calls(ctx)
    assert RunDB(ctx).get_values(PROPOSAL, 1)["corrected"].value == 1
    # the calibration writes run 1's proc data again
    for f in (proposal_dir / "proc" / "r0001").glob("*.h5"):
        st = f.stat()
        os.utime(f, (st.st_atime, st.st_mtime + 60))
    out = cli("reprocess", "all", "-d", ctx, "--dry-run")   # looks at the files again
    assert "run 1: corrected" in out.stdout and "run 2" not in out.stdout, out.stdout
    assert stale(ctx) == {(1, "corrected")}
    import amore.api
    assert amore.api.open(ctx)[1, "corrected"].provenance()["reasons"] == [
        "proc data arrived or changed after this value was computed"]
    cli("reprocess", "all", "-d", ctx)
    assert calls(ctx) == [("corrected", 1)]
    assert stale(ctx) == set()


def test_run_info_shows_the_provenance_and_it_survives_a_backend_restart(make_context_dir,
                                                                         write_run):
    ctx = make_context_dir(CONTEXT)
    write_run(1, ntrains=20)
    assert cli("listen", "--once", ctx).returncode == 0
    info = json.loads(cli("run-info", "1", "--var", "doubled", "--json", "-d", ctx).stdout)
    assert info["origin"] == "amore" and not info["stale"] and info["reasons"] == []
    ev = info["evaluation"]
    assert ev["worker"].startswith("local worker, PID ") and ev["host"] == os.uname().nodename
    assert ev["amore_version"] and ev["python"].count(".") == 2
    assert ev["context"] == __import__("hashlib").sha256(
        (ctx / "context.py").read_bytes()).hexdigest()
    assert ev["data"]["raw"]["files"] >= 1 and ev["data"]["raw"]["bytes"] > 0
    assert ev["seconds"] > 0 and ev["started_at"] <= info["stored_at"]
    parts = info["code"]["parts"]
    assert info["code"]["digest"] == info["code"]["current"]
    assert set(parts["names"]) == {"SCALE", "called", "HERE"} and set(parts["inputs"]) == {"n_trains"}
    text = cli("run-info", "1", "--var", "doubled", "-d", ctx).stdout
    assert "Up to date" in text and "local worker, PID" in text and "reads SCALE" in text
    # a restart, which loads the context file again (unchanged): the same provenance
    from backend.service.listener import Listener
    lst = Listener(ctx)
    try:
        lst.pool.start()
        lst.reload.check(wait=True)
    finally:
        lst.shutdown(grace=0.0)
    again = json.loads(cli("run-info", "1", "--var", "doubled", "--json", "-d", ctx).stdout)
    assert again == info
    edit(ctx, "SCALE = 2.0", "SCALE = 3.0")
    cli("reprocess", "all", "--dry-run", "-d", ctx)        # loads it: records the new code
    text = cli("run-info", "1", "--var", "doubled", "-d", ctx).stdout
    assert "STALE: SCALE changed in context.py" in text
    out = cli("show", ctx).stdout
    assert "2 stale value(s) marked *" in out           # doubled and many of run 1


def test_the_backend_recomputes_what_changed_when_asked_to(make_context_dir, write_run):
    ctx = make_context_dir(CONTEXT, config="[processing]\nrecompute_on_change = true\n")
    write_run(1, ntrains=20)
    assert cli("listen", "--once", ctx).returncode == 0
    calls(ctx)
    edit(ctx, "SCALE = 2.0", "SCALE = 3.0")
    from backend.service.listener import Listener
    lst = Listener(ctx)
    try:
        lst.pool.start()
        lst.reload.check(wait=True)          # as the backend does when the file changed
        lst.executor.shutdown(wait=True)     # the recomputation it queued
    finally:
        lst.shutdown(grace=0.0)
    assert calls(ctx) == [("doubled", 1), ("many", 1)]
    assert RunDB(ctx).get_values(PROPOSAL, 1)["doubled"].value == 60
    assert stale(ctx) == set()


def test_provenance_is_json_and_numbers_nothing_pickled(two_runs):
    ctx = two_runs
    con = sqlite3.connect(ctx / "runs.sqlite")
    try:
        for table, cols in (("code_versions", ("parts",)), ("evaluations", ("details",)),
                            ("run_data", ("locations",)), ("current_code", ("manual", "deps"))):
            rows = con.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
            assert rows, table
            for row in rows:
                for v in row:
                    assert isinstance(v, str) and json.loads(v) is not None, (table, v)
        kinds = {t for (t,) in con.execute(
            "SELECT DISTINCT typeof(code) || typeof(evaluation) || typeof(inputs) "
            "FROM run_values")}
        assert kinds <= {"integerintegernull", "integerintegertext"}, kinds
    finally:
        con.close()


def test_code_digests_follow_what_changes_what_is_stored():
    """The worker's digests: unchanged by titles, docstrings, comments and moving code;
    changed for exactly the variables whose code, arguments, group fields, module-level names
    (through helpers) or inputs changed."""
    from backend.ctxrunner.context import ContextFile
    from backend.ctxrunner.provenance import code_digests
    base = textwrap.dedent('''
        import numpy as np
        from amore.context import Variable, Group
        LIMIT = 0.5
        TABLE = {"gain": 2}
        def helper(x):
            return x > LIMIT
        @Variable(title="A", tags=["x"])
        def a(run):
            """About a."""
            return 1
        @Variable(summary="mean")
        def b(run, x: "var#a"):
            return helper(x) + np.sum([1])
        @Variable
        def c(run):
            return TABLE["gain"]
        @Group
        class Det:
            source: str
            def scale(self):
                return 3
            @Variable(title="E")
            def e(self, run):
                return self.scale()
        det = Det(source="X")
    ''')

    def changed(new):
        d0 = {n: c.digest for n, c in code_digests(ContextFile.from_str(base, "/c.py")).items()}
        d1 = {n: c.digest for n, c in code_digests(ContextFile.from_str(new, "/c.py")).items()}
        assert set(d0) == set(d1) == {"a", "b", "c", "det.e"}
        return sorted(n for n in d0 if d0[n] != d1[n])

    same = [('title="A"', 'title="AA"'), ('"""About a."""', '"""Other."""'),
            ('tags=["x"]', 'tags=["y"]'), ("LIMIT = 0.5", "# comment\n\nLIMIT = 0.5"),
            ('Det(source="X")', 'Det(source="X", title="Detector")')]
    for old, new in same:
        assert changed(base.replace(old, new)) == [], (old, new)
    for (old, new), names in {("LIMIT = 0.5", "LIMIT = 0.6"): ["b"],
                              ('{"gain": 2}', '{"gain": 3}'): ["c"],
                              ("return 1\n", "return 2\n"): ["a", "b"],
                              ('summary="mean"', 'summary="max"'): ["b"],
                              ('source="X"', 'source="Y"'): ["det.e"],
                              ("return 3", "return 4"): ["det.e"]}.items():
        assert changed(base.replace(old, new)) == names, (old, new)


def test_a_change_in_a_watched_module_is_noticed_and_one_elsewhere_is_not(make_context_dir,
                                                                          write_run, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "mycal.py").write_text("GAIN = 2\n\ndef gain():\n    return GAIN\n")
    (lib / "other.py").write_text("def offset():\n    return 1\n")
    code = CONTEXT + textwrap.dedent('''
        import sys
        sys.path.insert(0, "%s")
        import mycal, other

        @Variable(title="Calibrated")
        def calibrated(run, r: "meta#run_number"):
            called("calibrated", r)
            return mycal.gain() * 10 + other.offset()
    ''' % lib)
    ctx = make_context_dir(code, config='[processing]\nwatch_modules = ["mycal"]\n')
    write_run(1, ntrains=20)
    cli("reprocess", "1", "-d", ctx)
    calls(ctx)
    (lib / "other.py").write_text("def offset():\n    return 2\n")   # not watched
    assert "Nothing to reprocess" in cli("reprocess", "all", "-d", ctx).stdout
    (lib / "mycal.py").write_text("GAIN = 33\n\ndef gain():\n    return GAIN\n")
    out = cli("reprocess", "all", "-d", ctx, "--dry-run")
    assert "run 1: calibrated" in out.stdout, out.stdout
    import amore.api
    assert amore.api.open(ctx)[1, "calibrated"].provenance()["reasons"] == [
        "GAIN changed in module mycal"]
    cli("reprocess", "all", "-d", ctx)
    assert calls(ctx) == [("calibrated", 1)]
    # a new worker imports both anew: the watched change and the unnoticed one
    assert RunDB(ctx).get_values(PROPOSAL, 1)["calibrated"].value == 332


def test_provenance_of_values_a_slurm_job_computed(slurm, make_context_dir, write_run):
    """reprocess all --slurm computes the stale values in a job; their provenance names the
    job and its node, they are up to date afterwards, and the values not stale keep theirs."""
    config = ('[slurm]\nenabled = true\npartition = "%s"\ntime = "00:10:00"\n'
              'max_concurrent = 2\npoll_seconds = 0.3\n' % slurm.partition)
    ctx = make_context_dir(CONTEXT, config=config)
    for r in (1, 2):
        write_run(r, ntrains=20)
    cli("reprocess", "1", "2", "-d", ctx)
    calls(ctx)
    import amore.api
    kept = amore.api.open(ctx)[1, "motor"].provenance()
    edit(ctx, "return n * SCALE", "return n * SCALE + 1")
    out = cli("reprocess", "all", "--slurm", "-d", ctx, timeout=300)
    assert "Stale: 2 run(s), 4 value(s) to compute" in out.stdout, out.stdout
    assert "Reprocessed 2/2 runs on Slurm" in out.stdout, out.stdout
    # exactly the stale values were computed in the jobs; n_trains was read back
    assert calls(ctx) == [("doubled", 1), ("doubled", 2), ("many", 1), ("many", 2)]
    assert stale(ctx) == set()
    assert RunDB(ctx).get_values(PROPOSAL, 2)["doubled"].value == 41
    info = json.loads(cli("run-info", "1", "--var", "many", "--json", "-d", ctx).stdout)
    assert info["origin"] == "amore" and not info["stale"], info
    ev = info["evaluation"]
    assert ev["worker"].startswith("Slurm job "), ev
    assert ev["host"] == slurm.node or ev["host"] == os.uname().nodename, ev
    assert ev["data"]["raw"]["files"] >= 1 and ev["seconds"] > 0
    assert info["code"]["digest"] == info["code"]["current"]
    # a value that was not stale was not touched: its provenance is the local worker's
    assert amore.api.open(ctx)[1, "motor"].provenance() == kept
    assert kept["evaluation"]["worker"].startswith("local worker")
