"""SwissFEL acquisitions as sf_daq_broker saves them, for tests and the demo (``amore-proto demo
--facility swissfel``, :class:`SwissfelDemo`): :func:`write_swissfel_request` writes
``raw/run_info/<thousands:06>/run_<run:06>.json`` (the seed's layout) or
``raw/run<NNNN>/meta/acq<NNNN>.json`` (the current one), and the acquisition's data files.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np

#: The demo's proposal (a pgroup).
DEMO_PGROUP = "p18493"


def write_swissfel_request(pgroup_dir: str | Path, run: int, *, pgroup: str,
                           layout: str = "run_info", directory_name: str = "sample/scan",
                           beamline: str = "alvra", n_channels: int = 2, acquisition: int = 1,
                           drop: tuple = (), start_pulseid: int = 11884948775,
                           n_pulses: int = 1000, rate_multiplicator: int = 1) -> Path:
    """Write one accepted acquisition request as sf_daq_broker saves it; returns its path.

    ``layout``: ``"run_info"`` (``raw/run_info/<run//1000*1000:06>/run_<run:06>.json``, data
    ``raw/<directory_name>/run_<run:06>.<KIND>.h5``) or ``"meta"`` (``raw/run<run:04>/meta/
    acq<acquisition:04>.json``, data ``raw/run<run:04>/data/acq<acquisition:04>.<KIND>.h5``).
    ``drop``: keys left out (malformed requests).
    """
    raw = Path(pgroup_dir) / "raw"
    req = {
        "pgroup": pgroup,
        "directory_name": directory_name,
        "start_pulseid": start_pulseid,
        "stop_pulseid": start_pulseid + n_pulses - 1,
        "rate_multiplicator": rate_multiplicator,
        "channels_list": [f"SAR-CVME-TIFALL{i}:EvtSet" for i in range(n_channels)],
        "pv_list": ["SARFE10-OAPU044:MOTOR_X"],
        "detectors": {"JF07T32V01": {}},
        "scan_info": {"scan_name": "scan_test", "name": ["motor1"], "scan_values": [11.01]},
        "beamline": beamline,
        "run_number": run,
        "request_time": datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f"),
        "operator_note": "kept although unknown",
    }
    if layout == "run_info":
        path = raw / "run_info" / f"{run // 1000 * 1000:06d}" / f"run_{run:06d}.json"
        data = raw / directory_name
        names = [f"run_{run:06d}.{k}.h5" for k in ("BSDATA", "PVDATA", "JF07T32V01")]
    else:
        req.pop("directory_name")
        req.update({"acquisition_number": acquisition, "unique_acquisition_run_number": acquisition,
                    "user_tag": "", "append_user_tag_to_data_dir": False})
        path = raw / f"run{run:04d}" / "meta" / f"acq{acquisition:04d}.json"
        data = raw / f"run{run:04d}" / "data"
        names = [f"acq{acquisition:04d}.{k}.h5" for k in ("BSDATA", "PVDATA", "JF07T32V01")]
    for k in drop:
        req.pop(k, None)
    data.mkdir(parents=True, exist_ok=True)
    for n in names:
        (data / n).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(req, indent=2))
    tmp.rename(path)
    return path


class SwissfelDemo:
    """``amore-proto demo --facility swissfel``: a pgroup directory ``<base>/sf/alvra/data/
    p18493`` where an acquisition request JSON (the seed's ``raw/run_info`` layout and the
    current ``raw/run<NNNN>/meta`` one in turn) and its data files appear per run; the context
    directory is ``<pgroup>/res/amore``."""

    proposal = DEMO_PGROUP
    needs_broker = False
    topics: list[str] = []

    def prepare(self, base: Path, broker: str | None) -> dict:
        """Create the pgroup directory; returns ``data``, ``context_dir`` and ``amore_toml``."""
        self.data = Path(base) / "sf" / "alvra" / "data" / DEMO_PGROUP
        self.data.mkdir(parents=True, exist_ok=True)
        toml = (f'facility = "swissfel"\n[swissfel]\nroot = "{self.data}"\nrescan_seconds = 10.0\n'
                f'[columns.rate]\nkey = "rate_multiplicator"\ntype = "integer"\n'
                f'[columns.scan]\nkey = "scan_info.scan_name"\ntype = "string"\n')
        return {"data": self.data, "context_dir": self.data / "res" / "amore", "amore_toml": toml}

    def next_run(self, n: int) -> None:
        """The next run number's acquisition, odd demo runs in the seed's layout."""
        rng = np.random.default_rng(n)
        existing = [int(p.stem.split("_")[1]) for p in self.data.glob("raw/run_info/*/run_*.json")]
        existing += [int(p.name[3:7]) for p in self.data.glob("raw/run[0-9][0-9][0-9][0-9]*")]
        run = max(existing, default=0) + 1
        write_swissfel_request(self.data, run, pgroup=DEMO_PGROUP,
                               layout="run_info" if n % 2 else "meta",
                               n_channels=int(rng.integers(2, 40)),
                               rate_multiplicator=int(rng.choice([1, 2, 4])))

    def close(self) -> None:
        pass
