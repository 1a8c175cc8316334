"""File checksums of a run (raw and proc) and their comparison with stored ones.

BLAKE2b (``hashlib.blake2b``, 512-bit digest, the same as ``b2sum``) by default; SHA-256 and
SHA-512 for sites that compare with other catalogues. Files are read in large blocks into one
reused buffer, so hashing runs at the speed of the hash (hashlib releases the GIL while
hashing). :func:`lower_priority` makes the calling thread nice/idle-I/O so checksums never
compete with the computation of variables.
"""
from __future__ import annotations

import ctypes
import fnmatch
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

ALGORITHMS = ("blake2b", "sha256", "sha512")
BLOCK = 1 << 20  # bytes read at a time
_local = threading.local()

#: Files in run directories that are not data: extra-data's cache, written on first open.
DEFAULT_EXCLUDE = ("karabo_data_map.json", ".*")


def new_hash(algorithm: str):
    """A hashlib object for ``algorithm`` (one of :data:`ALGORITHMS`); ``ValueError`` otherwise."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown checksum algorithm {algorithm!r} (one of {', '.join(ALGORITHMS)})")
    return hashlib.new(algorithm)


def file_digest(path: str | os.PathLike, algorithm: str = "blake2b",
                pause=None) -> str:
    """Hex digest of a file's content. ``pause()``, if given, is called between blocks (the
    backend uses it to wait while runs are processed). Raises OSError for an unreadable file."""
    h = new_hash(algorithm)
    buf = getattr(_local, "buf", None)
    if buf is None:  # one buffer per thread: allocating (zeroing) it per file costs as much as
        buf = _local.buf = bytearray(BLOCK)  # hashing a small file
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            if pause is not None:
                pause()
    return h.hexdigest()


@dataclass
class FileState:
    """What is known of one file: absolute ``path``, ``size`` (bytes), ``mtime`` (Unix seconds),
    ``digest`` (hex) of ``algorithm``."""

    path: str
    size: int
    mtime: float
    digest: str
    algorithm: str = "blake2b"


def run_data_files(proposal_dir: str | os.PathLike, run: int,
                   exclude: Iterable[str] = DEFAULT_EXCLUDE) -> list[Path]:
    """Every file of a run, raw and proc: ``<proposal_dir>/{raw,proc}/r<run:04d>/**``, sorted,
    without names matching ``exclude`` (glob patterns on the file name)."""
    out = []
    pats = list(exclude)
    for sub in ("raw", "proc"):
        d = Path(proposal_dir) / sub / f"r{int(run):04d}"
        if not d.is_dir():
            continue
        for root, dirs, files in os.walk(d):
            dirs[:] = [x for x in dirs if not any(fnmatch.fnmatch(x, p) for p in pats)]
            for name in files:
                if not any(fnmatch.fnmatch(name, p) for p in pats):
                    out.append(Path(root) / name)
    return sorted(out)


def compute_states(files: Iterable[Path], algorithm: str = "blake2b",
                   pause=None) -> tuple[list[FileState], list[dict]]:
    """Checksum each file. Returns ``(states, errors)``; ``errors`` lists ``{"path", "error"}``
    for files that vanished or could not be read."""
    states, errors = [], []
    for p in files:
        try:
            st = os.stat(p)
            digest = file_digest(p, algorithm, pause)
            states.append(FileState(str(p), st.st_size, st.st_mtime, digest, algorithm))
        except OSError as e:
            errors.append({"path": str(p), "error": str(e)})
    return states, errors


@dataclass
class Comparison:
    """Stored checksums against the files now: ``changed`` (content differs; dicts with
    ``path``, ``stored``/``now`` digest, sizes and mtimes), ``missing`` (paths stored, gone),
    ``new`` (paths present, never checksummed), ``unchanged`` (count)."""

    changed: list[dict]
    missing: list[str]
    new: list[str]
    unchanged: int

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.new)

    def summary(self) -> str:
        if self.ok:
            return f"OK ({self.unchanged} files)"
        parts = [f"{len(v)} {k}" for k, v in (("changed", self.changed),
                                              ("missing", self.missing), ("new", self.new)) if v]
        return ", ".join(parts)


def compare(stored: dict[str, FileState], files: Iterable[Path], algorithm: str = "blake2b",
            pause=None) -> tuple[Comparison, list[FileState]]:
    """Recompute checksums of ``files`` and compare with ``stored`` (path -> :class:`FileState`
    of the same algorithm). Returns the comparison and the fresh states of the new files."""
    files = [str(p) for p in files]
    present = set(files)
    changed, new_states, unchanged = [], [], 0
    missing = sorted(p for p in stored if p not in present)
    states, errors = compute_states(files, algorithm, pause)
    for e in errors:
        if e["path"] in stored:
            missing.append(e["path"])
    for s in states:
        old = stored.get(s.path)
        if old is None:
            new_states.append(s)
        elif old.digest != s.digest:
            changed.append({"path": s.path, "stored": old.digest, "now": s.digest,
                            "stored_size": old.size, "size": s.size,
                            "stored_mtime": old.mtime, "mtime": s.mtime})
        else:
            unchanged += 1
    return Comparison(changed, sorted(missing), sorted(s.path for s in new_states),
                      unchanged), new_states


def lower_priority() -> None:
    """Make the calling thread (Linux: only this thread) run at nice 19 with idle I/O priority,
    so it only uses CPU and disk time nothing else wants. Best effort: errors are ignored."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, 19)
    except (OSError, AttributeError):
        pass
    try:  # ioprio_set(IOPRIO_WHO_PROCESS, tid, IOPRIO_CLASS_IDLE << 13)
        libc = ctypes.CDLL(None, use_errno=True)
        nr = {"x86_64": 251, "aarch64": 30}.get(os.uname().machine)
        if nr is not None:
            libc.syscall(nr, 1, tid, 3 << 13)
    except Exception:
        pass
