"""Pytest plugin: a real ``amore-proto web`` server and a real headless Chromium (Debian's).

Loaded from ``tests/conftest.py``.

* fixture ``chromium`` (session): a Playwright ``Browser`` on ``/usr/bin/chromium`` (Debian's
  ``chromium`` package; ``./dev test`` installs it with ``chromium-driver``). Nothing is
  downloaded; tests using it fail, saying how to install it, when it is missing.
* fixture ``browser_page``: a fresh browser context (own cookies) and page, closed afterwards.
* fixture ``web_server``: ``web_server(*dirs, host=..., env=...)`` starts ``amore-proto web`` in
  a child process on a free port and waits until it answers; :class:`WebServer` has ``url``,
  ``stop()``, ``start()`` (again, on the same port) and its output. Stopped after the test.
* :func:`http` - a plain HTTP request (urllib) returning (status, headers, body).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("AMORE_CHROMIUM", "/usr/bin/chromium")
#: How this machine's Chromium must start (no sandbox as root, no GPU, no network chatter).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, method: str = "GET", headers: dict | None = None, data=None,
         timeout: float = 30.0) -> tuple[int, dict, bytes]:
    """One HTTP request without following redirects: (status, headers (lower-case), body)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    body = json.dumps(data).encode() if data is not None and not isinstance(data, bytes) else data
    req = urllib.request.Request(url, method=method, data=body, headers=headers or {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class WebServer:
    """``amore-proto web`` in a child process (see module docstring)."""

    def __init__(self, dirs, host: str, port: int, env: dict, extra: list[str], log: Path):
        self.dirs, self.host, self.port, self.env, self.extra = dirs, host, port, env, extra
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "amore.cli", "web", *map(str, self.dirs), "--host",
                self.host, "--port", str(self.port), *self.extra]

    def start(self, wait: bool = True) -> "WebServer":
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self.command(), env=self.env, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"amore-proto web exited with {self.proc.returncode}:\n"
                                     f"{self.output()}")
            try:
                status, _, _ = http(self.url + "/api/me", timeout=2)
                if status in (200, 401):
                    # answering means the tables were read (the app starts after its lifespan)
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"amore-proto web did not answer within {START_TIMEOUT} s:\n"
                             f"{self.output()}")

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def web_server(tmp_path, monkeypatch):
    """``web_server(*dirs, host="127.0.0.1", extra=[], env={})`` -> a running
    :class:`WebServer` (token file and layouts under ``tmp_path``)."""
    monkeypatch.setenv("AMORE_WEB_ACCESS", str(tmp_path / "web-access.json"))
    servers = []

    def start(*dirs, host="127.0.0.1", extra=(), env=None, wait=True):
        e = dict(os.environ, **(env or {}))
        s = WebServer(dirs, host, free_port(), e, list(extra), tmp_path / f"web-{len(servers)}.log")
        servers.append(s)
        return s.start(wait)
    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def chromium():
    """A Playwright browser on Debian's Chromium (headless)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"{CHROMIUM} not found: the browser tests use Debian's Chromium "
                    f"(apt-get install chromium chromium-driver; ./dev test installs them)")
    from playwright.sync_api import sync_playwright
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()
    pw.stop()


@pytest.fixture
def browser_page(chromium):
    """``browser_page(url=None)`` -> a new page in a fresh context (its own cookies)."""
    contexts = []

    def new(url=None, **kw):
        kw.setdefault("viewport", {"width": 1400, "height": 800})
        ctx = chromium.new_context(**kw)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(20_000)
        if url:
            page.goto(url)
        return page
    yield new
    for c in contexts:
        c.close()

