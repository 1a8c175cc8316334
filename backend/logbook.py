"""Posting to the beamtime's logbook (a Zulip stream): Markdown text and a picture.

Two ways, chosen by :func:`logbook_for`:

* **The facility's logbook proxy** (European XFEL), exactly as DAMNIT 0.4.0 uses it
  (``damnit/gui/zulip_messenger.py``): a ``zulip.cfg`` in the context directory, next to
  ``context.py``, with ``[ZULIP]`` ``key`` (the proxy's API key), ``url`` (the proxy) and
  optionally ``topics`` (a JSON list offered as topics). ``GET {url}/me`` with the header
  ``X-API-key: <key>`` answers ``{"stream": ...}`` (the beamtime's stream);
  ``POST {url}/send_message?topic=<topic>`` with the form field ``content`` (Markdown) and, for
  a picture, the file ``image`` posts a message; it answers ``{"result": "success"}`` or
  ``{"result": "error", "msg": ...}``. A directory imported from DAMNIT has its ``zulip.cfg``,
  so a beamtime's set-up works unchanged.
* **A Zulip server directly** (elsewhere), with the ``zulip`` package: ``[logbook]`` in
  ``amore.toml`` or the site configuration names ``zuliprc`` (a file with ``[api]`` ``email``,
  ``key``, ``site`` - a bot's credentials; it must be readable by its owner only), ``stream``
  and ``topic``. A picture is uploaded first and linked from the message.

Messages longer than ``[logbook] message_limit`` characters (Zulip's limit, 10000) are split;
:func:`split_markdown_table` splits a table between rows, repeating its header.

Keys are never logged, never stored in the database and never part of an error message.
"""
from __future__ import annotations

import configparser
import io
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

#: The proxy's set-up file in the context directory (as DAMNIT has it).
PROXY_CONFIG = "zulip.cfg"
#: Zulip's limit on the length of a message (characters).
MESSAGE_LIMIT = 10000
#: Seconds a request to the proxy or the Zulip server may take.
TIMEOUT = 10.0


class LogbookError(Exception):
    """Posting is not possible (no logbook configured, unreachable, refused); the message says
    why, never with a key."""


@dataclass
class Posted:
    """What was posted: the ``stream``, the ``topic`` and how many ``messages``."""

    stream: str
    topic: str
    messages: int


def split_markdown_table(table: str, limit: int = MESSAGE_LIMIT, title: str = "") -> list[str]:
    """A Markdown table (header line, separator line, one line per row) as messages of at most
    ``limit`` characters, split between rows, each with the header; ``title`` (a ``###``
    heading) starts the first. Raises ``ValueError`` if a single row does not fit."""
    lines = table.rstrip("\n").split("\n")
    head, rows = lines[:2], lines[2:]
    first = f"### {title}\n" if title else ""
    out: list[str] = []
    cur: list[str] = []
    for row in rows:
        prefix = first if not out else ""
        candidate = "\n".join([*head, *cur, row])
        if len(prefix) + len(candidate) + 2 > limit:
            if not cur:
                raise ValueError(f"a table row of {len(row)} characters does not fit in a "
                                 f"message of {limit}")
            out.append(prefix + "\n".join([*head, *cur]) + "\n")
            cur = [row]
        else:
            cur.append(row)
    prefix = first if not out else ""
    out.append(prefix + "\n".join([*head, *cur]) + "\n")
    return out


def _json_reply(resp, what: str) -> dict:
    try:
        data = resp.json()
    except ValueError:
        data = {}
    if resp.status_code != 200 or data.get("result", "success") != "success":
        msg = data.get("msg") or data.get("info") or resp.reason
        raise LogbookError(f"{what}: HTTP {resp.status_code}: {msg}")
    return data


class ProxyLogbook:
    """The facility's logbook proxy (``zulip.cfg``; see the module docstring)."""

    def __init__(self, url: str, key: str, topics: list[str] | None = None,
                 timeout: float = TIMEOUT):
        self.url = url.rstrip("/")
        self._key = key
        self.topics = list(topics or [])
        self.timeout = timeout
        self._stream: str | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ProxyLogbook":
        """Read ``zulip.cfg``; raises :class:`LogbookError` if it lacks ``key`` or ``url``."""
        cfg = configparser.ConfigParser()
        try:
            cfg.read(path)
            sec = cfg["ZULIP"]
            key, url = sec["key"], sec["url"]
            topics = json.loads(sec["topics"]) if "topics" in sec else []
        except (KeyError, ValueError, configparser.Error) as e:
            raise LogbookError(f"{path} is not a logbook set-up ([ZULIP] key, url, topics): "
                               f"{type(e).__name__}") from None
        return cls(url, key, [str(t) for t in topics])

    def _headers(self) -> dict:
        return {"accept": "application/json", "X-API-key": self._key}

    def stream(self) -> str:
        """The beamtime's stream (``GET {url}/me``); also checks the proxy answers."""
        import requests
        if self._stream is None:
            try:
                resp = requests.get(f"{self.url}/me", headers=self._headers(), timeout=self.timeout)
            except requests.RequestException as e:
                raise LogbookError(f"logbook proxy {self.url} unreachable: "
                                   f"{type(e).__name__}") from None
            self._stream = str(_json_reply(resp, f"logbook proxy {self.url}/me")["stream"])
        return self._stream

    def post(self, topic: str, content: str, image: bytes | None = None,
             image_name: str = "figure.png") -> None:
        """Post one message (``POST {url}/send_message?topic=...``) with a PNG if given."""
        import requests
        files = {"image": (image_name, image, "image/png")} if image is not None else None
        try:
            resp = requests.post(f"{self.url}/send_message", headers=self._headers(),
                                 params={"topic": topic}, data={"content": content},
                                 files=files, timeout=self.timeout)
        except requests.RequestException as e:
            raise LogbookError(f"logbook proxy {self.url} unreachable: "
                               f"{type(e).__name__}") from None
        _json_reply(resp, f"logbook proxy {self.url}/send_message")


def check_private(path: Path) -> None:
    """Raise :class:`LogbookError` unless ``path`` exists and only its owner can read it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as e:
        raise LogbookError(f"Zulip credentials {path}: {e.strerror or e}") from None
    if mode & 0o077:
        raise LogbookError(f"Zulip credentials {path} can be read by others (mode {mode:o}); "
                           f"'chmod 600 {path}' first")


class ZulipLogbook:
    """A Zulip server, directly (``zulip`` package; see the module docstring)."""

    def __init__(self, zuliprc: str | os.PathLike, stream: str, topics: list[str] | None = None):
        import zulip
        self.zuliprc = Path(zuliprc).expanduser()
        check_private(self.zuliprc)
        self._stream = stream
        self.topics = list(topics or [])
        try:
            self._client = zulip.Client(config_file=str(self.zuliprc), retry_on_errors=False)
        except Exception as e:   # noqa: BLE001 - zulip raises several kinds
            raise LogbookError(f"Zulip server from {self.zuliprc}: {type(e).__name__}: "
                               f"{_without_key(e)}") from None

    def stream(self) -> str:
        return self._stream

    def post(self, topic: str, content: str, image: bytes | None = None,
             image_name: str = "figure.png") -> None:
        """Post one message to the stream; a PNG is uploaded and linked first."""
        if image is not None:
            f = io.BytesIO(image)
            f.name = image_name
            res = self._call(self._client.upload_file, f)
            uri = res.get("uri") or res.get("url")
            content = f"{content}\n[{image_name}]({uri})" if content else f"[{image_name}]({uri})"
        self._call(self._client.send_message, {"type": "stream", "to": self._stream,
                                               "topic": topic, "content": content})

    def _call(self, fn, *args) -> dict:
        try:
            res = fn(*args)
        except Exception as e:   # noqa: BLE001
            raise LogbookError(f"Zulip server: {type(e).__name__}: {_without_key(e)}") from None
        if res.get("result") != "success":
            raise LogbookError(f"Zulip server refused: {res.get('msg') or res}")
        return res


def _without_key(e: Exception) -> str:
    return str(e).split("headers")[0][:300]


def logbook_for(context_dir: str | os.PathLike, config=None):
    """The logbook of a context directory: its ``zulip.cfg`` (the proxy) if there is one, else
    the Zulip server of ``[logbook]`` (``zuliprc``, ``stream``). Raises :class:`LogbookError`
    when neither is set up."""
    from backend.config import load_config
    cfg_file = Path(context_dir) / PROXY_CONFIG
    if cfg_file.is_file():
        return ProxyLogbook.from_file(cfg_file)
    config = config or load_config(context_dir)
    sec = config["logbook"]
    if sec.get("zuliprc"):
        if not sec.get("stream"):
            raise LogbookError("[logbook] zuliprc is set but no stream to post to "
                               "([logbook] stream)")
        return ZulipLogbook(sec["zuliprc"], str(sec["stream"]), list(sec.get("topics") or []))
    raise LogbookError(f"No logbook set up for {context_dir}: put the facility's {PROXY_CONFIG} "
                       f"next to context.py, or name a Zulip server in amore.toml ([logbook] "
                       f"zuliprc, stream)")


def post_messages(book, topic: str, messages: list[str], image: bytes | None = None,
                  image_name: str = "figure.png") -> Posted:
    """Post ``messages`` in order (the picture with the first); returns :class:`Posted`."""
    if not topic:
        raise LogbookError("no topic given")
    stream = book.stream()
    for i, m in enumerate(messages):
        book.post(topic, m, image if i == 0 else None, image_name)
    return Posted(stream, topic, len(messages))
