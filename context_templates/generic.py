"""AMORE context file: the variables computed for every run.

Each function decorated with @Variable becomes a column of the run table. The first argument is
the run (an extra-data DataCollection, see https://extra-data.readthedocs.io). Save this file and
the running backend reloads it; reprocess older runs with `amore-proto reprocess all`.
"""
import numpy as np

from amore.context import Variable


@Variable(title="Trains")
def n_trains(run):
    """Number of trains recorded in the run."""
    return len(run.train_ids)


@Variable(title="Run length", units="s")
def run_length(run):
    """Seconds from the first to the last train (10 trains per second)."""
    ts = run.train_timestamps()
    return float((ts[-1] - ts[0]) / np.timedelta64(1, "s"))


@Variable(title="Sources")
def n_sources(run):
    """Number of data sources (devices) in the run."""
    return len(run.all_sources)
