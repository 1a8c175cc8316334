"""Extra: a detector-bound variable - AMORE's own overhead against just reading the data.

One run with a *filled* AGIPD module (``backend.testing.mockdata.write_run(..., agipd_modules=1,
fill_detector=True, ntrains=300)``: raw + corrected, 4 frames per train, ~300 MB each) is written
into its own proposal (default 9001) under the data root, so the shared benchmark proposal is
untouched. The variable is the mean of the module's corrected data over all 300 trains::

    @Variable(title="AGIPD/Module 0 mean", data="proc")
    def agipd_mean(run):
        return float(run[SRC, "image.data"].ndarray().mean())

Measured alternately, after one untimed warm-up each, page cache warm:

* ``cli``: ``amore-proto reprocess R`` in a fresh process (start-up, context worker, the variable,
  HDF5 + SQLite write) against a bare ``python -c`` that opens the same run with extra-data and
  computes the same mean (the issue's target: AMORE / bare <= 1.05);
* ``backend``: the running backend's path (``RunProcessor.process`` with a warm worker process,
  as ``amore-proto listen`` does for every run) against the same bare code in an already
  started Python process (both warm: imports done);
* ``handoff``: as ``cli`` while a backend runs on the directory: the command hands the run to
  the backend's warm workers (issue 9's target: <= 1.2x the bare code);
* ``cold``: as ``cli``, but the run's files are evicted from the page cache
  (``posix_fadvise(DONTNEED)``, only these files) before each measurement.

    python benchmarks/b4_detector.py [--repeats 5] [--pulses 4] [--proposal 9001] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from common import REPO, bench_env, data_root, measure, med, print_table, rng, work_dir

sys.path.insert(0, str(REPO))

RUN = 1
SRC = "MID_DET_AGIPD1M-1/DET/0CH0:xtdf"
CONTEXT = textwrap.dedent(f'''\
    """Detector-bound benchmark variable: mean of one filled AGIPD module over the run."""
    from damnit_ctx import Variable

    SRC = "{SRC}"


    @Variable(title="AGIPD/Module 0 mean", data="proc")
    def agipd_mean(run):
        return float(run[SRC, "image.data"].ndarray().mean())
''')
BARE = textwrap.dedent(f'''\
    import sys
    import extra_data
    run = extra_data.open_run(int(sys.argv[1]), {RUN}, data="all")
    print(float(run["{SRC}", "image.data"].ndarray().mean()))
''')
WARM = textwrap.dedent(f'''\
    """Both warm: RunProcessor with a started worker vs the bare code in this process."""
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, {str(REPO)!r})
    from backend.config import load_config
    from backend.processing.local import WorkerPool
    from backend.processing.runpath import RunProcessor
    from backend.store.writer import RunDB
    import extra_data

    ctx, proposal, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    cfg = load_config(ctx)
    db = RunDB(ctx)
    pool = WorkerPool(ctx, cfg, 1)
    pool.start()
    proc = RunProcessor(ctx, cfg, db, pool)
    assert proc.load_context() is None

    def amore():
        t = time.perf_counter()
        out = proc.process(proposal, {RUN}, "all")
        assert out.status == "done" and not out.n_errors, out
        return time.perf_counter() - t

    def bare():
        t = time.perf_counter()
        run = extra_data.open_run(proposal, {RUN}, data="all")
        float(run["{SRC}", "image.data"].ndarray().mean())
        return time.perf_counter() - t

    amore(), bare()                      # warm-up
    a, b = [], []
    for i in range(n):
        a.append(amore())
        b.append(bare())
    pool.stop()
    print(json.dumps({{"amore": a, "bare": b}}))
''')


def ensure_run(proposal: int, pulses: int, ntrains: int = 300) -> Path:
    from backend.testing.mockdata import proposal_dir, write_run
    pdir = proposal_dir(data_root(), "MID", "202201", proposal)
    params = {"run": RUN, "ntrains": ntrains, "agipd_modules": 1, "fill_detector": True,
              "pulses": pulses}
    marker = pdir / ".bench-params.json"
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return pdir
    print(f"writing run {RUN} of proposal {proposal} with a filled AGIPD module ...", flush=True)
    write_run(pdir, proposal, RUN, ntrains=ntrains, agipd_modules=1, fill_detector=True,
              pulses=pulses)
    marker.write_text(json.dumps(params))
    return pdir


def run_files(pdir: Path) -> list[Path]:
    return sorted(pdir.glob(f"raw/r{RUN:04d}/*.h5")) + sorted(pdir.glob(f"proc/r{RUN:04d}/*.h5"))


def evict(files) -> None:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(files) -> None:
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 22):
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pulses", type=int, default=4, help="AGIPD frames per train")
    ap.add_argument("--proposal", type=int, default=9001)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache variant")
    ap.add_argument("--out")
    a = ap.parse_args()
    pdir = ensure_run(a.proposal, a.pulses)
    files = run_files(pdir)
    size_mb = sum(f.stat().st_size for f in files) / 2**20
    w = work_dir() / "b4_detector"
    subprocess.run(["rm", "-rf", str(w)])
    w.mkdir(parents=True)
    (w / "agipd_context.py").write_text(CONTEXT)
    ctx = w / "ctx"
    env = bench_env({"AMORE_BROKER": "none"})
    subprocess.run([sys.executable, "-m", "amore.cli", "init", str(ctx), "--proposal",
                    str(a.proposal), "--context", str(w / "agipd_context.py")], check=True,
                   env=env, stdout=subprocess.DEVNULL)
    cli = [sys.executable, "-m", "amore.cli", "reprocess", str(RUN), "--dir", str(ctx), "--quiet"]
    bare = [sys.executable, "-c", BARE, str(a.proposal)]
    warm(files)
    measure(cli, env=env)                                   # warm-ups
    expected = float(measure(bare, env=env)["output"].strip().splitlines()[-1])
    res = {"params": vars(a), "data_mb": size_mb, "files": len(files),
           "cli": {"amore": [], "bare": []}, "cold": {"amore": [], "bare": []}}
    for i in range(a.repeats):
        res["cli"]["amore"].append(measure(cli, env=env)["wall_s"])
        res["cli"]["bare"].append(measure(bare, env=env)["wall_s"])
    import sqlite3
    con = sqlite3.connect(ctx / "runs.sqlite")
    stored = con.execute("SELECT value FROM run_values WHERE name = 'agipd_mean'").fetchone()[0]
    con.close()
    res["value_ok"] = abs(stored - expected) <= 1e-9 * max(1.0, abs(expected))
    p = subprocess.run([sys.executable, "-c", WARM, str(ctx), str(a.proposal), str(a.repeats)],
                       env=env, capture_output=True, text=True, check=True)
    res["backend"] = json.loads(p.stdout.strip().splitlines()[-1])
    # the same command while a backend runs on this directory: handed to its warm workers
    (ctx / "amore.toml").write_text("[watch]\nenabled = false\n")
    backend = subprocess.Popen([sys.executable, "-m", "amore.cli", "listen", str(ctx)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        import time
        deadline = time.monotonic() + 120
        while " Ready" not in ((ctx / "amore.log").read_text() if (ctx / "amore.log").exists() else ""):
            if time.monotonic() > deadline or backend.poll() is not None:
                raise RuntimeError("the backend did not start")
            time.sleep(0.1)
        out = measure(cli, env=env)["output"]                # warm-up (and check)
        if "running backend" not in out:
            raise RuntimeError(f"not handed to the backend: {out}")
        res["handoff"] = {"amore": [], "bare": []}
        for i in range(a.repeats):
            res["handoff"]["amore"].append(measure(cli, env=env)["wall_s"])
            res["handoff"]["bare"].append(measure(bare, env=env)["wall_s"])
    finally:
        backend.terminate()
        backend.wait(30)
    if not a.no_cold:
        for i in range(a.repeats):
            evict(files)
            res["cold"]["amore"].append(measure(cli, env=env)["wall_s"])
            evict(files)
            res["cold"]["bare"].append(measure(bare, env=env)["wall_s"])
        warm(files)
    rows = []
    for key, label in (("cli", "`amore-proto reprocess` vs bare `python -c` (fresh processes, warm cache)"),
                       ("handoff", "`amore-proto reprocess` handed to the running backend vs bare `python -c`"),
                       ("backend", "running backend (warm worker) vs bare code in a warm process"),
                       ("cold", "as the first, files evicted from the page cache")):
        am, bm = res[key]["amore"], res[key]["bare"]
        if not am:
            continue
        res[key]["ratio"] = med(am) / med(bm)
        rows.append([label, f"{med(am):.3f} s {rng(am, 3)}", f"{med(bm):.3f} s {rng(bm, 3)}",
                     f"**{med(am) / med(bm):.2f}**", f"{(med(am) - med(bm)) * 1e3:+.0f} ms"])
    print_table(f"Detector-bound variable: mean of 1 filled AGIPD module, 300 trains x {a.pulses} "
                f"frames ({size_mb:.0f} MB in {len(files)} files), median of {a.repeats}",
                ["measure", "AMORE", "bare", "ratio", "overhead"], rows)
    print(f"\nvalue in runs.sqlite equals the bare result: {res['value_ok']}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
