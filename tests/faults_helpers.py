"""Fault injection helpers shared by ``tests/test_faults_*.py`` and ``benchmarks/faults.py``.

Real faults, no mocks of the thing that fails:

* :class:`TcpProxy` - a threaded TCP proxy in front of the broker that can be stopped (every
  connection cut, new ones refused) and started again on the same port;
* :class:`KafkaBackend` - ``amore-proto listen DIR`` as a process reading the facility topics of
  a real broker, which can be SIGKILLed and restarted;
* :func:`poison_messages` - the kinds of bad input a topic may carry;
* :func:`tmpfs` - a size-limited tmpfs (real ENOSPC);
* :func:`hold_write_lock` - another process holding a write transaction on ``runs.sqlite``.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psutil

from tests.conftest import PROPOSAL, amore_cmd, wait_for  # noqa: F401 (the fault tests import them from here)

#: A context file with cheap variables on real run files.
SIMPLE_CONTEXT = textwrap.dedent("""
    from amore.context import Variable

    @Variable(title="Trains")
    def n_trains(run):
        return len(run.train_ids)

    @Variable(title="Run number")
    def run_no(run, run_nr: "meta#run_number"):
        return run_nr
""")


def detaching_context(cluster: bool = False) -> str:
    """A context file whose variable ``detached`` (a Slurm one with ``cluster``) leaves a daemon
    behind (double fork and setsid; it holds the worker's pipes and sleeps 600 s; its PID in
    ``DIR/daemon-R.pid``, the worker's in ``worker-R.pid``), then on runs 1 and 4 sleeps (to
    be killed from outside), on run 2 crashes in native code (segfault), else returns the run
    number; and ``n_trains``."""
    return textwrap.dedent("""
        import ctypes, os, time
        from amore.context import Variable

        @Variable(title="Trains")
        def n_trains(run):
            return len(run.train_ids)

        @Variable(title="Detached"CLUSTER)
        def detached(run, r: "meta#run_number"):
            pid = os.fork()
            if pid == 0:
                os.setsid()
                if os.fork() == 0:      # a detached daemon (double fork), holding our pipes
                    with open(f"daemon-{r}.tmp", "w") as f:
                        f.write(str(os.getpid()))
                    os.rename(f"daemon-{r}.tmp", f"daemon-{r}.pid")
                    time.sleep(600)
                os._exit(0)
            os.waitpid(pid, 0)
            while not os.path.exists(f"daemon-{r}.pid"):
                time.sleep(0.01)
            with open(f"worker-{r}.pid", "w") as f:
                f.write(str(os.getpid()))
            if r in (1, 4):             # the worker is killed from outside meanwhile
                time.sleep(600)
            if r == 2:                  # crash in native code
                ctypes.string_at(0)
            return r
    """).replace("CLUSTER", ", cluster=True" if cluster else "")


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie has: whoever inherited it reaps it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ---------------------------------------------------------------------------------------------
# A TCP proxy that can be cut

def _client_id(first: bytes) -> str | None:
    """Client id in the header of a Kafka request (size, api key, version, correlation id,
    client id), or None if ``first`` is too short."""
    if len(first) < 14:
        return None
    n = int.from_bytes(first[12:14], "big", signed=True)
    if n < 0:
        return ""
    if len(first) < 14 + n:
        return None
    return first[14:14 + n].decode("utf-8", "replace")


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target`` (``host:port``): the network between
    Kafka clients and a broker.

    :meth:`cut` takes the network down for clients whose Kafka client id ``blocked(id)`` says
    (all if None): their connections are reset and new ones are closed at once; :meth:`restore`
    brings it back. Others (the facility's producer) keep their path to the broker."""

    def __init__(self, target: str, port: int = 0):
        host, _, p = target.rpartition(":")
        self.target = (host, int(p))
        self.port = port
        self._listener: socket.socket | None = None
        self._conns: list[tuple[str, socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._blocked = None      # None: network up; else predicate on client ids
        self.cuts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "TcpProxy":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        self.port = s.getsockname()[1]
        s.listen(128)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()
        return self

    def close(self) -> None:
        s, self._listener = self._listener, None
        if s is not None:
            s.close()
        self._blocked = lambda cid: True
        self._reset(lambda cid: True)

    def _is_blocked(self, cid: str) -> bool:
        b = self._blocked
        return b is not None and b(cid)

    def _accept(self, s):
        while True:
            try:
                client, _ = s.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        first = b""
        client.settimeout(10)
        try:
            while (cid := _client_id(first)) is None:
                chunk = client.recv(4096)
                if not chunk:
                    client.close()
                    return
                first += chunk
        except OSError:
            client.close()
            return
        client.settimeout(None)
        if self._is_blocked(cid):
            self._rst(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
            upstream.sendall(first)
        except OSError:
            self._rst(client)
            return
        with self._lock:
            self._conns.append((cid, client, upstream))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(1 << 16)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for x in (a, b):
                with contextlib.suppress(OSError):
                    x.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _rst(sock):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            sock.close()

    def _reset(self, pred) -> None:
        with self._lock:
            cut = [c for c in self._conns if pred(c[0])]
            self._conns = [c for c in self._conns if not pred(c[0])]
        for _, a, b in cut:
            self._rst(a)
            self._rst(b)

    def cut(self, blocked=None) -> None:
        """Network down for clients ``blocked(client_id)`` (all if None)."""
        self._blocked = blocked or (lambda cid: True)
        self._reset(self._blocked)
        self.cuts += 1

    def restore(self) -> None:
        self._blocked = None


def is_amore_client(cid: str) -> bool:
    """AMORE's Kafka clients (their client ids start with "amore", admin clients "rdkafka")."""
    return not cid.startswith("facility")


class Tansu:
    """A tansu broker (in-memory storage) on a fixed port, advertising ``advertised`` (the
    proxy in front of it); :meth:`restart` loses every topic and offset."""

    def __init__(self, log_path: Path, advertised_port: int):
        from tests.kafka_broker import _free_port, tansu_binary
        self.binary = tansu_binary()
        self.port = _free_port()
        self.advertised = f"127.0.0.1:{advertised_port}"
        self.log_path = log_path
        self.proc = None
        self.restarts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        from tests.kafka_broker import _answers
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", f"tcp://{self.address}",
                 "--advertised-listener-url", f"tcp://{self.advertised}",
                 "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                time.sleep(0.5)       # port still held: try again
                return self.start(max(deadline - time.monotonic(), 1.0))
            if _answers(self.address, 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError("tansu did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1


# ---------------------------------------------------------------------------------------------
# The backend reading a real broker

def kafka_toml(tag: str, jobs: int = 2, extra: str = "", reset: str = "earliest") -> str:
    """amore.toml of a backend reading the facility topics ``r2d2-<tag>`` and
    ``corrections-<tag>`` in its own consumer group, updates on ``amore.<tag>-<db_id>``."""
    return textwrap.dedent(f"""
        [kafka]
        event_topics = ["r2d2-{tag}", "corrections-{tag}"]
        consumer_group = "amore-{tag}-{{db_id}}"
        update_topic = "amore.{tag}-{{db_id}}"
        connect_timeout = 5.0
        auto_offset_reset = "{reset}"

        [watch]
        enabled = false

        [processing]
        jobs = {jobs}
    """) + extra


class KafkaBackend:
    """``amore-proto listen DIR`` with ``AMORE_BROKER=broker``, in its own process group."""

    def __init__(self, ctx_dir: Path, broker: str, ready_timeout: float = 60.0):
        self.dir = Path(ctx_dir)
        self.broker = broker
        self.log = self.dir / "amore.log"
        self.proc: subprocess.Popen | None = None
        self.kills = 0
        self.start(ready_timeout)

    def start(self, ready_timeout: float = 60.0) -> None:
        env = dict(os.environ, AMORE_BROKER=self.broker)
        n_ready = self.log.read_text().count(" Ready") if self.log.exists() else 0
        import tempfile
        fd, self.out_path = tempfile.mkstemp(prefix="amore-backend-", suffix=".txt")
        self.out = os.fdopen(fd, "wb")
        self.proc = subprocess.Popen(amore_cmd("listen", self.dir), stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True, env=env)
        wait_for(lambda: self.log.exists() and self.log.read_text().count(" Ready") > n_ready
                 or self.proc.poll() is not None, ready_timeout, what="backend ready")
        assert self.proc.poll() is None, f"backend exited with {self.proc.returncode}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the backend process only (its workers notice and exit by themselves)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise
        return self.proc.returncode

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def out_text(self) -> str:
        """What the backend printed (stdout and stderr; kept outside the context directory)."""
        return Path(self.out_path).read_text(errors="replace")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def facility_msg(run, event="migration_complete", proposal=PROPOSAL, **extra) -> bytes:
    msg = {"event": event, "proposal": proposal, "run": run,
           "path": f"/gpfs/exfel/exp/MID/202201/p{proposal:06d}/raw/r{run}",
           "instrument": "MID", "cycle": "202201", **extra}
    return json.dumps(msg).encode()


def make_producer(broker: str):
    """The facility's producer (client id "facility...")."""
    from confluent_kafka import Producer
    return Producer({"bootstrap.servers": broker, "linger.ms": 5, "log_level": 0,
                     "client.id": "facility-daq",
                     "message.max.bytes": 20_000_000, "message.timeout.ms": 60000,
                     "error_cb": lambda err: None})


# ---------------------------------------------------------------------------------------------
# Bad input

class Booby:
    """Unpickling this creates the file ``path`` (proof that something unpickled input)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def poison_messages(marker: str, big: bool = True) -> list[tuple[str, bytes | None]]:
    """One of each kind of bad facility message: ``[(label, value), ...]``. Unpickling the
    pickled one creates the file ``marker``."""
    ok = {"event": "migration_complete", "proposal": PROPOSAL}
    out = [
        ("not JSON", b"this is not JSON {"),
        ("binary", bytes(range(256)) * 4),
        ("pickled object", pickle.dumps(Booby(marker))),
        ("not an object", b"[1, 2, 3]"),
        ("null", b"null"),
        ("empty", b""),
        ("tombstone", None),
        ("wrong types", json.dumps({"event": 5, "proposal": [1], "run": {"a": 1}}).encode()),
        ("bool run", json.dumps({**ok, "run": True}).encode()),
        ("list run", json.dumps({**ok, "run": [3]}).encode()),
        ("negative run", json.dumps({**ok, "run": -3}).encode()),
        ("zero run", json.dumps({**ok, "run": 0}).encode()),
        ("enormous run", json.dumps({**ok, "run": 10**30}).encode()),
        ("enormous float run", json.dumps({**ok, "run": 1e300}).encode()),
        ("huge integer literal", b'{"event": "migration_complete", "proposal": 2832, "run": '
         + b"9" * 5000 + b"}"),
        ("NaN run", b'{"event": "migration_complete", "proposal": 2832, "run": NaN}'),
        ("negative proposal", json.dumps({**ok, "proposal": -PROPOSAL, "run": 3}).encode()),
        ("SQL in run", json.dumps({**ok, "run": "1; DROP TABLE runs; --"}).encode()),
        ("quotes in proposal", json.dumps({**ok, "proposal": "2832' OR '1'='1",
                                           "run": 3}).encode()),
        ("unicode digits", json.dumps({**ok, "run": "\u0663"}).encode()),
        ("unknown event", json.dumps({**ok, "event": "run_deleted", "run": 3}).encode()),
        ("event not a string", json.dumps({**ok, "event": None, "run": 3}).encode()),
        ("missing run", json.dumps(ok).encode()),
        ("missing proposal", json.dumps({"event": "migration_complete", "run": 3}).encode()),
        ("missing event", json.dumps({"proposal": PROPOSAL, "run": 3}).encode()),
        ("empty object", b"{}"),
        ("deep nesting", b"[" * 200_000 + b"]" * 200_000),
        ("invalid UTF-8", b'{"event": "migration_complete", "run": "\xff\xfe"}'),
    ]
    if big:
        out.append(("10 MB payload", b'{"event": "migration_complete", "proposal": 2832, '
                    b'"run": 4, "pad": "' + b"x" * 10_000_000 + b'"}'))
    return out


# ---------------------------------------------------------------------------------------------
# Disk full, locked database

def can_mount_tmpfs(probe_dir: Path) -> str | None:
    """None if a tmpfs can be mounted here, else the reason it cannot."""
    probe_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe_dir)],
                       capture_output=True, text=True)
    if r.returncode:
        return f"cannot mount a tmpfs: {r.stderr.strip() or r.returncode}"
    subprocess.run(["umount", str(probe_dir)], check=True)
    return None


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "20m"):
    """Mount a tmpfs of ``size`` on ``path`` for the duration of the block."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(directory: Path, leave_bytes: int = 0) -> Path:
    """Write a file into ``directory`` until the file system is full, or has only
    ``leave_bytes`` free if > 0. Returns the filler's path; delete it to free the space."""
    filler = directory / f"filler-{uuid.uuid4().hex[:6]}.bin"
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize - leave_bytes
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    chunk = b"\0" * (1 << 20)
    try:
        while free > 0:
            free -= os.write(fd, chunk[:min(len(chunk), free)])
        if leave_bytes <= 0:
            while True:
                os.write(fd, chunk[:4096])
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


HOLD_LOCK = textwrap.dedent("""
    import sqlite3, sys, time
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO metadata(key, value) VALUES ('held_by_test', '1') "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
    print("locked", flush=True)
    if sys.argv[2] == "stdin":
        sys.stdin.read()
    else:
        time.sleep(float(sys.argv[2]))
    con.execute("ROLLBACK")
""")


def hold_write_lock(db_file: Path, seconds: float | None) -> subprocess.Popen:
    """Start a process that holds a write transaction on ``db_file`` for ``seconds`` (None:
    until its standard input is closed, ``p.stdin.close()``); returns once the lock is held."""
    p = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db_file),
                          "stdin" if seconds is None else str(seconds)],
                         stdin=subprocess.PIPE if seconds is None else None,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def facility_create_topics(broker: str, names, timeout: float = 20.0) -> None:
    """Create topics as the facility does (client id "facility-admin"); existing ones stay."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker, "client.id": "facility-admin",
                         "log_level": 0, "error_cb": lambda err: None})
    deadline = time.monotonic() + timeout
    while True:
        try:
            for fut in admin.create_topics([NewTopic(n, num_partitions=1) for n in names],
                                           request_timeout=5).values():
                try:
                    fut.result(10)
                except KafkaException as e:
                    if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
