"""Data consistency checks computed for every run without any user code: what every facility's
check shares.

One comparison serves every facility: :func:`compare_ids` takes the ids a run should have
(European XFEL train IDs, SwissFEL pulse ids) and the ids one source/channel recorded, file by
file, and counts what is missing, duplicated, out of order or outside the run. Each facility's
check reads its own files and builds its report with :func:`make_report`:
European XFEL's in :mod:`backend.facilities.euxfel.check`, SwissFEL's in
:mod:`backend.facilities.swissfel.check` (a facility plug-in offers its check as
:meth:`~backend.facilities.Facility.check_run`).

Reports are plain JSON-serialisable dicts (:func:`summarize` gives the one-line text shown in
the run table's "Data check" column). Nothing here imports the rest of the service.
"""
from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

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

def make_report(facility: str, ids: dict, stats: dict[str, IdStats], skipped: list[str],
                unreadable: list[dict], nfiles: int, id_unit: str = "trains") -> dict:
    """A check report: ``version`` 1, ``facility``, ``ids`` (the run's ids: ``first``, ``last``,
    ``count``...), ``id_unit`` (what the ids count, for people: ``"trains"``, ``"pulse ids"``),
    ``files`` (``checked``: how many, ``unreadable``: ``{"path", "error"}`` dicts), ``sources``
    (source -> :class:`IdStats` fields and ``problems``), ``skipped``, ``incomplete`` (source
    names), ``ok`` and ``summary`` (:func:`summarize`)."""
    incomplete = sorted(s for s, st in stats.items() if not st.ok)
    rep = {
        "version": 1,
        "facility": facility,
        "ids": ids,
        "id_unit": id_unit,
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
        unit = report.get("id_unit") or "trains"
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
