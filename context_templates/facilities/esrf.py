"""AMORE context file for an ESRF beamtime (ID29 and MX beamlines): variables for every
collection.

The first argument is the collection: ``run.metadata`` (the metadata.json MXCuBE wrote, a dict),
``run.data_dir`` (a pathlib.Path, after path prefix rewriting), ``run.files`` (the data files
there). ``meta#metadata`` is the same dict; ``meta#tag`` the collection's folder name,
``meta#sample``, ``meta#start_time`` / ``meta#stop_time`` (Unix seconds), ``meta#run_number``
(synthesised by AMORE, in order of collection). The attributes of AMARCORD's
attributo-config.json become columns by themselves.
"""
from amore.context import Skip, Variable


@Variable(title="Data files")
def n_files(run):
    """Number of data files in the collection's directory."""
    return len(run.files)


@Variable(title="Images expected")
def images(run):
    """MX_numberOfImages from metadata.json."""
    n = run.metadata.get("MX_numberOfImages")
    if n is None:
        raise Skip("MX_numberOfImages not given")
    return n


@Variable(title="Tag")
def tag(run, tag: "meta#tag" = ""):
    """The collection's folder name (AMARCORD's run tag)."""
    return tag
