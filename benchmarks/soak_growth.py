"""What grows in a front-end as the table grows (issue 23): a fast stand-in for the soak's
memory rows of the GUIs and the web server.

A context directory with the soak's columns (``benchmarks/soak.py``: numbers, an 8x8 image as a
thumbnail, a failing variable on every seventh run, manual columns) grows to ``--runs`` runs
written by the real storage writer (:class:`backend.store.writer.RunDB`: a run pending, then
processing, then its values, as the backend writes them; a manual value on every fourth run;
``--reloads`` context edits, each making the front-end read its whole table again) while one
front-end follows it live (database watching, no broker):

* ``--front gui``: the real main window (offscreen), as ``amore-proto gui``;
* ``--front web``: the web server of ``amore-proto web`` (a child process), with ``--viewers``
  WebSocket viewers of its push channel in this process that read every page of the table
  again when told to reload (as the soak's viewers do).

The front-end's process measures itself when its table holds ``--from`` runs and again at the
end: RSS, RSS after ``malloc_trim`` (what the C allocator merely keeps), the memory SQLite
holds, RSS by mapping (heap, anonymous, files), the count of Python objects, the push channel's
replay buffer (web) or the QObjects under the window and the thumbnail cache (Qt); with
``--trace`` also Python's allocations (``tracemalloc``: the lines that grew most; the RSS then
includes the tracing's own memory). Usage::

    python benchmarks/soak_growth.py --front gui|web [--runs 2000] [--from 200] [--rate 40]
        [--reloads 20] [--viewers 5] [--trace]

Prints the two measurements as JSON (and, with ``--trace``, the allocation lines that grew
most between them). Measured on 2026-12-07 (2,000 runs at 50/s, 20 reloads, 20 viewers): a GUI
103 -> 112 MB, the web server 73 -> 83 MB from run 200 to 2,000; later that day, 20 viewers,
side by side under the lock (docs/reliability.rst): the web server on ``main`` +18.5 to +20.7 %,
on ``grow23b`` (large blocks handed back, ASCII row texts, pages in chunks) +14.1 to +14.5 %.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PROPOSAL = 4242
MANUAL = [("distance", "number", "mm"), ("sample", "string", None), ("good", "boolean", None)]


def trimmed_rss_mb() -> float | None:
    """RSS after giving the memory malloc keeps free back to the system (glibc only): what
    the process really holds, apart from allocator slack."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return round(rss_mb(), 1)


def sqlite_mb() -> float | None:
    """Memory SQLite holds in this process (page caches of every connection, statements)."""
    try:
        import ctypes
        lib = ctypes.CDLL("libsqlite3.so.0")
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        return round(lib.sqlite3_memory_used() / 2**20, 2)
    except (OSError, AttributeError):
        return None


def rss_by_mapping() -> dict[str, float]:
    """RSS (MB) by kind of mapping: the heap, anonymous mappings (malloc's arenas and large
    blocks, Python's arenas, thread stacks), files (libraries, SQLite's shared memory)."""
    out: dict[str, float] = {}
    name = "anon"
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                name = head[5] if len(head) > 5 else "anon"
                name = name if name.startswith("[") else (
                    "anon" if name == "anon" else "file " + Path(name).name.split(".so")[0])
            elif head[0] == "Rss:":
                out[name] = out.get(name, 0.0) + int(head[1]) / 1024
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])[:8]}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Probe:
    """Snapshots of this process at two table sizes."""

    def __init__(self, first: int, last: int, extra=None):
        self.trace = tracemalloc.is_tracing()
        self.first, self.last, self.extra = first, last, extra or (lambda: {})
        self.snap = None
        self.done = False
        self.out = []

    def check(self, rows: int) -> bool:
        """Measure when ``rows`` reached a mark; True when the last one was taken."""
        if self.snap is None and rows >= self.first:
            gc.collect()
            self.snap = tracemalloc.take_snapshot() if self.trace else True
            self.out.append({"rows": rows, "rss_mb": round(rss_mb(), 1), **self.extra()})
            self.out[-1].update(trimmed_rss_mb=trimmed_rss_mb(), sqlite_mb=sqlite_mb(),
                                mappings=rss_by_mapping())
        elif self.snap is not None and not self.done and rows >= self.last:
            gc.collect()
            self.out.append({"rows": rows, "rss_mb": round(rss_mb(), 1), **self.extra()})
            self.out[-1].update(trimmed_rss_mb=trimmed_rss_mb(), sqlite_mb=sqlite_mb(),
                                mappings=rss_by_mapping())
            if not self.trace:
                print(json.dumps({"marks": self.out}), flush=True)
                self.done = True
                return True
            snap = tracemalloc.take_snapshot()
            stats = snap.compare_to(self.snap, "lineno")
            top = [f"{s.size_diff / 1024:9.1f} kB {s.count_diff:+7d}  {s.traceback[0]}"
                   for s in stats[:25]]
            total = sum(s.size_diff for s in stats) / 2**20
            print(json.dumps({"marks": self.out, "python_growth_mb": round(total, 2)}),
                  flush=True)
            print("\n".join(top), flush=True)
            self.done = True
        return self.done


# --- the writer: runs appear as the backend writes them --------------------------------------

def variables(edit: int) -> list:
    """The soak's variables; ``edit`` goes into a description (a changed context file)."""
    from backend.store.writer import VariableInfo
    return [VariableInfo(name=n, title=t, units=u, description=f"edit {edit}")
            for n, t, u in [("n_trains", "Trains", None), ("run_no", "Run number", None),
                            ("xgm", "XGM", None), ("image", "Image", None),
                            ("version", "Context version", None),
                            ("scaled", "Scaled distance", "mm"), ("flaky", "Flaky", None)]]


def make_context(ctx: Path) -> None:
    from backend.store.manual import ManualStore
    from backend.store.writer import RunDB
    ctx.mkdir(parents=True, exist_ok=True)
    db = RunDB.create(ctx, PROPOSAL)
    db.set_variables(variables(0))
    m = ManualStore(db)
    for name, kind, units in MANUAL:
        m.add_column(name, kind, units=units)
    db.close()
    (ctx / "context.py").write_text("# soak_growth\n")


def write_runs(ctx: Path, n: int, rate: float, reloads: int = 0) -> None:
    import numpy as np
    from backend.ctxrunner.results import thumbnail_png
    from backend.store.manual import ManualStore
    from backend.store.writer import RunDB
    from backend.vocab import StoredValue
    db = RunDB(ctx)
    m = ManualStore(db)
    t_next = time.monotonic()
    for r in range(1, n + 1):
        db.ensure_run(PROPOSAL, r, start_time=time.time())
        db.set_run_status(PROPOSAL, r, "processing")
        vals = {"n_trains": StoredValue(5, "number"), "run_no": StoredValue(r, "number"),
                "xgm": StoredValue(float(np.random.default_rng(r).normal(1000, 50)), "number",
                                   {"units": "uJ"}),
                "image": StoredValue(thumbnail_png(np.full((8, 8), float(r)) +
                                                   np.eye(8) * r, 150), "thumbnail",
                                     {"shape": [8, 8], "dtype": "float64"}),
                "version": StoredValue(0, "number"),
                "scaled": StoredValue(None, "skipped", {"reason": "no distance"})}
        if r % 7 == 0:
            vals["flaky"] = StoredValue(None, "error", {"error": f"run {r} is a multiple of 7",
                                                        "error_type": "ValueError"})
        else:
            vals["flaky"] = StoredValue(r, "number")
        db.write_values(PROPOSAL, r, vals, status="done")
        if reloads and r % max(1, n // reloads) == 0:
            # a context edit: the variables change, every front-end reads its table again
            db.set_variables(variables(r))
        if r % 4 == 0:
            m.set_values([r], "distance", f"{r % 50 + 1} mm", via="api")
        t_next += 1.0 / rate
        time.sleep(max(0.0, t_next - time.monotonic()))
    db.close()


# --- the front-ends --------------------------------------------------------------------------

def gui_child(ctx: Path, first: int, last: int) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["AMORE_GUI_NO_DIALOGS"] = "1"
    if os.environ.get("SOAK_GROWTH_TRACE"):
        tracemalloc.start(12)
    from qtpy.QtCore import QObject, QTimer
    from qtpy.QtGui import QPixmapCache

    from amore_gui._qt.app import make_app
    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui.application.settings import Settings
    app = make_app([sys.argv[0]])
    win = MainWindow(ctx, live_updates=True, settings=Settings(Path(tempfile.mkdtemp()) / "s.json"),
                     use_kafka=False)
    win.resize(1400, 900)
    win.show()

    def extra():
        t = win.table
        deleg = t.itemDelegate()
        thumbs = win.thumbs
        from collections import Counter
        kids = win.findChildren(QObject)
        return {"qobjects": len(kids),
                "qclasses": dict(Counter(type(k).__name__ + ":" + k.objectName()
                                         for k in kids).most_common(12)),
                "py_objects": len(gc.get_objects()),
                "thumbs": len(thumbs._images), "thumbs_asked": len(thumbs._asked),
                "sparks": len(getattr(deleg, "_sparks", ())),
                "pixmap_cache_kb": QPixmapCache.cacheLimit()}
    probe = Probe(first, last, extra)

    def tick():
        if probe.check(win.model.rowCount()):
            app.quit()
    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(200)
    app.exec()
    win.close()


def web_child(ctx: Path, first: int, last: int, port: int) -> None:
    if os.environ.get("SOAK_GROWTH_TRACE"):
        tracemalloc.start(12)
    from amore_gui.web.server import prepare
    server = prepare([ctx], port=port, use_kafka=False)
    d = server.directories[0]

    def extra():
        ch = d.channel
        return {"replay_kept": len(ch._buffer),
                "replay_kb": round(sum(len(t) for _, t in ch._buffer) / 1024, 1),
                "row_cache": len(d._cache), "subscribers": ch.subscribers,
                "py_objects": len(gc.get_objects())}
    probe = Probe(first, last, extra)

    def watch():
        while not probe.done:
            time.sleep(0.2)
            if d.data is not None and probe.check(d.data.nrows):
                os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    server.run()


def start_viewers(port: int, slug: str, n: int) -> None:
    """``n`` WebSocket viewers of the push channel in a thread of this process (not the
    server's), as the soak's: each reads every page of the table again when told to reload."""
    api = f"http://127.0.0.1:{port}/api/d/{slug}/"

    def table():
        import urllib.request
        below = None
        while True:
            url = api + "table" + ("" if below is None else f"?below={below}")
            with urllib.request.urlopen(url, timeout=60) as r:
                below = json.loads(r.read()).get("next")
            if below is None:
                return

    async def viewer():
        import websockets
        while True:
            try:
                async with websockets.connect(api.replace("http://", "ws://") + "live",
                                              max_size=None) as ws:
                    async for text in ws:
                        if '"type":"reload"' in text:
                            await asyncio.to_thread(table)
            except Exception:
                await asyncio.sleep(0.5)

    async def main():
        await asyncio.gather(*(viewer() for _ in range(n)))
    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--front", choices=["gui", "web"], default="gui")
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--from", dest="first", type=int, default=200)
    ap.add_argument("--rate", type=float, default=40.0, help="runs per second")
    ap.add_argument("--viewers", type=int, default=5)
    ap.add_argument("--reloads", type=int, default=20,
                    help="context edits (variables changed: the table is read again)")
    ap.add_argument("--port", type=int, default=8799)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--trace", action="store_true",
                    help="tracemalloc in the front-end (its RSS then includes the tracing)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ["AMORE_BROKER"] = "none"
    if a.child:
        ctx = Path(a.child[1])
        if a.child[0] == "gui":
            gui_child(ctx, a.first, a.runs)
        else:
            web_child(ctx, a.first, a.runs, a.port)
        return 0
    work = a.work or Path(tempfile.mkdtemp(prefix="soak-growth-"))
    ctx = work / "ctx"
    make_context(ctx)
    env = dict(os.environ, SOAK_GROWTH_TRACE="1" if a.trace else "", AMORE_CONFIG_DIR=str(work / "config"),
               AMORE_WEB_ACCESS=str(work / "config" / "web-access.json"))
    child = subprocess.Popen([sys.executable, __file__, "--front", a.front, "--runs", str(a.runs),
                              "--from", str(a.first), "--viewers", str(a.viewers), "--port",
                              str(a.port), "--child", a.front, str(ctx)], env=env)
    time.sleep(4)
    if a.front == "web" and a.viewers:
        from amore_gui.web.data import directory_label
        start_viewers(a.port, directory_label(ctx)[0], a.viewers)
        time.sleep(2)
    t0 = time.monotonic()
    write_runs(ctx, a.runs, a.rate, a.reloads)
    print(f"wrote {a.runs} runs in {time.monotonic() - t0:.0f} s", flush=True)
    try:
        child.wait(300)
    except subprocess.TimeoutExpired:
        child.terminate()
        child.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
