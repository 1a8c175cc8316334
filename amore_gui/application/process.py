"""Settings of a front-end's own process.

``steady_memory()`` (once, at start, before the threads): large blocks go back to the
system when freed (:func:`backend.ctxrunner.memory.map_large_blocks`), so a front-end that
builds a whole table's text or arrays now and then does not keep their pages for good, and
every thread allocates from one heap (:func:`backend.ctxrunner.memory.share_one_heap`), so
that what a reload frees is not kept in the heaps of several threads. ``one_heap()``: only
the latter (the Qt GUI's).
"""
from __future__ import annotations

from backend.ctxrunner.memory import hand_back, map_large_blocks, share_one_heap


def steady_memory() -> bool:
    """Hand every freed block of 128 KiB or more back to the system at once, and let every
    thread allocate from the one main heap (glibc; False elsewhere, where nothing is done).
    Call it before the process starts its threads."""
    return map_large_blocks(128) & share_one_heap()


def hand_back_memory() -> None:
    """Hand the memory the C allocator keeps freed back to the system (glibc's
    ``malloc_trim``: every arena, pages in the middle of a heap too; nothing elsewhere). Takes
    a few milliseconds: call it off the event loop, after a large short-lived piece of work
    (a front-end that read its whole table again)."""
    hand_back(everything=True)


def one_heap() -> bool:
    """Let every thread allocate from the one main heap (glibc's ``M_ARENA_MAX`` = 1; False
    elsewhere, where nothing is done): the Qt GUI's live updates, thumbnail loader, task
    threads and Kafka client threads each kept freed pieces in a heap of their own (up to 16
    heaps on 2 cores), a GUI open for a beamtime growing with them (issue 23's soak). Loading
    a 5,000 x 300 table took as long with one heap, at a lower peak (``benchmarks/gui_load.py``,
    docs/reliability.rst). Call it before the process starts its threads."""
    return share_one_heap()
