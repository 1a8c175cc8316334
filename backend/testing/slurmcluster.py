"""A one-node Slurm cluster on loopback (Debian's ``slurm-wlm``), for tests and benchmarks.

:func:`start_cluster` writes a ``slurm.conf`` into a directory (own free ports, state, spool, pid
and log files there; the settings verified on these machines: ``auth/none``,
``proctrack/linuxproc``, ``select/cons_tres`` with ``CR_Core_Memory``, ``DefMemPerCPU``, a
job-completion file; memory sampled every second and jobs over their ``--mem`` killed) and starts ``slurmctld`` and ``slurmd`` as root. Commands reach it with
``SLURM_CONF`` pointing at that file (:meth:`SlurmCluster.env`). Pure standard library.

Accounting (``sacct``): where Debian's ``slurmdbd`` and ``mariadb-server`` are installed, a
private ``mariadbd`` (data directory, socket and port of its own, ``--skip-grant-tables``, on
127.0.0.1 only) and ``slurmdbd`` (``auth/none``, its ``slurmdbd.conf`` next to ``slurm.conf``,
mode 600) are started first and the cluster is registered (``sacctmgr add cluster``); slurmctld
then stores every job there and forgets finished jobs after ``MinJobAge=2`` seconds, as a busy
site's controller does. Where they are missing or do not start, the cluster runs as before
(``accounting_storage/none``, ``MinJobAge=300``); :attr:`SlurmCluster.accounting` says which and
:attr:`SlurmCluster.accounting_reason` why.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be started here; the text says why (not installed, not root, ...)."""


class _AccountingUnavailable(RuntimeError):
    """slurmdbd/MariaDB cannot be used here; the text says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/local/sbin/{name}")
                                       if os.path.exists(p)), None)


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie nobody reaped counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return ""


@dataclass
class SlurmCluster:
    """A running cluster: ``conf`` (its slurm.conf), ``partition``, ``node`` (host name),
    ``cpus``, ``jobcomp`` (job-completion file: one line per finished job), ``accounting``
    (True where slurmdbd + MariaDB run and ``sacct`` answers; ``MinJobAge`` is then 2 s),
    ``accounting_reason`` (why not, or what runs)."""

    dir: Path
    conf: Path
    partition: str
    node: str
    cpus: int
    jobcomp: Path
    accounting: bool = False
    accounting_reason: str = "not tried"
    _mariadbd: subprocess.Popen | None = field(default=None, repr=False, compare=False)

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
        ``SLURM_CONF`` is this cluster's), then slurmdbd and mariadbd."""
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
        self._term("slurmd.pid", "slurmctld.pid", wait=0)
        time.sleep(0.5)
        for pid in self._stepds():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._stop_accounting()

    def _term(self, *pidfiles: str, wait: float) -> None:
        """SIGTERM the daemons whose pid files (in ``dir``) are given; wait up to ``wait``
        seconds for them to end, then SIGKILL those left."""
        pids = []
        for name in pidfiles:
            try:
                pid = int((self.dir / name).read_text())
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            except (FileNotFoundError, ValueError, ProcessLookupError):
                pass
        deadline = time.monotonic() + wait
        while wait and any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids if wait else ():
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _stop_accounting(self) -> None:
        self._term("slurmdbd.pid", wait=5)
        p = self._mariadbd
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self._mariadbd = None

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


def _slurm_conf(d: Path, host: str, cpus: int, memory_mb: int, partition: str, jobcomp: Path,
                ports: tuple[int, int], dbd_port: int | None) -> str:
    if dbd_port:
        accounting = ("AccountingStorageType=accounting_storage/slurmdbd\n"
                      "AccountingStorageHost=127.0.0.1\n"
                      f"AccountingStoragePort={dbd_port}\n"
                      "MinJobAge=2")
    else:
        accounting = "AccountingStorageType=accounting_storage/none\nMinJobAge=300"
    return f"""\
ClusterName=amoretest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
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
{accounting}
JobCompType=jobcomp/filetxt
JobCompLoc={jobcomp}
KillWait=2
InactiveLimit=0
SchedulerParameters=sched_interval=1
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _start_accounting(cluster: SlurmCluster, dbd_port: int, timeout: float) -> None:
    """Start mariadbd and slurmdbd for ``cluster`` (whose slurm.conf already names
    ``dbd_port``) and register it. Raises :class:`_AccountingUnavailable`; what was started
    stays recorded on ``cluster`` for :meth:`SlurmCluster.stop`."""
    mariadbd, slurmdbd = _sbin("mariadbd") or _sbin("mysqld"), _sbin("slurmdbd")
    install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    missing = [n for n, p in (("slurmdbd", slurmdbd), ("sacctmgr", shutil.which("sacctmgr")),
                              ("mariadbd", mariadbd), ("mariadb-install-db", install_db)) if not p]
    if missing:
        raise _AccountingUnavailable(f"{', '.join(missing)} not installed (Debian: apt-get install "
                                     "slurmdbd mariadb-server; ./dev test installs them)")
    d = cluster.dir
    db = d / "mariadb"
    db.mkdir(exist_ok=True)
    socket_path = d / "mariadb.sock"
    if len(str(socket_path)) > 100:
        raise _AccountingUnavailable(f"{socket_path}: too long a path for a Unix socket")
    common = ["--no-defaults", f"--datadir={db}", "--user=root", "--innodb-log-file-size=4M",
              "--innodb-buffer-pool-size=32M", "--skip-log-bin"]
    p = subprocess.run([install_db, *common, "--auth-root-authentication-method=normal",
                        "--skip-test-db"], capture_output=True, text=True, timeout=120)
    if p.returncode:
        raise _AccountingUnavailable(f"mariadb-install-db failed: {(p.stderr or p.stdout)[-1500:]}")
    db_port = _free_port()
    err = d / "mariadbd.log"
    with open(os.devnull, "wb") as null:
        cluster._mariadbd = subprocess.Popen(
            [mariadbd, *common, f"--socket={socket_path}", f"--port={db_port}",
             "--bind-address=127.0.0.1", "--skip-grant-tables", "--skip-name-resolve",
             f"--pid-file={d / 'mariadbd.pid'}", f"--log-error={err}", f"--tmpdir={d}",
             "--innodb-lock-wait-timeout=900", "--innodb-flush-log-at-trx-commit=0"],
            stdin=null, stdout=null, stderr=null, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not _listening(db_port):
        if cluster._mariadbd.poll() is not None or time.monotonic() > deadline:
            raise _AccountingUnavailable(f"mariadbd did not start: {_tail(err)}")
        time.sleep(0.1)
    dbd_conf = d / "slurmdbd.conf"   # slurmdbd reads it from SLURM_CONF's directory
    fd = os.open(dbd_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"""\
AuthType=auth/none
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
PidFile={d}/slurmdbd.pid
LogFile={d}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct_db
""")
    os.chmod(dbd_conf, 0o600)  # slurmdbd refuses a slurmdbd.conf others can read
    p = subprocess.run([slurmdbd], env=cluster.env(), capture_output=True, text=True, timeout=30)
    if p.returncode:
        raise _AccountingUnavailable(f"slurmdbd failed: {(p.stderr or p.stdout).strip()[-1500:]}")
    while not _listening(dbd_port):
        if time.monotonic() > deadline:
            raise _AccountingUnavailable(f"slurmdbd did not start: {_tail(d / 'slurmdbd.log')}")
        time.sleep(0.1)
    try:
        cluster.run("sacctmgr", "-i", "add", "cluster", "amoretest")
        cluster.run("sacct", "-n", "-X", "-o", "JobID")
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        raise _AccountingUnavailable(f"slurmdbd does not answer: {e}") from None


def start_cluster(directory: str | os.PathLike, partition: str = "amoretest",
                  memory_mb: int = 8000, timeout: float = 30.0,
                  accounting: bool = True) -> SlurmCluster:
    """Start a one-node cluster with its files in ``directory`` (created), with slurmdbd +
    MariaDB where ``accounting`` and they are installed (else without: see the module's
    text). Raises :class:`ClusterUnavailable` if slurm-wlm is missing, we are not root, or the
    node does not come up within ``timeout`` seconds."""
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
    ports = (_free_port(), _free_port())
    cluster = SlurmCluster(d, conf, partition, host, cpus, jobcomp)
    if accounting:
        dbd_port = _free_port()
        conf.write_text(_slurm_conf(d, host, cpus, memory_mb, partition, jobcomp, ports, dbd_port))
        try:
            _start_accounting(cluster, dbd_port, timeout)
            cluster.accounting = True
            cluster.accounting_reason = "slurmdbd + MariaDB (sacct answers)"
        except (_AccountingUnavailable, OSError, subprocess.SubprocessError) as e:
            cluster._stop_accounting()
            cluster.accounting_reason = str(e)
    else:
        cluster.accounting_reason = "not asked for (start_cluster(accounting=False))"
    if not cluster.accounting:
        conf.write_text(_slurm_conf(d, host, cpus, memory_mb, partition, jobcomp, ports, None))
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
