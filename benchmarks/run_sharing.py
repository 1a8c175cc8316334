"""A run shared between its worker and a forked copy while another worker is idle
(``[processing] processes_per_run = 2``, ``backend/ctxrunner/forked.py``) against the same runs
in one process (``processes_per_run = 1``).

The context file has two heavy groups (0.4 s and 0.25 s of sleep, each with a variable that
takes it through ``var#``) and a light variable; two workers, one run at a time. The first run
of each setting teaches the worker its variables' seconds and is not counted. Shared, a run
should take about its heavier group, not the sum of both (``tests/test_run_sharing.py`` checks
that the groups are computed by two processes; the seconds are here).

    python benchmarks/run_sharing.py [--runs 6] [--out FILE.json]

Prints a table (seconds per run as the backend's outcome gives them: median and range).
"""
from __future__ import annotations

import argparse
import sys
import textwrap

from common import PROPOSAL, REPO, Env, med, print_table, rng, save_json, scratch_dir

sys.path.insert(0, str(REPO))

CONTEXT = textwrap.dedent("""
    import time
    import numpy as np
    from amore.context import Variable

    @Variable(title="Heavy A")
    def heavy_a(run):
        time.sleep(0.4)
        return 1.0

    @Variable(title="A doubled")
    def after_a(run, a: "var#heavy_a"):
        return np.arange(10.0) * a

    @Variable(title="Heavy B")
    def heavy_b(run):
        time.sleep(0.25)
        return 2.0

    @Variable(title="B trend")
    def after_b(run, b: "var#heavy_b"):
        return np.ones((8, 8)) * b

    @Variable(title="Trains")
    def n_trains(run):
        return len(run.train_ids)
""")


def run_seconds(base, processes_per_run: int, runs: int) -> list[float]:
    from tests.conftest import start_processing
    env = Env(base)
    ctx = env.context("ctx", CONTEXT,
                      f"[processing]\njobs = 2\nprocesses_per_run = {processes_per_run}\n")
    env.runs(range(1, runs + 2), ntrains=20)
    _, pool, proc, err = start_processing(ctx, 2)
    out = []
    try:
        if err is not None:
            raise RuntimeError(err)
        for run in range(1, runs + 2):
            o = proc.process(PROPOSAL, run)
            if o.status != "done" or o.n_errors:
                raise RuntimeError(f"run {run}: {o}")
            if run > 1:                           # the first run teaches the seconds
                out.append(o.seconds)
    finally:
        pool.stop()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=6, help="runs timed per setting")
    ap.add_argument("--out", help="write all measurements to this JSON file")
    a = ap.parse_args()
    w = scratch_dir("run_sharing")
    res = {f"processes_per_run={n}": run_seconds(w / f"ppr{n}", n, a.runs) for n in (1, 2)}
    one, two = res["processes_per_run=1"], res["processes_per_run=2"]
    rows = [["1 (one process)", len(one), f"{med(one):.3f}", rng(one, 3)],
            ["2 (shared with a forked copy)", len(two), f"{med(two):.3f}", rng(two, 3)]]
    print_table("A run's seconds, shared or not (heavy groups of 0.4 s and 0.25 s)",
                ["processes_per_run", "runs", "median s", "range s"], rows)
    print(f"\nshared - one process: {med(two) - med(one):+.3f} s per run "
          f"(the test asserted at least 0.1 s less, first run against the second)")
    save_json(a.out, res)


if __name__ == "__main__":
    main()
