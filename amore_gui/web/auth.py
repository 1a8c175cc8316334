"""Who may see and edit the run table in the browser.

Three ways in, checked in this order for every request (HTTP and WebSocket):

1. **A trusted reverse proxy** (``--proxy-header NAME --proxy-from ADDR``): a request from one of
   the configured proxy addresses carrying the header is that user (a viewer, or an editor if
   named with ``--proxy-editor``). The header is ignored from any other address.
2. **An access token** made with ``amore-proto web token add USER [--editor]``: sent as
   ``Authorization: Bearer <token>``, or once in a link as ``?token=<token>``, which the server
   exchanges for a session cookie (signed, ``HttpOnly``, ``SameSite=Lax``) and then drops from
   the address. Tokens are stored hashed (SHA-256 of 256 random bits), shown once, and revocable:
   a revoked token's sessions end with it.
3. **The user who started the server**, only when it is bound to a loopback address
   (127.0.0.1, the default): a connection from this machine whose socket belongs to that user
   (Linux: ``/proc/net/tcp``) is served as that user, an editor. Other local users need a token.

Anything else gets 401 and no data; a viewer's write gets 403.

The token file is ``$AMORE_WEB_ACCESS`` or ``<user config dir>/amore/web-access.json`` (mode
0600; it also holds the key that signs session cookies). The server reads it again when it
changes, so tokens added or revoked while it runs take effect at once.
"""
from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Name of the session cookie.
COOKIE = "amore_session"
#: Seconds a session cookie stays valid.
SESSION_SECONDS = 7 * 24 * 3600
#: Prefix of every token (recognisable in logs and secret scanners).
TOKEN_PREFIX = "amore_"


def access_path() -> Path:
    """The token file (see module docstring; :func:`amore_gui.web.data.access_path`)."""
    from amore_gui.web.data import access_path as path
    return path()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: ``user`` (name recorded with edits), ``editor`` (may write),
    ``via`` (``owner``, ``token`` or ``proxy``) and the token's ``token_id`` if any."""

    user: str
    editor: bool
    via: str
    token_id: str | None = None


@dataclass
class TokenInfo:
    """One access token as stored (never the token itself)."""

    id: str
    user: str
    editor: bool
    sha256: str
    created: float

    def to_dict(self) -> dict:
        return {"id": self.id, "user": self.user, "editor": self.editor, "sha256": self.sha256,
                "created": self.created}


class TokenStore:
    """The token file (see module docstring). Thread-safe; re-read when its modification
    time changes. Raises ``ValueError`` from :meth:`add` for an empty user name."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else access_path()
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._tokens: dict[str, TokenInfo] = {}
        self._secret: bytes | None = None

    # -- file ------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._tokens, self._secret, self._mtime = {}, None, None
            return
        if mtime == self._mtime:
            return
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            raw = {}
        toks = {}
        for t in raw.get("tokens", []):
            try:
                info = TokenInfo(str(t["id"]), str(t["user"]), bool(t["editor"]),
                                 str(t["sha256"]), float(t.get("created", 0)))
            except (KeyError, TypeError, ValueError):
                continue
            toks[info.id] = info
        self._tokens = toks
        s = raw.get("secret")
        self._secret = bytes.fromhex(s) if isinstance(s, str) and len(s) >= 64 else None
        self._mtime = mtime

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {"secret": (self._secret or secrets.token_bytes(32)).hex(),
                "tokens": [t.to_dict() for t in self._tokens.values()]}
        fd, tmp = tempfile.mkstemp(prefix=".web-access-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._mtime = None
        self._load()

    # -- tokens ----------------------------------------------------------------------------
    def add(self, user: str, editor: bool = False) -> tuple[TokenInfo, str]:
        """Make a token for ``user``; returns (its record, the token). The token is not kept:
        show it to the user once."""
        user = (user or "").strip()
        if not user:
            raise ValueError("a token needs a user name")
        with self._lock:
            self._load()
            tid = secrets.token_hex(4)
            while tid in self._tokens:
                tid = secrets.token_hex(4)
            token = f"{TOKEN_PREFIX}{tid}_{secrets.token_urlsafe(32)}"
            info = TokenInfo(tid, user, bool(editor), _hash(token), time.time())
            self._tokens[tid] = info
            if self._secret is None:
                self._secret = secrets.token_bytes(32)
            self._save()
        return info, token

    def list(self) -> list[TokenInfo]:
        """The tokens, oldest first."""
        with self._lock:
            self._load()
            return sorted(self._tokens.values(), key=lambda t: t.created)

    def revoke(self, what: str) -> list[TokenInfo]:
        """Remove the token with id ``what``, or every token of user ``what``; returns those
        removed (empty if none matched)."""
        with self._lock:
            self._load()
            gone = [t for t in self._tokens.values() if what in (t.id, t.user)]
            for t in gone:
                del self._tokens[t.id]
            if gone:
                self._save()
        return gone

    def check(self, token: str) -> TokenInfo | None:
        """The record of a valid token, else None (constant-time comparison of the hash)."""
        if not token or not token.startswith(TOKEN_PREFIX):
            return None
        tid = token[len(TOKEN_PREFIX):].split("_", 1)[0]
        with self._lock:
            self._load()
            info = self._tokens.get(tid)
        if info is None or not hmac.compare_digest(info.sha256, _hash(token)):
            return None
        return info

    def get(self, tid: str) -> TokenInfo | None:
        with self._lock:
            self._load()
            return self._tokens.get(tid)

    def __bool__(self) -> bool:
        return bool(self.list())

    # -- session cookies -------------------------------------------------------------------
    def _key(self) -> bytes:
        with self._lock:
            self._load()
            if self._secret is None:     # no file yet: a key for this process only
                self._secret = secrets.token_bytes(32)
            return self._secret

    def session_cookie(self, info: TokenInfo, now: float | None = None) -> str:
        """A signed session cookie value for a token (valid :data:`SESSION_SECONDS`)."""
        exp = int((now or time.time()) + SESSION_SECONDS)
        msg = f"{info.id}.{exp}"
        sig = hmac.new(self._key(), msg.encode(), hashlib.sha256).digest()
        return f"{msg}.{base64.urlsafe_b64encode(sig).decode().rstrip('=')}"

    def check_cookie(self, value: str, now: float | None = None) -> TokenInfo | None:
        """The token of a valid, unexpired session cookie whose token was not revoked."""
        try:
            tid, exp, sig = value.split(".")
            expires = int(exp)
        except (AttributeError, ValueError):
            return None
        good = hmac.new(self._key(), f"{tid}.{exp}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.urlsafe_b64encode(good).decode().rstrip("="), sig):
            return None
        if expires < (now or time.time()):
            return None
        return self.get(tid)


# -- the owner on loopback -------------------------------------------------------------------

def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def peer_uid(client_port: int, server_port: int) -> int | None:
    """The user id owning the client end of a TCP connection on this machine, from
    ``/proc/net/tcp`` and ``tcp6`` (Linux); None if not found."""
    want_local = f":{client_port:04X}"
    want_remote = f":{server_port:04X}"
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) > 7 and parts[1].endswith(want_local) \
                            and parts[2].endswith(want_remote):
                        return int(parts[7])
        except OSError:
            continue
    return None


# -- the policy ---------------------------------------------------------------------------------

@dataclass
class AccessPolicy:
    """How requests are authenticated (see module docstring).

    ``loopback``: the server is bound to a loopback address (its starting user is served);
    ``proxy_header``/``trusted_proxies``/``proxy_editors``: the reverse-proxy option;
    ``secure_cookies``: mark session cookies ``Secure`` (served over HTTPS).
    """

    tokens: TokenStore
    loopback: bool = True
    owner: str = field(default_factory=lambda: getpass.getuser())
    owner_uid: int = field(default_factory=os.getuid)
    proxy_header: str | None = None
    trusted_proxies: list = field(default_factory=list)
    proxy_editors: set = field(default_factory=set)
    secure_cookies: bool = False

    def __post_init__(self):
        self.trusted_proxies = [ipaddress.ip_network(p, strict=False) if not isinstance(
            p, (ipaddress.IPv4Network, ipaddress.IPv6Network)) else p for p in self.trusted_proxies]
        self._uid_cache: dict[tuple, tuple[float, int | None]] = {}

    def from_trusted_proxy(self, host: str | None) -> bool:
        if not host or not self.trusted_proxies:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted_proxies)

    def _owner_connection(self, client: tuple | None, server: tuple | None) -> bool:
        if not self.loopback or not client or not server or not is_loopback(client[0]):
            return False
        key = (client[1], server[1])
        now = time.monotonic()
        hit = self._uid_cache.get(key)
        if hit is None or now - hit[0] > 2.0:
            uid = peer_uid(int(client[1]), int(server[1]))
            if len(self._uid_cache) > 1000:
                self._uid_cache.clear()
            self._uid_cache[key] = hit = (now, uid)
        return hit[1] == self.owner_uid

    def identify(self, headers, cookies: dict, client: tuple | None,
                 server: tuple | None) -> Principal | None:
        """The :class:`Principal` of a request, or None (401). ``headers``: a case-insensitive
        mapping; ``client``/``server``: (host, port) of the connection's ends."""
        host = client[0] if client else None
        if self.proxy_header and self.from_trusted_proxy(host):
            user = (headers.get(self.proxy_header) or "").strip()
            if user:
                return Principal(user, user in self.proxy_editors, "proxy")
        auth = headers.get("authorization") or ""
        if auth[:7].lower() == "bearer ":
            info = self.tokens.check(auth[7:].strip())
            return Principal(info.user, info.editor, "token", info.id) if info else None
        cookie = cookies.get(COOKIE)
        if cookie:
            info = self.tokens.check_cookie(cookie)
            if info is not None:
                return Principal(info.user, info.editor, "token", info.id)
        if self._owner_connection(client, server):
            return Principal(self.owner, True, "owner")
        return None

    @property
    def has_authentication(self) -> bool:
        """Can anyone but the owner on loopback get in (tokens exist or a proxy is set)?"""
        return bool(self.tokens) or bool(self.proxy_header and self.trusted_proxies)


def refusal(host: str, policy: AccessPolicy) -> str | None:
    """Why a server on ``host`` must not start with this policy, or None: any non-loopback
    address requires tokens or a trusted reverse proxy; a proxy header without proxy
    addresses (or the reverse) is a mistake."""
    if bool(policy.proxy_header) != bool(policy.trusted_proxies):
        return ("--proxy-header and --proxy-from go together: the user name header is trusted "
                "only from the reverse proxy's addresses")
    if is_loopback(host):
        return None
    if not policy.has_authentication:
        return (f"refusing to serve on {host}: that address is reachable from other machines, "
                f"and no access is configured. Give people access with "
                f"'amore-proto web token add USER [--editor]' (they open the link it prints), "
                f"or put the server behind your facility's authenticating reverse proxy "
                f"(--proxy-header and --proxy-from). Without --host it serves only this "
                f"machine (127.0.0.1), for you.")
    return None
