"""A real one-node Slurm cluster on loopback for the tests (Debian's ``slurm-wlm``;
:mod:`backend.testing.slurmcluster`).

``slurm_cluster`` (session) starts ``slurmctld`` and ``slurmd`` as root in a temporary directory
with their own free ports and ``slurm.conf`` (the settings of FACILITY.md, section 5);
``slurm`` (per test) points ``SLURM_CONF`` at it and cancels the test's left-over jobs. Tests
using them are skipped, with the reason printed, only where the cluster cannot be started
(``slurmctld`` not installed, not root). Where ``slurmdbd`` and ``mariadb-server`` are
installed the cluster has accounting (``sacct``; ``slurm_cluster.accounting``); where not, it
runs without and the one test that needs it is skipped, saying why.
"""
from __future__ import annotations

import shutil
import sys
import tempfile

import pytest

from backend.testing.slurmcluster import ClusterUnavailable, start_cluster


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start slurmctld + slurmd, with slurmdbd + MariaDB where installed (own ports, state in
    a temp dir); stop them at the end."""
    d = tempfile.mkdtemp(prefix="amore-slurm-")
    try:
        cluster = start_cluster(d)
    except ClusterUnavailable as e:
        shutil.rmtree(d, ignore_errors=True)
        print(f"\nSlurm tests skipped: {e}", file=sys.stderr)
        pytest.skip(f"Slurm test cluster not available: {e}")
    if not cluster.accounting:
        print(f"\nSlurm test cluster without accounting (sacct): {cluster.accounting_reason}",
              file=sys.stderr)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def slurm(slurm_cluster, monkeypatch):
    """The test cluster with ``SLURM_CONF`` set for this test (and its subprocesses);
    jobs the test leaves behind are cancelled."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    yield slurm_cluster
    left = slurm_cluster.jobs()
    if left:
        slurm_cluster.run("scancel", *left, check=False)
