"""Can Qt open a window here? A check made before the ``QApplication`` exists (no Qt imported).

Qt aborts the whole process (``Could not load the Qt platform plugin "xcb" ... This application
failed to start``, SIGABRT) when its X11 platform plugin cannot be loaded, most often because a
fresh Linux machine lacks X11 client libraries the PyQt wheel's plugin
(``PyQt5/Qt5/plugins/platforms/libqxcb.so``, or ``PyQt6/Qt6/...`` with PyQt6) links against. :func:`check_platform` finds that
out first, without loading the plugin into this process:

* which platform Qt will use: ``$QT_QPA_PLATFORM`` (the part before ``:``), else ``xcb`` on
  Linux (Qt 5's default, also in Wayland sessions). Only ``xcb`` is checked; ``offscreen``,
  ``minimal``, ``vnc`` ... need no X11 libraries.
* where the plugin is: ``$QT_QPA_PLATFORM_PLUGIN_PATH``, then ``$QT_PLUGIN_PATH/platforms``,
  then the own ``Qt5/plugins/platforms`` (``Qt6/...``) of the binding qtpy will load (a pip wheel:
  :func:`qt_binding`) or, for other layouts
  (conda), the plugin path Qt reports (asked in a subprocess);
* which libraries it cannot find: ``ldd`` on the plugin (all of them at once); without ``ldd``,
  loading the plugin with ``ctypes`` in a subprocess (the first one);
* whether there is an X display: ``$DISPLAY`` set and its socket accepting connections.

Missing libraries are named with the distribution packages that provide them
(:data:`LIB_PACKAGES`, Debian/Ubuntu names). :data:`QT_X11_PACKAGES` is the list the README tells
users to install and that ``./dev demo`` / ``./dev test`` install (``python -m
amore_gui.qt_platform --packages`` prints it). The other way to get the libraries is
the conda environment (``environment.yml``), whose PyQt brings its own X11 client libraries.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

#: Debian/Ubuntu packages of every library the PyQt5 or PyQt6 wheel's xcb plugin links against
#: that a minimal installation may lack, plus a font. The README's installation section lists
#: these.
QT_X11_PACKAGES = (
    "libxcb-icccm4", "libxcb-keysyms1", "libxcb-xinerama0", "libxcb-image0",
    "libxcb-render-util0", "libxkbcommon-x11-0", "libxcb-randr0", "libxcb-shape0",
    "libxcb-xkb1", "libxcb-xfixes0", "libxcb-shm0", "libxcb-render0", "libxcb-sync1",
    "libxcb-util1", "libxcb1", "libx11-xcb1", "libx11-6", "libxext6", "libxkbcommon0",
    "libfontconfig1", "libfreetype6", "libgl1", "libglib2.0-0", "libdbus-1-3",
    "libxcb-cursor0", "libegl1", "fonts-dejavu-core",
)

#: soname -> Debian/Ubuntu package providing it (for the libraries of the xcb plugin).
LIB_PACKAGES = {
    "libxcb-icccm.so.4": "libxcb-icccm4", "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-xinerama.so.0": "libxcb-xinerama0", "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0", "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0", "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0", "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-render.so.0": "libxcb-render0", "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1", "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1", "libX11.so.6": "libx11-6", "libXext.so.6": "libxext6",
    "libxkbcommon.so.0": "libxkbcommon0", "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6", "libGL.so.1": "libgl1",
    "libglib-2.0.so.0": "libglib2.0-0", "libgthread-2.0.so.0": "libglib2.0-0",
    "libdbus-1.so.3": "libdbus-1-3", "libxcb-cursor.so.0": "libxcb-cursor0",
    "libEGL.so.1": "libegl1",
}

PLUGIN_FILE = "libqxcb.so"
#: exit code of ``amore-proto gui`` when the platform cannot load (Qt's abort would be -6)
EXIT_NO_PLATFORM = 3


@dataclass
class PlatformProblem:
    """Why Qt could not open a window.

    ``kind``: ``missing-libraries`` (``missing`` lists sonames, ``packages`` their packages),
    ``no-display`` or ``display-unreachable`` (``display`` is ``$DISPLAY``).
    ``plugin``: the platform plugin checked (or None).
    """

    kind: str
    platform: str = "xcb"
    plugin: Path | None = None
    missing: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    display: str = ""
    exit_code: int = EXIT_NO_PLATFORM

    def message(self) -> str:
        """What to tell the user: what is wrong and the ways to fix it (several lines)."""
        if self.kind == "missing-libraries":
            pk = " ".join(QT_X11_PACKAGES)
            return (
                f"AMORE's GUI cannot start: Qt's X11 platform plugin ({self.platform}) needs "
                f"libraries this machine does not have:\n"
                f"    {', '.join(self.missing)}\n"
                + (f"  (checked {self.plugin})\n" if self.plugin else "") +
                f"Get them in one of two ways:\n"
                f"  1. the distribution's packages (Debian/Ubuntu"
                + (f"; the missing ones are in {', '.join(self.packages)}" if self.packages
                   else "") + "), all of Qt's X11 libraries at once:\n"
                f"       sudo apt-get install {pk}\n"
                f"  2. or the conda environment, whose PyQt brings its own X11 libraries:\n"
                f"       conda env create -f environment.yml && conda activate amore\n"
                f"Meanwhile 'amore-proto show DIR' prints the run table in the terminal.")
        if self.kind == "no-display":
            return ("AMORE's GUI cannot start: there is no X display ($DISPLAY is not set).\n"
                    "Start it from a desktop session (FastX, the workstation's desktop) or over "
                    "'ssh -X'; 'amore-proto show DIR' prints the run table in the terminal.")
        return (f"AMORE's GUI cannot start: the X display {self.display!r} ($DISPLAY) does not "
                f"accept connections (is the desktop session still running?).\n"
                f"'amore-proto show DIR' prints the run table in the terminal.")


def platform_name(env=None) -> str:
    """The Qt platform that will be used: ``$QT_QPA_PLATFORM`` (before any ``:options``), else
    ``xcb`` on Linux; ``""`` elsewhere (not checked)."""
    env = os.environ if env is None else env
    p = (env.get("QT_QPA_PLATFORM") or "").split(":")[0].strip()
    if p:
        return p
    return "xcb" if sys.platform.startswith("linux") else ""


#: Qt bindings the GUI runs on (through qtpy), in qtpy's order of preference when ``$QT_API``
#: names none: ``(qtpy's name, module, the Qt directory inside a pip wheel)``.
BINDINGS = (("pyqt5", "PyQt5", "Qt5"), ("pyqt6", "PyQt6", "Qt6"))


def qt_binding(env=None) -> tuple[str, str, str] | None:
    """The binding qtpy will load, found without importing Qt: the one ``$QT_API`` names if it is
    installed, else the first installed of :data:`BINDINGS` (PyQt5 first, the default). None
    when none is installed."""
    env = os.environ if env is None else env
    wanted = (env.get("QT_API") or "").strip().lower()
    order = sorted(BINDINGS, key=lambda b: b[0] != wanted)
    for b in order:
        try:
            if importlib.util.find_spec(b[1]) is not None:
                return b
        except (ImportError, ValueError):    # blocked (sys.modules[name] = None) or broken
            pass
    return None


def _default_plugin_dirs(env) -> list[Path]:
    """Qt's own platform plugin directory of the binding qtpy will load (wheel layout first)."""
    binding = qt_binding(env)
    if binding is None:
        return []
    _, module, qtdir = binding
    spec = importlib.util.find_spec(module)
    out = []
    if spec is not None and spec.submodule_search_locations:
        base = Path(list(spec.submodule_search_locations)[0])
        out.append(base / qtdir / "plugins" / "platforms")
        out.append(base / "Qt" / "plugins" / "platforms")
    if not any((d / PLUGIN_FILE).is_file() for d in out):
        # other layouts (conda: <prefix>/plugins, found through qt.conf): ask Qt (QtCore only)
        where = ("QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)" if module == "PyQt6"
                 else "QLibraryInfo.location(QLibraryInfo.PluginsPath)")
        code = f"from {module}.QtCore import QLibraryInfo; print({where})"
        try:
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=30, env=dict(env))
            if r.returncode == 0 and r.stdout.strip():
                out.append(Path(r.stdout.strip()) / "platforms")
        except (OSError, subprocess.SubprocessError):
            pass
    return out


def find_plugin(env=None, platform: str = "xcb") -> Path | None:
    """The platform plugin file Qt will load (see module docstring), or None if not found."""
    env = os.environ if env is None else env
    name = PLUGIN_FILE if platform == "xcb" else f"libq{platform}.so"
    dirs: list[Path] = []
    if env.get("QT_QPA_PLATFORM_PLUGIN_PATH"):
        dirs.append(Path(env["QT_QPA_PLATFORM_PLUGIN_PATH"]))
    for d in (env.get("QT_PLUGIN_PATH") or "").split(os.pathsep):
        if d:
            dirs.append(Path(d) / "platforms")
    dirs += _default_plugin_dirs(env)
    for d in dirs:
        if (d / name).is_file():
            return d / name
    return None


_NOT_FOUND = re.compile(r"^\s*(\S+)\s*=>\s*not found", re.M)
_DLOPEN = re.compile(r"(\S+\.so[.\d]*): cannot open shared object file")


def missing_libraries(plugin: Path, env=None) -> list[str]:
    """Sonames the dynamic linker cannot find for ``plugin`` (sorted, unique); ``[]`` if all
    are found. ``ldd`` when available, else a ``ctypes`` load in a subprocess."""
    env = dict(os.environ if env is None else env)
    ldd = shutil.which("ldd", path=env.get("PATH"))
    if ldd:
        try:
            r = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=30,
                               env=env)
            return sorted(set(_NOT_FOUND.findall(r.stdout + r.stderr)))
        except (OSError, subprocess.SubprocessError):
            pass
    code = f"import ctypes; ctypes.CDLL({str(plugin)!r})"
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=30, env=env)
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(set(_DLOPEN.findall(r.stderr))) if r.returncode else []


def display_reachable(display: str, timeout: float = 2.0) -> bool:
    """True if the X server of ``display`` (``:N``, ``unix:N``, ``host:N[.S]``) accepts a
    connection on its socket (nothing is sent). Unparsable values count as reachable (Qt
    decides)."""
    m = re.match(r"^(?P<host>[^:]*):(?P<num>\d+)(\.\d+)?$", display.strip())
    if not m:
        return True
    host, num = m.group("host"), int(m.group("num"))
    if host in ("", "unix"):
        for addr in ("\0/tmp/.X11-unix/X%d" % num, "/tmp/.X11-unix/X%d" % num):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            try:
                s.connect(addr)
                return True
            except OSError:
                continue
            finally:
                s.close()
        if host == "unix":
            return False
        host = "localhost"
    try:
        with socket.create_connection((host, 6000 + num), timeout=timeout):
            return True
    except OSError:
        return False


def check_platform(env=None, platform: str | None = None,
                   need_display: bool = True) -> PlatformProblem | None:
    """Check that Qt's platform plugin can load (see module docstring); None if it can (or
    the platform is not ``xcb``), else a :class:`PlatformProblem`. Never raises; takes a few
    milliseconds (``ldd``), a second at most when Qt must be asked for its plugin path."""
    env = os.environ if env is None else env
    platform = platform or platform_name(env)
    if platform != "xcb":
        return None
    plugin = find_plugin(env, platform)
    if plugin is not None:
        missing = missing_libraries(plugin, env)
        if missing:
            pk = sorted({LIB_PACKAGES[m] for m in missing if m in LIB_PACKAGES})
            return PlatformProblem("missing-libraries", platform, plugin, missing, pk)
    if need_display:
        display = env.get("DISPLAY", "")
        if not display:
            return PlatformProblem("no-display", platform, plugin)
        if not display_reachable(display):
            return PlatformProblem("display-unreachable", platform, plugin, display=display)
    return None


def import_problem(err: ImportError) -> PlatformProblem | None:
    """A :class:`PlatformProblem` for an ``ImportError`` of PyQt that names a missing shared
    library (e.g. ``libGL.so.1: cannot open shared object file``); None for other errors."""
    missing = sorted(set(_DLOPEN.findall(str(err))))
    if not missing:
        return None
    pk = sorted({LIB_PACKAGES[m] for m in missing if m in LIB_PACKAGES})
    return PlatformProblem("missing-libraries", platform_name() or "xcb", None, missing, pk)


def preflight(env=None) -> int:
    """:func:`check_platform`; on a problem print its message to stderr and return
    :data:`EXIT_NO_PLATFORM` (3), else 0. What ``amore-proto gui`` does before creating the
    ``QApplication``."""
    p = check_platform(env)
    if p is None:
        return 0
    print(p.message(), file=sys.stderr)
    return p.exit_code


def main(argv=None) -> int:
    """``python -m amore_gui.qt_platform [--packages | --missing-packages]``:
    ``--packages`` prints :data:`QT_X11_PACKAGES`; ``--missing-packages`` prints them if the
    xcb plugin lacks libraries (nothing otherwise; exit 0); no option checks like
    ``amore-proto gui`` (exit 3 with the message on a problem)."""
    argv = sys.argv[1:] if argv is None else argv
    if "--packages" in argv:
        print(" ".join(QT_X11_PACKAGES))
        return 0
    if "--missing-packages" in argv:
        p = check_platform(platform="xcb", need_display=False)
        if p is not None:
            print(" ".join(QT_X11_PACKAGES))
        return 0
    return preflight()


if __name__ == "__main__":
    sys.exit(main())
