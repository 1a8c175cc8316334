"""Save PNG screenshots of the run table in the browser (``amore-proto web``) with demo data.

    python scripts/web_screenshots.py OUTDIR [--demo-dir DIR] [--runs 16]

Makes a demo proposal like ``scripts/screenshots.py`` (real mock runs processed by the real
backend, no broker, a few comments and states added), serves it with ``amore-proto web`` and
takes screenshots in Debian's headless Chromium (Playwright, ``/usr/bin/chromium``). Writes:

* ``web-table.png`` - the run table (the docs page ``docs/web.rst`` shows it);
* ``web-scrolled.png`` - the same scrolled right to its last column (Status and Run kept in view);
* ``web-filter.png`` - a filter expression with a mistake, pointing at it;
* ``web-inspect.png`` - a camera image inspected (Plotly);
* ``web-plot.png`` - one variable against another across runs, hovering a run.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from screenshots import decorate, make_demo  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir")
    p.add_argument("--demo-dir", help="an existing context directory")
    p.add_argument("--runs", type=int, default=16)
    a = p.parse_args(argv)
    out = Path(a.outdir)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["AMORE_BROKER"] = "none"
    os.environ["AMORE_WEB_ACCESS"] = str(Path(tempfile.mkdtemp(prefix="amore-web-")) / "access.json")
    if a.demo_dir:
        ctx = Path(a.demo_dir)
    else:
        ctx = make_demo(Path(tempfile.mkdtemp(prefix="amore-web-shots-")) / "demo", a.runs)
        decorate(ctx)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "amore.cli", "web", str(ctx), "--port",
                               str(port), "--no-kafka"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        url = server.stdout.readline().split(" at ")[-1].strip()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(url.replace("/d/", "/api/d/", 1) + "table?limit=1")
                break
            except OSError:
                time.sleep(0.2)
        from playwright.sync_api import sync_playwright
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            # wide enough for the fixed columns (start, added, comment) and the camera's
            # thumbnails side by side, unscrolled, as the page opens
            page = browser.new_page(viewport={"width": 2150, "height": 780},
                                    device_scale_factor=1)
            page.goto(url)
            page.wait_for_function("() => document.body.dataset.loaded === '1'")
            page.locator("#tall").check()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "web-table.png"))
            print("saved", out / "web-table.png")
            # scrolled right to the last column: the Status and Run cells stay at the left
            page.evaluate("() => amore.state.grid.ensureColumnVisible("
                          "amore.state.grid.getAllDisplayedColumns().at(-1).getColId())")
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "web-scrolled.png"))
            print("saved", out / "web-scrolled.png")
            page.evaluate("() => amore.state.grid.ensureColumnVisible('#status')")
            page.locator("#filter").fill("run > 3 and xgm_energy > 0.5 mJ and")
            page.locator("#filter").press("Enter")
            page.locator("#filter-error").wait_for()
            page.screenshot(path=str(out / "web-filter.png"))
            print("saved", out / "web-filter.png")
            page.locator("#filter").fill("")
            page.locator("#filter").press("Enter")
            page.evaluate("() => amore.state.grid.ensureColumnVisible('cam_mean')")
            run = page.evaluate("() => { let r; amore.state.grid.forEachNodeAfterFilterAndSort("
                                "n => { if (r === undefined) r = n.data.id; }); return r; }")
            page.locator(f'.ag-row[row-id="{run}"] .ag-cell[col-id="cam_mean"]').first.dblclick()
            page.wait_for_function("() => document.getElementById('inspect')?.dataset.kind")
            page.wait_for_timeout(1000)
            page.screenshot(path=str(out / "web-inspect.png"))
            print("saved", out / "web-inspect.png")
            page.locator("#modal-close").click()
            page.locator("#btn-plot").click()
            page.locator("#plot-x").select_option("xgm_energy")
            page.locator("#plot-y").select_option("cam_peak")
            page.wait_for_function("() => document.querySelectorAll('#plot-div .point').length > 2")
            page.locator("#plot-div .scatterlayer .point").nth(2).hover(force=True)
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "web-plot.png"))
            print("saved", out / "web-plot.png")
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
