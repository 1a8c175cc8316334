"""European XFEL's data check: every source of a run's raw files has data for every train.

:func:`check_euxfel_run` reads only the ``INDEX`` section of each raw file with h5py (no
extra-data, so a damaged file is reported rather than refused), per source (control and
instrument): trains with data, missing trains (count and the first gaps), duplicated train IDs,
non-monotonic train IDs, train IDs outside the run. The run's train IDs are the contiguous range
spanned by the files that hold control data (the DAQ's aggregators); a gap in that range is a
train the run lost. The comparison itself and the report are the generic ones of
:mod:`backend.integrity.datacheck`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.integrity.datacheck import MAX_GAPS, CheckRules, compare_ids, make_report



@dataclass
class _FileIndex:
    path: Path
    train_ids: np.ndarray                       # INDEX/trainId without padding zeros
    sources: dict[str, tuple[str, np.ndarray]]  # source -> (kind, bool has-data per train)


def _read_euxfel_index(path: Path) -> _FileIndex:
    """The INDEX of one European XFEL HDF5 file (file format >= 1.0 through h5py's low-level
    API, ~3x quicker than the high-level one; otherwise :func:`_read_euxfel_index_h5py`).
    An instrument source's trains with data are those of its ``image`` or ``data`` index group
    when it has one (the group carrying its data), else of any of its groups.
    Raises OSError/KeyError/ValueError when the file cannot be read."""
    try:
        return _read_euxfel_index_fast(path)
    except Exception:
        return _read_euxfel_index_h5py(path)


def _read_euxfel_index_fast(path: Path) -> _FileIndex:
    from h5py import h5d, h5f, h5s

    fid = h5f.open(str(path).encode(), h5f.ACC_RDONLY)
    try:
        def read(name: str) -> np.ndarray:
            ds = h5d.open(fid, name.encode())
            arr = np.empty(ds.shape, dtype=ds.dtype)
            ds.read(h5s.ALL, h5s.ALL, arr)
            return arr

        tid = read("INDEX/trainId").astype(np.int64)
        valid = tid != 0
        wanted: dict[str, tuple[str, list[str]]] = {}
        for sid in read("METADATA/dataSources/dataSourceId"):
            if not sid:
                continue
            sid = sid.decode() if isinstance(sid, bytes) else str(sid)
            cat, _, h5src = sid.partition("/")
            if cat == "CONTROL":
                wanted[h5src] = ("control", [f"INDEX/{h5src}/count"])
            elif cat == "INSTRUMENT":
                dev, _, chan_grp = h5src.partition(":")
                chan, _, group = chan_grp.partition("/")
                name = f"{dev}:{chan}"
                wanted.setdefault(name, ("instrument", []))[1].append(
                    f"INDEX/{name}/{group}/count")
        sources: dict[str, tuple[str, np.ndarray]] = {}
        for name, (kind, paths) in wanted.items():
            # the index group that carries a source's data speaks for it (a detector's
            # "image", an output channel's "data"); otherwise any group with data counts
            main = [p for p in paths if p.endswith(("/image/count", "/data/count"))]
            has = np.zeros(tid.size, bool)
            for idx in main[:1] or paths:
                counts = read(idx)
                has[:counts.size] |= counts[:tid.size] > 0
            sources[name] = (kind, has)
    finally:
        fid.close()
    return _FileIndex(path, tid[valid], {n: (k, h[valid]) for n, (k, h) in sources.items()})


def _read_euxfel_index_h5py(path: Path) -> _FileIndex:
    """:func:`_read_euxfel_index` through h5py's high-level API (any file format version)."""
    import h5py
    with h5py.File(path, "r") as f:
        tid = f["INDEX/trainId"][:].astype(np.int64)
        valid = tid != 0
        fv = f.get("METADATA/dataFormatVersion")
        ids_path = ("METADATA/dataSources/dataSourceId" if fv is not None
                    else "METADATA/dataSourceId")
        sources: dict[str, tuple[str, list[np.ndarray]]] = {}
        for sid in f[ids_path][:]:
            if not sid:
                continue
            sid = sid.decode() if isinstance(sid, bytes) else str(sid)
            cat, _, h5src = sid.partition("/")
            if cat == "CONTROL":
                name, idx = h5src, f"INDEX/{h5src}/count"
            elif cat == "INSTRUMENT":
                dev, _, chan_grp = h5src.partition(":")
                chan, _, group = chan_grp.partition("/")
                name, idx = f"{dev}:{chan}", f"INDEX/{dev}:{chan}/{group}/count"
            else:
                continue
            counts = f[idx][:]
            has = np.zeros(tid.size, bool)
            has[:counts.size] = counts[:tid.size] > 0
            kind = "control" if cat == "CONTROL" else "instrument"
            sources.setdefault(name, (kind, []))[1].append(has)
        merged = {n: (k, np.logical_or.reduce(a)) for n, (k, a) in sources.items()}
    return _FileIndex(path, tid[valid], {n: (k, h[valid]) for n, (k, h) in merged.items()})


_SEQ = re.compile(r"-S(\d+)\.h5$")


def run_files(run_dir: str | Path) -> list[Path]:
    """HDF5 files of one run directory, in aggregator then sequence order."""
    files = [p for p in Path(run_dir).glob("*.h5") if p.is_file()]

    def key(p: Path):
        m = _SEQ.search(p.name)
        return (_SEQ.sub("", p.name), int(m.group(1)) if m else 0, p.name)
    return sorted(files, key=key)


def check_euxfel_run(run_dir: str | Path, rules: CheckRules | None = None,
                     max_gaps: int = MAX_GAPS) -> dict:
    """Check one European XFEL run directory (``.../raw/r0012``) source by source.

    Returns a report dict (``version``, ``facility`` ``"euxfel"``, ``ids``: the run's trains
    ``first``/``last``/``count``, ``files``: ``checked`` and ``unreadable`` (path, error),
    ``sources``: source -> :class:`IdStats` fields plus ``kind`` and ``problems``, ``skipped``,
    ``incomplete`` (source names), ``ok``, ``summary``). A file that cannot be read (truncated,
    not HDF5) is listed as unreadable, not raised. Raises ``FileNotFoundError`` if the directory
    does not exist.
    """
    rules = rules or CheckRules()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory {run_dir}")
    indexes, unreadable = [], []
    files = run_files(run_dir)
    for p in files:
        try:
            indexes.append(_read_euxfel_index(p))
        except Exception as e:  # truncated or damaged file: report, never raise
            unreadable.append({"path": str(p), "error": f"{type(e).__name__}: {e}"})
    ctrl = [ix.train_ids for ix in indexes
            if any(k == "control" for k, _ in ix.sources.values())] or \
           [ix.train_ids for ix in indexes]
    all_ctrl = np.concatenate(ctrl) if ctrl else np.zeros(0, np.int64)
    if all_ctrl.size:
        lo, hi = int(all_ctrl.min()), int(all_ctrl.max())
        expected = np.arange(lo, hi + 1, dtype=np.int64)
        ids = {"first": lo, "last": hi, "count": int(expected.size),
               "recorded": int(np.unique(all_ctrl).size)}
    else:
        expected = np.zeros(0, np.int64)
        ids = {"first": None, "last": None, "count": 0, "recorded": 0}
    per_source: dict[str, tuple[str, list[np.ndarray]]] = {}
    for ix in indexes:
        for name, (kind, has) in ix.sources.items():
            per_source.setdefault(name, (kind, []))[1].append(ix.train_ids[has])
    stats, skipped = {}, []
    for name, (kind, rec) in per_source.items():
        if rules.skipped(name):
            skipped.append(name)
            continue
        st = compare_ids(expected, rec, required=rules.required(name), max_gaps=max_gaps)
        stats[name] = st
    rep = make_report("euxfel", ids, stats, skipped, unreadable, len(files))
    for name, (kind, _) in per_source.items():
        if name in rep["sources"]:
            rep["sources"][name]["kind"] = kind
    return rep
