"""The facility's metadata service (MyMdC at European XFEL) for ``mymdc#`` inputs:
``mymdc#sample_name`` (str), ``mymdc#run_type`` (str, e.g. ``"Sample"``, ``"Dark"``) and
``mymdc#techniques`` (list of dicts with ``identifier`` and ``name``), the fields DAMNIT 0.4.0
offers.

Two ways to reach it (:func:`metadata_client` chooses):

* with no ``[mymdc] url`` configured, as DAMNIT does: through the ``extra-proposal`` package
  (:class:`ExtraProposalClient`, ``extra_proposal.Proposal(proposal)[run].<field>()``). At
  European XFEL it needs no configuration: extra-proposal finds the proposal directory under the
  data root (``$EXTRA_DATA_DATA_ROOT``) and reads the API key and server from its
  ``usr/mymdc-credentials.yml`` (``token``, ``server``; requests go to ``{server}/api/mymdc``,
  key in the ``X-API-key`` header). The facility's token service writes that file when DAMNIT
  or extra-proposal first asks MyMdC about a proposal; AMORE does not call that service itself
  (no facility host is contacted behind the user's back, not even by the test suite): without
  the file the variable says so;
* with ``[mymdc]`` configured (other set-ups, or a proxy of one's own): ``url`` is the base of
  the service's API as AMORE reaches it, ``token`` or ``token_file`` the API key sent in the
  ``header`` (default ``X-API-key``), ``timeout`` in seconds (:class:`MyMdcClient`).

Both make the same GET requests (JSON replies):

``proposals/by_number/{proposal}/runs/{run}``
    ``{"runs": [{"id": int, "sample_id": int, "experiment_id": int, ...}]}``
``samples/{sample_id}``
    ``{"name": str, ...}`` (the sample name)
``experiments/{experiment_id}``
    ``{"name": str, ...}`` (the run type)
``runs/{id}``
    ``{"techniques": [{"identifier": str, "name": str}, ...], ...}``

Replies are cached per worker process. Errors raise :class:`MetadataError` with the URL (never
the key) and the reason, which the variable that asked for the value shows.
"""
from __future__ import annotations

import json
from pathlib import Path

# urllib.request (with http.client and email: ~30 ms) is imported by MyMdcClient only: every
# context worker and ``reprocess`` command imports this module, few configure [mymdc] url.

#: ``mymdc#`` keys a context file may ask for (those DAMNIT 0.4.0 accepts).
KEYS = ("sample_name", "run_type", "techniques")


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


def _no_key_on_redirect(key_header: str):
    """A urllib redirect handler that follows redirects within the same host only with the
    API key; to another host the key is not sent (urllib would copy every header)."""
    import urllib.parse
    import urllib.request

    class NoKeyOnRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and urllib.parse.urlsplit(newurl).netloc != \
                    urllib.parse.urlsplit(req.full_url).netloc:
                for h in list(new.headers):
                    if h.lower() == key_header.lower():
                        del new.headers[h]
            return new
    return NoKeyOnRedirect()


class MyMdcClient:
    """Looks up a run's sample name and run type. ``url``: API base; ``token``: API key."""

    def __init__(self, url: str, token: str | None = None, header: str = "X-API-key",
                 timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.headers = {header: token} if token else {}
        self.timeout = float(timeout)
        import urllib.request
        self._opener = urllib.request.build_opener(_no_key_on_redirect(header))
        self._cache: dict[str, dict] = {}

    def _get(self, path: str) -> dict:
        import urllib.error
        import urllib.request
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

    def techniques(self, proposal: int, run: int) -> list[dict]:
        return list(self._get(f"runs/{self.run_info(proposal, run)['id']}")["techniques"])

    def lookup(self, key: str, proposal: int, run: int):
        """Value of ``mymdc#<key>`` for a run; raises KeyError for keys other than :data:`KEYS`,
        :class:`MetadataError` when the service cannot answer."""
        _check_key(key)
        try:
            return getattr(self, key)(proposal, run)
        except (KeyError, TypeError) as e:
            raise MetadataError(f"metadata service: unexpected reply for {key} of run {run} "
                                f"({type(e).__name__}: {e})") from None


def _check_key(key: str) -> None:
    if key not in KEYS:
        raise KeyError(f"unknown 'mymdc#{key}' (use one of "
                       f"{', '.join('mymdc#' + k for k in KEYS)})")


#: Where extra-proposal finds MyMdC's server and API key, relative to the proposal directory.
CREDENTIALS = "usr/mymdc-credentials.yml"


class ExtraProposalClient:
    """``mymdc#`` values through the ``extra-proposal`` package, as DAMNIT 0.4.0 gets them:
    ``extra_proposal.Proposal(proposal)[run].<key>()`` (see the module docstring for where it
    finds the service and its key). One ``Proposal`` per proposal, whose replies it caches."""

    def __init__(self):
        import importlib.util
        # fail here when it is not installed; imported at the first lookup (~0.1 s of every
        # worker's start otherwise, for the few context files that read mymdc# values)
        if importlib.util.find_spec("extra_proposal") is None:
            raise ImportError("No module named 'extra_proposal'")
        self._proposals: dict = {}

    def lookup(self, key: str, proposal: int, run: int):
        """Value of ``mymdc#<key>`` for a run; raises KeyError for keys other than :data:`KEYS`,
        :class:`MetadataError` (naming the proposal and run, never the key) otherwise."""
        _check_key(key)
        import extra_proposal
        prop = self._proposals.get(proposal)
        if prop is None:
            try:
                from extra_proposal.utils import find_proposal
                creds = find_proposal(f"p{int(proposal):06d}") / CREDENTIALS
            except Exception as e:   # noqa: BLE001 - shown as the variable's error
                raise MetadataError(f"MyMdC is not available for proposal {proposal}: "
                                    f"{type(e).__name__}: {e}") from None
            if not creds.is_file():
                raise MetadataError(
                    f"MyMdC is not available: {creds} does not exist (the facility's token "
                    f"service writes it when DAMNIT or extra-proposal first asks MyMdC about "
                    f"this proposal; or configure [mymdc] url and token_file)")
            prop = self._proposals[proposal] = extra_proposal.Proposal(int(proposal))
        try:
            return getattr(prop[int(run)], key)()
        except Exception as e:   # noqa: BLE001 - shown as the variable's error
            raise MetadataError(f"MyMdC (extra-proposal) could not give {key} of run {run} of "
                                f"proposal {proposal}: {type(e).__name__}: {_no_key(e)}") from None


def _no_key(e: Exception) -> str:
    """An exception's text without request headers (requests' errors name the URL only)."""
    text = str(e)
    return text.split("headers=")[0][:500]


def metadata_client(conf: dict):
    """The client for ``mymdc#`` inputs in a worker: :class:`MyMdcClient` for ``conf`` from
    :func:`resolve_config` (``[mymdc] url`` set); otherwise :class:`ExtraProposalClient` where the
    ``extra-proposal`` package is installed in the context file's Python; else None (the
    variable then says no metadata service is available)."""
    if conf.get("url"):
        return MyMdcClient(**conf)
    try:
        return ExtraProposalClient()
    except ImportError:
        return None
