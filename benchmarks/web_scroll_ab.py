"""Scrolling the web table, A/B: variants of the page's grid options and CSS side by side.

One ``amore-proto web`` server (this checkout) of the 5,000 x 300 benchmark table
(``web_table.py``'s database), Debian's headless Chromium; each variant's page is this
checkout's ``app.js``/``app.css`` with one change (:data:`VARIANTS`) swapped in through the
browser's request routing, in a fresh browser context, and scrolled the same way as
``web_table.py`` (wheel notches of 100 px, one per frame: down, right, up) while Chromium
traces. The variants alternate within each round, so a busier machine in one round touches
them all. Prints, per variant, the median [range] over the rounds of each round's 95th
percentile of the main thread's busy and CPU time per frame, and its mean CPU time per frame
with its rendering phases.

    python benchmarks/web_scroll_ab.py [--rounds 2] [--variants base,sync,...]
                                       [--notches 200,100,150] [--work DIR]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, print_table, rng, start_web, stop_process_group
from gui_load import add_manual_columns, build_db
from web_table import CHROMIUM_ARGS, PHASES, pct, trace_scroll

STATIC = REPO / "amore_gui" / "web" / "static"
#: where a grid option is added to app.js's gridOptions
ANCHOR = "rowBuffer: 3,"

#: name -> (grid options added, CSS appended); "base" is the page as it is
VARIANTS = {
    "base": ("", ""),
    "row-top": ("suppressRowTransform: true,", ""),
    "sync-draw": ("suppressAnimationFrame: true,", ""),
    "row-top+sync": ("suppressRowTransform: true, suppressAnimationFrame: true,", ""),
    "row-contain": ("", ".grid .ag-row { contain: layout style paint; }"),
    "will-change-row": ("", ".grid .ag-row { will-change: transform; }"),
    "will-change-container": ("", ".grid .ag-center-cols-container, "
                              ".grid .ag-pinned-left-cols-container { will-change: transform; }"),
    "plain-font": ("", ".grid { --ag-font-family: sans-serif; }"),
}


def variant_page(name: str, js: str, css: str) -> tuple[str, str]:
    """This checkout's (app.js, app.css) with variant ``name`` applied."""
    options, more_css = VARIANTS[name]
    if options:
        if ANCHOR not in js:
            raise SystemExit(f"app.js has no {ANCHOR!r} to add the variant's options after")
        js = js.replace(ANCHOR, f"{ANCHOR} {options}")
    return js, css + ("\n" + more_css + "\n" if more_css else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--notches", default="200,100,150", help="wheel notches down,right,up")
    p.add_argument("--work", help="directory for the database (default: a temp dir)")
    a = p.parse_args(argv)
    names = a.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    notches = tuple(int(n) for n in a.notches.split(","))
    work = Path(a.work or tempfile.mkdtemp(prefix="amore-web-bench-"))
    ctx = work / "ctx-5000x300-manual"
    if not (ctx / "runs.sqlite").exists():
        print(f"Building 5000 x 300 database in {ctx} ...", flush=True)
        build_db(ctx, 5000, 300)
        add_manual_columns(ctx, 5000)
    js, css = (STATIC / "app.js").read_text(), (STATIC / "app.css").read_text()
    pages = {n: variant_page(n, js, css) for n in names}
    access = str(Path(tempfile.mkdtemp(prefix="amore-web-cfg-")) / "a.json")
    env = dict(os.environ, AMORE_BROKER="none", PYTHONPATH=str(REPO), AMORE_WEB_ACCESS=access)
    results: dict[str, list[dict]] = {n: [] for n in names}
    from playwright.sync_api import sync_playwright
    proc, url, _, _ = start_web(ctx, env, "--no-kafka")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for rnd in range(a.rounds):
                for name in names:
                    page_js, page_css = pages[name]
                    bctx = browser.new_context(viewport={"width": 1600, "height": 900})
                    bctx.route("**/static/app.js", lambda route, _req=None, body=page_js:
                               route.fulfill(body=body, content_type="text/javascript"))
                    bctx.route("**/static/app.css", lambda route, _req=None, body=page_css:
                               route.fulfill(body=body, content_type="text/css"))
                    page = bctx.new_page()
                    page.set_default_timeout(300_000)
                    page.goto(url)
                    page.wait_for_function("() => document.body.dataset.loaded === '1'")
                    page.wait_for_timeout(500)
                    t0 = time.monotonic()
                    r = trace_scroll(browser, page, work / f"trace-{name}.json", notches)
                    rows = page.evaluate("document.querySelectorAll('.ag-row').length")
                    bctx.close()
                    results[name].append(r)
                    print(f"round {rnd + 1} {name}: {len(r['cpu'])} frames in "
                          f"{time.monotonic() - t0:.0f} s, p95 busy {pct(r['busy'], 95):.1f} ms, "
                          f"p95 CPU {pct(r['cpu'], 95):.1f} ms, {rows} rows in the DOM", flush=True)
            browser.close()
    finally:
        stop_process_group(proc)

    def med_rng(xs, d=1):
        return f"{statistics.median(xs):.{d}f} {rng(xs, d)}"
    rows = []
    for name in names:
        rs = results[name]
        cpu_all = [c for r in rs for c in r["cpu"]]
        phases = {ph: sum(r["phases"].get(ph, 0) for r in rs) / len(cpu_all)
                  for ph in dict.fromkeys(PHASES.values())}
        rows.append([name, med_rng([pct(r["busy"], 95) for r in rs]),
                     med_rng([pct(r["cpu"], 95) for r in rs]),
                     med_rng([statistics.mean(r["cpu"]) for r in rs], 2),
                     ", ".join(f"{ph} {ms:.2f}" for ph, ms in phases.items())])
    print_table(f"Scrolling frames per variant ({a.rounds} alternating rounds, notches "
                f"{a.notches}; median [range] of the rounds' figures, ms)",
                ["variant", "p95 busy", "p95 CPU", "mean CPU", "mean CPU per phase"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
