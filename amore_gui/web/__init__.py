"""The run table in a browser (``amore-proto web``): a Starlette app on uvicorn, live over a
WebSocket, built on the Qt-free application layer (:mod:`amore_gui.application`) through one
adapter, :mod:`amore_gui.web.data`; it never imports ``backend`` (an import-linter contract).

* :mod:`~amore_gui.web.server` - checks before a start, the record ``backend status`` reads, uvicorn;
* :mod:`~amore_gui.web.app` - routes, the JSON API, the live WebSocket, the guard in front;
* :mod:`~amore_gui.web.auth` - access: the owner on loopback, tokens, a trusted reverse proxy;
* :mod:`~amore_gui.web.push` - numbered pushes with replay after a reconnect;
* :mod:`~amore_gui.web.data` - the table, live updates, edits, export (the application layer);
* ``static/`` - the page (vanilla JS) and the vendored AG Grid Community and Plotly.js builds
  (``static/vendor/VERSIONS.json``; ``scripts/vendor_web.py`` refreshes them with npm).
"""
