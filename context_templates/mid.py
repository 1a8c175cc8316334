"""AMORE context file for MID: XGM, sample motor and the sample camera.

Source names are those of the MID instrument at SASE2; adapt them to your setup.
"""
from datetime import timedelta

import numpy as np

from amore.context import Cell, Skip, Variable

XGM = "SA2_XTD1_XGM/XGM/DOOCS"
MOTOR = "MID_EXP_UPP/MOTOR/R3"
CAM = "MID_EXP_SAM/CAM/CAM1:daqOutput"


@Variable(title="Trains")
def n_trains(run):
    return len(run.train_ids)


@Variable(title="Run length")
def run_length(run):
    ts = run.train_timestamps()
    return str(timedelta(seconds=int((ts[-1] - ts[0]) / np.timedelta64(1, "s"))))


@Variable(title="Sample")
def sample(run):
    """Sample name recorded by the DAQ."""
    return str(run.run_metadata().get("sample", ""))


@Variable(title="XGM/Pulse energy", summary="nanmean", units="µJ", tags=["xgm"])
def xgm_energy(run):
    """Photon flux per train from the SASE2 XGM."""
    if XGM not in run.control_sources:
        raise Skip("no XGM in this run")
    return run[XGM, "pulseEnergy.photonFlux"].xarray()


@Variable(title="Motor R3/Start", units="mm", tags=["motor"])
def motor_start(run):
    return float(run.get_run_value(MOTOR, "actualPosition"))


@Variable(title="Motor R3/Scan range", units="mm", tags=["motor"])
def motor_range(run):
    pos = run[MOTOR, "actualPosition"].ndarray()
    return float(pos.max() - pos.min())


@Variable(title="Camera/Mean image", tags=["camera"])
def cam_mean(run):
    """Mean sample-camera image over the run."""
    if CAM not in run.instrument_sources:
        raise Skip("no camera in this run")
    return run[CAM, "data.image.pixels"].ndarray().mean(axis=0)


@Variable(title="Camera/Spot intensity", tags=["camera"])
def cam_spot(run, img: "var#cam_mean"):
    """Peak of the mean camera image above its median, bold when above 100 counts."""
    peak = float(img.max() - np.median(img))
    return Cell(peak, bold=peak > 100)
