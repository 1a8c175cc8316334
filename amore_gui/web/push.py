"""The push channel of one served directory: numbered messages, replay after a reconnect.

Every message pushed to browsers gets the next **sequence number** (``seq``) and is kept in a
bounded replay buffer as the JSON text sent (built once for every viewer): at most
:attr:`PushChannel.keep` messages and :attr:`PushChannel.keep_chars` characters together (the
oldest go first): a server open for a whole beamtime keeps at most 256 K characters of them
(about 500 messages: a few minutes of the soak's pace of 70 runs a minute, hours of a real
beamtime's; a viewer away for longer reads the table again, 2 ms for 2,000 rows from the row
texts the server keeps). More bought little and, filling over the first thousand runs, was
about a tenth of the server's growth in the soak (issue 23). A browser that lost its connection
comes back with the last number it saw and the channel's **epoch** (a random id
of this server process): it gets the messages it missed, or a ``reload`` message when the epoch
differs (the server restarted) or the buffer no longer reaches back that far.

Numbers are taken (:meth:`PushChannel.take_seq`, thread-safe) by the thread that owns the table,
at the moment a change is applied, so a table snapshot taken in that thread at number ``N``
holds every change numbered ``<= N``; the message itself is delivered to the subscribers in the
event loop (:meth:`PushChannel.deliver`).

Each subscriber has a bounded queue: a viewer too slow to keep up gets a ``reload`` instead of an
ever-growing backlog, and the server's memory stays bounded.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import threading
from collections import deque


class Subscriber:
    """One connected viewer: an asyncio queue of JSON texts (``None`` closes it)."""

    def __init__(self, maxsize: int):
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.overflowed = False


class PushChannel:
    """Numbered messages of one served directory (see module docstring).

    ``keep``: how many messages the replay buffer holds at most; ``keep_chars``: how many
    characters of JSON text they may have together (a message of many rows counts as much as
    many messages; the newest message is always kept); ``queue_size``: the most messages one
    subscriber may fall behind before it is told to reload. A viewer that comes back after
    missing more than the buffer holds is told to reload.
    """

    def __init__(self, keep: int = 2000, queue_size: int = 2000, keep_chars: int = 256_000):
        self.epoch = secrets.token_hex(8)
        self.keep = keep
        self.keep_chars = keep_chars
        self._chars = 0
        self.queue_size = queue_size
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._seq = 0
        self._buffer: deque[tuple[int, str]] = deque(maxlen=keep)
        self._subscribers: set[Subscriber] = set()

    @property
    def seq(self) -> int:
        """The last number taken."""
        return self._seq

    def take_seq(self) -> int:
        """The next sequence number (any thread)."""
        with self._lock:
            self._seq = next(self._counter)
            return self._seq

    @staticmethod
    def encode(seq: int, kind: str, body: dict | None = None, raw: dict | None = None) -> str:
        """The JSON text of a message: ``{"seq": seq, "type": kind, ...body}``; ``raw`` maps
        keys to JSON texts inserted as they are (cached row texts)."""
        parts = [f'"seq":{seq}', f'"type":{json.dumps(kind)}']
        for k, v in (body or {}).items():
            parts.append(f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}")
        for k, v in (raw or {}).items():
            parts.append(f"{json.dumps(k)}:{v}")
        return "{" + ",".join(parts) + "}"

    def deliver(self, seq: int, text: str) -> None:
        """Keep a message and queue it for every subscriber (event loop thread). Messages are
        delivered in the order of their numbers when called in that order."""
        if len(self._buffer) == self.keep:
            self._chars -= len(self._buffer[0][1])
        self._buffer.append((seq, text))
        self._chars += len(text)
        while self._chars > self.keep_chars and len(self._buffer) > 1:
            self._chars -= len(self._buffer.popleft()[1])
        for sub in list(self._subscribers):
            if sub.overflowed:
                continue
            try:
                sub.queue.put_nowait(text)
            except asyncio.QueueFull:
                sub.overflowed = True
                self._drop_to_reload(sub, "this viewer fell behind")

    def _drop_to_reload(self, sub: Subscriber, why: str) -> None:
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(self.reload_text(why))
        sub.queue.put_nowait(None)

    def reload_text(self, why: str) -> str:
        """A ``reload`` message (not numbered: it asks for a full reload)."""
        return self.encode(self._seq, "reload", {"why": why, "epoch": self.epoch})

    def subscribe(self, since: int | None, epoch: str | None) -> Subscriber:
        """A new subscriber (event loop thread). With ``since`` and this channel's ``epoch`` it
        first gets the kept messages numbered above ``since``, or a ``reload`` message when
        they are no longer all kept or the epoch differs; without ``since`` nothing is
        replayed."""
        sub = Subscriber(self.queue_size)
        if since is not None:
            if epoch != self.epoch:
                sub.queue.put_nowait(self.reload_text("the server was restarted"))
            else:
                missed = [t for s, t in self._buffer if s > since]
                first_kept = self._buffer[0][0] if self._buffer else self._seq + 1
                if since + 1 < first_kept and since < self._seq:
                    sub.queue.put_nowait(self.reload_text("too much was missed"))
                elif len(missed) >= self.queue_size:
                    sub.queue.put_nowait(self.reload_text("too much was missed"))
                else:
                    for t in missed:
                        sub.queue.put_nowait(t)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    @property
    def kept(self) -> tuple[int, int]:
        """(messages, characters) in the replay buffer now."""
        return len(self._buffer), self._chars

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close_all(self) -> None:
        """Tell every subscriber to close (server shutdown)."""
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(None)
            except asyncio.QueueFull:
                sub.overflowed = True
                self._drop_to_reload(sub, "the server is stopping")
