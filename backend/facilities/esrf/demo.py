"""ESRF collections as MXCuBE leaves them, for tests and the demo (``amore-proto demo --facility
esrf``, :class:`EsrfDemo`): :func:`write_esrf_collection` writes a collection folder with a
``metadata.json`` holding the keys MXCuBE writes (standard MX with ``startDate``/``endDate`` in
Europe/Paris offset, or ID29 SSX without dates) and a few data files.
"""
from __future__ import annotations

import json
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

PARIS = timezone(timedelta(hours=2))
#: The demo's proposal (an ESRF experiment).
DEMO_PROPOSAL = "mx2532"

DEMO_ATTRIBUTI = """[
  {"beamline-name": "MX_exposureTime", "attributo-name": "exposure", "attributo-type": "number"},
  {"beamline-name": "MX_numberOfImages", "attributo-name": "images", "attributo-type": "integer"},
  {"beamline-name": "MX_transmission", "attributo-name": "transmission", "attributo-type": "number"},
  {"beamline-name": "Sample_name", "attributo-name": "sample", "attributo-type": "string"}
]
"""


def write_esrf_collection(session_dir: str | Path, sample: str, collection: str, *,
                          reported_dir: str | None = None, dated: bool = True,
                          start: float | None = None, n_images: int = 900,
                          exposure: float = 0.01, n_files: int = 2, overrides: dict | None = None
                          ) -> Path:
    """Write ``<session_dir>/RAW_DATA/<sample>/<collection>/`` (``collection`` may have
    several levels, e.g. ``run_01_MXPressE/run_01_05_datacollection``) with data files and the
    ``metadata.json`` MXCuBE writes there; returns the metadata.json path.

    ``reported_dir``: the ``MX_directory`` written into the file (as the beamline sees it, for
    path prefix rewriting tests; default the real folder). ``dated``: standard MX collection
    with ``startDate``/``endDate`` (+02:00); False: ID29 SSX style (no dates: times come from the
    data files). ``overrides``: keys replaced or added (e.g. wrong types).
    """
    d = Path(session_dir) / "RAW_DATA" / sample / collection
    d.mkdir(parents=True, exist_ok=True)
    start = time.time() - 120 if start is None else start
    for i in range(n_files):
        f = d / f"{d.name}_{i + 1:05d}.h5"
        f.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    md = {
        "MX_beamShape": "ELLIPTICAL",
        "MX_beamSizeAtSampleX": 0.003,
        "MX_beamSizeAtSampleY": 0.004,
        "MX_detectorDistance": 182.4375,
        "MX_directory": reported_dir or str(d),
        "MX_exposureTime": exposure,
        "MX_flux": 28886038049.230362,
        "MX_numberOfImages": n_images,
        "MX_positionName": None,
        "MX_resolution": 1.5799984192455605,
        "MX_transmission": 12.5,
        "MX_wavelength": 0.976254,
        "Sample_name": sample,
        "Project_name": sample,
    }
    if dated:
        md["startDate"] = datetime.fromtimestamp(start, PARIS).isoformat(timespec="microseconds")
        md["endDate"] = datetime.fromtimestamp(start + n_images * exposure + 5,
                                               PARIS).isoformat(timespec="microseconds")
    md.update(overrides or {})
    path = d / "metadata.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(md, indent=4))
    tmp.rename(path)
    return path


class EsrfDemo:
    """``amore-proto demo --facility esrf``: a beamtime folder
    ``<base>/data/visitor/mx2532/id29/<today>/`` where a collection (data files + the
    metadata.json MXCuBE writes) appears per run; the context directory is
    ``<session>/PROCESSED_DATA/amore`` with an ``attributo-config.json``."""

    proposal = DEMO_PROPOSAL
    needs_broker = False
    topics: list[str] = []

    def prepare(self, base: Path, broker: str | None) -> dict:
        """Create the beamtime folder; returns ``data``, ``context_dir``, ``amore_toml`` and
        ``files`` (written into the context directory unless there)."""
        self.data = (Path(base) / "data" / "visitor" / DEMO_PROPOSAL / "id29"
                     / date.today().strftime("%Y%m%d"))
        (self.data / "RAW_DATA").mkdir(parents=True, exist_ok=True)
        toml = (f'facility = "esrf"\n[esrf]\nroot = "{self.data / "RAW_DATA"}"\n'
                f'attributo_config = "attributo-config.json"\nrescan_seconds = 10.0\n')
        return {"data": self.data, "context_dir": self.data / "PROCESSED_DATA" / "amore",
                "amore_toml": toml, "files": {"attributo-config.json": DEMO_ATTRIBUTI}}

    def next_run(self, n: int) -> None:
        """The ``n``-th collection (1, 2, ...); odd ones dated, even ones ID29 SSX style."""
        rng = np.random.default_rng(n)
        sample = ["lysozyme", "thaumatin", "insulin"][n % 3]
        write_esrf_collection(self.data, sample,
                              f"run_{n:02d}_MXPressE/run_{n:02d}_01_datacollection",
                              dated=n % 2 == 1, start=time.time() - 5,
                              n_images=int(rng.integers(100, 3600)),
                              exposure=float(rng.choice([0.005, 0.01, 0.02])))

    def close(self) -> None:
        pass
