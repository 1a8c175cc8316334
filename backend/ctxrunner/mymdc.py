"""Client of the facility's metadata service (MyMdC at European XFEL) for ``mymdc#`` inputs.

Configured by ``[mymdc]`` in the configuration: ``url`` is the base of the service's API as
AMORE reaches it (at European XFEL a proxy path such as ``https://<host>/api/mymdc``), ``token``
or ``token_file`` the API key sent in the ``header`` (default ``X-API-key``), ``timeout`` in
seconds. Requests (all GET, JSON replies):

``{url}/proposals/by_number/{proposal}/runs/{run}``
    ``{"runs": [{"sample_id": int, "experiment_id": int, ...}]}``
``{url}/samples/{sample_id}``
    ``{"name": str, ...}`` (the sample name)
``{url}/experiments/{experiment_id}``
    ``{"name": str, ...}`` (the run type)

Replies are cached per worker process. Errors raise :class:`MetadataError` with the URL and the
reason, which the variable that asked for the value shows.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

#: ``mymdc#`` keys a context file may ask for.
KEYS = ("sample_name", "run_type")


class MetadataError(Exception):
    """The metadata service could not answer (unreachable, HTTP error, unexpected reply)."""


def resolve_config(section: dict) -> dict | None:
    """The ``[mymdc]`` configuration as :class:`MyMdcClient` keyword arguments (``token_file``
    read), or None if no ``url`` is set. Raises :class:`MetadataError` if the token file cannot
    be read."""
    if not section.get("url"):
        return None
    token = section.get("token")
    if not token and section.get("token_file"):
        try:
            token = Path(section["token_file"]).expanduser().read_text().strip()
        except OSError as e:
            raise MetadataError(f"cannot read the metadata service token: {e}") from None
    return {"url": section["url"], "token": token, "header": section.get("header") or "X-API-key",
            "timeout": float(section.get("timeout") or 10.0)}


class _NoKeyOnRedirect(urllib.request.HTTPRedirectHandler):
    """Follows redirects within the same host only with the API key; to another host the key
    is not sent (urllib would copy every header)."""

    def __init__(self, key_header: str):
        self.key_header = key_header

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != \
                urllib.parse.urlsplit(req.full_url).netloc:
            for h in list(new.headers):
                if h.lower() == self.key_header.lower():
                    del new.headers[h]
        return new


class MyMdcClient:
    """Looks up a run's sample name and run type. ``url``: API base; ``token``: API key."""

    def __init__(self, url: str, token: str | None = None, header: str = "X-API-key",
                 timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.headers = {header: token} if token else {}
        self.timeout = float(timeout)
        self._opener = urllib.request.build_opener(_NoKeyOnRedirect(header))
        self._cache: dict[str, dict] = {}

    def _get(self, path: str) -> dict:
        url = f"{self.url}/{path}"
        if url not in self._cache:
            req = urllib.request.Request(url, headers={"Accept": "application/json",
                                                       **self.headers})
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    self._cache[url] = json.load(resp)
            except urllib.error.HTTPError as e:
                raise MetadataError(f"metadata service: HTTP {e.code} for {url}") from None
            except (urllib.error.URLError, OSError) as e:
                raise MetadataError(f"metadata service unreachable ({url}): "
                                    f"{getattr(e, 'reason', e)}") from None
            except ValueError as e:
                raise MetadataError(f"metadata service sent no JSON for {url}: {e}") from None
        return self._cache[url]

    def run_info(self, proposal: int, run: int) -> dict:
        """The service's record of a run. Raises :class:`MetadataError` if it has none."""
        runs = self._get(f"proposals/by_number/{proposal}/runs/{run}").get("runs") or []
        if not runs:
            raise MetadataError(f"metadata service knows no run {run} of proposal {proposal}")
        return runs[0]

    def sample_name(self, proposal: int, run: int) -> str:
        return str(self._get(f"samples/{self.run_info(proposal, run)['sample_id']}")["name"])

    def run_type(self, proposal: int, run: int) -> str:
        return str(self._get(f"experiments/{self.run_info(proposal, run)['experiment_id']}")["name"])

    def lookup(self, key: str, proposal: int, run: int) -> str:
        """Value of ``mymdc#<key>`` for a run; raises KeyError for keys other than :data:`KEYS`."""
        if key not in KEYS:
            raise KeyError(f"unknown 'mymdc#{key}' (use one of "
                           f"{', '.join('mymdc#' + k for k in KEYS)})")
        return getattr(self, key)(proposal, run)
