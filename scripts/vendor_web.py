#!/usr/bin/env python3
"""Refresh the browser front-end's JavaScript libraries from the npm registry.

The web front-end (``amore_gui/web``) ships the *built* files of two well-kept libraries, so
``pip install`` needs no Node.js:

* AG Grid Community (MIT): the virtualised run table (rows and columns virtualised);
* Plotly.js (MIT, the ``plotly.js-dist-min`` bundle): inspection and plots.

Run with Node.js and npm on the PATH::

    python scripts/vendor_web.py                 # the versions pinned below
    python scripts/vendor_web.py --latest        # the newest releases (then update PINS)

It installs the packages into a temporary directory with ``npm install --ignore-scripts``,
copies the built files and licences into ``amore_gui/web/static/vendor/`` and writes
``VERSIONS.json`` there (package, version, licence, files, SHA-256 of each file).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "amore_gui" / "web" / "static" / "vendor"

#: npm package -> (version, {file in the package: name under vendor/})
PINS = {
    "ag-grid-community": ("36.2.0", {
        "dist/ag-grid-community.min.js": "ag-grid-community.min.js",
        "LICENSE.txt": "ag-grid-community.LICENSE.txt",
    }),
    "plotly.js-dist-min": ("4.1.2", {
        "plotly.min.js": "plotly.min.js",
        "LICENSE": "plotly.js.LICENSE.txt",
    }),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vendor(latest: bool = False) -> dict:
    """Install the pinned (or newest) packages with npm and copy their files; returns the
    manifest written to ``VERSIONS.json``. Raises ``RuntimeError`` if npm fails or a file
    is missing from a package."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: install Node.js (and npm) to refresh the vendored files")
    specs = [f"{name}@{'latest' if latest else ver}" for name, (ver, _) in PINS.items()]
    manifest = {}
    with tempfile.TemporaryDirectory(prefix="amore-vendor-") as tmp:
        (Path(tmp) / "package.json").write_text('{"private": true}\n')
        res = subprocess.run([npm, "install", "--ignore-scripts", "--no-audit", "--no-fund",
                              "--silent", *specs], cwd=tmp, capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"npm install failed:\n{res.stderr or res.stdout}")
        VENDOR.mkdir(parents=True, exist_ok=True)
        for name, (_, files) in PINS.items():
            pkg = Path(tmp) / "node_modules" / name
            meta = json.loads((pkg / "package.json").read_text())
            entry = {"version": meta["version"], "license": meta.get("license"), "files": {}}
            for src, dst in files.items():
                if not (pkg / src).is_file():
                    raise RuntimeError(f"{name}@{meta['version']} has no {src}")
                shutil.copyfile(pkg / src, VENDOR / dst)
                entry["files"][dst] = _sha256(VENDOR / dst)
            manifest[name] = entry
    (VENDOR / "VERSIONS.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latest", action="store_true", help="take the newest releases")
    a = p.parse_args(argv)
    try:
        manifest = vendor(a.latest)
    except RuntimeError as e:
        print(f"vendor_web: {e}", file=sys.stderr)
        return 1
    for name, e in manifest.items():
        print(f"{name} {e['version']} ({e['license']}): {', '.join(e['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
