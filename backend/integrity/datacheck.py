"""Data consistency checks computed for every run without any user code.

One comparison serves every facility: :func:`compare_ids` takes the ids a run should have
(European XFEL train IDs, SwissFEL pulse ids) and the ids one source/channel recorded, file by
file, and counts what is missing, duplicated, out of order or outside the run.

* European XFEL (:func:`check_euxfel_run`): reads only the ``INDEX`` section of each raw file
  with h5py (no extra-data, so a damaged file is reported rather than refused), per source
  (control and instrument): trains with data, missing trains (count and the first gaps),
  duplicated train IDs, non-monotonic train IDs, train IDs outside the run. The run's train IDs
  are the contiguous range spanned by the files that hold control data (the DAQ's aggregators);
  a gap in that range is a train the run lost.
* SwissFEL (:func:`check_swissfel_acquisition`, seed 002's ``check.py``): expected pulse ids are
  ``start_pulseid..stop_pulseid`` keeping ``pid % rate_multiplicator == 0``
  (:func:`swissfel_expected_pulse_ids`); each channel's recorded pulse ids (with
  ``is_data_present`` where the file has it, :func:`read_swissfel_channels`) are compared.

Reports are plain JSON-serialisable dicts (:func:`summarize` gives the one-line text shown in
the run table's "Data check" column). Nothing here imports the rest of the service.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

#: How many gaps a report lists per source.
MAX_GAPS = 5


@dataclass
class IdStats:
    """How one source's recorded ids compare with the ids a run should have.

    ``expected``: number of ids the run should have; ``with_data``: distinct expected ids the
    source recorded; ``missing``: ``expected - with_data``; ``gaps``: the first
    :data:`MAX_GAPS` runs of consecutive missing ids as ``[first, last]`` (inclusive);
    ``duplicated``: recorded ids beyond the first occurrence of each; ``non_monotonic``:
    places where an id is smaller than the one recorded before it (within one file);
    ``outside``: distinct recorded ids that are not expected; ``fraction``: ``with_data /
    expected`` (1.0 when nothing is expected); ``required``: the fraction the configuration asks
    for; ``ok``: complete enough, no duplicates, in order, nothing outside.
    """

    expected: int
    with_data: int
    missing: int
    gaps: list
    duplicated: int
    non_monotonic: int
    outside: int
    fraction: float
    required: float = 1.0
    ok: bool = True

    def problems(self) -> list[str]:
        """Short phrases for what is wrong (empty when OK)."""
        out = []
        if self.fraction < self.required:
            gaps = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in self.gaps)
            out.append(f"{self.missing} of {self.expected} missing"
                       + (f" (first gaps {gaps})" if gaps else ""))
        if self.duplicated:
            out.append(f"{self.duplicated} duplicated")
        if self.non_monotonic:
            out.append(f"{self.non_monotonic} out of order")
        if self.outside:
            out.append(f"{self.outside} outside the run")
        return out


def _gaps(missing: np.ndarray, max_gaps: int, step: int = 1) -> list[list[int]]:
    """Runs of consecutive ids (``step`` apart) in the sorted array ``missing`` as
    ``[first, last]``, the first ``max_gaps`` of them."""
    if missing.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(missing) != step) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks - 1, [missing.size - 1]])
    return [[int(missing[a]), int(missing[b])] for a, b in zip(starts[:max_gaps], ends[:max_gaps])]


def compare_ids(expected: np.ndarray, recorded: Sequence[np.ndarray], *, required: float = 1.0,
                max_gaps: int = MAX_GAPS, step: int = 1) -> IdStats:
    """Compare the ids one source recorded with the ids the run should have.

    ``expected``: 1-D integer array of the run's ids (sorted, distinct), e.g. train IDs or pulse
    ids. ``recorded``: one 1-D integer array per file, in the order the files were written,
    holding the ids for which the source has data (duplicates and disorder are what is counted,
    so pass them as recorded). ``required``: fraction of ``expected`` the source must cover
    (0..1). ``step``: spacing of the id grid, so gaps are reported as id ranges.
    Returns :class:`IdStats`; raises ``ValueError`` for a non-1-D input.
    """
    expected = np.asarray(expected, dtype=np.int64)
    if expected.ndim != 1:
        raise ValueError("expected ids must be a 1-D array")
    parts = [np.asarray(r, dtype=np.int64).ravel() for r in recorded]
    allrec = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    uniq = np.unique(allrec)
    inside = np.isin(uniq, expected, assume_unique=True)
    with_data = int(inside.sum())
    missing_ids = expected[~np.isin(expected, uniq, assume_unique=True)]
    non_mono = int(sum(int((np.diff(p) < 0).sum()) for p in parts if p.size > 1))
    n = int(expected.size)
    frac = with_data / n if n else 1.0
    st = IdStats(expected=n, with_data=with_data, missing=int(missing_ids.size),
                 gaps=_gaps(missing_ids, max_gaps, step), duplicated=int(allrec.size - uniq.size),
                 non_monotonic=non_mono, outside=int((~inside).sum()), fraction=round(frac, 6),
                 required=float(required))
    st.ok = frac >= st.required and not st.duplicated and not st.non_monotonic and not st.outside
    return st


# ---------------------------------------------------------------------------------------------
# Configuration ([check] in amore.toml)

@dataclass
class CheckRules:
    """Which sources to check and how complete they must be (``[check]`` in ``amore.toml``).

    ``skip``: glob patterns (:mod:`fnmatch`, case-sensitive) of sources/channels not checked;
    ``expected_fraction``: pattern -> fraction (0..1) of the run's trains/pulses such a source
    must have (the first matching pattern wins; default 1.0), for sources that legitimately
    record less often.
    """

    skip: list[str] = field(default_factory=list)
    expected_fraction: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_config(cls, section: dict | None) -> "CheckRules":
        """From the ``check`` configuration table. Raises ``ValueError`` for a fraction outside
        0..1 or a wrong type."""
        section = section or {}
        skip = section.get("skip", []) or []
        if isinstance(skip, str):
            skip = [skip]
        fr = section.get("expected_fraction", {}) or {}
        if not isinstance(fr, dict):
            raise ValueError("check.expected_fraction must be a table: pattern = fraction")
        out = {}
        for k, v in fr.items():
            v = float(v)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"check.expected_fraction[{k!r}] must be within 0..1, not {v}")
            out[str(k)] = v
        return cls([str(s) for s in skip], out)

    def skipped(self, source: str) -> bool:
        return any(fnmatch.fnmatchcase(source, p) for p in self.skip)

    def required(self, source: str) -> float:
        for pat, frac in self.expected_fraction.items():
            if fnmatch.fnmatchcase(source, pat):
                return frac
        return 1.0


# ---------------------------------------------------------------------------------------------
# Reports

def _report(facility: str, ids: dict, stats: dict[str, IdStats], skipped: list[str],
            unreadable: list[dict], nfiles: int) -> dict:
    incomplete = sorted(s for s, st in stats.items() if not st.ok)
    rep = {
        "version": 1,
        "facility": facility,
        "ids": ids,
        "files": {"checked": nfiles, "unreadable": unreadable},
        "sources": {s: asdict(st) | {"problems": st.problems()} for s, st in sorted(stats.items())},
        "skipped": sorted(skipped),
        "incomplete": incomplete,
        "ok": not incomplete and not unreadable and bool(stats),
    }
    rep["summary"] = summarize(rep)
    return rep


def summarize(report: dict) -> str:
    """One line for the table: ``"OK"``, ``"2 sources incomplete"``, ``"1 file unreadable, ..."``,
    or ``"no data"``."""
    parts = []
    bad = report.get("files", {}).get("unreadable") or []
    if bad:
        parts.append(f"{len(bad)} file{'s' if len(bad) != 1 else ''} unreadable")
    n = len(report.get("incomplete") or [])
    if n:
        parts.append(f"{n} source{'s' if n != 1 else ''} incomplete")
    if not parts and not report.get("sources"):
        return "no data"
    return ", ".join(parts) if parts else "OK"


def describe(report: dict) -> str:
    """Several lines for people (tooltip, ``amore-proto check``): what is wrong per source."""
    ids = report.get("ids") or {}
    lines = []
    if ids.get("first") is not None:
        unit = "pulse ids" if report.get("facility") == "swissfel" else "trains"
        lines.append(f"{ids.get('count')} {unit} {ids.get('first')}-{ids.get('last')}, "
                     f"{len(report.get('sources') or {})} sources checked")
    for f in report.get("files", {}).get("unreadable") or []:
        lines.append(f"unreadable: {Path(f['path']).name}: {f['error']}")
    for s in report.get("incomplete") or []:
        st = report["sources"][s]
        lines.append(f"{s}: {st['with_data']}/{st['expected']}; " + "; ".join(st["problems"]))
    if report.get("skipped"):
        lines.append("not checked: " + ", ".join(report["skipped"]))
    if report.get("ok"):
        lines.append("every source complete")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# European XFEL

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
    rep = _report("euxfel", ids, stats, skipped, unreadable, len(files))
    for name, (kind, _) in per_source.items():
        if name in rep["sources"]:
            rep["sources"][name]["kind"] = kind
    return rep


# ---------------------------------------------------------------------------------------------
# SwissFEL (seed 002, docs/facility.md section 6)

def swissfel_expected_pulse_ids(start_pulseid: int, stop_pulseid: int,
                                rate_multiplicator: int = 1) -> np.ndarray:
    """Pulse ids a SwissFEL acquisition request asks for: ``start..stop`` (inclusive) keeping
    ``pid % rate_multiplicator == 0``. int64 array. Raises ``ValueError`` for
    ``stop < start`` or a rate multiplicator < 1."""
    start, stop, rate = int(start_pulseid), int(stop_pulseid), int(rate_multiplicator or 1)
    if rate < 1:
        raise ValueError(f"rate_multiplicator must be >= 1, not {rate}")
    if stop < start:
        raise ValueError(f"stop_pulseid {stop} is before start_pulseid {start}")
    first = start + (-start) % rate
    return np.arange(first, stop + 1, rate, dtype=np.int64)


def read_swissfel_channels(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Channels of one SwissFEL data file: ``name -> (pulse_ids int64, is_data_present bool or
    None)``. Reads both layouts: current ``/<channel>/pulse_id`` (data_api3) and legacy
    ``/data/<channel>/{pulse_id,is_data_present}`` (bsread). Channel names may contain ``/``
    only in the legacy layout's ``data/`` group as sub-groups; both are found by walking the
    file. Raises OSError for an unreadable file."""
    import h5py
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.endswith("/pulse_id"):
                grp = name[: -len("/pulse_id")]
                chan = grp[len("data/"):] if grp.startswith("data/") else grp
                pids = obj[:].astype(np.int64).ravel()
                present = f.get(grp + "/is_data_present")
                out[chan] = (pids, None if present is None else present[:].astype(bool).ravel())
        f.visititems(visit)
    return out


def check_pulse_ids(expected: np.ndarray, pulse_ids: np.ndarray,
                    is_data_present: np.ndarray | None = None, *, rate_multiplicator: int = 1,
                    required: float = 1.0, max_gaps: int = MAX_GAPS) -> IdStats:
    """One SwissFEL channel against the request (as seed 002's ``check.py``): recorded pulse
    ids off the rate grid (``pid % rate_multiplicator != 0``) or without data
    (``is_data_present`` False) are ignored, the rest compared with ``expected``
    (:func:`swissfel_expected_pulse_ids`). Returns :class:`IdStats`."""
    pids = np.asarray(pulse_ids, dtype=np.int64).ravel()
    keep = pids % max(int(rate_multiplicator), 1) == 0
    if is_data_present is not None:
        keep &= np.asarray(is_data_present, bool).ravel()[:pids.size]
    return compare_ids(expected, [pids[keep]], required=required, max_gaps=max_gaps,
                       step=max(int(rate_multiplicator), 1))


def check_swissfel_acquisition(request: dict, data_files: Iterable[str | Path],
                               rules: CheckRules | None = None,
                               max_gaps: int = MAX_GAPS) -> dict:
    """Check a SwissFEL acquisition: ``request`` is its ``meta/acq<NNNN>.json`` (or
    ``run_info/.../run_<N>.json``) with ``start_pulseid``, ``stop_pulseid`` and optional
    ``rate_multiplicator`` (default 1 = 100 Hz) and ``channels_list``; ``data_files`` the
    acquisition's HDF5 files. Every channel found is compared; requested channels found in no
    file count as incomplete (nothing recorded). Same report format as :func:`check_euxfel_run`
    (``facility`` ``"swissfel"``, ``ids`` in pulse ids). Raises ``KeyError`` if the request
    lacks start/stop pulse ids."""
    rules = rules or CheckRules()
    rate = int(request.get("rate_multiplicator") or 1)
    expected = swissfel_expected_pulse_ids(request["start_pulseid"], request["stop_pulseid"], rate)
    stats, skipped, unreadable, nfiles = {}, [], [], 0
    seen = set()
    for p in data_files:
        nfiles += 1
        try:
            chans = read_swissfel_channels(p)
        except Exception as e:
            unreadable.append({"path": str(p), "error": f"{type(e).__name__}: {e}"})
            continue
        for name, (pids, present) in chans.items():
            seen.add(name)
            if rules.skipped(name):
                skipped.append(name)
                continue
            stats[name] = check_pulse_ids(expected, pids, present, rate_multiplicator=rate,
                                          required=rules.required(name), max_gaps=max_gaps)
    for name in request.get("channels_list") or []:
        if name not in seen and not rules.skipped(name):
            stats[name] = check_pulse_ids(expected, np.zeros(0, np.int64),
                                          rate_multiplicator=rate, required=rules.required(name))
    ids = {"first": int(expected[0]) if expected.size else None,
           "last": int(expected[-1]) if expected.size else None,
           "count": int(expected.size), "rate_multiplicator": rate}
    return _report("swissfel", ids, stats, skipped, unreadable, nfiles)


_ACQ = re.compile(r"^acq(\d+)\.json$")


def check_swissfel_run(run_dir: str | Path, rules: CheckRules | None = None,
                       max_gaps: int = MAX_GAPS, skip_suffixes=("PVDATA",)) -> dict:
    """Check every acquisition of a SwissFEL run directory in the current layout
    (``raw/run<NNNN>[-tag]/{meta/acq<NNNN>.json, data/acq<NNNN>.<SUFFIX>.h5}``): each request
    against that acquisition's data files, except those whose suffix is in ``skip_suffixes``
    (EPICS PVs are archived at their own times, not per pulse). One report as
    :func:`check_swissfel_acquisition`; with several acquisitions the source names are
    prefixed ``acq<NNNN>:`` and ``ids`` are those of the first. Raises ``FileNotFoundError``
    when the directory has no ``meta/acq*.json``."""
    import json
    run_dir = Path(run_dir)
    metas = sorted((int(m.group(1)), p) for p in (run_dir / "meta").glob("acq*.json")
                   if (m := _ACQ.match(p.name)))
    if not metas:
        raise FileNotFoundError(f"no meta/acq*.json in {run_dir}")
    reports = []
    for n, meta in metas:
        request = json.loads(meta.read_text())
        files = [p for p in sorted((run_dir / "data").glob(f"acq{n:04d}.*.h5"))
                 if p.name.split(".")[-2] not in skip_suffixes]
        reports.append((n, check_swissfel_acquisition(request, files, rules, max_gaps)))
    if len(reports) == 1:
        return reports[0][1]
    merged = {"version": 1, "facility": "swissfel", "ids": reports[0][1]["ids"],
              "files": {"checked": 0, "unreadable": []}, "sources": {}, "skipped": [],
              "incomplete": []}
    for n, rep in reports:
        merged["files"]["checked"] += rep["files"]["checked"]
        merged["files"]["unreadable"] += rep["files"]["unreadable"]
        merged["sources"].update({f"acq{n:04d}:{s}": v for s, v in rep["sources"].items()})
        merged["skipped"] += [f"acq{n:04d}:{s}" for s in rep["skipped"]]
        merged["incomplete"] += [f"acq{n:04d}:{s}" for s in rep["incomplete"]]
    merged["ok"] = not merged["incomplete"] and not merged["files"]["unreadable"]
    merged["summary"] = summarize(merged)
    return merged
