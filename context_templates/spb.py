"""AMORE context file for SPB/SFX: XGM and AGIPD hit statistics (corrected data).

Proc variables (data="proc") are computed once corrected data of the run is ready.
"""
import numpy as np

from amore.context import Skip, Variable

XGM = "SA1_XTD2_XGM/XGM/DOOCS"
AGIPD_MODULE0 = "SPB_DET_AGIPD1M-1/DET/0CH0:xtdf"


@Variable(title="Trains")
def n_trains(run):
    return len(run.train_ids)


@Variable(title="XGM/Pulse energy", summary="nanmean", units="µJ")
def xgm_energy(run):
    if XGM not in run.control_sources:
        raise Skip("no SASE1 XGM in this run")
    return run[XGM, "pulseEnergy.photonFlux"].xarray()


@Variable(title="AGIPD/Module 0 mean", data="proc", summary="nanmean")
def agipd_mean(run):
    """Mean corrected signal of module 0, per block of 50 trains (bounded memory)."""
    if AGIPD_MODULE0 not in run.instrument_sources:
        raise Skip("no corrected AGIPD module 0")
    kd = run[AGIPD_MODULE0, "image.data"]
    return np.array([np.nanmean(part.ndarray()) for part in kd.split_trains(trains_per_part=50)])
