"""Web table benchmark (issue 21): a 5,000 x 300 run table in headless Chromium.

The database is the GUI benchmark's (``gui_load.build_db``: 5 % string columns, integers, a
thumbnail and a sparkline column, floats with units, bold cells, errors; three manual columns),
served by ``amore-proto web`` (a fresh server per repeat) and opened in Debian's Chromium
(Playwright, ``/usr/bin/chromium``, a fresh browser context per repeat). Measured:

* ``first rows painted``: navigation start -> the start of the frame after the one that drew
  the grid's first rows (the page's ``performance.now()`` in the second animation frame after
  AG Grid's ``firstDataRendered``: Chromium's performance timeline);
* ``all rows in``: navigation start -> every page of rows loaded into the grid;
* ``scroll frames``: the grid is scrolled with mouse-wheel events (down through all rows, then
  right through all columns, then up through half the rows while scrolled right, where the Status
  and Run cells are kept in view; a wheel notch of 100 px per frame, 6,000 px/s) while Chromium traces
  (``devtools.timeline``). Per frame of that timeline: the main thread's busy time (its
  top-level tasks from one ``BeginMainThreadFrame`` to the next: what a frame costs; a frame
  is drawn in time when it stays under 16 ms), Chromium's ``AnimationFrame`` span (frame start
  to rendered, including the wait for the display), and the interval between frames (dropped
  frames show as 33 ms and more; 60 Hz is 16.7 ms). Where the main thread's CPU time went: its
  rendering phases in the same trace (scripts, hit testing, style, layout, pre-paint, paint,
  layerization), per frame on average.

    python benchmarks/web_table.py [--runs 5000] [--vars 300] [--repeats 3] [--work DIR]
                                   [--compare REV]

Prints tables (medians and ranges over the repeats; frame percentiles over all frames). With
``--compare REV`` (e.g. ``main``) the page of that git revision is served too, its repeats
alternating with this checkout's in the same browser, and a table puts the two side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, med, print_table, rng, start_web, stop_process_group
from gui_load import add_manual_columns, build_db

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


def main_thread_events(trace) -> list[dict]:
    """The events of a Chromium trace (Playwright's ``start_tracing``) on renderer main threads
    (``CrRendererMain``)."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {(e.get("pid"), e.get("tid")): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
    main = {k for k, n in names.items() if n == "CrRendererMain"}
    return [e for e in events if (e.get("pid"), e.get("tid")) in main]


def frame_costs(trace) -> tuple[list[float], list[float], list[float], list[float]]:
    """(frame durations, main-thread busy time per frame, time between frames, main-thread
    CPU time per frame), in ms, of the renderer's main thread in a Chromium trace. A frame's
    duration is Chromium's own ``AnimationFrame`` span (the animation frames of the performance
    timeline, as the Long Animation Frames API and DevTools count them: from the frame's start
    to its rendering done); busy time sums the top-level tasks (``ThreadControllerImpl::RunTask``)
    between two ``BeginMainThreadFrame`` s, wall-clock (``dur``: includes time the thread was
    ready but another process had the core); CPU time sums the same tasks' thread time
    (``tdur``: what the frame cost the main thread itself)."""
    on_main = main_thread_events(trace)
    begins: dict = {}
    durations = []
    for e in on_main:
        if e.get("name") != "AnimationFrame" or e.get("ph") not in ("b", "e"):
            continue
        key = e.get("id") or (e.get("id2") or {}).get("local")
        if e["ph"] == "b":
            begins[key] = e["ts"]
        elif key in begins:
            durations.append((e["ts"] - begins.pop(key)) / 1000)
    frames = sorted(e["ts"] for e in on_main if e.get("name") == "BeginMainThreadFrame")
    tasks = sorted((e["ts"], e.get("dur", 0), e.get("tdur", 0)) for e in on_main
                   if e.get("name") in ("ThreadControllerImpl::RunTask", "RunTask")
                   and e.get("ph") == "X")
    busy, gaps, cpu = [], [], []
    j = 0
    for a, b in zip(frames, frames[1:]):
        while j < len(tasks) and tasks[j][0] < a:
            j += 1
        k, total, thread = j, 0, 0
        while k < len(tasks) and tasks[k][0] < b:
            total += tasks[k][1]
            thread += tasks[k][2]
            k += 1
        busy.append(total / 1000)
        cpu.append(thread / 1000)
        gaps.append((b - a) / 1000)
    return durations, busy, gaps, cpu


#: Chromium's trace events of the main thread's rendering phases (devtools.timeline) -> the name
#: a table shows; scripts are the page's and AG Grid's JavaScript wherever it was called from
PHASES = {"FunctionCall": "scripts", "EvaluateScript": "scripts", "HitTest": "hit testing",
          "UpdateLayoutTree": "style", "Layout": "layout", "PrePaint": "pre-paint",
          "Paint": "paint", "Layerize": "layerization"}


def phase_cpu(trace) -> dict[str, float]:
    """CPU time (thread time, ms) of the renderer's main thread in each of :data:`PHASES` over a
    whole Chromium trace; an event inside another of the same phase (a script calling a script)
    is counted once."""
    out: dict[str, float] = {}
    until: dict[str, float] = {}
    for e in sorted((e for e in main_thread_events(trace)
                     if e.get("ph") == "X" and e.get("name") in PHASES), key=lambda e: e["ts"]):
        phase = PHASES[e["name"]]
        if e["ts"] < until.get(phase, -1):
            continue
        until[phase] = e["ts"] + e.get("dur", 0)
        out[phase] = out.get(phase, 0) + e.get("tdur", 0) / 1000
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


def trace_scroll(browser, page, trace_path: Path, notches=(600, 300, 300)) -> dict:
    """Scroll the grid of ``page`` with the mouse over its rows while Chromium traces: ``notches``
    wheel notches (100 px, one per frame) down, then right, then up. Returns the per-frame
    figures of :func:`frame_costs` (``costs``, ``busy``, ``gaps``, ``cpu``, in ms) and the CPU
    time of each of :data:`PHASES` (``phases``, ms over the whole scroll); the trace file is
    removed."""
    browser.start_tracing(page=page, path=str(trace_path),
                          categories=["devtools.timeline", "toplevel",
                                      "disabled-by-default-devtools.timeline.frame"])
    box = page.locator("#grid").bounding_box()          # the mouse over the rows
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.6)
    raf = "() => new Promise(r => requestAnimationFrame(() => r()))"
    down, right, up = notches
    for _ in range(down):         # down: a wheel notch (100 px) per frame, 6,000 px/s
        page.mouse.wheel(0, 100)
        page.evaluate(raf)
    for _ in range(right):        # right, across the columns, the same
        page.mouse.wheel(100, 0)
        page.evaluate(raf)
    for _ in range(up):           # up again, scrolled right: the run numbers kept in view follow
        page.mouse.wheel(0, -100)
        page.evaluate(raf)
    browser.stop_tracing()
    trace = json.loads(trace_path.read_text())
    trace_path.unlink()
    frames, busy, gaps, cpu = frame_costs(trace)
    return {"costs": frames, "busy": busy, "gaps": gaps, "cpu": cpu, "phases": phase_cpu(trace)}


def one_repeat(browser, url: str, trace_path: Path) -> dict:
    ctx = browser.new_context(viewport={"width": 1600, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(300_000)
    page.goto(url)
    page.wait_for_function("() => document.body.dataset.painted")
    first = float(page.evaluate("document.body.dataset.painted"))
    page.wait_for_function("() => document.body.dataset.loaded === '1'")
    all_in = page.evaluate("performance.now()")
    rows = page.evaluate("amore.state.rowsById.size")
    cols = page.evaluate("amore.state.columns.length")
    page.wait_for_timeout(500)
    scrolled = trace_scroll(browser, page, trace_path)
    ctx.close()
    return {"first_ms": first, "all_ms": all_in, "rows": rows, "cols": cols, **scrolled}


def export_revision(rev: str) -> Path:
    """The files of git revision ``rev`` of the repository of the current directory in a
    temporary directory (``git archive``), to serve the page of that revision beside this
    checkout's (``PYTHONPATH`` of its server)."""
    out = Path(tempfile.mkdtemp(prefix="amore-web-before-"))
    archive = subprocess.run(["git", "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def report(label: str, results: list[dict], ready: list[float]) -> dict:
    """Print the tables of one code version's repeats; return its headline figures."""
    first = [r["first_ms"] / 1000 for r in results]
    allin = [r["all_ms"] / 1000 for r in results]
    costs = [c for r in results for c in r["costs"]]
    gaps = [g for r in results for g in r["gaps"]]
    busy = [b for r in results for b in r["busy"]]
    cpu = [c for r in results for c in r["cpu"]]
    print_table(f"{label}Web table: {results[0]['rows']} runs x {results[0]['cols']} columns in "
                f"Chromium ({len(results)} repeats, median [range])", ["measure", "value", "range"], [
                    ["navigation -> first rows painted", f"**{med(first):.2f} s**", rng(first)],
                    ["navigation -> all rows in the grid", f"{med(allin):.2f} s", rng(allin)],
                    ["server start -> table read (not in the above)", f"{med(ready):.1f} s",
                     rng(ready, 1)],
                    ["target: first rows painted", "<= 1.5 s",
                     "met" if med(first) <= 1.5 else "MISSED"]])
    print_table(f"{label}Scrolling: {len(costs)} frames (down through the rows, right through "
                "the columns, up through half the rows)", ["per frame", "median", "p95", "p99", "max"], [
                    ["main-thread busy time (ms)", f"{statistics.median(busy):.1f}",
                     f"**{pct(busy, 95):.1f}**", f"{pct(busy, 99):.1f}", f"{max(busy):.1f}"],
                    ["main-thread CPU time (ms)", f"{statistics.median(cpu):.1f}",
                     f"{pct(cpu, 95):.1f}", f"{pct(cpu, 99):.1f}", f"{max(cpu):.1f}"],
                    ["animation frame span, start to rendered (ms)",
                     f"{statistics.median(costs):.1f}", f"{pct(costs, 95):.1f}",
                     f"{pct(costs, 99):.1f}", f"{max(costs):.1f}"],
                    ["time between frames (ms)", f"{statistics.median(gaps):.1f}",
                     f"{pct(gaps, 95):.1f}", f"{pct(gaps, 99):.1f}", f"{max(gaps):.1f}"],
                    ["target: p95 main-thread time per frame", "", "<= 16 ms",
                     "met" if pct(busy, 95) <= 16 else "MISSED", ""]])
    phases = {ph: sum(r["phases"].get(ph, 0) for r in results) / len(busy)
              for ph in dict.fromkeys(PHASES.values())}
    print_table(f"{label}Where the main thread's CPU time went while scrolling (mean per frame)",
                ["phase", "ms per frame"], [[ph, f"{ms:.2f}"] for ph, ms in phases.items()]
                + [["all tasks", f"{statistics.mean(cpu):.2f}"]])
    return {"first": med(first), "busy50": statistics.median(busy), "busy95": pct(busy, 95),
            "cpu50": statistics.median(cpu), "cpu95": pct(cpu, 95), "gap95": pct(gaps, 95),
            "cpu_mean": statistics.mean(cpu), **{f"phase:{ph}": ms for ph, ms in phases.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5000)
    p.add_argument("--vars", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", help="directory for the database (default: a temp dir)")
    p.add_argument("--compare", metavar="REV",
                   help="also serve git revision REV's code (e.g. main), alternating repeats "
                        "with this checkout's in the same browser, and print both side by side")
    a = p.parse_args(argv)
    work = Path(a.work or tempfile.mkdtemp(prefix="amore-web-bench-"))
    ctx = work / f"ctx-{a.runs}x{a.vars}-manual"
    if not (ctx / "runs.sqlite").exists():
        t = time.time()
        print(f"Building {a.runs} x {a.vars} database in {ctx} ...", flush=True)
        build_db(ctx, a.runs, a.vars)
        add_manual_columns(ctx, a.runs)
        print(f"  built in {time.time() - t:.0f} s", flush=True)
    access = str(Path(tempfile.mkdtemp(prefix="amore-web-cfg-")) / "a.json")
    versions = [("this checkout", REPO)]
    if a.compare:
        versions.insert(0, (a.compare, export_revision(a.compare)))
    envs = {label: dict(os.environ, AMORE_BROKER="none", PYTHONPATH=str(code),
                        AMORE_WEB_ACCESS=access) for label, code in versions}
    from playwright.sync_api import sync_playwright
    results = {label: [] for label, _ in versions}
    ready = {label: [] for label, _ in versions}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for i in range(a.repeats):
            for label, _ in versions:
                proc, url, _, t_ready = start_web(ctx, envs[label], "--no-kafka")
                ready[label].append(t_ready)
                try:
                    r = one_repeat(browser, url, work / f"trace-{i}.json")
                finally:
                    stop_process_group(proc)
                results[label].append(r)
                print(f"repeat {i + 1} ({label}): first rows painted {r['first_ms']:.0f} ms, "
                      f"all {r['rows']} rows in {r['all_ms']:.0f} ms, {len(r['costs'])} frames "
                      f"traced, p95 main-thread busy {pct(r['busy'], 95):.1f} ms", flush=True)
        browser.close()
    heads = {label: report(f"{label}: " if a.compare else "", results[label], ready[label])
             for label, _ in versions}
    if a.compare:
        (before, b), (after, f) = heads.items()
        print_table(f"Side by side ({before} -> this checkout, {a.repeats} alternating repeats "
                    "each)", ["figure", before, "this checkout", "ratio"], [
                        [name, f"{b[k]:.{d}f}", f"{f[k]:.{d}f}", f"{f[k] / b[k]:.2f}" if b[k] else "-"]
                        for name, k, d in (
                            ["first rows painted (s)", "first", 2],
                            ["main-thread busy per frame, median (ms)", "busy50", 1],
                            ["main-thread busy per frame, p95 (ms)", "busy95", 1],
                            ["main-thread CPU per frame, median (ms)", "cpu50", 1],
                            ["main-thread CPU per frame, p95 (ms)", "cpu95", 1],
                            ["time between frames, p95 (ms)", "gap95", 1],
                            ["main-thread CPU per frame, mean (ms)", "cpu_mean", 2],
                            *[[f"  of which {ph} (ms)", f"phase:{ph}", 2]
                              for ph in dict.fromkeys(PHASES.values())])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
