"""Settings of a front-end's own process.

``steady_memory()`` (once, at start, before the threads): large blocks go back to the
system when freed (:func:`backend.ctxrunner.memory.map_large_blocks`), so a front-end that
builds a whole table's text or arrays now and then does not keep their pages for good.
"""
from __future__ import annotations

from backend.ctxrunner.memory import map_large_blocks


def steady_memory() -> bool:
    """Hand every freed block of 128 KiB or more back to the system at once (glibc; False
    elsewhere, where nothing is done)."""
    return map_large_blocks(128)
