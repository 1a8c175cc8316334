"""Physical units, with pint: parsing, normalising and converting (no SQLAlchemy, Kafka or Qt).

Used by manual columns (:mod:`backend.store.manual`) and the query language
(:mod:`amore_gui.application.query`). One :class:`pint.UnitRegistry` per process, made on first use
(it takes ~0.3 s).
"""
from __future__ import annotations

import math
import threading

_lock = threading.Lock()
_ureg = None


class UnitError(ValueError):
    """A unit or quantity pint does not understand, or units that cannot be converted; the
    message is pint's (plus what was being parsed)."""


def ureg():
    """The process's :class:`pint.UnitRegistry`."""
    global _ureg
    if _ureg is None:
        with _lock:
            if _ureg is None:
                import pint
                _ureg = pint.UnitRegistry()
    return _ureg


def _unit(text: str):
    import pint
    try:
        return ureg().Unit(text.strip())
    except (pint.errors.PintError, AttributeError, TypeError, ValueError, SyntaxError) as e:
        raise UnitError(f"unknown unit {text.strip()!r}: {e}") from None


def normalise_units(text: str | None) -> str | None:
    """Units text in pint's short form (``"micrometer"``, ``"um"`` -> ``"µm"``; ``"mJ"`` stays);
    None or blank -> None. Raises :class:`UnitError` with pint's message for unknown units."""
    if text is None or not str(text).strip():
        return None
    u = _unit(str(text))
    if u.dimensionless and str(u) == "dimensionless":
        return None
    return f"{u:~P}"


def parse_quantity(text: str) -> tuple[float, str | None]:
    """``"1.5 mm"`` -> ``(1.5, "mm")``; ``"3"`` -> ``(3.0, None)``. Raises :class:`UnitError`
    for text that is not a number with optional units."""
    import pint
    s = str(text).strip()
    try:
        return float(s), None
    except ValueError:
        pass
    try:
        q = ureg().Quantity(s)
    except (pint.errors.PintError, AttributeError, TypeError, ValueError, SyntaxError,
            TokenError_) as e:
        raise UnitError(f"{s!r} is not a number with units: {e}") from None
    mag = q.magnitude
    if not isinstance(mag, (int, float)) or isinstance(mag, bool):
        raise UnitError(f"{s!r} is not a number with units")
    units = None if q.dimensionless and str(q.units) == "dimensionless" else f"{q.units:~P}"
    return float(mag), units


def convert(value: float, from_units: str, to_units: str) -> float:
    """``value`` in ``from_units`` expressed in ``to_units``. Raises :class:`UnitError` if the
    dimensions differ (pint's message)."""
    import pint
    if from_units == to_units:
        return float(value)
    try:
        return float(ureg().Quantity(value, _unit(from_units)).to(_unit(to_units)).magnitude)
    except pint.errors.DimensionalityError as e:
        raise UnitError(str(e)) from None


def factor(from_units: str, to_units: str) -> float:
    """Multiplier taking values in ``from_units`` to ``to_units`` (offset units such as °C
    are converted point-wise by :func:`convert` instead). Raises :class:`UnitError`."""
    f = convert(1.0, from_units, to_units)
    if convert(0.0, from_units, to_units) != 0.0 or not math.isfinite(f):
        raise UnitError(f"{from_units} -> {to_units} is not a plain scale factor")
    return f


try:  # pint's tokenizer may raise tokenize.TokenError for unbalanced brackets
    from tokenize import TokenError as TokenError_
except ImportError:  # pragma: no cover
    class TokenError_(Exception):
        pass
