"""AMORE demo context file (the one `amore-proto demo` uses).

MID-like setup: SASE2 XGM, a scanned sample motor, a sample camera and a few AGIPD modules whose
corrected (proc) data arrives after the raw data.
"""
from datetime import timedelta

import numpy as np

from amore.context import Cell, Skip, Variable

XGM = "SA2_XTD1_XGM/XGM/DOOCS"
MOTOR = "MID_EXP_UPP/MOTOR/R3"
CAM = "MID_EXP_SAM/CAM/CAM1:daqOutput"
AGIPD0 = "MID_DET_AGIPD1M-1/DET/0CH0:xtdf"


@Variable(title="Trains")
def n_trains(run):
    return len(run.train_ids)


@Variable(title="Run length")
def run_length(run):
    ts = run.train_timestamps()
    return str(timedelta(seconds=int((ts[-1] - ts[0]) / np.timedelta64(1, "s"))))


@Variable(title="Sample")
def sample(run):
    return str(run.run_metadata().get("sample", ""))


@Variable(title="XGM/Pulse energy", summary="nanmean", units="µJ", tags=["xgm"])
def xgm_energy(run):
    """Photon flux per train from the SASE2 XGM (table: mean over the run)."""
    return run[XGM, "pulseEnergy.photonFlux"].xarray()


@Variable(title="XGM/Energy trend", units="µJ", tags=["xgm"])
def xgm_trend(run, energy: "var#xgm_energy"):
    """Pulse energy per train, drawn as a sparkline."""
    return energy


@Variable(title="XGM/Stable beam", tags=["xgm"])
def xgm_stable(run, energy: "var#xgm_energy"):
    """True when the pulse energy varies by less than 10 % (RMS)."""
    e = np.asarray(energy)
    return bool(np.nanstd(e) / np.nanmean(e) < 0.1)


@Variable(title="Motor R3/Start", units="mm", tags=["motor"])
def motor_start(run):
    return float(run.get_run_value(MOTOR, "actualPosition"))


@Variable(title="Motor R3/Scan range", units="mm", tags=["motor"])
def motor_range(run):
    pos = run[MOTOR, "actualPosition"].ndarray()
    return float(pos.max() - pos.min())


@Variable(title="Camera/Mean image", tags=["camera"])
def cam_mean(run):
    """Mean sample-camera image over the run (thumbnail; double-click to inspect)."""
    return run[CAM, "data.image.pixels"].ndarray().mean(axis=0)


@Variable(title="Camera/Spot peak", units="counts", tags=["camera"])
def cam_peak(run, img: "var#cam_mean"):
    """Peak of the mean image above its median; bold above 2000 counts."""
    peak = float(img.max() - np.median(img))
    return Cell(peak, bold=peak > 2000)


@Variable(title="Camera/Spot vs. motor", tags=["camera", "motor"])
def cam_vs_motor(run):
    """Figure: camera spot intensity against motor position."""
    import matplotlib.pyplot as plt
    pos = run[MOTOR, "actualPosition"].ndarray()
    roi = run[CAM, "data.image.pixels"].ndarray()[:, 24:40, 24:40].sum(axis=(1, 2))
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(pos, roi, ".", ms=3)
    ax.set_xlabel("R3 position [mm]")
    ax.set_ylabel("ROI sum [counts]")
    fig.tight_layout()
    return fig


@Variable(title="AGIPD/Frames per train", data="proc", tags=["detector"])
def agipd_frames(run):
    """Memory cells (frames) per train recorded by AGIPD module 0 (needs corrected data)."""
    if AGIPD0 not in run.instrument_sources:
        raise Skip("no corrected AGIPD module 0 in this run")
    counts = run[AGIPD0, "image.data"].data_counts(labelled=False)
    return int(np.median(counts))
