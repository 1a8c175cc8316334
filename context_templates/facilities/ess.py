"""AMORE context file for an ESS instrument: the variables computed for every run.

The first argument is the run's NeXus file written by the ESS file writer, opened read-only with
h5py (``run["/entry/title"]``...). ``meta#`` inputs give what the file writer announced:
``meta#run_name``, ``meta#instrument``, ``meta#start_time`` / ``meta#stop_time`` (Unix seconds),
``meta#file_name``, ``meta#job_id``, ``meta#metadata`` (the pl72 metadata JSON, a dict),
``meta#run_number``, ``meta#proposal``. Metadata columns without Python go in amore.toml
([columns.NAME] with hdf5 = "/entry/...", type, units, reduce).
"""
import numpy as np

from amore.context import Skip, Variable


def _text(ds):
    v = ds[()]
    if isinstance(v, np.ndarray):
        v = v.reshape(-1)[0]
    return v.decode() if isinstance(v, bytes) else str(v)


@Variable(title="Title")
def title(run):
    """The run's title (/entry/title)."""
    if "/entry/title" not in run:
        raise Skip("no /entry/title")
    return _text(run["/entry/title"])


@Variable(title="Sample")
def sample(run):
    """Sample name (/entry/sample/name)."""
    if "/entry/sample/name" not in run:
        raise Skip("no sample name")
    return _text(run["/entry/sample/name"])


@Variable(title="Duration", units="s")
def duration(run, start: "meta#start_time" = None, stop: "meta#stop_time" = None):
    """Seconds from the run start to the run stop the file writer announced."""
    if not start or not stop:
        raise Skip("start or stop time unknown")
    return stop - start
