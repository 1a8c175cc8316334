"""Settings of a front-end's own process.

``steady_memory()`` (once, at start, before the threads): large blocks go back to the
system when freed (:func:`backend.ctxrunner.memory.map_large_blocks`), so a front-end that
builds a whole table's text or arrays now and then does not keep their pages for good.
"""
from __future__ import annotations

from backend.ctxrunner.memory import hand_back, map_large_blocks


def steady_memory() -> bool:
    """Hand every freed block of 128 KiB or more back to the system at once (glibc; False
    elsewhere, where nothing is done)."""
    return map_large_blocks(128)


def hand_back_memory() -> None:
    """Hand the memory the C allocator keeps freed back to the system (glibc's
    ``malloc_trim``: every arena, pages in the middle of a heap too; nothing elsewhere). Takes
    a few milliseconds: call it off the event loop, after a large short-lived piece of work
    (a front-end that read its whole table again)."""
    hand_back(everything=True)
