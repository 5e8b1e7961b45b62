"""Router: which flows are session-directory traffic, and where they go (bytes unchanged)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.proxy import mode_specs
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from mpsdproxy import resources
from mpsdproxy.addons import common
from mpsdproxy.addons import router

LOBBY = ("/serviceconfigs/6efc0200-fd0e-4f4b-8b5c-7e3d0f4a1b2c/sessionTemplates/LobbySession"
         "/sessions/Lobby-1")
TOKEN = "XBL3.0 x=2533274800000002;eyJlbmMiOiJBMTI4Q0JDK0hTMjU2In0"
BODY = b'{"members":{"me":{"constants":{"system":{"initialize":true}}}}}'


def sd_flow(host: str = "sessiondirectory.xboxlive.com", path: str = LOBBY,
            host_header: str | None = None, **kwargs: object) -> http.HTTPFlow:
    headers = http.Headers(
        host=host_header or host,
        authorization=TOKEN,
        signature="AAAAAQHS7hcmPq0WEhCbZ0M7aQ2W1b3i0F2oQdJ4CjW",
        content_type="application/json; charset=utf-8",
    )
    request = tutils.treq(host=host, port=443, scheme=b"https", method=b"PUT",
                          path=path.encode(), headers=headers, content=BODY)
    return tflow.tflow(req=request, **kwargs)  # type: ignore[arg-type]


def reverse(flow: http.HTTPFlow) -> http.HTTPFlow:
    flow.client_conn.proxy_mode = mode_specs.ProxyMode.parse("reverse:http://127.0.0.1:1")
    return flow


@pytest.mark.parametrize("host", [*router.DEFAULT_INTERCEPT_HOSTS, "SessionDirectory.XboxLive.com"])
def test_marks_intercept_hosts(host):
    r = router.Router()
    with taddons.context(r):
        f = sd_flow(host)
        r.request(f)
    assert f.metadata[common.KEY] == {
        "url": f"https://{host}{LOBBY}",
        "resource": {
            "kind": "session",
            "scid": "6efc0200-fd0e-4f4b-8b5c-7e3d0f4a1b2c",
            "template": "LobbySession",
            "name": "Lobby-1",
            "element": None,
        },
        "provenance": {"source": "forwarded"},
    }
    assert f.metadata[common.KEY]["provenance"] is not common.FORWARDED
    assert common.resource(f).short == "sessions/Lobby-1"


@pytest.mark.parametrize(
    "host", ["example.com", "rta.xboxlive.com.example.com",
             "sessiondirectory.xboxlive.com.example.com",
             "client-sessiondirectory.xboxlive.com", "127.0.0.1"],
)
def test_leaves_other_hosts_unmarked(host):
    r = router.Router()
    with taddons.context(r):
        f = sd_flow(host)
        r.request(f)
    assert common.KEY not in f.metadata
    assert common.mark(f) is None
    assert common.resource(f) is None
    assert f.request.host == host


@pytest.mark.parametrize("host_header", ["sessiondirectory.xboxlive.com",
                                         "SESSIONDIRECTORY.xboxlive.com:443"])
def test_host_header_names_the_session_directory(host_header):
    r = router.Router()
    with taddons.context(r):
        f = sd_flow("10.0.0.1", host_header=host_header)
        r.request(f)
    assert common.mark(f) is not None


def test_intercept_hosts_option_replaces_the_list():
    r = router.Router()
    with taddons.context(r) as tctx:
        tctx.configure(r, mpsd_intercept_hosts=["Stub.Example"])
        theirs, ours = sd_flow(), sd_flow("stub.example")
        r.request(theirs)
        r.request(ours)
    assert common.mark(theirs) is None
    assert common.mark(ours) is not None


@pytest.mark.parametrize("host", ["127.0.0.1", "example.com", "sessiondirectory.xboxlive.com"])
def test_reverse_mode_marks_every_flow(host):
    r = router.Router()
    with taddons.context(r):
        f = reverse(sd_flow(host, path="/whatever?x=1"))
        r.request(f)
    assert common.mark(f)["resource"]["kind"] == "unknown"


def test_reverse_mode_ignores_intercept_hosts_and_upstream():
    r = router.Router()
    with taddons.context(r) as tctx:
        tctx.configure(r, mpsd_intercept_hosts=["only.example"],
                       mpsd_upstream="http://127.0.0.1:9")
        f = reverse(sd_flow("127.0.0.1"))
        f.request.port = 8081
        r.request(f)
    assert common.mark(f) is not None
    assert (f.request.host, f.request.port) == ("127.0.0.1", 8081)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("http://127.0.0.1:8081", ("http", "127.0.0.1", 8081)),
        ("http://127.0.0.1:8081/", ("http", "127.0.0.1", 8081)),
        ("https://mpsd.test.example", ("https", "mpsd.test.example", 443)),
        ("http://localhost", ("http", "localhost", 80)),
        ("HTTP://Stand-In:1", ("http", "stand-in", 1)),
    ],
)
def test_parse_upstream(spec, expected):
    assert router.parse_upstream(spec) == expected


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("ftp://127.0.0.1:21", "expected http(s)://host[:port]"),
        ("127.0.0.1:8081", "expected http(s)://host[:port]"),
        ("http://", "expected http(s)://host[:port]"),
        ("http://127.0.0.1:8081/serviceconfigs", "the upstream is a server, not a path"),
        ("http://127.0.0.1:8081?x=1", "the upstream is a server, not a path"),
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://127.0.0.1:port", "Port could not be cast"),
    ],
)
def test_bad_upstream_is_an_options_error(spec, problem):
    r = router.Router()
    with taddons.context(r) as tctx:
        tctx.configure(r, mpsd_upstream="http://127.0.0.1:8081")
        with pytest.raises(exceptions.OptionsError,
                           match=re.escape(f"Cannot parse mpsd_upstream option {spec}: ")
                           + ".*" + re.escape(problem)):
            tctx.configure(r, mpsd_upstream=spec)
        # The failed update leaves the working upstream in place.
        assert r.upstream == ("http", "127.0.0.1", 8081)
        assert tctx.options.mpsd_upstream == "http://127.0.0.1:8081"


def test_clearing_upstream():
    r = router.Router()
    with taddons.context(r) as tctx:
        tctx.configure(r, mpsd_upstream="http://127.0.0.1:8081")
        tctx.configure(r, mpsd_upstream="")
        assert r.upstream is None
        f = sd_flow()
        r.request(f)
    assert (f.request.host, f.request.port, f.request.scheme) == (
        "sessiondirectory.xboxlive.com", 443, "https")


def test_redirect_keeps_host_header_and_bytes():
    r = router.Router()
    path = LOBBY + "/Members/ME?nocommit=true&x=%2F"
    with taddons.context(r) as tctx:
        tctx.configure(r, mpsd_upstream="http://127.0.0.1:8081")
        f = sd_flow(path=path)
        before_headers = f.request.headers.fields
        r.request(f)
    request = f.request
    assert (request.scheme, request.host, request.port) == ("http", "127.0.0.1", 8081)
    assert request.headers.fields == before_headers
    assert request.headers["Host"] == "sessiondirectory.xboxlive.com"
    assert request.data.path == path.encode()
    assert request.method == "PUT"
    assert request.raw_content == BODY
    mark = common.mark(f)
    assert mark["url"] == f"https://sessiondirectory.xboxlive.com{path}"
    assert mark["resource"]["element"] == "members/ME"


@pytest.mark.parametrize("kwargs", [{"resp": True}, {"err": True}, {"live": False}])
def test_already_handled(kwargs):
    r = router.Router()
    with taddons.context(r) as tctx:
        tctx.configure(r, mpsd_upstream="http://127.0.0.1:8081")
        f = sd_flow(**kwargs)
        r.request(f)
    assert common.mark(f) is None
    assert f.request.host == "sessiondirectory.xboxlive.com"


def test_allow_patterns():
    patterns = [re.compile(p) for p in router.allow_patterns(["SessionDirectory.xboxlive.com"])]
    assert patterns[0].search("sessiondirectory.xboxlive.com")
    assert patterns[0].search("sessiondirectory.xboxlive.com:443")
    assert not patterns[0].search("sessiondirectoryxxboxlive.com")
    assert not patterns[0].search("sessiondirectory.xboxlive.com.example.com")
    assert not patterns[0].search("client-sessiondirectory.xboxlive.com")


TARGET_PATHS = st.one_of(
    st.sampled_from([LOBBY.encode(), f"{LOBBY}/members/me".encode(),
                     f"{LOBBY.upper()}?x=1".encode(), b"/handles/ab12", b"*", b"", b"/",
                     b"http://other.example/handles", b"/%E2%82%AC/\xff"]),
    st.binary(max_size=40),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogateescape")),
)


def marked(request: http.Request) -> dict[str, object]:
    """The mark the router's request hook gives a flow with this request (reverse mode:
    every request is marked)."""
    r = router.Router()
    with taddons.context(r):
        f = reverse(tflow.tflow(req=request))
        r.request(f)
    return common.mark(f)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"GET", b"PUT", b"CONNECT", b"connect", b"DELETE", b"\xff"]),
       st.sampled_from([b"", b"sessiondirectory.xboxlive.com", b"h:1", b"xn--bcher-kva.example",
                        b"\xff"]),
       st.sampled_from([b"https", b"http", b"", b"HTTPS", b"ws"]),
       st.sampled_from(["sessiondirectory.xboxlive.com", "127.0.0.1", "::1", ""]),
       st.sampled_from([443, 80, 8081, 0]), TARGET_PATHS)
def test_the_mark_holds_the_url_and_resource(method, authority, scheme, host, port, path):
    request = tutils.treq(method=method, authority=authority, scheme=scheme, host=host,
                          port=port, path=path)
    mark = marked(request)
    assert mark["url"] == request.url
    assert mark["resource"] == resources.parse(request.path).to_dict()


def test_the_mark_follows_every_part_of_the_target():
    request = tutils.treq(host="sessiondirectory.xboxlive.com", port=443, scheme=b"https",
                          path=LOBBY.encode())
    assert marked(request)["url"] == request.url
    for name, value in (("port", 8443), ("scheme", "http"), ("host", "127.0.0.1"),
                        ("path", "/handles"), ("authority", "a.example"),
                        ("method", "CONNECT"), ("port", 8444), ("method", "GET")):
        before = request.url
        setattr(request, name, value)
        mark = marked(request)
        assert (mark["url"], mark["resource"]) == (
            request.url, resources.parse(request.path).to_dict()), (name, before)


def test_marks_do_not_share_their_resource():
    r = router.Router()
    with taddons.context(r):
        first, second = sd_flow(), sd_flow()
        r.request(first)
        common.mark(first)["resource"]["name"] = "changed"
        r.request(second)
    assert common.mark(second)["resource"]["name"] == "Lobby-1"
    assert common.mark(second)["resource"] is not common.mark(first)["resource"]


def test_an_upstream_flow_shows_the_titles_url_once_answered():
    r = router.Router()
    with taddons.context(r) as tctx:
        tctx.configure(r, mpsd_upstream="http://127.0.0.1:8081")
        f = sd_flow()
        title_url = f.request.url
        r.request(f)
        assert (f.request.host, f.request.port) == ("127.0.0.1", 8081)
        f.response = tutils.tresp()
        r.response(f)
    assert f.request.url == title_url
    assert "upstream" not in common.mark(f)
