"""``amore-proto web``: the run table in a browser, and ``amore-proto web token``: who may see it.

    amore-proto web [DIR ...] [--host HOST] [--port PORT]
    amore-proto web token add USER [--editor]
    amore-proto web token list
    amore-proto web token revoke ID|USER
"""
from __future__ import annotations

import argparse
import sys
import time

from amore.cli.common import context_dir


def _token_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amore-proto web token",
                                description="access tokens for the browser run table")
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("add", help="make a token for a person (shown once)")
    s.add_argument("user", help="the person's name, recorded with their edits")
    s.add_argument("--editor", action="store_true",
                   help="may edit comments and manual values and reprocess (default: view only)")
    s.add_argument("--url", help="the server's address, to print a ready link "
                                 "(e.g. http://host:8765/d/p2832/)")
    sub.add_parser("list", help="list tokens (never the tokens themselves)")
    s = sub.add_parser("revoke", help="revoke a token by its id, or all tokens of a user")
    s.add_argument("what", metavar="ID|USER")
    return p


def cmd_token(argv: list[str]) -> int:
    """``amore-proto web token add|list|revoke``."""
    from amore_gui.web.auth import TokenStore
    a = _token_parser().parse_args(argv)
    store = TokenStore()
    if a.action == "add":
        try:
            info, token = store.add(a.user, a.editor)
        except ValueError as e:
            print(f"amore-proto web token add: {e}", file=sys.stderr)
            return 2
        role = "editor" if info.editor else "viewer"
        print(f"Token {info.id} for {info.user} ({role}), stored hashed in {store.path}.")
        print("It is shown only now; give it to them privately:\n")
        print(f"    {token}\n")
        if a.url:
            sep = "&" if "?" in a.url else "?"
            print(f"Their link (opens a session in the browser):\n\n    {a.url}{sep}token={token}\n")
        else:
            print("They open <server address>/?token=<token> once, or send it as "
                  "'Authorization: Bearer <token>'.")
        print(f"Revoke it with: amore-proto web token revoke {info.id}")
        return 0
    if a.action == "list":
        toks = store.list()
        if not toks:
            print(f"No access tokens ({store.path}); make one with "
                  f"'amore-proto web token add USER [--editor]'")
            return 0
        print(f"{'ID':10} {'USER':20} {'ROLE':8} CREATED")
        for t in toks:
            print(f"{t.id:10} {t.user:20} {'editor' if t.editor else 'viewer':8} "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(t.created))}")
        return 0
    gone = store.revoke(a.what)
    if not gone:
        print(f"amore-proto web token revoke: no token with id or user {a.what!r}", file=sys.stderr)
        return 1
    for t in gone:
        print(f"Revoked token {t.id} of {t.user}; their sessions end now.")
    return 0


def cmd_web(a) -> int:
    """``amore-proto web [DIR ...]``: serve the run tables in a browser (see :mod:`amore_gui.web`)."""
    if a.dirs and a.dirs[0] == "token":
        return cmd_token(a.dirs[1:] + (["--editor"] if a.editor else [])
                         + (["--url", a.url] if a.url else []))
    import logging
    from amore_gui.web.server import StartRefused, prepare
    from backend.service.logs import LOG_FORMAT
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format=LOG_FORMAT)
    dirs = [context_dir(d) for d in a.dirs] or [context_dir(None)]
    tls = (a.tls_cert, a.tls_key) if a.tls_cert or a.tls_key else None
    if tls and not all(tls):
        print("amore-proto web: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        server = prepare(dirs, a.host, a.port, a.proxy_header, a.proxy_from, a.proxy_editor, tls,
                         use_kafka=not a.no_kafka)
    except StartRefused as e:
        print(f"amore-proto web: {e}", file=sys.stderr)
        return 1
    for d in server.directories:
        print(f"Serving {d.title} ({d.path}) at {server.url_of(d)}", flush=True)
    if server.policy.loopback:
        print(f"Only this machine can connect, and only you ({server.policy.owner}) are served. "
              f"From another machine: ssh -L {a.port}:127.0.0.1:{a.port} <this host>, "
              f"then open the address above.", flush=True)
    else:
        print("Anyone reaching this address must sign in (access tokens"
              + (", or the reverse proxy's user header" if a.proxy_header else "") + ").",
              flush=True)
    print("Stop with Ctrl-C.", flush=True)
    server.run("info" if a.verbose else "warning")
    return 0


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    s = sub.add_parser(
        "web", help="serve run tables in a browser ('web token ...': access tokens)",
        description="Serve the run tables of context directories in a browser, live. Bound to "
                    "127.0.0.1 it serves only you; any other address needs access tokens "
                    "('amore-proto web token add USER [--editor]') or a trusted reverse proxy.")
    s.add_argument("dirs", nargs="*", metavar="DIR",
                   help="context directories (default: the current directory); "
                        "'token add USER [--editor] [--url URL]', 'token list', "
                        "'token revoke ID|USER' manage access tokens")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    s.add_argument("--proxy-header", metavar="NAME",
                   help="trust this request header as the user name (set by an authenticating "
                        "reverse proxy), only from the --proxy-from addresses")
    s.add_argument("--proxy-from", metavar="ADDR", action="append",
                   help="address or network of the reverse proxy (repeatable)")
    s.add_argument("--proxy-editor", metavar="USER", action="append",
                   help="a user named by the proxy who may edit (repeatable; others view)")
    s.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    s.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")
    s.add_argument("--no-kafka", action="store_true",
                   help="do not use Kafka for live updates (watch the database instead)")
    s.add_argument("-v", "--verbose", action="store_true", help="log more")
    # options of 'web token add' (parsed again by cmd_token)
    s.add_argument("--editor", action="store_true", help=argparse.SUPPRESS)
    s.add_argument("--url", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_web)
