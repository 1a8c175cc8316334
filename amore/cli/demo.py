"""``amore-proto demo``: AMORE's main job on a built-in demo proposal.

Writes a realistic demo proposal (:mod:`backend.testing.mockdata`) under ``DIR/data``, creates its
context directory ``<proposal>/usr/Shared/amore-proto`` with the demo context file, starts the backend
(``amore-proto listen``) and plays the facility: every ``--interval`` seconds a new run is written
and announced (a ``migration_complete`` Kafka event when a broker is configured and reachable,
otherwise the backend's directory watcher sees it). The run table is printed as it fills.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from backend.contextdir import ContextDir
from backend.procs import stop_process_group, wait_for_log_line
from backend.vocab import RunStatus

DEMO_PROPOSAL = 9999
DEMO_INSTRUMENT = "MID"
DEMO_CYCLE = "202601"


def demo_paths(base: Path) -> dict[str, Path]:
    """Locations of the demo: ``base``, ``data_root``, ``proposal_dir``, ``context_dir``."""
    from backend.config import CONTEXT_SUBDIR
    from backend.testing.mockdata import proposal_dir
    data_root = base / "data"
    pdir = proposal_dir(data_root, DEMO_INSTRUMENT, DEMO_CYCLE, DEMO_PROPOSAL)
    return {"base": base, "data_root": data_root, "proposal_dir": pdir,
            "context_dir": pdir / CONTEXT_SUBDIR}


def prepare_demo(base: Path) -> dict[str, Path]:
    """Create the demo proposal tree and its context directory (idempotent)."""
    from backend.store.init import init_context_dir
    import context_templates

    paths = demo_paths(base)
    ctx = paths["context_dir"]
    (paths["proposal_dir"] / "raw").mkdir(parents=True, exist_ok=True)
    (base / "sw").mkdir(parents=True, exist_ok=True)
    paths_in = ContextDir(ctx)
    if not paths_in.context_file.exists():
        init_context_dir(ctx, DEMO_PROPOSAL, context_file=context_templates.path("demo"))
    toml = paths_in.config_file
    if not toml.exists():
        toml.write_text(f'# Demo settings: runs are announced 1 s after their files are written\n'
                        f'[data]\nroot = "{paths["data_root"]}"\n\n'
                        f'[watch]\nquiet_seconds = 1.0\npoll_seconds = 0.2\n')
    return paths


def demo_env(paths: dict[str, Path]) -> dict[str, str]:
    env = dict(os.environ)
    env["EXTRA_DATA_DATA_ROOT"] = str(paths["data_root"])
    env["EXTRA_DATA_SW_ROOT"] = str(paths["base"] / "sw")
    return env


def _next_run(pdir: Path) -> int:
    runs = [int(p.name[1:]) for p in (pdir / "raw").glob("r[0-9]*") if p.name[1:].isdigit()]
    return max(runs, default=0) + 1


def _announce(broker: str, topic: str, proposal: int, run: int, event: str, pdir: Path) -> None:
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": broker})
    p.produce(topic, json.dumps({"event": event, "proposal": proposal, "run": run,
                                 "path": str(pdir / "raw" / f"r{run:04d}"),
                                 "instrument": DEMO_INSTRUMENT, "cycle": DEMO_CYCLE}).encode())
    p.flush(5)


def run_demo(a) -> int:
    from rich.console import Console
    from rich.live import Live

    from amore.cli.table import render_table
    from backend.config import load_config
    from backend.testing.mockdata import write_run
    from backend.store.writer import RunDB

    console = Console()
    base = Path(a.dir or "amore-demo").resolve()
    paths = prepare_demo(base)
    ctx, pdir = paths["context_dir"], paths["proposal_dir"]
    env = demo_env(paths)
    os.environ.update({k: env[k] for k in ("EXTRA_DATA_DATA_ROOT", "EXTRA_DATA_SW_ROOT")})
    config = load_config(ctx)
    broker = None
    if config.broker:
        from backend.kafkaclient import broker_reachable
        if broker_reachable(config.broker, 3):
            broker = config.broker
    console.print(f"[bold]AMORE demo[/bold]: proposal {DEMO_PROPOSAL} in {paths['proposal_dir']}")
    console.print(f"Context directory: {ctx}")
    console.print("Runs are announced by " + (f"Kafka events on {broker}" if broker
                                              else "the backend's directory watcher (offline)"))
    gui = problem = None
    if not a.no_gui and _display_available():
        from amore_gui.qt_platform import check_platform
        problem = check_platform(env)
        if problem is not None:     # AMORE's message instead of Qt's abort; the terminal table
            console.print(problem.message(), markup=False, highlight=False, soft_wrap=True)
    if not a.no_gui and _display_available() and problem is None:
        gui = subprocess.Popen([sys.executable, "-m", "amore.cli", "gui", str(ctx)], env=env)

    listener = subprocess.Popen([sys.executable, "-m", "amore.cli", "listen", str(ctx)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        with console.status("Starting the backend..."):
            if not wait_for_log_line(ContextDir(ctx).log_file, listener):
                console.print(f"[red]The backend did not start; see {ContextDir(ctx).log_file}")
                return 1
        first = _next_run(pdir)
        runs = list(range(first, first + a.runs))
        db = RunDB(ctx)
        with Live(render_table(ctx, 20, console.width), console=console, refresh_per_second=4,
                  transient=False) as live:
            next_t = time.monotonic()
            for i, run in enumerate(runs):
                while time.monotonic() < next_t:
                    live.update(render_table(ctx, 20, console.width))
                    time.sleep(0.25)
                write_run(pdir, DEMO_PROPOSAL, run, ntrains=200, agipd_modules=1, proc=True)
                if broker:
                    topics = config["kafka"]["event_topics"]
                    _announce(broker, topics[0], DEMO_PROPOSAL, run, "migration_complete", pdir)
                    _announce(broker, topics[-1], DEMO_PROPOSAL, run, "run_corrections_complete",
                              pdir)
                next_t = time.monotonic() + a.interval
                live.update(render_table(ctx, 20, console.width))
            # raw and proc data are announced separately (either may come first): a run is
            # finished once it is done with a value for every variable, or failed
            deadline = time.monotonic() + 90
            unfinished = runs
            while time.monotonic() < deadline:
                unfinished = _unfinished(db, runs)
                live.update(render_table(ctx, 20, console.width))
                if not unfinished:
                    break
                time.sleep(0.25)
            live.update(render_table(ctx, 20, console.width))
        if unfinished:
            console.print(f"[yellow]Runs still being processed after 90 s: "
                          f"{', '.join(map(str, unfinished))}; see {ContextDir(ctx).log_file}")
        console.print(f"\nDone. See the table again with [bold]amore-proto show {ctx}[/bold]; "
                      f"run the backend yourself with [bold]amore-proto listen {ctx}[/bold].")
        if gui is not None and gui.poll() is None:
            console.print("The GUI stays open; close its window to finish.")
            gui.wait()
        elif gui is not None and gui.returncode != 0:
            console.print(f"[yellow]The GUI could not start (exit code {gui.returncode}, see its "
                          f"message above); open it later with [bold]amore-proto gui {ctx}[/bold]")
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        stop_process_group(listener)


def _unfinished(db, runs: list[int]) -> list[int]:
    """The runs of ``runs`` not yet failed or done with a value for every variable."""
    names = {v.name for v in db.get_variables()}
    states = {r["run"]: r["status"] for r in db.runs()}
    return [r for r in runs if states.get(r) != RunStatus.FAILED
            and (states.get(r) != RunStatus.DONE
                 or not names <= set(db.get_values(DEMO_PROPOSAL, r)))]


def _display_available() -> bool:
    """True when a GUI window could be shown (an X11 or Wayland display, not offscreen)."""
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return False
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_demo(a) -> int:
    if getattr(a, "facility", "euxfel") != "euxfel":
        from amore.cli.facilitydemo import run_facility_demo
        return run_facility_demo(a)
    return run_demo(a)


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    from backend.facilities import names as facility_names
    s = sub.add_parser("demo", help="run AMORE on a built-in demo proposal")
    s.add_argument("dir", nargs="?", help="where to put the demo (default ./amore-demo)")
    s.add_argument("--runs", type=int, default=8)
    s.add_argument("--interval", type=float, default=3.0, help="seconds between runs")
    s.add_argument("--no-gui", action="store_true", help="print the run table in the terminal")
    s.add_argument("--facility", choices=facility_names(), default="euxfel",
                   help="play this facility's runs (amore/cli/facilitydemo.py)")
    s.set_defaults(func=cmd_demo)
