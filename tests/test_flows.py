"""flows: the one translation between mitmproxy flows and the domain's model values."""

from __future__ import annotations

import io

import pytest
from mitmproxy import http
from mitmproxy import io as mio
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from mpsdproxy import model
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.addons import router

HOST = "sessiondirectory.xboxlive.com"
LOBBY = ("/serviceconfigs/6efc0200-fd0e-4f4b-8b5c-7e3d0f4a1b2c/sessionTemplates/LobbySession"
         "/sessions/Lobby-1")
BODY = b'{"members":{"me":{"constants":{"system":{"initialize":true}}}}}'


def sd_flow(path: bytes = LOBBY.encode(), headers: list[tuple[bytes, bytes]] | None = None,
            content: bytes = BODY) -> http.HTTPFlow:
    fields = [(b"Host", HOST.encode()), (b"Authorization", b"XBL3.0 x=1;t"),
              *(headers or [])]
    request = tutils.treq(host=HOST, port=443, scheme=b"https", method=b"PUT", path=path,
                          headers=http.Headers(fields), content=content)
    f = tflow.tflow(req=request)
    r = router.Router()
    with taddons.context(r):
        r.request(f)
    return f


def answered(f: http.HTTPFlow, response: model.Response) -> http.HTTPFlow:
    f.response = flows.to_mitmproxy(response)
    f.response.timestamp_start, f.response.timestamp_end = 946684800.5, 946684800.75
    return f


CREATED = model.Response(201, "Created", [("Content-Type", "application/json"),
                                          ("ETag", '"e1"'), ("X-Note", "a"), ("x-note", "b")],
                         b'{"changeNumber":1}')


def test_request_is_what_the_title_sent():
    f = sd_flow(headers=[(b"X-Title", b"Caf\xff Racer"), (b"x-title", b"again")])
    request = flows.request_of(f)
    assert request.method == "PUT"
    assert request.url == f"https://{HOST}{LOBBY}"
    assert request.body == BODY
    assert request.json["members"]["me"]["constants"]["system"]["initialize"] is True
    assert request.headers.get("x-title") == "Caf\udcff Racer, again"
    assert request.headers.raw() == tuple(f.request.headers.fields)
    assert request.resource.short == "sessions/Lobby-1"


def test_request_resource_is_the_one_the_mark_holds():
    """The model takes the router's resource; a mark whose resource data was replaced
    since is read for what it says."""
    f = sd_flow()
    assert flows.request_of(f).resource.to_dict() == f.metadata[common.KEY]["resource"]
    f.metadata[common.KEY]["resource"] = {"kind": "handle", "element": "h1"}
    f.request.headers["X-New"] = "1"  # rebuilt: the request changed
    assert flows.request_of(f).resource.short == "handles/h1"


def test_request_url_is_the_one_asked_for_before_a_redirect():
    f = tflow.tflow(req=tutils.treq(host=HOST, port=443, scheme=b"https", path=LOBBY.encode()))
    r = router.Router()
    with taddons.context(r) as tctx:
        tctx.configure(r, mpsd_upstream="http://127.0.0.1:8081")
        r.request(f)
    assert f.request.host == "127.0.0.1"
    assert flows.request_of(f).url == f"https://{HOST}{LOBBY}"


def test_a_path_byte_that_is_not_utf8_round_trips():
    f = sd_flow(path=LOBBY.encode() + b"/caf\xe9")
    request = flows.request_of(f)
    assert model.to_bytes(request.path) == LOBBY.encode() + b"/caf\xe9"


def test_bodies_are_decoded_and_kept_raw_when_that_fails():
    f = sd_flow()
    f.request.encode("gzip")
    assert f.request.raw_content != BODY
    assert flows.request_of(f).body == BODY
    broken = sd_flow(headers=[(b"Content-Encoding", b"gzip")], content=b"not gzip")
    assert flows.request_of(broken).body == b"not gzip"


def test_exchange_of_an_answered_flow():
    f = answered(sd_flow(), CREATED)
    common.set_provenance(f, source="injected", rule="r1", phase="request")
    common.mark(f)["seq"] = 12
    exchange = flows.exchange_of(f)
    assert exchange.response == CREATED.__class__(
        201, "Created", [*CREATED.headers, ("content-length", "18")], CREATED.body)
    assert exchange.error is None
    assert (exchange.start, exchange.end) == (f.request.timestamp_start, 946684800.75)
    assert exchange.client == "127.0.0.1:22"
    assert dict(exchange.provenance) == {"source": "injected", "rule": "r1", "phase": "request"}
    assert exchange.seq == 12


def test_exchange_of_a_failed_flow():
    f = sd_flow()
    f.error = tflow.terr("connection refused")
    exchange = flows.exchange_of(f)
    assert exchange.response is None
    assert exchange.error == "connection refused"
    assert exchange.end == f.error.timestamp
    assert dict(exchange.provenance) == {"source": "forwarded"}
    assert exchange.seq is None


def test_a_response_cut_off_mid_body_is_no_response():
    f = answered(sd_flow(), CREATED)
    f.response.raw_content = None
    f.error = tflow.terr("server disconnected")
    exchange = flows.exchange_of(f)
    assert exchange.response is None and exchange.error == "server disconnected"


def test_a_later_change_of_the_response_is_seen():
    f = answered(sd_flow(), CREATED)
    assert flows.exchange_of(f).status == 201
    f.response = flows.to_mitmproxy(model.Response(503, "Service Unavailable"))
    assert flows.exchange_of(f).status == 503


def test_what_the_model_refuses_is_still_an_exchange():
    """A peer can send a NUL or lone CR in a header value, or a status the table cannot
    have: the exchange is still built (so it is recorded), the characters escaped."""
    f = sd_flow(headers=[(b"X-Odd", b"a\x00b\rc")])
    f.response = tutils.tresp(status_code=200, reason=b"O\x00K",
                              headers=http.Headers([(b"X-Odd", b"d\ne")]))
    exchange = flows.exchange_of(f)
    assert exchange.request.headers.get("X-Odd") == "a\\x00b\\x0dc"
    assert exchange.response is not None
    assert exchange.response.reason == "O\\x00K"
    assert exchange.response.headers.get("X-Odd") == "d\\x0ae"
    f.response.status_code = 999
    exchange = flows.exchange_of(f)
    assert exchange.response is None
    assert "invalid response" in exchange.error and "999" in exchange.error


def test_to_mitmproxy_keeps_the_answers_bytes():
    reason = "Cr\u00e9\udcff"
    response = model.Response(412, reason, [("Content-Encoding", "gzip"), ("X-A", "1"),
                                            ("x-a", "\udcfe")], b"{}")
    out = flows.to_mitmproxy(response, "HTTP/2.0")
    assert out.status_code == 412
    assert out.data.reason == model.to_bytes(reason)
    assert out.http_version == "HTTP/2.0"
    assert out.headers.fields[:3] == response.headers.raw()
    assert out.headers["content-length"] == str(len(out.raw_content))
    assert out.raw_content != b"{}" and out.content == b"{}"


def test_flow_of_round_trips_through_a_mitmproxy_flow_file():
    f = answered(sd_flow(path=LOBBY.encode() + b"/caf\xe9",
                         headers=[(b"X-Title", b"Caf\xff")]), CREATED)
    common.mark(f)["seq"] = 3
    exchange = flows.exchange_of(f)
    buffer = io.BytesIO()
    mio.FlowWriter(buffer).add(flows.flow_of(exchange, {"id": "201.created"}))
    buffer.seek(0)
    (back,) = mio.FlowReader(buffer).stream()
    assert back.live is False
    assert common.mark(back)["classification"] == {"id": "201.created"}
    assert flows.exchange_of(back) == exchange


def test_flow_of_an_exchange_without_response():
    exchange = model.Exchange(model.Request("GET", f"https://{HOST}{LOBBY}"),
                              error="connection refused", start=10.0, end=10.5,
                              client="[::1]:4000")
    f = flows.flow_of(exchange)
    assert f.response is None and f.error.msg == "connection refused"
    assert f.client_conn.peername == ("::1", 4000)
    assert flows.exchange_of(f).duration_ms == 500.0


def test_flow_of_needs_an_absolute_url():
    with pytest.raises(ValueError, match="not an absolute http"):
        flows.flow_of(model.Exchange(model.Request("GET", "/relative")))


@pytest.mark.parametrize("authority", [b"sessiondirectory.xboxlive.com:80http://x", b"h:80%09"])
def test_a_request_whose_url_cannot_be_read_still_becomes_a_request(authority: bytes) -> None:
    """A peer's garbage authority must not cost the exchange its record."""
    flow = tflow.tflow(req=tutils.treq(authority=authority, path=b"/handles"))
    request = flows.request_of(flow)
    assert request.method == "GET"
    assert request.path.endswith("/handles")
