"""Starting ``context.py`` files for ``amore-proto init --template NAME``.

Each ``<name>.py`` here is a template; :func:`available` lists them and :func:`path` finds one.
``facilities/<facility>.py`` are the templates ``amore-proto init --facility`` uses for ESS, ESRF
and SwissFEL (:func:`facility_templates`); ``path`` finds them by name too.
"""
from pathlib import Path

_HERE = Path(__file__).parent


def available() -> list[str]:
    """Template names (file names without ``.py``), sorted."""
    return sorted(p.stem for p in _HERE.glob("*.py") if not p.name.startswith("_"))


def facility_templates() -> list[str]:
    """Templates of other facilities (``ess``, ``esrf``, ``swissfel``), sorted."""
    return sorted(p.stem for p in (_HERE / "facilities").glob("*.py")
                  if not p.name.startswith("_"))


def path(name: str) -> Path:
    """Path of template ``name``; raises ``KeyError`` naming the available ones if unknown."""
    for p in (_HERE / f"{name}.py", _HERE / "facilities" / f"{name}.py"):
        if p.is_file() and not name.startswith("_") and "/" not in name:
            return p
    raise KeyError(f"no context template {name!r}; available: {', '.join(available())} "
                   f"(facilities: {', '.join(facility_templates())})")
