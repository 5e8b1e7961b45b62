"""Reading a session from the service once, when a forced 412 needs one the proxy never saw.

A row that returns the session (412 to If-Match, 403 read-only) must carry the
whole current document and its ETag. When the tracker has none, the injector
reads it with one GET to the server the flow goes to, with the caller's
credentials: a GET needs no signature (protocol notes §2.3), and no If-Match.
The GET uses mitmproxy's own upstream TLS settings, so it trusts what the
proxy's upstream connections trust.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from http import client as httpclient

import certifi
from mitmproxy import ctx
from mitmproxy import http

from mpsdproxy import model
from mpsdproxy.resources import Resource

__all__ = ["FETCH_TIMEOUT", "FetchTarget", "fetch_target", "http_get", "ERRORS"]

#: Seconds the one GET that reads a missing session from the service may take.
FETCH_TIMEOUT = 5.0

#: What a failed read raises: the network, the HTTP parser, or an answer no wire could carry.
ERRORS = (OSError, httpclient.HTTPException, model.ModelError)

#: Request headers the session read copies from the flow.
_FETCH_HEADERS = ("Authorization", "x-xbl-contract-version", "Accept-Language")


@dataclass(frozen=True, slots=True)
class FetchTarget:
    """Where and how to read a session from the service: the server the flow goes to,
    with the caller's credentials."""

    scheme: str
    host: str
    port: int
    path: str
    headers: tuple[tuple[str, str], ...]
    verify: bool = True
    cafile: str | None = None  # trusted CAs, as mitmproxy's own upstream connections use
    capath: str | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"

    def request(self) -> model.Request:
        """The GET as the domain sees it (for the session tracker)."""
        return model.Request("GET", self.url, self.headers)


def fetch_target(flow: http.HTTPFlow, resource: Resource) -> FetchTarget:
    """The GET that reads the session of `resource` from where the flow goes."""
    request = flow.request
    headers = [("Host", request.host_header or request.pretty_host),
               ("Accept", "application/json")]
    headers += [(name, value) for name in _FETCH_HEADERS
                if (value := request.headers.get(name)) is not None]
    options = ctx.options
    if resource.session_path is None:
        raise ValueError(f"{resource.short} names no session to read")
    return FetchTarget(request.scheme, request.host, request.port, resource.session_path,
                       tuple(headers), not options.ssl_insecure,
                       options.ssl_verify_upstream_trusted_ca,
                       options.ssl_verify_upstream_trusted_confdir)


def _connection(target: FetchTarget) -> httpclient.HTTPConnection:
    if target.scheme != "https":
        return httpclient.HTTPConnection(target.host, target.port, timeout=FETCH_TIMEOUT)
    cafile = target.cafile if target.cafile or target.capath else certifi.where()
    context = ssl.create_default_context(cafile=cafile, capath=target.capath)
    if not target.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return httpclient.HTTPSConnection(target.host, target.port, timeout=FETCH_TIMEOUT,
                                      context=context)


def _wire(text: str) -> bytes:
    """The bytes http.client read (it decodes the head as latin-1), for the model's rule."""
    return text.encode("latin-1")


def http_get(target: FetchTarget) -> model.Response:
    """One blocking GET (run it in a thread); raises one of `ERRORS`."""
    conn = _connection(target)
    try:
        conn.request("GET", target.path, headers=dict(target.headers))
        answer = conn.getresponse()
        body = answer.read()
        return model.Response(answer.status, model.from_bytes(_wire(answer.reason or "")),
                              model.Headers.from_raw((_wire(k), _wire(v))
                                                     for k, v in answer.getheaders()), body)
    finally:
        conn.close()
