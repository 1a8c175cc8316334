"""Starting the web server: checks that say why a start is refused, the record that tells
``amore-proto backend status`` and ``amore-proto gui`` where it runs, and uvicorn.

:func:`prepare` checks the directories and the access policy and returns a :class:`WebServer`
(or raises :class:`StartRefused` with the reason, for people); :meth:`WebServer.run` serves until
interrupted. Each served directory gets a record ``<DIR>/amore-web.json`` (address, host, PID,
user) while the server runs, when the directory is writable and AMORE created its database;
:func:`read_record` reads it back and says whether that server still runs.
"""
from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from amore_gui.web.auth import AccessPolicy, TokenStore, is_loopback, refusal
from amore_gui.web.push import PushChannel

log = logging.getLogger(__name__)

#: The record of a running web server in each directory it serves.
RECORD_NAME = "amore-web.json"
DEFAULT_PORT = 8765


class StartRefused(RuntimeError):
    """The server must not start; the message says why and what to do."""


def read_record(context_dir) -> dict | None:
    """The web server record of a context directory, with ``running`` (True if its process
    is alive on this host, None if it is on another host), or None if there is none."""
    p = Path(context_dir) / RECORD_NAME
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict):
        return None
    if rec.get("hostname") != socket.gethostname():
        rec["running"] = None
        return rec
    try:
        os.kill(int(rec.get("pid", -1)), 0)
        rec["running"] = True
    except (ProcessLookupError, ValueError, TypeError):
        rec["running"] = False
    except PermissionError:        # alive, another user's
        rec["running"] = True
    return rec


def describe_record(rec: dict) -> str:
    """One line about a web server record (for ``backend status`` and ``gui``)."""
    who = f"PID {rec.get('pid')} of {rec.get('user')} on {rec.get('hostname')}"
    if rec.get("running") is False:
        return f"not running (last at {rec.get('url')}, {who})"
    tunnel = ""
    if is_loopback(rec.get("host")):
        tunnel = (f"; from elsewhere: ssh -L {rec.get('port')}:127.0.0.1:{rec.get('port')} "
                  f"{rec.get('hostname')}")
    return f"{rec.get('url')} ({who}{tunnel})"


@dataclass
class WebServer:
    """A prepared server: its directories, address and access policy."""

    directories: list
    host: str
    port: int
    policy: AccessPolicy
    tls: tuple[str, str] | None = None
    io: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=4, thread_name_prefix="web io"))
    records: list[Path] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn()
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    def url_of(self, d) -> str:
        return f"{self.base_url}/d/{d.slug}/"

    def app(self):
        """The ASGI application (see :func:`amore_gui.web.app.create_app`)."""
        from amore_gui.web.app import create_app
        return create_app(self.directories, self.policy, self.io,
                          on_started=self._write_records, on_stopped=self._remove_records)

    def _write_records(self) -> None:
        from amore_gui.web.data import amore_made
        for d in self.directories:
            if not amore_made(d.path):       # never write into a directory AMORE did not create
                continue
            rec = {"url": self.url_of(d), "host": self.host, "port": self.port,
                   "pid": os.getpid(), "user": getpass.getuser(),
                   "hostname": socket.gethostname(), "started": time.time()}
            p = d.path / RECORD_NAME
            try:
                tmp = p.with_name(f".{RECORD_NAME}.{os.getpid()}")
                tmp.write_text(json.dumps(rec, indent=1) + "\n")
                os.replace(tmp, p)
                self.records.append(p)
            except OSError as e:       # a directory we may only read: no record
                log.info("No web server record in %s: %s", d.path, e)

    def _remove_records(self) -> None:
        for p in self.records:
            try:
                if json.loads(p.read_text()).get("pid") == os.getpid():
                    p.unlink()
            except (OSError, ValueError):
                pass
        self.records.clear()

    def run(self, log_level: str = "warning") -> None:
        """Serve until interrupted (uvicorn; no access log: addresses may carry tokens). The
        process hands large freed blocks back to the system at once
        (:func:`amore_gui.application.process.steady_memory`): the server builds a table's
        text for every viewer at each reload."""
        import uvicorn

        from amore_gui.web.data import steady_memory
        steady_memory()
        kw = {}
        if self.tls:
            kw.update(ssl_certfile=self.tls[0], ssl_keyfile=self.tls[1])
        uvicorn.run(self.app(), host=self.host, port=self.port, log_level=log_level,
                    access_log=False, proxy_headers=False, lifespan="on", ws="websockets",
                    ws_per_message_deflate=False, timeout_graceful_shutdown=3, **kw)


def prepare(dirs: list, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
            proxy_header: str | None = None, proxy_from: list[str] | None = None,
            proxy_editors: list[str] | None = None, tls: tuple[str, str] | None = None,
            use_kafka: bool = True, tokens: TokenStore | None = None) -> WebServer:
    """Check everything a start needs and build the server. Raises :class:`StartRefused`:
    a directory without ``runs.sqlite``, a non-loopback address without tokens or a trusted
    proxy, a bad proxy address, a port in use."""
    from amore_gui.web.data import ServedDirectory, directory_label
    try:
        policy = AccessPolicy(tokens or TokenStore(), loopback=is_loopback(host),
                              proxy_header=proxy_header, trusted_proxies=list(proxy_from or []),
                              proxy_editors=set(proxy_editors or []), secure_cookies=bool(tls))
    except ValueError as e:
        raise StartRefused(f"not a proxy address or network: {e}") from None
    why = refusal(host, policy)
    if why:
        raise StartRefused(why)
    if not dirs:
        raise StartRefused("no directory to serve")
    seen: dict[str, int] = {}
    served = []
    server = WebServer([], host, port, policy, tls)
    for d in dirs:
        path = Path(d).expanduser().resolve()
        if not (path / "runs.sqlite").is_file():
            raise StartRefused(f"{path} is not an AMORE context directory (no runs.sqlite); "
                               f"create one with 'amore-proto setup' or give its path")
        if any(s.path == path for s in served):
            continue
        try:
            slug, title = directory_label(path)
        except Exception as e:
            raise StartRefused(f"cannot read {path / 'runs.sqlite'}: {e}") from None
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        if n:
            slug = f"{slug}-{n + 1}"
        served.append(ServedDirectory(path, slug, title, PushChannel(), server.io, use_kafka))
    server.directories = served
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError as e:
            raise StartRefused(f"cannot listen on {host}:{port}: {e.strerror or e} "
                               f"(another server there? choose one with --port)") from None
    return server
