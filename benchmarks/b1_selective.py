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
                                      [--tree NAME=DIR ...] [--backend none|running|both]

By default no backend runs meanwhile: the command computes everything in worker processes of
its own. ``--backend running`` starts ``amore-proto listen`` on the directory first (as during a
beamtime; no run source), so that ``reprocess all`` hands what is stale to the backend's warm
workers when it is little work (``[processing] handover_seconds``; ``--force`` is always the
command's own); ``--backend both`` measures both ways in each repeat, one column each.
``--tree NAME=DIR`` (repeatable) measures, in each
repeat one after the other, the code of other checkouts of AMORE (e.g. ``git archive main |
tar -x -C /tmp/before``) in place of this one: one column each. Each checkout's bytecode is
written first (:func:`common.compile_code`), as an installed AMORE has it. ``--out`` (default
``$BENCH_WORK/b1sel/results.json``): per checkout (``this`` without ``--tree``) the lists
``forced``, ``nothing``, ``changed`` (s), ``ratio``, ``computed``, ``opened_max``; and ``runs``.

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

from common import (BENCH_CONTEXT, PROPOSAL, bench_env, compile_code, measure, med,
                    print_table, rng, warm_proposal, work_dir)

#: The change of step 3: same value, different code.
OLD = "return float(pos.max() - pos.min())"
NEW = "return float(np.ptp(pos))"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", default="1-40")
    ap.add_argument("--out", help="write all measurements to this JSON file")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                    help="measure the AMORE code in checkout DIR (side by side, repeatable)")
    ap.add_argument("--backend", choices=["none", "running", "both"], default="none",
                    help="a backend of the directory running meanwhile (both: each way)")
    a = ap.parse_args()
    trees = [("this", None)] if not a.tree else [tuple(t.split("=", 1)) for t in a.tree]
    modes = {"none": [False], "running": [True], "both": [False, True]}[a.backend]
    trees = [(name + (", backend running" if running else ""), tree, running)
             for name, tree in trees for running in modes]
    first, last = warm_proposal(a.runs)
    n = last - first + 1
    env = bench_env()
    for tree in {tree for _name, tree, _running in trees}:
        compile_code(tree)
    res = {name: {"forced": [], "nothing": [], "changed": [], "ratio": [], "computed": [],
                  "opened_max": [], "handed": []} for name, _, _ in trees}
    res["runs"] = n
    amore = [sys.executable, "-m", "amore.cli"]
    for rep in range(1, a.repeats + 1):
        for i, (name, tree, running) in enumerate(trees):
            tenv = env if tree is None else dict(env, PYTHONPATH=str(Path(tree).resolve()))
            one = measure_one(amore, work_dir() / "b1sel" / f"ctx{rep}-{i}", first, last,
                              tenv, tree, running)
            for k, v in one.items():
                res[name][k].append(v)
            print(f"repeat {rep}, {name}: forced {one['forced']:.2f} s, nothing stale "
                  f"{one['nothing']:.2f} s, one function changed {one['changed']:.2f} s "
                  f"(ratio {one['ratio']:.2f}; {one['computed']} values, each run opened at "
                  f"most {one['opened_max']} time(s)"
                  f"{'; in the running backend' if one['handed'] else ''})", flush=True)
    rows = []
    for label, key, target in [
            ("`reprocess all --force` (every value)", "forced", None),
            ("`reprocess all`, nothing changed", "nothing", 1.0),
            ("`reprocess all`, one light function changed", "changed", None),
            ("ratio changed / forced (each repeat)", "ratio", 0.25)]:
        row = [label]
        for name, _, _ in trees:
            xs = res[name][key]
            unit = "" if key == "ratio" else " s"
            row.append(f"**{med(xs):.2f}{unit}** {rng(xs)}")
        worst = max(med(res[name][key]) for name, _, _ in trees)
        row.append("" if target is None else f"<= {target:g}" + (
            "" if len(trees) > 1 else (" met" if worst <= target else " MISSED")))
        rows.append(row)
    rows.append(["values computed after the change"]
                + [f"{max(res[name]['computed'])}" for name, _, _ in trees] + [f"= {n}"])
    rows.append(["after the change, computed by the running backend"]
                + [f"{sum(res[name]['handed'])} of {len(res[name]['handed'])}"
                   for name, _, _ in trees] + [""])
    rows.append(["most times one run was opened"]
                + [f"{max(res[name]['opened_max'])}" for name, _, _ in trees] + ["<= 1"])
    print_table(f"B1 after a change: {n} runs x 11 variables (median [range] of {a.repeats})",
                ["measure"] + [name for name, _, _ in trees] + ["target"], rows)
    out = a.out or work_dir() / "b1sel" / "results.json"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=1))


def measure_one(amore: list[str], ctx: Path, first: int, last: int, env: dict,
                tree: str | None, backend: bool = False) -> dict:
    """One repeat on a fresh context directory ``ctx`` (``backend``: with ``amore-proto listen``
    running on it): the three timings (seconds), their ratio, what the changed one computed."""
    if ctx.exists():
        subprocess.run(["rm", "-rf", str(ctx)], check=True)
    subprocess.run(amore + ["init", str(ctx), "--proposal", str(PROPOSAL), "--context",
                            str(BENCH_CONTEXT)], check=True, env=env, cwd=tree,
                   stdout=subprocess.DEVNULL)
    subprocess.run(amore + ["reprocess", f"{first}-{last}", "-d", str(ctx), "--quiet"],
                   check=True, env=env, cwd=tree, stdout=subprocess.DEVNULL)
    listener = start_backend(amore, ctx, env, tree) if backend else None
    try:
        return _measure_one(amore, ctx, env, tree)
    finally:
        if listener is not None:
            listener.terminate()
            listener.wait(30)


def start_backend(amore: list[str], ctx: Path, env: dict, tree: str | None):
    """``amore-proto listen ctx`` in the background, once its log says it is ready."""
    log = ctx / "amore.log"
    seen = log.stat().st_size if log.exists() else 0
    proc = subprocess.Popen(amore + ["listen", str(ctx)], env=env, cwd=tree,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (log.exists() and " Ready" in log.read_bytes()[seen:].decode(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the backend did not start (see {log})")
        time.sleep(0.1)
    time.sleep(2.0)   # its workers warmed up
    return proc


def _measure_one(amore: list[str], ctx: Path, env: dict, tree: str | None) -> dict:
    forced = measure(amore + ["reprocess", "all", "--force", "-d", str(ctx), "--quiet"],
                     env=env, cwd=tree)
    nothing = measure(amore + ["reprocess", "all", "-d", str(ctx), "--quiet"], env=env,
                      cwd=tree)
    assert "Nothing to reprocess" in nothing["output"], nothing["output"]
    f = ctx / "context.py"
    text = f.read_text()
    assert OLD in text, f"{OLD!r} not in {f}"
    f.write_text(text.replace(OLD, NEW))
    t0 = time.time()
    changed = measure(amore + ["reprocess", "all", "-d", str(ctx), "--quiet"], env=env,
                      cwd=tree)
    computed, opened = count_since(ctx, t0)
    return {"forced": forced["wall_s"], "nothing": nothing["wall_s"],
            "changed": changed["wall_s"], "ratio": changed["wall_s"] / forced["wall_s"],
            "computed": computed, "opened_max": opened,
            "handed": "running backend" in changed["output"]}


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
