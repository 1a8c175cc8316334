"""GUI settings remembered between sessions (plain Python, no Qt).

One JSON file, ``$AMORE_GUI_CONFIG`` or ``<user config dir>/amore/gui.json`` (the user config dir
is ``$XDG_CONFIG_HOME`` or ``~/.config``), holding the recently opened context directories and,
per context directory (keyed by its absolute path), the column layout (visual order, hidden
columns, widths), the sort column, the runs unchecked in the Status column, the tag filter and the
row height. Writes are atomic (temporary file + rename); a damaged file is ignored.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

MAX_RECENT = 12


def config_dir() -> Path:
    """AMORE's folder in the user's config dir: ``$XDG_CONFIG_HOME/amore`` or
    ``~/.config/amore``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "amore"


def config_path() -> Path:
    """Where the settings file lives (see module docstring)."""
    env = os.environ.get("AMORE_GUI_CONFIG")
    if env:
        return Path(env)
    return config_dir() / "gui.json"


class Settings:
    """The settings file; :meth:`for_dir` gives the dict of one context directory.

    Call :meth:`save` after changes (cheap; the GUI calls it on a timer and at exit).
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else config_path()
        self.values: dict[str, Any] = {"recent": [], "dirs": {}}
        try:
            with open(self.path) as f:
                v = json.load(f)
            if isinstance(v, dict):
                self.values.update(v)
        except (OSError, ValueError):
            pass
        if not isinstance(self.values.get("dirs"), dict):
            self.values["dirs"] = {}
        if not isinstance(self.values.get("recent"), list):
            self.values["recent"] = []

    @staticmethod
    def _key(context_dir) -> str:
        return str(Path(context_dir).resolve())

    def for_dir(self, context_dir) -> dict:
        """Mutable settings dict of one context directory (created empty if new)."""
        return self.values["dirs"].setdefault(self._key(context_dir), {})

    @property
    def recent(self) -> list[str]:
        """Recently opened context directories, most recent first."""
        return list(self.values["recent"])

    def add_recent(self, context_dir) -> None:
        """Put a context directory first in the recent list."""
        k = self._key(context_dir)
        rec = [d for d in self.values["recent"] if d != k]
        self.values["recent"] = [k] + rec[:MAX_RECENT - 1]

    def save(self) -> None:
        """Write the file atomically; errors (read-only home...) are ignored."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".gui-", suffix=".json", dir=self.path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump(self.values, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            pass


def apply_column_layout(keys: list[str], layout: dict) -> tuple[list[str], set[str]]:
    """Visual order and hidden set for the columns ``keys`` from a saved ``layout``
    (``{"order": [...], "hidden": [...]}``): saved keys first in their saved order, new keys
    after them in their natural order (placed after their natural predecessor when possible).
    """
    saved = [k for k in layout.get("order", []) if k in set(keys)]
    seen = set(saved)
    order = list(saved)
    for i, k in enumerate(keys):
        if k in seen:
            continue
        # after the natural predecessor if that one is placed already
        pos = len(order)
        for j in range(i - 1, -1, -1):
            if keys[j] in order:
                pos = order.index(keys[j]) + 1
                break
        order.insert(pos, k)
        seen.add(k)
    hidden = set(layout.get("hidden", [])) & set(keys)
    return order, hidden
