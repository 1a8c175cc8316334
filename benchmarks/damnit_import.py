"""Import of a large DAMNIT directory: ``amore-proto import-damnit`` on a 1,000-run directory with
50 variables, made with DAMNIT's own ``DamnitDB`` API (the ``damnit`` package the test extras
install). Target: at most 30 s for the import.

The directory: per run 50 computed values - 38 numbers, 5 texts, 3 thumbnails (PNG), 2
trendlines (DAMNIT's ``.npy`` of x and y), 2 errors - plus 3 user-editable variables with a
value for every run, a run comment on every tenth run and 50 time comments. No run files (their
copy is a plain file copy, measured by the disk, not by AMORE).

    python benchmarks/damnit_import.py [--runs 1000] [--variables 50] [--repeats 3]
        [--out FILE.json]

Prints a table: the import (median and range of the repeats, the target, whether it is met)
and an ``--update`` that finds nothing new.
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import PROPOSAL, bench_env, measure, med, print_table, rng, work_dir  # noqa: E402

TARGET_S = 30.0


def make_damnit_dir(path: Path, nruns: int, nvars: int) -> dict:
    """The DAMNIT directory, through DamnitDB (DAMNIT 0.4.0's API). Returns its counts."""
    import numpy as np
    from damnit.backend.db import DamnitDB, ReducedData
    from damnit.backend.user_variables import UserEditableVariable
    from PIL import Image

    path.mkdir(parents=True)
    (path / "context.py").write_text("from damnit_ctx import Variable\n")
    db = DamnitDB(path / "runs.sqlite", create=True)
    db.metameta["proposal"] = PROPOSAL
    kinds = (["number"] * 38 + ["text"] * 5 + ["thumbnail"] * 3 + ["trend"] * 2 + ["error"] * 2)
    kinds = (kinds * (nvars // len(kinds) + 1))[:nvars]
    names = [f"{k}_{i:02d}" for i, k in enumerate(kinds)]
    db.update_computed_variables({n: {"title": n.replace("_", " ").title(), "description": None,
                                      "tags": ["bench"], "attributes": None, "type": None}
                                  for n in names})
    for name, typ in (("good", "boolean"), ("att", "integer"), ("note", "string")):
        db.add_user_variable(UserEditableVariable(name, name.title(), typ))
    buf = io.BytesIO()
    Image.fromarray((np.arange(64 * 64) % 255).astype(np.uint8).reshape(64, 64)).save(buf, "PNG")
    png = buf.getvalue()
    rng_ = np.random.default_rng(0)
    values = 0
    for r in range(1, nruns + 1):
        red = {}
        for name, kind in zip(names, kinds):
            if kind == "number":
                red[name] = ReducedData(float(rng_.normal()), attributes={"units": "uJ"})
            elif kind == "text":
                red[name] = ReducedData(f"sample {r % 7}")
            elif kind == "thumbnail":
                red[name] = ReducedData(png)
            elif kind == "trend":
                xy = np.vstack([np.arange(150.0), np.sin(np.arange(150.0) / 10)])
                red[name] = ReducedData(xy, summary_type="trendline")
            else:
                red[name] = ReducedData(None, attributes={"error": "no data", "error_cls": "KeyError"})
        red["good"] = ReducedData(r % 2 == 0)
        red["att"] = ReducedData(r % 5)
        red["note"] = ReducedData(f"note {r}")
        if r % 10 == 0:
            red["comment"] = ReducedData(f"run {r} looked fine")
        db.set_variables(PROPOSAL, r, red, provenance="context.py", start_time=1.7e9 + 60 * r)
        values += len(red)
    for i in range(50):
        db.add_standalone_comment(1.7e9 + 600 * i, f"shift note {i}")
    db.close()
    return {"runs": nruns, "variables": nvars, "values": values}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--variables", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)

    base = work_dir() / "damnit-import"
    shutil.rmtree(base, ignore_errors=True)
    src = base / "damnit"
    t0 = time.perf_counter()
    counts = make_damnit_dir(src, a.runs, a.variables)
    made_s = time.perf_counter() - t0
    env = bench_env()
    cmd = [sys.executable, "-m", "amore.cli", "import-damnit"]
    walls, rss = [], []
    for i in range(a.repeats):
        dest = base / f"amore-{i}"
        m = measure(cmd + [str(src), str(dest)], env=env)
        walls.append(m["wall_s"])
        rss.append(m["maxrss_single_mb"])
    upd = measure(cmd + [str(src), str(base / "amore-0"), "--update"], env=env)
    print(f"DAMNIT directory made with DamnitDB in {made_s:.1f} s: {counts['runs']} runs, "
          f"{counts['variables']} variables (+3 user-editable), {counts['values']} values")
    ok = med(walls) <= TARGET_S
    print_table(f"amore-proto import-damnit, {counts['runs']} runs x {counts['variables']} "
                f"variables ({a.repeats} repeats)",
                ["step", "seconds (median)", "range", "peak RSS MB", "target", "met"],
                [["import", f"{med(walls):.1f}", rng(walls, 1), f"{med(rss):.0f}",
                  f"<= {TARGET_S:.0f} s", "yes" if ok else "NO"],
                 ["--update (nothing new)", f"{upd['wall_s']:.1f}", "",
                  f"{upd['maxrss_single_mb']:.0f}", "", ""]])
    if a.out:
        a.out.write_text(json.dumps({"counts": counts, "import_s": walls,
                                     "update_s": upd["wall_s"], "target_s": TARGET_S}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
