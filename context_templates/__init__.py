"""Starting ``context.py`` files for ``amore-proto init --template NAME``.

Each ``<name>.py`` here is a template; :func:`available` lists them and :func:`path` finds one.
"""
from pathlib import Path

_HERE = Path(__file__).parent


def available() -> list[str]:
    """Template names (file names without ``.py``), sorted."""
    return sorted(p.stem for p in _HERE.glob("*.py") if not p.name.startswith("_"))


def path(name: str) -> Path:
    """Path of template ``name``; raises ``KeyError`` naming the available ones if unknown."""
    p = _HERE / f"{name}.py"
    if not p.is_file() or name.startswith("_"):
        raise KeyError(f"no context template {name!r}; available: {', '.join(available())}")
    return p
