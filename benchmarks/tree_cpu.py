"""The wall time and the CPU time of a command and of every process it starts (the context
file's workers too, which outlive the command by a moment): on a busy machine the CPU time
drifts far less than the wall time, and on a few cores it says how far the wall time can go
down.

    python benchmarks/tree_cpu.py COMMAND [ARGS...]

Prints ``wall W s, CPU of the tree C s``. Linux only (this process becomes the child subreaper
of what the command starts, and waits for all of it).
"""
from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    if ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("tree_cpu: cannot become a child subreaper (Linux only)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - t0
    while True:   # what the command left running (its workers ending) is counted too
        try:
            os.wait()
        except ChildProcessError:
            break
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"wall {wall:.2f} s, CPU of the tree {r.ru_utime + r.ru_stime:.2f} s"
          + (f" (exit {rc})" if rc else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
