"""The backend's state for the GUI's status bar (plain Python, no Qt).

One function, :func:`backend_status`, built on :func:`backend.service.manager.backend_state` (status
record, tmux session, processes). Asking also heals what can be healed without the user: a
deleted tmux socket of a living backend is recreated, a stale socket on this machine removed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backend.vocab import BackendState

#: Status-bar colour of each state.
STATE_COLOURS = {BackendState.RUNNING_HERE.value: "#107c10",
                 BackendState.RUNNING_ELSEWHERE.value: "#107c10",
                 BackendState.STOPPED.value: "#a4262c",
                 BackendState.STALE.value: "#c19c00"}


@dataclass
class BackendIndicator:
    """The backend as the status bar shows it. ``state``: a :class:`backend.vocab.BackendState`
    value (``unknown`` when it could not be found out); ``text``: one line for the status bar;
    ``detail``: tooltip text; ``host`` where the backend runs or last ran."""

    state: str
    text: str
    detail: str = ""
    host: str | None = None

    @property
    def alive(self) -> bool | None:
        """True if a backend runs (here or elsewhere), False if not, None if unknown."""
        if self.state in (BackendState.RUNNING_HERE, BackendState.RUNNING_ELSEWHERE):
            return True
        return False if self.state in (BackendState.STOPPED, BackendState.STALE) else None

    @property
    def colour(self) -> str:
        return STATE_COLOURS.get(self.state, "#8a8886")

    @classmethod
    def unknown(cls, detail: str = "") -> "BackendIndicator":
        """The indicator when the state could not be found out (``detail`` says why)."""
        return cls(BackendState.UNKNOWN.value, "Backend: unknown", detail)


def backend_status(context_dir: str | os.PathLike) -> BackendIndicator:
    """The backend's state for the status bar. Never raises (``unknown`` with the reason)."""
    from backend.service import manager
    try:
        st = manager.backend_state(Path(context_dir))
    except Exception as e:  # a status-bar helper must never break the GUI
        return BackendIndicator.unknown(f"{type(e).__name__}: {e}")
    detail = st.message or ""
    if st.pid:
        detail = f"PID {st.pid} on {st.host} (user {st.user})" + (f"; {detail}" if detail else "")
    if st.state == BackendState.RUNNING_ELSEWHERE:
        detail += (f"\nTo stop or restart it, run the GUI or 'amore-proto backend' on {st.host}.")
    return BackendIndicator(st.state, st.summary(), detail.strip(), st.host)
