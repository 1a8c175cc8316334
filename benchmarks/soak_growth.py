"""What grows in a front-end as the table grows (issue 23): a fast stand-in for the soak's
memory rows of the GUIs and the web server.

A context directory with the soak's columns (``benchmarks/soak.py``: numbers, an 8x8 image as a
thumbnail, a failing variable on every seventh run, manual columns) grows to ``--runs`` runs
written by the real storage writer (:class:`backend.store.writer.RunDB`: a run pending, then
processing, then its values, as the backend writes them; a manual value on every fourth run;
``--reloads`` context edits, each making the front-end read its whole table again) while one
front-end follows it live (database watching, no broker):

* ``--front gui``: the real main window (offscreen), as ``amore-proto gui``; with
  ``--broker`` it follows the update messages over Kafka (as in the soak), ``--edits N``
  types a manual value and a comment into every N-th run's cells, ``--columns N`` adds a
  manual column and deletes it later, N times (each deletion makes the window read its whole
  table again, as the soak's ``note`` columns);
* ``--front web``: the web server of ``amore-proto web`` (a child process), with ``--viewers``
  WebSocket viewers of its push channel in this process that read every page of the table
  again when told to reload (as the soak's viewers do). What the soak has besides:
  ``--broker`` (a tansu broker, ``tests/kafka_broker.py``: the writer announces every write
  with the backend's update messages, the server follows them over Kafka), ``--reconnect``
  (a viewer opens a new WebSocket at each reload, with its last number and the epoch) and
  ``--thumbs N`` (the first viewer fetches the thumbnails of the newest N rows, as the page).

The front-end's process measures itself when its table holds ``--from`` runs and again at the
end: RSS, at the end RSS after ``malloc_trim`` (what the C allocator merely keeps), glibc's
``mallinfo2`` (in use, freed and kept), the memory SQLite holds, RSS by mapping (heap, anonymous, files), the count of Python objects, the push channel's
replay buffer (web) or the QObjects under the window and the thumbnail cache (Qt); with
``--trace`` also Python's allocations (``tracemalloc``: the lines that grew most; the RSS then
includes the tracing's own memory). Usage::

    python benchmarks/soak_growth.py --front gui|web [--runs 2000] [--from 200] [--rate 40]
        [--reloads 20] [--viewers 5] [--broker] [--reconnect] [--thumbs N] [--edits N]
        [--columns N] [--trace]

Prints the two measurements as JSON (and, with ``--trace``, the allocation lines that grew
most between them). Measured on 2026-12-07 (2,000 runs at 50/s, 20 reloads, 20 viewers): a GUI
103 -> 112 MB, the web server 73 -> 83 MB from run 200 to 2,000; later that day, 20 viewers,
side by side under the lock (docs/reliability.rst): the web server on ``main`` +18.5 to +20.7 %,
on ``grow23b`` (large blocks handed back, ASCII row texts, pages in chunks) +14.1 to +14.5 %.
With ``--broker --reconnect --thumbs 30`` (as the soak): ``main`` +56 to +57 %, the web server
without WebSocket compression +20.5 to +21.8 %, with the reader thread and the trim after a
reload +18.7 % (docs/reliability.rst); on web23d, with one heap for every thread and a
smaller replay buffer, about +12.5 % against +16 to +20 % on ``main`` (not yet 10 %).
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


#: glibc's HEAP_MAX_SIZE on 64-bit: the heap it gives a thread starts at a multiple of it
THREAD_HEAP_ALIGN = 64 << 20


def rss_by_mapping() -> dict[str, float]:
    """RSS (MB) by kind of mapping: the main heap (``[heap]``), ``thread heaps`` (the heaps
    glibc gives other threads: anonymous, writable, aligned to 64 MiB), other anonymous
    mappings (large blocks, Python's arenas, thread stacks), files (libraries, SQLite's shared
    memory); the eight largest."""
    out: dict[str, float] = {}
    name = "anon"
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                name = head[5] if len(head) > 5 else "anon"
                if name == "anon" and int(head[0].split("-")[0], 16) % THREAD_HEAP_ALIGN == 0 \
                        and head[1].startswith("rw"):
                    name = "thread heaps"
                name = name if name.startswith("[") or name in ("anon", "thread heaps") else (
                    "file " + Path(name).name.split(".so")[0])
            elif head[0] == "Rss:":
                out[name] = out.get(name, 0.0) + int(head[1]) / 1024
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])[:8]}


def pymalloc_stats() -> dict:
    """Python's own allocator (``sys._debugmallocstats``): its arenas now (1 MiB each in
    Python 3.10+), the MB in blocks in use and free in them, and the pools unused."""
    out: dict = {}
    # pymalloc's own count: blocks in use against the arenas' size
    r, w = os.pipe()
    saved = os.dup(2)
    try:
        os.dup2(w, 2)
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(w)
        os.close(saved)
    text = b""
    while chunk := os.read(r, 65536):
        text += chunk
    os.close(r)
    for line in text.decode().splitlines():
        for key, name in (("# arenas allocated current", "py_arenas"),
                          ("# bytes in allocated blocks", "py_used_mb"),
                          ("# bytes in available blocks", "py_free_mb"),
                          ("unused pools", "py_unused_pools")):
            if line.startswith(key):
                v = int(line.split("=")[-1].replace(",", "").split()[0])
                out[name] = round(v / 2**20, 1) if name.endswith("_mb") else v
    return out


def malloc_mb() -> dict:
    """glibc's ``mallinfo2`` (summed over every arena, MB): ``arena`` (taken from the system
    without ``mmap``), ``used`` (in use), ``free`` (freed, kept), ``mmap`` (large blocks)."""
    from backend.ctxrunner.memory import _libc
    libc = _libc()
    if libc is None:
        return {}
    i = libc.mallinfo2()
    return {k: round(v / 2**20, 1) for k, v in (("arena", i.arena), ("used", i.uordblks),
                                                 ("free", i.fordblks), ("mmap", i.hblkhd))}


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
            # no malloc_trim here: it would hand back what the end's RSS is compared with
            self.out.append({"rows": rows, "rss_mb": round(rss_mb(), 1), **self.extra()})
            self.out[-1].update(sqlite_mb=sqlite_mb(), malloc=malloc_mb(),
                                mappings=rss_by_mapping(), pymalloc=pymalloc_stats())
        elif self.snap is not None and not self.done and rows >= self.last:
            gc.collect()
            self.out.append({"rows": rows, "rss_mb": round(rss_mb(), 1), **self.extra()})
            self.out[-1].update(sqlite_mb=sqlite_mb(), malloc=malloc_mb(),
                                mappings=rss_by_mapping(), pymalloc=pymalloc_stats(),
                                trimmed_rss_mb=trimmed_rss_mb())
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


def update_publisher(ctx: Path):
    """The backend's publisher of update messages for ``ctx`` (``$AMORE_BROKER``), or None."""
    from backend.config import load_config
    from backend.notify.kafka import UpdatePublisher
    from amore_gui.application import dbread
    cfg = load_config(ctx)
    if not cfg.broker:
        return None
    con = dbread.connect(ctx)
    try:
        db_id = dbread.read_metadata(con).get("db_id")
    finally:
        con.close()
    return UpdatePublisher(cfg, db_id)


def write_runs(ctx: Path, n: int, rate: float, reloads: int = 0, publisher=None,
               columns: int = 0) -> None:
    """Write ``n`` runs at ``rate`` per second; with ``publisher`` (a broker) also announce
    every write with the backend's update messages, as the backend does. ``columns``: that
    many times a manual column is added and, a while later, deleted (as the soak's ``note``
    columns: a deleted column makes a GUI read its whole table again)."""
    import numpy as np
    from backend.ctxrunner.results import thumbnail_png
    from backend.store.manual import ManualStore
    from backend.store.writer import RunDB
    from backend.vocab import StoredValue, UpdateKind
    db = RunDB(ctx)
    m = ManualStore(db)

    def publish(kind, data):
        if publisher is not None:
            publisher.publish(kind, data)
    t_next = time.monotonic()
    for r in range(1, n + 1):
        db.ensure_run(PROPOSAL, r, start_time=time.time())
        publish(UpdateKind.RUN_VALUES_UPDATED, {"proposal": PROPOSAL, "run": r, "names": [],
                                                "status": "pending"})
        db.set_run_status(PROPOSAL, r, "processing")
        publish(UpdateKind.RUN_STATUS_CHANGED, {"proposal": PROPOSAL, "run": r,
                                                "status": "processing"})
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
        publish(UpdateKind.RUN_VALUES_UPDATED, {"proposal": PROPOSAL, "run": r,
                                                "names": list(vals), "status": "done"})
        if reloads and r % max(1, n // reloads) == 0:
            # a context edit: the variables change, every front-end reads its table again
            db.set_variables(variables(r))
            publish(UpdateKind.VARIABLES_CHANGED, {"names": [v.name for v in variables(r)]})
        step = n // (2 * columns + 1) if columns else 0
        if step and r % step == 0 and r // step <= 2 * columns:
            k = (r // step + 1) // 2
            if (r // step) % 2:
                m.add_column(f"note{k}", "string")
            else:
                m.delete(f"note{k}")
            publish(UpdateKind.VARIABLES_CHANGED, {"names": [f"note{k}"]})
        if r % 4 == 0:
            m.set_values([r], "distance", f"{r % 50 + 1} mm", via="api")
            publish(UpdateKind.RUN_VALUES_UPDATED, {"proposal": PROPOSAL, "run": r,
                                                    "names": ["distance"], "manual": True})
        t_next += 1.0 / rate
        time.sleep(max(0.0, t_next - time.monotonic()))
    db.close()
    if publisher is not None:
        publisher.flush()


# --- the front-ends --------------------------------------------------------------------------

def gui_child(ctx: Path, first: int, last: int, edits: int = 0) -> None:
    """The GUI following ``ctx`` (over Kafka with a broker, else watching the database);
    ``edits``: every ``edits``-th run gets a manual value and a comment typed into its cells
    (the model's edit path, as the soak's GUIs)."""
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
                     use_kafka=os.environ.get("AMORE_BROKER") != "none")
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
    edited = {"upto": 0}

    def type_edits(rows: int) -> None:
        from qtpy.QtCore import Qt
        model = win.model
        while edits and edited["upto"] + edits <= rows:
            edited["upto"] += edits
            run = edited["upto"]
            row = model.view_row_of(PROPOSAL, run)
            if row < 0:
                continue
            for name, value in (("sample", f"sample {run % 9}"), ("#comment", f"note {run}")):
                col = model.column_of(name)
                if col >= 0:
                    model.setData(model.index(row, col), value, Qt.EditRole)

    def tick():
        rows = win.model.rowCount()
        type_edits(rows)
        if probe.check(rows):
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
    server = prepare([ctx], port=port, use_kafka=os.environ.get("AMORE_BROKER") != "none")
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


def start_viewers(port: int, slug: str, n: int, reconnect: bool = False,
                  thumbs: int = 0) -> None:
    """``n`` WebSocket viewers of the push channel in a thread of this process (not the
    server's), as the soak's: each reads every page of the table again when told to reload.
    ``reconnect``: a viewer closes its connection at a reload and opens a new one with its
    last number and the epoch (as the soak's viewers and the page do); ``thumbs``: the first
    viewer also fetches the thumbnails of the newest ``thumbs`` rows after each read of the
    table and of each new row (as the page in Chromium does)."""
    api = f"http://127.0.0.1:{port}/api/d/{slug}/"

    def get(url):
        import urllib.request
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.read()

    def thumbnails(ids):
        for rid in ids:
            get(api + f"thumb?id={rid}&name=image")

    def table(pictures: bool):
        below, first, ids = None, None, []
        while True:
            page = json.loads(get(api + "table" + ("" if below is None else f"?below={below}")))
            first = first or page
            if pictures and len(ids) < thumbs:
                ids += [r["id"] for r in page["rows"][:thumbs - len(ids)]]
            below = page.get("next")
            if below is None:
                thumbnails(ids)
                return first["epoch"], first["seq"]

    async def viewer(i: int):
        import websockets
        pictures = thumbs > 0 and i == 0
        epoch = seq = None
        while True:
            try:
                if epoch is None:
                    epoch, seq = await asyncio.to_thread(table, pictures)
                url = api.replace("http://", "ws://") + "live"
                if reconnect:
                    url += f"?since={seq}&epoch={epoch}"
                async with websockets.connect(url, max_size=None) as ws:
                    async for text in ws:
                        m = json.loads(text)
                        if m.get("type") == "reload":
                            if reconnect:
                                epoch = None
                                break
                            await asyncio.to_thread(table, pictures)
                        elif m.get("type") == "rows":
                            seq = max(seq or 0, m["seq"])
                            if pictures:
                                await asyncio.to_thread(thumbnails, [r["id"] for r in m["rows"]
                                                                     if r["sc"] == "done"])
            except Exception:
                await asyncio.sleep(0.5)

    async def main():
        await asyncio.gather(*(viewer(i) for i in range(n)))
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
    ap.add_argument("--broker", action="store_true",
                    help="a tansu broker: the writer announces every write with update "
                         "messages and the front-end follows them over Kafka (as in the soak)")
    ap.add_argument("--reconnect", action="store_true",
                    help="viewers open a new WebSocket at each reload (as the soak's)")
    ap.add_argument("--thumbs", type=int, default=0,
                    help="the first viewer fetches the thumbnails of this many rows (the page)")
    ap.add_argument("--columns", type=int, default=0,
                    help="a manual column added and later deleted, this many times (the GUI "
                         "reads its whole table again at each deletion)")
    ap.add_argument("--edits", type=int, default=0,
                    help="gui: a manual value and a comment typed into every N-th run's cells")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        ctx = Path(a.child[1])
        if a.child[0] == "gui":
            gui_child(ctx, a.first, a.runs, a.edits)
        else:
            web_child(ctx, a.first, a.runs, a.port)
        return 0
    work = a.work or Path(tempfile.mkdtemp(prefix="soak-growth-"))
    ctx = work / "ctx"
    broker = None
    os.environ["AMORE_BROKER"] = "none"
    make_context(ctx)       # before the broker: a failure here leaves no broker running
    if a.broker:
        from tests.kafka_broker import TansuBroker, tansu_binary
        work.mkdir(parents=True, exist_ok=True)
        broker = TansuBroker(tansu_binary(), work / "tansu.log")
        os.environ["AMORE_BROKER"] = broker.start()
    env = dict(os.environ, SOAK_GROWTH_TRACE="1" if a.trace else "", AMORE_CONFIG_DIR=str(work / "config"),
               AMORE_WEB_ACCESS=str(work / "config" / "web-access.json"))
    child = subprocess.Popen([sys.executable, __file__, "--front", a.front, "--runs", str(a.runs),
                              "--from", str(a.first), "--viewers", str(a.viewers), "--port",
                              str(a.port), "--edits", str(a.edits), "--child", a.front, str(ctx)], env=env)
    time.sleep(4)
    if a.front == "web" and a.viewers:
        from amore_gui.web.data import directory_label
        start_viewers(a.port, directory_label(ctx)[0], a.viewers, a.reconnect, a.thumbs)
        time.sleep(2)
    t0 = time.monotonic()
    try:
        write_runs(ctx, a.runs, a.rate, a.reloads, update_publisher(ctx) if broker else None,
                   a.columns)
        print(f"wrote {a.runs} runs in {time.monotonic() - t0:.0f} s", flush=True)
        try:
            child.wait(300)
        except subprocess.TimeoutExpired:
            child.terminate()
            child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
