"""The soak's short version: a compressed beamtime with everything at once (``benchmarks/soak.py
--short``, about 4 minutes): the backend in its tmux session, two GUIs, the browser page and
viewers, the Slurm cluster, runs arriving over Kafka while the context file is edited (once
broken), manual values are set from the command line, the GUIs and the page, columns come and
go, runs are reprocessed on Slurm and locally (one reprocess cancelled), the broker restarts and
is cut off, and the backend is SIGKILLed and started again as a user would.

What must hold: every announced run has every value (or the error it should have), none is stuck
or computed more often than asked, every manual edit is in the history and the values derived
from the last manual values are current, the database passes its integrity check and ``verify``
finds nothing changed, no GUI or page crashed and each shows every run. (How memory, files and
times behave over the long run is measured by ``benchmarks/soak.py`` itself:
docs/reliability.rst.)
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: The soak runs 2.5 minutes of schedule; setting up (two GUIs, a browser), waiting for the
#: runs and the checks take as long again on a loaded machine.
pytestmark = pytest.mark.timeout(1500)


def test_a_short_beamtime_loses_nothing(slurm_cluster, tmp_path):
    out = tmp_path / "soak.json"
    p = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "soak.py"), "--short",
                          "--slurm-conf", str(slurm_cluster.conf), "--work", str(tmp_path / "work"),
                          "--json", str(out), "--plot", str(tmp_path / "soak.png")],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = p.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)          # the soak stops everything it started
        stdout, stderr = p.communicate(timeout=180)
    said = f"\n--- its output:\n{stdout[-6000:]}\n{stderr[-4000:]}"
    assert out.exists(), f"the soak did not finish (exit {p.returncode}){said}"
    r = json.loads(out.read_text())
    assert "error" not in r, r.get("error", "") + said
    c = r["checks"]
    n = c["runs_in_db"]
    # every check, so that one failing does not hide the others: (holds, what differed)
    checks = [
        (c["announced"] == r["plan"]["runs"],
         f"{c['announced']} of {r['plan']['runs']} runs announced"),
        (c["runs_lost"] == 0, f"runs announced but not in the database: {c['lost_run_numbers']}"),
        (c["values_lost"] == 0 and c["wrong"] == 0,
         f"{c['values_lost']} values lost, wrong ones: {c['wrong_examples']}"),
        (c["stuck"] == 0, f"runs not done: {c['stuck_runs']}"),
        (c["duplicates"] == 0, "computed more often than asked (run, full computations, allowed, "
                               f"Slurm): {c['duplicate_examples']}"),
        (c["edits_ok"] == c["edits"] > 0, f"{c['edits_ok']} of {c['edits']} edits made"),
        (set(c["edits_by"]) == {"cli", "gui1", "gui2", "web"},
         f"edits made by {c['edits_by']}"),
        (c["edits_missing"] == 0, f"edits not in the history: {c['edits_missing_examples']}"),
        (c["integrity"] == "ok", f"integrity_check: {c['integrity']}"),
        (c["verify_rc"] == 0, f"verify found changes: {c['verify_tail']}"),
        (c["gui_crashes"] == 0 and c["page_crashes"] == 0 and c["web_alive"],
         f"GUIs crashed: {c['gui_crashes']}, page: {c['page_crashes']}, web server alive: "
         f"{c['web_alive']}"),
        (c["gui_exceptions"] == 0, f"exceptions in the GUIs: {c['gui_exception_examples']}"),
        (c["gui_rows"] == {"gui1": n, "gui2": n}, f"the GUIs show {c['gui_rows']} of {n} runs"),
        (c["page_rows"] == n and c["page_wrong_status"] == 0,
         f"the page shows {c['page_rows']} runs, {c['page_wrong_status']} with another status"),
        (c["viewers_complete"] == c["viewers"],
         f"{c['viewers_complete']} of {c['viewers']} viewers got every run"),
        ([s["how"] for s in c["backend_starts"]] == ["cli", "cli", "gui"]
         and all(s["ok"] and s["ready"] for s in c["backend_starts"]),
         f"backend starts: {c['backend_starts']}"),
        (not c["problems"], f"problems during the soak: {c['problems']}"),
    ]
    failed = [what for holds, what in checks if not holds]
    assert not failed, "\n".join(failed) + said
    assert p.returncode == 0, said
