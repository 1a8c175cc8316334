"""How AMORE's processes hold memory (glibc's allocator; elsewhere nothing is done).

A worker keeps up to ``[processing] worker_keep_mb`` of freed heap memory for its next run
(:func:`keep_memory`, set at start; :func:`hand_back` after each run), so a run's arrays reuse
pages that are already there. A forked copy of the worker (:mod:`backend.ctxrunner.forked`)
hands back what it inherited at once (``hand_back(everything=True)``), so neither process copies
the other's pages. A front-end open for days (the web server) returns every large block to the
system when it frees it (:func:`map_large_blocks`). Runs in the user's Python: standard library
only.
"""
from __future__ import annotations

import ctypes
import functools


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (sizes in bytes; main arena)."""
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]


@functools.lru_cache(maxsize=1)
def _libc():
    """glibc, or None (another C library: memory is handed back as that library does)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33 (no mallinfo2)
        return None


#: Bytes of freed memory this process keeps between runs (set by :func:`keep_memory`).
_keep_bytes = 0


def keep_memory(megabytes: float) -> bool:
    """Let this process keep up to ``megabytes`` MB of freed heap memory between runs
    (:func:`hand_back` hands it back only beyond that): glibc then serves large arrays
    from its heap instead of fresh ``mmap`` regions and never trims the heap on its own
    (``M_MMAP_MAX`` = 0, ``M_TRIM_THRESHOLD`` = 2 GB). A run's arrays reuse the pages of the
    last run's instead of faulting in new ones, which costs ~0.03 s per 200 MB, and on this
    project's virtual machines, whose host reclaims memory freed a few seconds earlier, up to
    0.3 s. Returns False where it cannot be done (not glibc >= 2.33, or ``megabytes`` <= 0)."""
    global _keep_bytes
    libc = _libc() if megabytes and megabytes > 0 else None
    if libc is None:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    # (mallopt takes a C int: 2**31 - 1 bytes is glibc's largest trim threshold)
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)):
        return False
    _keep_bytes = int(megabytes * 2**20)
    return True


def hand_back(everything: bool = False) -> None:
    """Hand this process's free heap memory back to the system if there is more of it than
    :func:`keep_memory` allows (all of it with ``everything``); glibc keeps it otherwise."""
    libc = _libc()
    if libc is None:
        return
    if not everything and _keep_bytes and libc.mallinfo2().fordblks <= _keep_bytes:
        return
    libc.malloc_trim(0)


def map_large_blocks(threshold_kb: int = 128) -> bool:
    """Serve every allocation of at least ``threshold_kb`` KiB from its own ``mmap`` region,
    handed back to the system when it is freed (``M_MMAP_THRESHOLD`` set: a fixed threshold).
    Left alone, glibc raises the threshold to the largest block freed so far (up to 32 MB);
    a process that then builds a large short-lived text or array now and then (the web
    server: a whole table as JSON, for each viewer, at each reload) gets those blocks from its
    heaps, where they are not handed back and the next, slightly larger ones do not fit:
    measured with ``benchmarks/soak_growth.py --front web`` (docs/reliability.rst). Returns
    False where it cannot be done (not glibc)."""
    libc = _libc()
    if libc is None:
        return False
    M_MMAP_THRESHOLD = -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold_kb) * 1024))


def share_one_heap() -> bool:
    """Let every thread allocate from the one main heap (``M_ARENA_MAX`` = 1). Left alone,
    glibc gives threads that allocate at the same moment heaps of their own (up to 8 per
    core), and each keeps its own freed pieces between the blocks still in use, where
    ``malloc_trim`` cannot hand back the pages. In a process whose threads mostly take turns
    (the web server's: Python's lock) one heap is seldom contended, and it keeps less
    (``benchmarks/soak_growth.py --front web``, docs/reliability.rst). Call it before the
    threads start: heaps made before stay. Returns False where it cannot be done (not
    glibc)."""
    libc = _libc()
    if libc is None:
        return False
    M_ARENA_MAX = -8
    return bool(libc.mallopt(M_ARENA_MAX, 1))
