"""The web server's routes: pages, the JSON API, the live WebSocket, and the guard in front.

:func:`create_app` builds a Starlette application serving :class:`~amore_gui.web.data.
ServedDirectory` objects under ``/d/<slug>/`` (page) and ``/api/d/<slug>/...`` (data); ``/``
lists them (or opens the only one). Every request, static files included, passes
:class:`Guard` first:

* who it is (:meth:`amore_gui.web.auth.AccessPolicy.identify`); nobody -> 401 and no data;
  ``?token=`` on a page address is exchanged for a session cookie and dropped by a redirect;
* writes (POST/PUT/DELETE) need an editor (else 403), the ``X-AMORE-Request`` header (which a
  form or another site's page cannot send without a CORS preflight, and there is no CORS) and,
  when the browser sends one, an ``Origin`` of this server;
* a WebSocket must come from a page of this server (``Origin``);
* responses carry a Content-Security-Policy (scripts only from this server, no framing) and
  ``Referrer-Policy: no-referrer`` (a token in an address never leaks through a link).

Values reach the page as JSON and are put into the page as text, never as HTML.
"""
from __future__ import annotations

import asyncio
import html
import json
import logging
from contextlib import asynccontextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (FileResponse, HTMLResponse, JSONResponse, RedirectResponse,
                                 Response, StreamingResponse)
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from amore_gui.web.auth import COOKIE, SESSION_SECONDS, AccessPolicy, Principal
from amore_gui.web.data import (FIRST_PAGE, PAGE, NotFound, Refused, ServedDirectory)
from amore_gui.web.push import PushChannel

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"

#: Header every write must carry (see :class:`Guard`).
WRITE_HEADER = "x-amore-request"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store")]

UNAUTHORISED_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>AMORE — sign-in needed</title><style>body{{font:15px system-ui,sans-serif;margin:3em;
color:#323130;max-width:44em}}code{{background:#f3f2f1;padding:1px 4px}}</style></head><body>
<h1>Sign-in needed</h1><p>{why}</p>
<p>This AMORE run table is only shown to people given access. Ask the person who runs it for a
link: they make one with <code>amore-proto web token add YOUR-NAME</code>.</p></body></html>"""


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookies(h: dict) -> dict[str, str]:
    out = {}
    for part in h.get("cookie", "").split(";"):
        k, _, v = part.strip().partition("=")
        if k:
            out[k] = v
    return out


def _same_origin(origin: str, h: dict, scope) -> bool:
    host = h.get("host", "")
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    fwd = h.get("x-forwarded-proto")
    allowed = {f"{scheme}://{host}"} | ({f"{fwd}://{host}"} if fwd else set())
    return origin in allowed


class Guard:
    """ASGI middleware: authentication, authorisation, CSRF and security headers (see module
    docstring). Sets ``scope["state"]["principal"]`` for the routes."""

    def __init__(self, app, policy: AccessPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        h = _headers(scope)
        principal = self.policy.identify(h, _cookies(h), scope.get("client"), scope.get("server"))
        if scope["type"] == "websocket":
            origin = h.get("origin")
            if principal is None or (origin and not _same_origin(origin, h, scope)):
                await send({"type": "websocket.close", "code": 4401 if principal is None else 4403})
                return
            scope.setdefault("state", {})["principal"] = principal
            return await self.app(scope, receive, send)

        async def send_secure(msg):
            if msg["type"] == "http.response.start":
                msg = dict(msg)
                msg["headers"] = list(msg.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS
                    if not (k == b"cache-control" and any(
                        hk.lower() == b"cache-control" for hk, _ in msg.get("headers", [])))]
            await send(msg)

        method = scope["method"]
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        token = query.get("token")
        if token and method in ("GET", "HEAD"):
            return await self._exchange(scope, query, token, send_secure, receive)
        if principal is None:
            return await self._deny(scope, h, 401, "You are not signed in.", send_secure, receive)
        if method not in ("GET", "HEAD"):
            problem = self._write_problem(principal, h, scope)
            if problem:
                code, why = problem
                return await self._deny(scope, h, code, why, send_secure, receive)
        scope.setdefault("state", {})["principal"] = principal
        return await self.app(scope, receive, send_secure)

    def _write_problem(self, principal: Principal, h: dict, scope) -> tuple[int, str] | None:
        if h.get(WRITE_HEADER) != "1":
            return 403, "Writes must come from AMORE's page (missing X-AMORE-Request header)."
        origin = h.get("origin")
        if origin and not _same_origin(origin, h, scope):
            return 403, f"Writes from another site ({origin}) are refused."
        own_layout = scope["path"].startswith("/api/d/") and scope["path"].endswith("/layout")
        if not principal.editor and not own_layout:     # a viewer may keep their own layout
            return 403, f"{principal.user} may look but not edit (ask for an editor's token)."
        return None

    async def _exchange(self, scope, query, token, send, receive):
        info = self.policy.tokens.check(token)
        if info is None:
            return await self._deny(scope, _headers(scope), 401,
                                    "This link's access token is not valid (revoked or "
                                    "mistyped).", send, receive)
        rest = {k: v for k, v in query.items() if k != "token"}
        url = scope.get("root_path", "") + scope["path"] + (f"?{urlencode(rest)}" if rest else "")
        resp = RedirectResponse(url, status_code=303)
        resp.set_cookie(COOKIE, self.policy.tokens.session_cookie(info), max_age=SESSION_SECONDS,
                        httponly=True, samesite="lax", secure=self.policy.secure_cookies,
                        path="/")
        await resp(scope, receive, send)

    @staticmethod
    async def _deny(scope, h: dict, code: int, why: str, send, receive):
        if "text/html" in h.get("accept", "") and not scope["path"].startswith("/api/"):
            resp: Response = HTMLResponse(UNAUTHORISED_PAGE.format(why=html.escape(why))
                                          if code == 401 else f"<p>{html.escape(why)}</p>",
                                          status_code=code)
        else:
            resp = JSONResponse({"error": why}, status_code=code)
        if code == 401:
            resp.headers["www-authenticate"] = 'Bearer realm="AMORE"'
        await resp(scope, receive, send)


# -- helpers for the routes ---------------------------------------------------------------------

def _principal(request) -> Principal:
    return request.scope["state"]["principal"]


def _err(code: int, msg: str) -> JSONResponse:
    return JSONResponse({"error": msg}, status_code=code)


async def _json_body(request: Request) -> dict:
    if "application/json" not in request.headers.get("content-type", ""):
        raise ValueError("send JSON (Content-Type: application/json)")
    body = await request.body()
    if len(body) > 2_000_000:
        raise ValueError("request too large")
    data = json.loads(body or b"{}")
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def create_app(directories: list[ServedDirectory], policy: AccessPolicy,
               io: ThreadPoolExecutor | None = None, on_started=None, on_stopped=None):
    """The ASGI application (Starlette behind :class:`Guard`) serving ``directories``.
    ``on_started()``/``on_stopped()`` are called after the tables were read / at shutdown."""
    by_slug = {d.slug: d for d in directories}

    @asynccontextmanager
    async def lifespan(app):
        await asyncio.gather(*(d.start() for d in directories))
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            for d in directories:
                d.channel.close_all()
            await asyncio.gather(*(d.stop() for d in directories), return_exceptions=True)
            if on_stopped is not None:
                on_stopped()

    def served(request) -> ServedDirectory:
        d = by_slug.get(request.path_params["slug"])
        if d is None:
            raise NotFound("no such table")
        return d

    async def home(request):
        if len(directories) == 1:
            return RedirectResponse(f"/d/{directories[0].slug}/", status_code=307)
        items = "".join(f'<li><a href="/d/{html.escape(d.slug)}/">{html.escape(d.title)}</a> '
                        f'<span class="dir">{html.escape(str(d.path))}</span></li>'
                        for d in directories)
        return HTMLResponse(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>AMORE run tables</title><link rel="stylesheet" href="/static/app.css"></head>
<body class="list"><h1>AMORE run tables</h1><ul class="tables">{items}</ul></body></html>""")

    async def page(request):
        served(request)
        return FileResponse(STATIC / "index.html")

    async def me(request):
        p = _principal(request)
        return JSONResponse({"user": p.user, "editor": p.editor, "via": p.via,
                             "tables": [{"slug": d.slug, "title": d.title} for d in directories]})

    async def table(request):
        d = served(request)
        q = request.query_params
        below = q.get("below")
        limit = int(q.get("limit") or (FIRST_PAGE if below is None else PAGE))
        extra = None
        if below is None:   # the first page: who is looking, and their layout
            p = _principal(request)
            layout = await d.on_owner(d.layout, p.user)
            extra = {"title": d.title, "user": p.user, "editor": p.editor,
                     "slurm": d.slurm_available(), "layout": layout,
                     "vocabulary": {"proposal": d.vocabulary.proposal, "run": d.vocabulary.run}}
        parts = await d.on_owner(d.page_parts, int(below) if below is not None else None,
                                 limit, extra)
        return StreamingResponse(_chunks(parts), media_type="application/json")

    async def filter_(request):
        d = served(request)
        return JSONResponse(await d.on_owner(d.filter_ids, request.query_params.get("q", "")))

    async def export(request):
        d = served(request)
        q = request.query_params
        fmt = "md" if q.get("fmt") == "md" else "csv"
        cols = [c for c in q.get("cols", "").split(",") if c]
        try:
            content, media = await d.on_owner(d.export, fmt, q.get("q", ""), q.get("sort", "#run"),
                                              q.get("desc", "1") == "1", cols)
        except ValueError as e:   # QueryError
            return _err(422, str(e))
        name = f"amore-{d.slug}.{'md' if fmt == 'md' else 'csv'}"
        return Response(content, media_type=media,
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    async def plot(request):
        d = served(request)
        q = request.query_params
        return JSONResponse(await d.on_owner(d.plot, q.get("x", ""), q.get("y", "")))

    async def thumb(request):
        d = served(request)
        q = request.query_params
        p, r = await d.on_owner(d.key_of, q.get("id", ""))
        await d.on_owner(d.variable, q.get("name", ""))
        png = await d.on_pool(d.thumbnail, p, r, q.get("name", ""))
        if not png:
            return _err(404, "no image")
        return Response(png, media_type="image/png",
                        headers={"cache-control": "private, max-age=86400"})

    async def inspect(request):
        d = served(request)
        q = request.query_params
        head, failed = await d.on_owner(d.cell_check, q.get("id", ""), q.get("name", ""))
        if failed is not None:      # error / skipped: the message is all there is
            return JSONResponse({**head, "kind": "error", "text": failed})
        try:
            v = await d.on_pool(d.inspect, head["proposal"], head["run"], head["name"],
                                head["title"], head["units"])
        except (OSError, KeyError) as e:
            return JSONResponse({**head, "kind": "text", "text": "(no full data)",
                                 "info": f"Full data not available ({type(e).__name__}: {e})"})
        return JSONResponse({**head, **v})

    async def history(request):
        d = served(request)
        q = request.query_params
        p, r = await d.on_owner(d.key_of, q.get("id", ""))
        await d.on_owner(d.variable, q.get("name", ""))
        try:
            rows = await d.on_pool(d.history, p, r, q.get("name", ""))
        except ValueError as e:    # ManualError: not a manual column
            return _err(422, str(e))
        return JSONResponse({"history": rows})

    async def logbook(request):
        d = served(request)
        if request.method == "POST":
            body = await _json_body(request)
            text = str(body.get("text") or "").strip()
            if not text:
                return _err(422, "an empty comment is not saved")
            await d.on_pool(d.add_logbook, _principal(request).user, text)
        return JSONResponse({"comments": await d.on_pool(d.logbook)})

    async def comment(request):
        d = served(request)
        body = await _json_body(request)
        p, r = await d.on_owner(d.key_of, body.get("id"))
        text = body.get("text")
        if text is not None and not isinstance(text, str):
            return _err(422, "a comment is text")
        await d.on_pool(d.set_comment, p, r, text)
        return JSONResponse({"ok": True})

    async def manual(request):
        d = served(request)
        body = await _json_body(request)
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids:
            return _err(422, "choose at least one run")
        keys = [await d.on_owner(d.key_of, i) for i in ids]
        name = str(body.get("name") or "")
        await d.on_owner(d.variable, name)
        value = body.get("value")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            return _err(422, "a value is text, a number or true/false")
        edits = await d.on_pool(d.set_manual, _principal(request).user, keys, name, value,
                                bool(body.get("confirm")))
        return JSONResponse({"ok": True, "edits": [{"proposal": p, "run": r, "value": v}
                                                  for p, r, v in edits]})

    async def layout(request):
        d = served(request)
        user = _principal(request).user
        if request.method == "PUT":
            await d.on_owner(d.save_layout, user, await _json_body(request))
        return JSONResponse(await d.on_owner(d.layout, user))

    async def reprocess(request):
        d = served(request)
        body = await _json_body(request)
        ids = body.get("ids")
        if ids == "all":
            runs, expected = ["all"], d.data.nrows
        elif isinstance(ids, list) and ids:
            keys = [await d.on_owner(d.key_of, i) for i in ids]
            runs, expected = sorted({str(r) for _, r in keys}, key=int), len(keys)
        else:
            return _err(422, "choose runs to reprocess")
        names = body.get("names")
        if names is not None:
            if not isinstance(names, list) or not names:
                return _err(422, "choose at least one variable (or all)")
            names = [(await d.on_owner(d.variable, str(n))).key for n in names]
        slurm = bool(body.get("slurm"))
        if slurm and not d.slurm_available():
            return _err(422, "Slurm is not available here (no sbatch)")
        jid = await d.on_owner(d.reprocess, runs, names, slurm, expected,
                               bool(body.get("force")))
        return JSONResponse({"id": jid})

    async def jobs(request):
        d = served(request)
        return JSONResponse({"jobs": {k: j.to_dict() for k, j in d.jobs.items()}})

    async def cancel(request):
        d = served(request)
        await d.on_owner(d.cancel_job, request.path_params["jid"])
        return JSONResponse({"ok": True})

    async def live(ws: WebSocket):
        d = by_slug.get(ws.path_params["slug"])
        if d is None:
            await ws.close(code=4404)
            return
        q = ws.query_params
        try:
            since = int(q["since"]) if "since" in q else None
        except ValueError:
            since = None
        await ws.accept()
        sub = d.channel.subscribe(since, q.get("epoch"))
        hello = PushChannel.encode(d.channel.seq, "hello", {"epoch": d.channel.epoch,
                                                            "status": d.status})
        receiver = asyncio.create_task(_drain(ws))
        try:
            await ws.send_text(hello)
            while True:
                get = asyncio.create_task(sub.queue.get())
                done, _ = await asyncio.wait({get, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if receiver in done:
                    get.cancel()
                    break
                text = get.result()
                if text is None:
                    await ws.close(code=1001 if not sub.overflowed else 4000)
                    break
                await ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, ConnectionError):
            pass
        finally:
            receiver.cancel()
            d.channel.unsubscribe(sub)

    async def not_found(request, exc):
        return _err(404, str(exc))

    async def bad_request(request, exc):
        return _err(400, str(exc))

    async def refused(request, exc):
        return _err(422, str(exc))

    api = "/api/d/{slug}"
    routes = [
        Route("/", home),
        Route("/api/me", me),
        Route("/d/{slug}/", page),
        Route(f"{api}/table", table),
        Route(f"{api}/filter", filter_),
        Route(f"{api}/export", export),
        Route(f"{api}/plot", plot),
        Route(f"{api}/thumb", thumb),
        Route(f"{api}/inspect", inspect),
        Route(f"{api}/history", history),
        Route(f"{api}/logbook", logbook, methods=["GET", "POST"]),
        Route(f"{api}/comment", comment, methods=["POST"]),
        Route(f"{api}/manual", manual, methods=["POST"]),
        Route(f"{api}/layout", layout, methods=["GET", "PUT"]),
        Route(f"{api}/reprocess", reprocess, methods=["POST"]),
        Route(f"{api}/jobs", jobs),
        Route(api + "/jobs/{jid}/cancel", cancel, methods=["POST"]),
        WebSocketRoute(f"{api}/live", live),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        NotFound: not_found, Refused: refused, ValueError: bad_request,
        KeyError: bad_request})
    return Guard(app, policy)


#: Characters of a table page sent at a time (:func:`_chunks`).
CHUNK = 32768


async def _chunks(parts: list[str]):
    """The pieces of a JSON text as UTF-8 chunks of about :data:`CHUNK` characters: a table
    page goes out without one text of it in memory (the server's memory stays flat when
    every viewer reads the whole table again)."""
    buf: list[str] = []
    size = 0
    for p in parts:
        buf.append(p)
        size += len(p)
        if size >= CHUNK:
            yield "".join(buf).encode()
            buf, size = [], 0
    if buf:
        yield "".join(buf).encode()


async def _drain(ws: WebSocket) -> None:
    """Read (and ignore) what the browser sends until it disconnects."""
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
    except Exception:
        return

