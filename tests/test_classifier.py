"""StatusClassifier: the classification of what the title got, in the flow's mpsd mark."""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from mpsdproxy import catalog
from mpsdproxy import faults
from mpsdproxy import model
from mpsdproxy.addons import classifier
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.addons import router

LOBBY = ("/serviceconfigs/6efc0200-fd0e-4f4b-8b5c-7e3d0f4a1b2c/sessiontemplates/LobbySession"
         "/sessions/Lobby-1")
WHOLE = {"constants": {}, "properties": {}, "members": {}, "changeNumber": 4}


def sd_flow(method: str = "GET", path: str = LOBBY, host: str = "sessiondirectory.xboxlive.com",
            req_headers: dict[str, str] | None = None) -> http.HTTPFlow:
    headers = http.Headers(host=host, **(req_headers or {}))
    request = tutils.treq(host=host, port=443, scheme=b"https", method=method.encode(),
                          path=path.encode(), headers=headers, content=b"")
    return tflow.tflow(req=request)


def answer(flow: http.HTTPFlow, reply: model.Response) -> None:
    flow.response = flows.to_mitmproxy(reply)


def routed(flow: http.HTTPFlow) -> http.HTTPFlow:
    r = router.Router()
    with taddons.context(r):
        r.request(flow)
    return flow


def test_classification_goes_into_the_mark():
    c = classifier.StatusClassifier()
    f = routed(sd_flow("PUT", req_headers={"If-Match": '"old"'}))
    answer(f, faults.build("412.if-match-session", session=WHOLE, etag='"new"'))
    with taddons.context(c):
        c.response(f)
    assert common.mark(f)["classification"] == {
        "id": "412.if-match-session",
        "meaning": catalog.get("412.if-match-session").meaning,
        "anomalies": [],
    }


def test_anomalies_are_plain_data():
    c = classifier.StatusClassifier()
    f = routed(sd_flow())
    f.response = tutils.tresp(status_code=503, headers=http.Headers(content_type="text/plain"),
                              content=b"")
    with taddons.context(c):
        c.response(f)
    assert common.mark(f)["classification"]["anomalies"] == [
        {"code": "missing-header", "message": "503 must carry Retry-After"},
    ]


def test_element_path_reaches_the_classifier():
    c = classifier.StatusClassifier()
    f = routed(sd_flow("DELETE", LOBBY + "/members/me"))
    f.response = tutils.tresp(status_code=204, headers=http.Headers(), content=b"")
    with taddons.context(c):
        c.response(f)
    assert common.mark(f)["classification"]["id"] == "204.element-gone"


def test_unlisted_status():
    c = classifier.StatusClassifier()
    f = routed(sd_flow())
    f.response = tutils.tresp(status_code=500)
    with taddons.context(c):
        c.response(f)
    classification = common.mark(f)["classification"]
    assert classification["id"] is None
    assert [a["code"] for a in classification["anomalies"]] == ["unlisted-status"]


def test_no_response_on_error():
    c = classifier.StatusClassifier()
    f = routed(sd_flow())
    f.error = tflow.terr("connection reset")
    with taddons.context(c):
        c.error(f)
    classification = common.mark(f)["classification"]
    assert classification["id"] is None
    assert [a["code"] for a in classification["anomalies"]] == ["no-response"]


def test_ignores_unmarked_flows():
    c = classifier.StatusClassifier()
    f = routed(sd_flow(host="example.com"))
    f.response = tutils.tresp(status_code=503)
    with taddons.context(c):
        c.response(f)
        c.error(f)
    assert common.mark(f) is None
    assert "mpsd" not in f.metadata


def test_first_classification_stands():
    c = classifier.StatusClassifier()
    f = routed(sd_flow())
    answer(f, faults.build("204.get-session"))
    with taddons.context(c):
        c.response(f)
        first = dict(common.mark(f)["classification"])
        f.response = tutils.tresp(status_code=500)
        f.error = tflow.terr("client went away")
        c.error(f)
    assert common.mark(f)["classification"] == first
    assert first["id"] == "204.get-session"


def test_compressed_body_is_classified_decoded():
    c = classifier.StatusClassifier()
    f = routed(sd_flow())
    reply = faults.build("200.ok", session=WHOLE, etag='"e"')
    f.response = flows.to_mitmproxy(reply)
    f.response.encode("gzip")
    assert f.response.raw_content != reply.body
    with taddons.context(c):
        c.response(f)
    assert common.mark(f)["classification"]["anomalies"] == []


def test_bytes_that_are_not_utf8_are_classified():
    c = classifier.StatusClassifier()
    f = routed(sd_flow())
    f.request.data.path = LOBBY.encode() + b"\xe9"
    f.response = tutils.tresp(status_code=503, content=b"",
                              headers=http.Headers([(b"Retry-After", b"5\xff")]))
    with taddons.context(c):
        c.response(f)
    classification = common.mark(f)["classification"]
    assert classification["id"] == "503.service-unavailable"
    assert [a["code"] for a in classification["anomalies"]] == ["bad-retry-after"]


def test_mitmweb_shows_the_row_and_who_answered() -> None:
    c = classifier.StatusClassifier()
    forwarded = routed(sd_flow())
    answer(forwarded, faults.build("200.ok", session=WHOLE, etag='"e1"'))
    injected = routed(sd_flow(method="PUT", req_headers={"If-Match": '"e1"'}))
    common.set_provenance(injected, source="injected", rule="stale-etag-on-join")
    answer(injected, faults.build("412.if-match-session", session=WHOLE, etag='"e2"'))
    odd = routed(sd_flow())
    answer(odd, model.Response(503, "Service Unavailable"))  # no Retry-After: an anomaly
    with taddons.context(c):
        for flow in (forwarded, injected, odd):
            c.response(flow)
    assert forwarded.comment == "200.ok · from the service"
    assert not forwarded.marked
    assert injected.comment == "412.if-match-session · injected by rule stale-etag-on-join"
    assert injected.marked == classifier.MARK
    assert odd.marked == classifier.MARK


def test_other_traffic_gets_no_comment() -> None:
    c = classifier.StatusClassifier()
    flow = sd_flow(host="example.com")
    answer(flow, model.Response(200, "OK"))
    with taddons.context(c):
        c.response(flow)
    assert flow.comment == "" and not flow.marked
