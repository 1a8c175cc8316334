"""AMORE context file for a SwissFEL pgroup: variables for every run (acquisition request).

The first argument is the run: ``run.metadata`` (the acquisition request JSON as sf_daq_broker
saved it, a dict, unknown fields kept), ``run.data_dir`` (a pathlib.Path, ``raw/<directory_name>``
or ``raw/run<NNNN>/data``), ``run.files`` (its data files). ``meta#metadata`` is the same dict;
``meta#start_time`` the request time (Unix seconds), ``meta#pgroup``, ``meta#beamline``.
"""
from amore.context import Variable


@Variable(title="Pulses")
def n_pulses(run):
    """Pulse IDs requested (start..stop, every rate_multiplicator-th pulse)."""
    md = run.metadata
    rate = md.get("rate_multiplicator") or 1
    start, stop = md["start_pulseid"], md["stop_pulseid"]
    return len(range(start + (-start) % rate, stop + 1, rate))


@Variable(title="Channels")
def n_channels(run):
    """Number of beam-synchronous channels requested."""
    return len(run.metadata.get("channels_list") or [])


@Variable(title="Data files")
def n_files(run):
    """Data files written for the run so far."""
    return len(run.files)
