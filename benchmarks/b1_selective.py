"""B1 after a change: ``amore-proto reprocess all`` computing only what is stale, against
``reprocess all --force`` on the same 40 runs x 11 variables (issue 22).

Per repeat, on a fresh ``amore-proto init`` filled by an untimed ``reprocess 1-40``:

1. ``reprocess all --force``: every value computed again (B1 as ``b1_reprocess.py`` times it);
2. ``reprocess all`` with nothing changed: says so (target at most 1 s);
3. one light variable's function changed in the context file (``motor_range``: the same result
   written differently), then ``reprocess all``: only its 40 values are computed (target at most
   25 % of 1.). The table also says how many values were computed and the most worker requests
   (evaluations) one run got, i.e. how many times a run was opened (target 1).

    python benchmarks/b1_selective.py [--repeats 3] [--runs 1-40] [--out FILE.json]

Run it under the lock on a shared machine: ``flock /tmp/amore-heavy.lock ...``.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from common import (BENCH_CONTEXT, PROPOSAL, bench_env, measure, med, print_table, rng,
                    warm_proposal, work_dir)

#: The change of step 3: same value, different code.
OLD = "return float(pos.max() - pos.min())"
NEW = "return float(np.ptp(pos))"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", default="1-40")
    ap.add_argument("--out", help="write all measurements to this JSON file")
    a = ap.parse_args()
    first, last = warm_proposal(a.runs)
    n = last - first + 1
    env = bench_env()
    res = {"forced": [], "nothing": [], "changed": [], "computed": [], "opened_max": [],
           "runs": n}
    amore = [sys.executable, "-m", "amore.cli"]
    for rep in range(1, a.repeats + 1):
        ctx = work_dir() / "b1sel" / f"ctx{rep}"
        if ctx.exists():
            subprocess.run(["rm", "-rf", str(ctx)], check=True)
        subprocess.run(amore + ["init", str(ctx), "--proposal", str(PROPOSAL), "--context",
                                str(BENCH_CONTEXT)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        subprocess.run(amore + ["reprocess", f"{first}-{last}", "-d", str(ctx), "--quiet"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        forced = measure(amore + ["reprocess", "all", "--force", "-d", str(ctx), "--quiet"],
                         env=env)
        nothing = measure(amore + ["reprocess", "all", "-d", str(ctx), "--quiet"], env=env)
        assert "Nothing to reprocess" in nothing["output"], nothing["output"]
        f = ctx / "context.py"
        text = f.read_text()
        assert OLD in text, f"{OLD!r} not in {f}"
        f.write_text(text.replace(OLD, NEW))
        t0 = time.time()
        changed = measure(amore + ["reprocess", "all", "-d", str(ctx), "--quiet"], env=env)
        computed, opened = count_since(ctx, t0)
        res["forced"].append(forced["wall_s"])
        res["nothing"].append(nothing["wall_s"])
        res["changed"].append(changed["wall_s"])
        res["computed"].append(computed)
        res["opened_max"].append(opened)
        print(f"repeat {rep}: forced {forced['wall_s']:.2f} s, nothing stale "
              f"{nothing['wall_s']:.2f} s, one function changed {changed['wall_s']:.2f} s "
              f"({computed} values, each run opened at most {opened} time(s))", flush=True)
    fm, cm, nm = med(res["forced"]), med(res["changed"]), med(res["nothing"])
    print_table(f"B1 after a change: {n} runs x 11 variables (median of {a.repeats})",
                ["measure", "value", "range", "target"], [
                    ["`reprocess all --force` (every value)", f"**{fm:.2f} s**",
                     rng(res["forced"]), ""],
                    ["`reprocess all`, nothing changed", f"**{nm:.2f} s**", rng(res["nothing"]),
                     "<= 1 s " + ("met" if nm <= 1 else "MISSED")],
                    ["`reprocess all`, one light function changed", f"**{cm:.2f} s**",
                     rng(res["changed"]), ""],
                    ["ratio changed / forced", f"{cm / fm:.2f}", "",
                     "<= 0.25 " + ("met" if cm / fm <= 0.25 else "MISSED")],
                    ["values computed after the change", f"{max(res['computed'])}", "",
                     f"= {n}"],
                    ["most times one run was opened", f"{max(res['opened_max'])}", "", "<= 1"],
                ])
    out = a.out or work_dir() / "b1sel" / "results.json"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=1))


def count_since(ctx: Path, t0: float) -> tuple[int, int]:
    """Values stored by evaluations started after ``t0`` and the most such evaluations (worker
    requests: run openings) of one run."""
    con = sqlite3.connect(ctx / "runs.sqlite")
    try:
        values = con.execute("SELECT COUNT(*) FROM run_values v JOIN evaluations e "
                             "ON e.id = v.evaluation WHERE e.started_at >= ?", (t0,)).fetchone()[0]
        per_run = con.execute("SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM evaluations "
                              "WHERE started_at >= ? GROUP BY proposal, run)", (t0,)).fetchone()[0]
    finally:
        con.close()
    return values, per_run or 0


if __name__ == "__main__":
    main()
