"""A real one-node Slurm cluster on loopback for the tests (Debian's ``slurm-wlm``).

``slurm_cluster`` (session) starts ``slurmctld`` and ``slurmd`` as root in a temporary directory
with their own free ports and ``slurm.conf`` (the settings of FACILITY.md, section 5);
``slurm`` (per test) points ``SLURM_CONF`` at it and cancels the test's left-over jobs. Tests
using them are skipped, with the reason, only where ``slurmctld`` is not installed or cannot run.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PARTITION = "amoretest"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    """A running test cluster: ``conf`` (its slurm.conf), ``partition``, ``node`` (host name),
    ``cpus``, ``jobcomp`` (the job-completion file: one line per finished job)."""

    dir: Path
    conf: Path
    partition: str
    node: str
    cpus: int
    jobcomp: Path

    def env(self) -> dict:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def run(self, *args, check=True) -> str:
        """Run a Slurm command against this cluster; its stdout."""
        p = subprocess.run(list(args), env=self.env(), capture_output=True, text=True, timeout=30)
        if check and p.returncode:
            raise RuntimeError(f"{' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    def jobs(self) -> list[str]:
        """Ids of the jobs still in the queue (pending or running)."""
        return self.run("squeue", "-h", "-r", "-o", "%i").split()


def _skip(reason: str):
    print(f"\nSlurm tests skipped: {reason}", file=sys.stderr)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start slurmctld + slurmd (own ports, state in a temp dir); stop them at the end."""
    ctld = shutil.which("slurmctld") or ("/usr/sbin/slurmctld" if os.path.exists("/usr/sbin/slurmctld") else None)
    slurmd = shutil.which("slurmd") or ("/usr/sbin/slurmd" if os.path.exists("/usr/sbin/slurmd") else None)
    if not ctld or not slurmd or not shutil.which("sbatch"):
        _skip("slurmctld/slurmd/sbatch not installed (Debian: apt-get install slurm-wlm; "
              "./dev test installs it)")
    if os.geteuid() != 0:
        _skip("the one-node test cluster runs slurmctld/slurmd as root; not root here")
    d = Path(tempfile.mkdtemp(prefix="amore-slurm-"))
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    conf = d / "slurm.conf"
    jobcomp = d / "jobcomp.txt"
    (d / "state").mkdir()
    (d / "spool").mkdir()
    conf.write_text(f"""\
ClusterName=amoretest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmUser=root
SlurmdUser=root
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={jobcomp}
MinJobAge=300
KillWait=2
InactiveLimit=0
SchedulerParameters=sched_interval=1
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=8000 State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    cluster = SlurmCluster(d, conf, PARTITION, host, cpus, jobcomp)
    env = cluster.env()
    started = []
    try:
        for cmd in ([ctld, "-f", str(conf)], [slurmd, "-f", str(conf)]):
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
            if p.returncode:
                _skip(f"{' '.join(cmd)} failed: {p.stderr.strip() or p.stdout.strip()}")
        deadline = time.monotonic() + 30
        while True:
            try:
                state = cluster.run("sinfo", "-h", "-o", "%t").split()
            except RuntimeError:
                state = []
            if state and state[0] in ("idle", "mix", "alloc"):
                break
            if time.monotonic() > deadline:
                log = (d / "slurmctld.log").read_text()[-2000:] if (d / "slurmctld.log").exists() else ""
                _skip(f"the test cluster did not come up within 30 s (sinfo: {state}); {log}")
            time.sleep(0.2)
        yield cluster
    finally:
        subprocess.run(["scancel", "--partition", PARTITION], env=env, capture_output=True,
                       timeout=30)
        for name in ("slurmd.pid", "slurmctld.pid"):
            try:
                os.kill(int((d / name).read_text()), signal.SIGTERM)
            except (FileNotFoundError, ValueError, ProcessLookupError):
                pass
        time.sleep(0.5)
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
