"""The GUI on a real X server (Xvfb, Qt's ``xcb`` platform), as on a beamline workstation or a
FastX desktop - not only ``offscreen``. Needs what the README tells users to install (``./dev
test`` and ``.ci/run`` install it: Qt's X11 libraries and ``xvfb``).

* every window and dialog shows and paints: a screenshot taken by the X server of that window
  alone is not blank (also at ``QT_SCALE_FACTOR=2``), and no window uses OpenGL;
* a live update of one run repaints only that run's changed cell, not the table;
* a missing X11 library gives AMORE's message and exit code 3, where Qt itself aborts;
* ``./dev``'s installer names the exact command when it cannot install.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from amore_gui import qt_platform
from tests.xvfb import xvfb

REPO = Path(__file__).resolve().parent.parent
WINDOWS = ("main", "backend_question", "plot", "inspect_image", "correlation", "filter_dialog",
           "columns_dialog", "open_dialog", "reprocess_dialog", "context_editor", "backend_log")


@pytest.fixture(scope="module")
def display():
    with xvfb(2560, 1600) as d:     # room for a 1200x700 window at QT_SCALE_FACTOR=2
        yield d


def x11_env(display, **extra):
    env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb",
               QT_XCB_GL_INTEGRATION="none",      # any use of OpenGL would fail here
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("AMORE_GUI_NO_DIALOGS", None)        # the real "Start the backend?" question
    env.update(extra)
    return env


def run_driver(ctx, out, env, *args):
    r = subprocess.run([sys.executable, "-m", "tests.x11_driver", str(ctx), str(out), *args],
                       env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Could not load the Qt platform plugin" not in r.stderr
    return json.loads((out / "result.json").read_text())


def assert_painted(name, info):
    assert info["width"] >= 150 and info["height"] >= 80, (name, info)
    # a blank (unpainted or black) window is one colour; a painted one has text, frames, data
    assert info["colours"] >= 12 and info["top_fraction"] < 0.97, (name, info)
    assert info["black_fraction"] < 0.02, (name, info)     # nothing left undrawn


def test_windows_and_dialogs_show_and_paint_on_x11(gui_ctx, display, tmp_path):
    res = run_driver(gui_ctx["ctx"], tmp_path / "shots", x11_env(display))
    assert res["platform"] == "xcb"
    assert set(res["windows"]) == set(WINDOWS)
    for name in WINDOWS:
        assert_painted(name, res["windows"][name])
        assert Path(res["windows"][name]["png"]).stat().st_size > 1000
    assert res["opengl_widgets"] == 0
    # a live update of one run repaints that run's changed cell only
    rep = res["repaint"]
    x, y, w, h = rep["cell"]
    assert rep["rects"], "the updated cell was not repainted"
    for rx, ry, rw, rh in rep["rects"]:
        assert x <= rx and y <= ry and rx + rw <= x + w and ry + rh <= y + h, rep
    area = sum(rw * rh for _, _, rw, rh in rep["rects"])
    assert area <= w * h < rep["viewport"][0] * rep["viewport"][1] / 50


def test_amore_proto_gui_starts_on_x11(gui_ctx, display, tmp_path):
    """``amore-proto gui DIR`` as the README and the demo start it: the preflight passes and
    the GUI keeps running on the X server."""
    import time
    env = x11_env(display, AMORE_GUI_CONFIG=str(tmp_path / "g.json"), AMORE_GUI_NO_DIALOGS="1")
    p = subprocess.Popen([sys.executable, "-m", "amore.cli", "gui", str(gui_ctx["ctx"])],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(4)
        assert p.poll() is None, p.stdout.read().decode()
    finally:
        p.terminate()
        out = p.communicate(timeout=15)[0].decode()
    assert "Could not load the Qt platform plugin" not in out and "cannot start" not in out


def test_main_window_at_scale_factor_2(gui_ctx, display, tmp_path):
    res = run_driver(gui_ctx["ctx"], tmp_path / "shots2", x11_env(display, QT_SCALE_FACTOR="2"),
                     "--only", "main")
    for name in ("main", "main_scrolled"):
        info = res["windows"][name]
        assert_painted(name + "@2x", info)
        assert info["width"] == 2 * info["logical_width"]     # every pixel drawn at double size


def pyqt_without_libxcb_icccm(tmp_path) -> Path:
    """A copy of the installed PyQt that qtpy will load (PyQt5, or PyQt6 with ``QT_API=pyqt6``;
    symbolic links, nothing copied but two files) in which Qt's xcb plugin and its helper library
    ask for ``libxcb-icccm.so.9`` instead of ``libxcb-icccm.so.4`` - a library no machine has:
    Qt meets exactly what it meets on a fresh machine without libxcb-icccm4. Returns the
    directory to put first on ``PYTHONPATH``."""
    import importlib.util
    _, module, qt = qt_platform.qt_binding()
    real = Path(list(importlib.util.find_spec(module).submodule_search_locations)[0])
    site = tmp_path / "site"
    helper = {"Qt5": "libQt5XcbQpa.so.5", "Qt6": "libQt6XcbQpa.so.6"}[qt]
    patch = {Path(f"{qt}/plugins/platforms/libqxcb.so"), Path(f"{qt}/lib/{helper}")}
    descend = {p for f in patch for p in f.parents if p != Path(".")}

    def mirror(rel: Path):
        dst = site / module / rel
        dst.mkdir(parents=True)
        for f in (real / rel).iterdir():
            r = rel / f.name
            if r in descend:
                mirror(r)
            elif r in patch:
                data = f.read_bytes()
                assert b"libxcb-icccm.so.4\0" in data
                (dst / f.name).write_bytes(data.replace(b"libxcb-icccm.so.4\0",
                                                        b"libxcb-icccm.so.9\0"))
            else:
                (dst / f.name).symlink_to(f)
    mirror(Path("."))
    return site


def test_missing_x11_library_gives_amores_message_not_qts_abort(gui_ctx, display, tmp_path):
    site = pyqt_without_libxcb_icccm(tmp_path)
    env = x11_env(display)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    # Qt on its own aborts the process
    module = qt_platform.qt_binding()[1]
    r = subprocess.run([sys.executable, "-c",
                        f"from {module}.QtWidgets import QApplication; QApplication([])"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == -6 and "Could not load the Qt platform plugin" in r.stderr
    # amore-proto gui checks first and says what to do
    r = subprocess.run([sys.executable, "-m", "amore.cli", "gui", str(gui_ctx["ctx"])],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == qt_platform.EXIT_NO_PLATFORM, r.stderr
    assert "Could not load the Qt platform plugin" not in r.stderr
    assert "libxcb-icccm.so.9" in r.stderr
    assert "sudo apt-get install " + " ".join(qt_platform.QT_X11_PACKAGES) in r.stderr
    assert "conda env create -f environment.yml" in r.stderr
    # the check on its own (what the demo runs before it starts the GUI)
    r = subprocess.run([sys.executable, "-m", "amore_gui.qt_platform"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == qt_platform.EXIT_NO_PLATFORM and "libxcb-icccm.so.9" in r.stderr
    assert str(tmp_path / "site" / module) in r.stderr        # names the plugin it checked
    # the real plugin passes; no display is named as such
    assert qt_platform.check_platform(x11_env(display)) is None
    nodisp = x11_env(display)
    del nodisp["DISPLAY"]
    assert qt_platform.check_platform(nodisp).kind == "no-display"
    assert qt_platform.check_platform(x11_env(":987")).kind == "display-unreachable"
    assert qt_platform.check_platform(x11_env(display, QT_QPA_PLATFORM="offscreen")) is None


def test_dev_installer_names_the_exact_command_when_it_cannot_install(tmp_path):
    """``./dev demo``'s installer without root, sudo or apt-get stops with the command."""
    func = re.search(r"^need_qt_x11\(\) \{.*?^\}", (REPO / "dev").read_text(), re.M | re.S)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bindir / "id").chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    site = pyqt_without_libxcb_icccm(tmp_path / "broken")
    env = {"VENV": str(venv), "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    bash = shutil.which("bash")
    # /usr/bin holds apt-get on Debian: hide it by a PATH without it
    shadow = tmp_path / "sbin"
    shadow.mkdir()
    for tool in ("ldd", "sh", "sed", "cat", "dirname", "uname", "readlink", "env"):
        t = shutil.which(tool)
        if t:
            (shadow / tool).symlink_to(t)
    env["PATH"] = f"{bindir}:{shadow}"
    r = subprocess.run([bash, "-c", func.group(0) + "\nneed_qt_x11"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "sudo apt-get install " + " ".join(qt_platform.QT_X11_PACKAGES) in r.stderr
    assert "conda env create -f environment.yml" in r.stderr


def test_readme_tells_what_dev_and_ci_install():
    readme = (REPO / "README.rst").read_text()
    assert "sudo apt-get install " + " ".join(qt_platform.QT_X11_PACKAGES) in readme
    assert "need_qt_x11 xvfb" in (REPO / "dev").read_text()
    assert "./dev test" in (REPO / ".ci" / "run").read_text()


def test_demo_without_x11_library_says_so_and_shows_the_terminal_table(display, tmp_path):
    """The README's first command on a desktop lacking an X11 library: AMORE's message (not
    Qt's abort), then the demo goes on in the terminal."""
    site = pyqt_without_libxcb_icccm(tmp_path)
    env = x11_env(display, COLUMNS="200", AMORE_BROKER="none")
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    r = subprocess.run([sys.executable, "-m", "amore.cli", "demo", str(tmp_path / "demo"),
                        "--runs", "2", "--interval", "0.5"], env=env, capture_output=True,
                       text=True, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Could not load the Qt platform plugin" not in out and "exit code -6" not in out
    assert "libxcb-icccm.so.9" in out and "conda env create -f environment.yml" in out
    final = r.stdout[r.stdout.rfind("Proposal 9999"):]
    assert len([ln for ln in final.splitlines() if re.match(r"^│\s+\d+ │", ln)]) == 2
