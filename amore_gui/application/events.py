"""Plain-Python events: how the GUI's Qt-free models tell the widgets that something changed.

A model (e.g. :class:`~amore_gui.application.session.Session`) owns an :class:`EventGroup`; the
Qt layer connects callbacks to its events and only ever learns of changes through them (the idea
of napari's evented models). No Qt here, so the models are tested without a display.

Callbacks run synchronously, in the thread that called :meth:`Event.emit`, in the order they were
connected; an exception in a callback propagates to the emitter (a bug shows, it is not hidden).
"""
from __future__ import annotations

from typing import Any, Callable


class Event:
    """One kind of change, e.g. ``session.events.filters``.

    ``connect(callback)`` -> callback (usable as a decorator); ``disconnect(callback)``;
    ``emit(*args)`` calls every connected callback with ``args``.
    """

    def __init__(self, name: str):
        self.name = name
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Call ``callback(*args)`` on every :meth:`emit`; returns ``callback``."""
        if callback not in self._callbacks:
            self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callable[..., Any] | None = None) -> None:
        """Stop calling ``callback`` (all callbacks if None); unknown callbacks are ignored."""
        if callback is None:
            self._callbacks.clear()
        elif callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        """Call the connected callbacks with ``args`` (a copy of the list: callbacks may
        disconnect themselves)."""
        for cb in list(self._callbacks):
            cb(*args)

    def __repr__(self) -> str:
        return f"<Event {self.name}: {len(self._callbacks)} callback(s)>"


class EventGroup:
    """A named set of :class:`Event` s: ``EventGroup("filters", "source")`` gives
    ``group.filters`` and ``group.source``. Unknown names raise ``AttributeError``."""

    def __init__(self, *names: str):
        self._names = tuple(names)
        for n in names:
            setattr(self, n, Event(n))

    @property
    def names(self) -> tuple[str, ...]:
        """The event names, in the order given."""
        return self._names
