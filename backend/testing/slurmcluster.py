"""A one-node Slurm cluster on loopback (Debian's ``slurm-wlm``), for tests and benchmarks.

:func:`start_cluster` writes a ``slurm.conf`` into a directory (own free ports, state, spool, pid
and log files there; the settings verified on these machines: ``auth/none``,
``proctrack/linuxproc``, ``select/cons_tres`` with ``CR_Core_Memory``, ``DefMemPerCPU``, a
job-completion file; memory sampled every second and jobs over their ``--mem`` killed) and starts ``slurmctld`` and ``slurmd`` as root. Commands reach it with
``SLURM_CONF`` pointing at that file (:meth:`SlurmCluster.env`). Pure standard library.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be started here; the text says why (not installed, not root, ...)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/local/sbin/{name}")
                                       if os.path.exists(p)), None)


@dataclass
class SlurmCluster:
    """A running cluster: ``conf`` (its slurm.conf), ``partition``, ``node`` (host name),
    ``cpus``, ``jobcomp`` (job-completion file: one line per finished job)."""

    dir: Path
    conf: Path
    partition: str
    node: str
    cpus: int
    jobcomp: Path

    def env(self) -> dict:
        """``os.environ`` with ``SLURM_CONF`` set to this cluster."""
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def run(self, *args, check=True) -> str:
        """Run a Slurm command against this cluster; its stdout. Raises ``RuntimeError``."""
        p = subprocess.run(list(args), env=self.env(), capture_output=True, text=True, timeout=30)
        if check and p.returncode:
            raise RuntimeError(f"{' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    def jobs(self) -> list[str]:
        """Ids of the jobs still in the queue (pending or running), one per array task."""
        return self.run("squeue", "-h", "-r", "-o", "%i").split()

    def stop(self) -> None:
        """Cancel every job and wait (10 s at most) for them to end, stop slurmd and slurmctld,
        then end job step daemons of this cluster left behind (``slurmstepd`` processes whose
        ``SLURM_CONF`` is this cluster's)."""
        subprocess.run(["scancel", "--partition", self.partition], env=self.env(),
                       capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if not self.jobs():
                    break
            except (RuntimeError, subprocess.TimeoutExpired):
                break
            time.sleep(0.2)
        for name in ("slurmd.pid", "slurmctld.pid"):
            try:
                os.kill(int((self.dir / name).read_text()), signal.SIGTERM)
            except (FileNotFoundError, ValueError, ProcessLookupError):
                pass
        time.sleep(0.5)
        for pid in self._stepds():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _stepds(self) -> list[int]:
        mine = f"SLURM_CONF={self.conf}".encode()
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if b"slurmstepd" in (d / "cmdline").read_bytes() and \
                        mine in (d / "environ").read_bytes().split(b"\0"):
                    out.append(int(d.name))
            except OSError:
                continue
        return out


def start_cluster(directory: str | os.PathLike, partition: str = "amoretest",
                  memory_mb: int = 8000, timeout: float = 30.0) -> SlurmCluster:
    """Start a one-node cluster with its files in ``directory`` (created). Raises
    :class:`ClusterUnavailable` if slurm-wlm is missing, we are not root, or the node does not
    come up within ``timeout`` seconds."""
    ctld, slurmd = _sbin("slurmctld"), _sbin("slurmd")
    if not ctld or not slurmd or not shutil.which("sbatch"):
        raise ClusterUnavailable("slurmctld/slurmd/sbatch not installed (Debian: apt-get install "
                                 "slurm-wlm; ./dev test installs it)")
    if os.geteuid() != 0:
        raise ClusterUnavailable("the one-node cluster runs slurmctld/slurmd as root; not root here")
    d = Path(directory)
    (d / "state").mkdir(parents=True, exist_ok=True)
    (d / "spool").mkdir(exist_ok=True)
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    conf = d / "slurm.conf"
    jobcomp = d / "jobcomp.txt"
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
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    cluster = SlurmCluster(d, conf, partition, host, cpus, jobcomp)
    env = cluster.env()
    for cmd in ([ctld, "-f", str(conf)], [slurmd, "-f", str(conf)]):
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
        if p.returncode:
            cluster.stop()
            raise ClusterUnavailable(f"{' '.join(cmd)} failed: {p.stderr.strip() or p.stdout.strip()}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = cluster.run("sinfo", "-h", "-o", "%t").split()
        except (RuntimeError, subprocess.TimeoutExpired):
            state = []
        if state and state[0] in ("idle", "mix", "alloc"):
            return cluster
        if time.monotonic() > deadline:
            log = d / "slurmctld.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            cluster.stop()
            raise ClusterUnavailable(f"the cluster did not come up within {timeout:.0f} s "
                                     f"(sinfo: {state}); {tail}")
        time.sleep(0.2)
