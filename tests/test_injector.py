"""FaultInjector addon: every fault type on mitmproxy flows, options, commands, hot reload."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Awaitable
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import mode_specs
from mitmproxy.test import taddons
from mitmproxy.test import tflow

from mpsdproxy import catalog
from mpsdproxy import faults
from mpsdproxy import recording
from mpsdproxy import sessions
from mpsdproxy.addons import classifier
from mpsdproxy.addons import common
from mpsdproxy.addons import injector
from mpsdproxy.addons import router
from mpsdproxy.catalog import BodyKind
from mpsdproxy.catalog import Target

ROOT = Path(__file__).resolve().parent.parent
HOST = "https://sessiondirectory.xboxlive.com"
SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
KEY = f"{SCID}~lobbysession~lobby-1"
HOPPER = f"/serviceconfigs/{SCID}/hoppers/QuickMatch"
ETAG = '"etag-1"'


def doc(change: int = 1) -> dict[str, Any]:
    return {"constants": {"system": {"maxMembersCount": 8}, "custom": {}},
            "properties": {"system": {}, "custom": {}},
            "members": {"0": {"constants": {"system": {"xuid": "1001", "index": 0}}}},
            "changeNumber": change}


def auth(user: str = "alice") -> str:
    return f"XBL3.0 x={user};token-of-{user}"


def make_flow(method: str = "GET", path: str = LOBBY, body: Any = None,
              headers: list[tuple[str, str]] | None = None, user: str | None = "alice",
              url: str = HOST) -> http.HTTPFlow:
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None
                                                 else b"")
    fields = [("x-xbl-contract-version", "107"), *(headers or [])]
    if user is not None:
        fields.append(("Authorization", auth(user)))
    request = http.Request.make(method, url + path, raw,
                                [(k.encode(), v.encode()) for k, v in fields])
    f = tflow.tflow(req=request)
    f.request.timestamp_start = time.time()
    if url.startswith("http://127.0.0.1"):  # the proxy in front of a local server
        f.client_conn.proxy_mode = mode_specs.ProxyMode.parse(f"reverse:{url}")
    return f


def service_answer(status: int = 200, document: Any = None, etag: str | None = ETAG,
                   content_type: str = "application/json; charset=utf-8") -> http.Response:
    body = faults.encode_json(document) if document is not None else b""
    headers = [("Content-Type", content_type)] if document is not None else []
    if etag:
        headers.append(("ETag", etag))
    return http.Response.make(status, body, [(k.encode(), v.encode()) for k, v in headers])


def run(awaitable: Awaitable[None] | None) -> None:
    if awaitable is not None:
        async def wait() -> None:
            await awaitable
        asyncio.run(wait())


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Rig:
    """The router and the injector in one mitmproxy test context, with the service
    played by the test (`upstream`: what a forwarded request gets)."""

    def __init__(self, tctx: taddons.context, inj: injector.FaultInjector,
                 r: router.Router) -> None:
        self.tctx = tctx
        self.inj = inj
        self.router = r

    def request(self, f: http.HTTPFlow) -> http.HTTPFlow:
        self.router.request(f)
        run(self.inj.request(f))
        return f

    def exchange(self, f: http.HTTPFlow, upstream: http.Response | None = None) -> http.HTTPFlow:
        """The whole way through: request hook, the service if nothing answered, response hook."""
        self.request(f)
        if f.response is None and f.error is None:
            f.response = upstream if upstream is not None else service_answer(200, doc())
            run(self.inj.response(f))
        elif f.response is not None and f.error is None:
            run(self.inj.response(f))  # mitmproxy calls it for answers set in request too
        return f

    def rules(self) -> list[str]:
        return [r.name for item in self.inj.loaded for r in item.scenario.rules]

    def stats(self) -> dict[str, tuple[int, int]]:
        return {s.name: (s.matches, s.fires) for item in self.inj.loaded
                for s in item.engine.stats()}


def scenario_text(*rules: str, name: str = "test", seed: int = 1) -> str:
    return f"name: {name}\nseed: {seed}\nrules:\n" + "".join(rules)


def rule(name: str, fault: str, match: str | None = None, when: str | None = None,
         extra: str = "") -> str:
    text = f"  - name: {name}\n"
    if match:
        text += f"    match: {match}\n"
    if when:
        text += f"    when: {when}\n"
    return text + f"    fault: {fault}\n" + extra


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def bump(path: str) -> None:
    """Make an edit visible to the watcher even within one mtime tick."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@contextmanager
def rig(tmp_path: Path, *texts: str, clock: Clock | None = None,
        **options: Any) -> Iterator[Rig]:
    inj = injector.FaultInjector(clock=clock) if clock else injector.FaultInjector()
    r = router.Router()
    with taddons.context(r, inj) as tctx:
        paths = [write(tmp_path / f"scenario-{i}.yaml", t) for i, t in enumerate(texts)]
        tctx.configure(inj, mpsd_scenario=paths, **options)
        yield Rig(tctx, inj, r)


def seed_session(rg: Rig, change: int = 1, etag: str = ETAG) -> None:
    rg.inj.tracker.remember(KEY, LOBBY, faults.encode_json(doc(change)), etag)


def provenance(f: http.HTTPFlow) -> dict[str, Any]:
    return common.provenance(f)


def media(f: http.HTTPFlow) -> str | None:
    assert f.response is not None
    value = f.response.headers.get("content-type")
    return value.split(";")[0].strip() if value else None


# --- options ------------------------------------------------------------------------------

def test_inert_without_a_scenario(tmp_path: Path) -> None:
    inj = injector.FaultInjector()
    with taddons.context(router.Router(), inj):
        f = make_flow()
        assert inj.request(f) is None
        assert f.response is None and f.error is None


def test_configure_loads_every_scenario_and_logs_it(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    one = scenario_text(rule("a", "{status: 503}"), name="one")
    two = scenario_text(rule("b", "{status: 429}"), name="two", seed=9)
    with rig(tmp_path, one, two) as rg:
        assert [item.scenario.name for item in rg.inj.loaded] == ["one", "two"]
        assert rg.rules() == ["a", "b"]
    assert "scenario two (seed 9), 1 rule(s): b" in caplog.text


def test_a_broken_scenario_is_refused_and_the_previous_one_stays(tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.yaml", "name: broken\nrules:\n  - name: x\n"
                                             "    when: {nth: 0}\n    fault: {status: 503}\n")
    with rig(tmp_path, scenario_text(rule("good", "{status: 503}"))) as rg:
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore[union-attr]
        engine = rg.inj.loaded[0].engine
        with pytest.raises(exceptions.OptionsError,
                           match=r"broken\.yaml:4:\d+: rules\[0\]\.when\.nth: must be at least 1"):
            rg.tctx.configure(rg.inj, mpsd_scenario=[broken])
        assert rg.tctx.options.mpsd_scenario == [str(tmp_path / "scenario-0.yaml")]
        assert [item.engine for item in rg.inj.loaded] == [engine]  # counters and all
        assert rg.stats() == {"good": (1, 1)}
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore[union-attr]


def test_every_broken_file_is_reported_at_once(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "rules: []\n")
    b = write(tmp_path / "b.yaml", "rules:\n  - name: x\n    fault: {status: 299}\n")
    inj = injector.FaultInjector()
    with taddons.context(inj) as tctx:
        with pytest.raises(exceptions.OptionsError) as e:
            tctx.configure(inj, mpsd_scenario=[a, b])
    assert "a.yaml:1:" in str(e.value) and "b.yaml:3:" in str(e.value)
    assert inj.loaded == []


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    inj = injector.FaultInjector()
    with taddons.context(inj) as tctx:
        with pytest.raises(exceptions.OptionsError, match="nope.yaml:1:1: .*cannot read"):
            tctx.configure(inj, mpsd_scenario=[str(tmp_path / "nope.yaml")])


def test_hang_max_is_validated(tmp_path: Path) -> None:
    inj = injector.FaultInjector()
    with taddons.context(inj) as tctx:
        with pytest.raises(exceptions.OptionsError,
                           match="Cannot parse mpsd_hang_max option 0: should be at least 1"):
            tctx.configure(inj, mpsd_hang_max=0)
        assert inj.hang_max == injector.DEFAULT_HANG_MAX


# --- which flows are touched ----------------------------------------------------------------

def test_only_marked_flows_are_touched(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("all", "{status: 503}"))) as rg:
        other = make_flow(url="https://example.com")
        rg.exchange(other, service_answer(200, {"ok": True}))
        assert other.response.status_code == 200  # type: ignore[union-attr]
        assert common.mark(other) is None
        assert rg.stats() == {"all": (0, 0)}


def test_already_handled_flows_are_left_alone(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("all", "{status: 503}"))) as rg:
        answered = make_flow()
        rg.router.request(answered)
        answered.response = service_answer(200, doc())
        assert rg.inj.request(answered) is None
        assert answered.response.status_code == 200
        errored = make_flow()
        rg.router.request(errored)
        errored.kill()
        assert rg.inj.request(errored) is None
        assert rg.stats() == {"all": (0, 0)}


# --- status faults: the table's rows ----------------------------------------------------------

def request_for(entry: catalog.Entry) -> http.HTTPFlow:
    """A request in the situation the row describes."""
    method = next(m for m in ("GET", "PUT", "POST", "DELETE") if m in entry.methods)
    path = f"{LOBBY}/members/me" if entry.target is Target.ELEMENT else LOBBY
    headers = [(entry.preconditions[0], ETAG)] if entry.preconditions else []
    body = {"properties": {"custom": {}}} if method in ("PUT", "POST") else None
    return make_flow(method, path, body, headers)


def check_conformant(f: http.HTTPFlow, entry: catalog.Entry) -> None:
    """Content type, body kind and required headers as the table says, and no anomaly."""
    assert f.response is not None
    assert f.response.status_code == entry.status
    assert f.response.reason == entry.reason
    assert media(f) == entry.content_type
    content = f.response.content or b""
    if entry.body is BodyKind.SESSION:
        assert json.loads(content) == doc()
        assert f.response.headers["ETag"] == ETAG
    elif entry.body is BodyKind.MESSAGE:
        assert content
    else:
        assert content == b""
    for name in entry.required_headers:
        assert name in f.response.headers
    assert "Date" in f.response.headers and "X-XblCorrelationId" in f.response.headers
    verdict = classifier.classify_flow(f)
    assert verdict.id == entry.id
    assert verdict.anomalies == (), verdict.anomalies


@pytest.mark.parametrize("entry", catalog.ENTRIES, ids=lambda e: e.id)
def test_every_row_is_injected_exactly_as_the_table_says(tmp_path: Path,
                                                        entry: catalog.Entry) -> None:
    with rig(tmp_path, scenario_text(rule("row", f"{{entry: {entry.id}}}"))) as rg:
        seed_session(rg)
        f = rg.exchange(request_for(entry))
    check_conformant(f, entry)
    assert provenance(f) == {"source": "injected", "rule": "row", "scenario": "test",
                             "seed": 1, "phase": "request", "fault": "status"}


@pytest.mark.parametrize("status", catalog.listed_statuses())
def test_every_status_picks_a_row_that_fits_the_request(tmp_path: Path, status: int) -> None:
    entry = catalog.for_status(status)[0]
    if status == 412:
        entry = catalog.get("412.if-match-session")  # the narrowest row the request fits
    with rig(tmp_path, scenario_text(rule("status", f"{{status: {status}}}"))) as rg:
        seed_session(rg)
        f = rg.exchange(request_for(entry))
    check_conformant(f, entry)


def test_the_default_429_carries_the_fgrl_message_and_retry_after(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("fgrl", "{status: 429}"))) as rg:
        f = rg.exchange(make_flow())
    assert json.loads(f.response.content) == faults.fgrl_message()  # type: ignore[union-attr]
    assert set(faults.fgrl_message()) == {"version", "currentRequests", "maxRequests",
                                          "periodInSeconds", "limitType"}
    assert f.response.headers["Retry-After"] == str(faults.DEFAULT_RETRY_AFTER)  # type: ignore


def test_retry_after_body_headers_and_content_type_override(tmp_path: Path) -> None:
    fault = ('{status: 503, retry_after: 7, body: "down for maintenance", '
             'headers: {X-Extra: "1", X-Content-Type-Options: null}}')
    typed = '{status: 400, content_type: "application/json", body: {error: bad}}'
    with rig(tmp_path, scenario_text(
            rule("outage", fault, match="{method: GET}"),
            rule("typed", typed, match="{method: PUT}"))) as rg:
        f = rg.exchange(make_flow())
        g = rg.exchange(make_flow("PUT", body={}))
    assert f.response.headers["Retry-After"] == "7"  # type: ignore[union-attr]
    assert f.response.content == b"down for maintenance"  # type: ignore[union-attr]
    assert f.response.headers["X-Extra"] == "1"  # type: ignore[union-attr]
    assert "X-Content-Type-Options" not in f.response.headers  # type: ignore[union-attr]
    assert f.response.headers["Content-Length"] == str(len(b"down for maintenance"))  # type: ignore
    assert g.response.headers["Content-Type"] == "application/json"  # type: ignore[union-attr]
    assert json.loads(g.response.content) == {"error": "bad"}  # type: ignore[union-attr]
    assert classifier.classify_flow(g).anomalies  # a rule that overrides on purpose


def test_a_412_returns_the_tracked_session_and_its_current_etag(tmp_path: Path) -> None:
    write_rule = rule("stale", "{status: 412}", match="{method: PUT, headers: {If-Match: true}}")
    with rig(tmp_path, scenario_text(write_rule)) as rg:
        rg.exchange(make_flow("PUT", body={}), service_answer(201, doc(1), '"e1"'))
        rg.exchange(make_flow("GET"), service_answer(200, doc(2), '"e2"'))
        f = rg.exchange(make_flow("PUT", body={}, headers=[("If-Match", '"e1"')]))
    assert f.response.status_code == 412  # type: ignore[union-attr]
    assert json.loads(f.response.content) == doc(2)  # type: ignore[union-attr]
    assert f.response.headers["ETag"] == '"e2"'  # type: ignore[union-attr]
    assert f.response.headers["Cache-Control"] == "no-cache, no-store"  # type: ignore
    assert classifier.classify_flow(f).id == "412.if-match-session"


def test_injected_answers_teach_the_tracker_nothing(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("ok", "{status: 200}", when="{nth: 2}"))) as rg:
        rg.exchange(make_flow(), service_answer(200, doc(1), '"e1"'))
        rg.exchange(make_flow())  # answered by the proxy from the tracker
        assert rg.inj.tracker.get(KEY).etag == '"e1"'  # type: ignore[union-attr]
        rg.exchange(make_flow(), service_answer(200, doc(3), '"e3"'))
        assert rg.inj.tracker.get(KEY).etag == '"e3"'  # type: ignore[union-attr]


class SessionServer:
    """A real HTTP server on 127.0.0.1 that answers GETs with one session document."""

    def __init__(self, status: int = 200, document: Any = None, etag: str = '"up-1"') -> None:
        seen: list[tuple[str, dict[str, str]]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                raw = faults.encode_json(document) if document is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self) -> SessionServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_412_without_a_tracked_session_reads_it_from_the_service_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with SessionServer(document=doc(5)) as server, rig(
            tmp_path, scenario_text(rule("stale", "{status: 412}"))) as rg:
        f = make_flow("PUT", body={}, headers=[("If-Match", '"old"')],
                      url=f"http://127.0.0.1:{server.port}")
        rg.exchange(f)
    assert f.response.status_code == 412  # type: ignore[union-attr]
    assert json.loads(f.response.content) == doc(5)  # type: ignore[union-attr]
    assert f.response.headers["ETag"] == '"up-1"'  # type: ignore[union-attr]
    assert classifier.classify_flow(f).anomalies == ()
    assert len(server.seen) == 1
    path, headers = server.seen[0]
    assert path == LOBBY
    assert headers["authorization"] == auth() and headers["x-xbl-contract-version"] == "107"
    assert "if-match" not in headers
    assert provenance(f)["session_read"] == f"http://127.0.0.1:{server.port}{LOBBY}"
    assert "reading it from the service (GET" in caplog.text


def test_the_session_read_goes_where_the_flow_goes_with_mitmproxys_tls_settings(
        tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("x", "{status: 412}")), ssl_insecure=True,
             ssl_verify_upstream_trusted_ca="/etc/ca.pem") as rg:
        f = make_flow("PUT", f"{LOBBY}/members/me", body={}, headers=[("Signature", "sig")])
        rg.router.request(f)
        target = injector.fetch_target(f, common.resource(f))  # type: ignore[arg-type]
    assert target.url == f"https://sessiondirectory.xboxlive.com:443{LOBBY}"
    assert not target.verify and target.cafile == "/etc/ca.pem"
    names = [name.lower() for name, _ in target.headers]
    assert "authorization" in names and "x-xbl-contract-version" in names
    assert "signature" not in names  # it signs the title's own request, not this one


@pytest.mark.parametrize("answer", ["refused", 204, "fragment"])
def test_a_412_falls_back_to_the_bodiless_row_when_the_session_cannot_be_had(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, answer: Any) -> None:
    if answer == "refused":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again: nothing listens there
        server = None
    else:
        server = SessionServer(status=answer if isinstance(answer, int) else 200,
                               document={"changeNumber": 1} if answer == "fragment" else None)
        server.__enter__()
        port = server.port
    try:
        with rig(tmp_path, scenario_text(rule("stale", "{status: 412}"))) as rg:
            f = make_flow("PUT", body={}, headers=[("If-Match", '"old"')],
                          url=f"http://127.0.0.1:{port}")
            rg.exchange(f)
    finally:
        if server is not None:
            server.__exit__()
    assert f.response.status_code == 412  # type: ignore[union-attr]
    assert f.response.content == b""  # type: ignore[union-attr]
    verdict = classifier.classify_flow(f)
    assert verdict.id == "412.precondition-failed" and verdict.anomalies == ()
    assert provenance(f)["entry_fallback"] == "412.precondition-failed"
    assert "answers 412.precondition-failed instead of 412.if-match-session" in caplog.text


def test_a_session_row_on_a_resource_without_a_session_lets_the_request_through(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with rig(tmp_path, scenario_text(rule("ok", "{status: 200}"))) as rg:
        f = rg.exchange(make_flow("POST", HOPPER, body={}),
                        service_answer(200, {"ticketId": "t"}, None))
    assert json.loads(f.response.content) == {"ticketId": "t"}  # type: ignore[union-attr]
    assert provenance(f)["source"] == "forwarded"
    assert provenance(f)["skipped_rule"] == "ok"
    assert "cannot answer 200.ok without the session" in caplog.text


# --- throttling -------------------------------------------------------------------------------

def test_throttle_answers_429_only_past_the_budget_with_a_truthful_retry_after(
        tmp_path: Path) -> None:
    clock = Clock(1000.0)
    with rig(tmp_path, scenario_text(rule("fgrl", "{throttle: {burst: 2, sustained: 100}}")),
             clock=clock) as rg:
        assert rg.exchange(make_flow()).response.status_code == 200  # type: ignore
        assert rg.exchange(make_flow()).response.status_code == 200  # type: ignore
        clock.now = 1000.5
        f = rg.exchange(make_flow())
        assert f.response.status_code == 429  # type: ignore[union-attr]
        message = json.loads(f.response.content)  # type: ignore[union-attr]
        assert message == faults.fgrl_message(3, 2, 15)
        wait = int(f.response.headers["Retry-After"])  # type: ignore[union-attr]
        assert provenance(f)["fault"] == "throttle" and provenance(f)["retry_after"] == wait
        assert classifier.classify_flow(f).anomalies == ()
        assert rg.exchange(make_flow(user="bob")).response.status_code == 200  # type: ignore
        clock.now = 1000.5 + wait - 1
        assert rg.exchange(make_flow()).response.status_code == 429  # type: ignore
        clock.now = 1000.5 + wait
        assert rg.exchange(make_flow()).response.status_code == 200  # type: ignore


def test_throttling_counts_users_by_their_redacted_authorization(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("x", "{status: 503}"))) as rg:
        f = make_flow()
        rg.router.request(f)
        view = injector.request_view(f)
    assert view.user == recording.redact_value(auth()) == view.client
    assert view.host == "sessiondirectory.xboxlive.com"
    assert view.resource is not None and view.resource.key == KEY


def test_the_request_view_reads_headers_as_mitmproxy_does(tmp_path: Path) -> None:
    """Two Authorization fields fold into one value, as `Headers.get` gives it; a body
    with a Content-Encoding is decoded before the tracker reads it."""
    with rig(tmp_path, scenario_text(rule("x", "{status: 503}"))) as rg:
        f = make_flow(headers=[("authorization", "second")])
        rg.router.request(f)
        view = injector.request_view(f)
        folded = f.request.headers.get("Authorization")
        assert folded == f"second, {auth()}"
        assert view.user == recording.redact_value(folded) == view.client
        assert view.resource == common.resource(f)
        assert injector.request_view(make_flow(user=None)).user == ""
        answer = service_answer(200, doc())
        answer.encode("gzip")
        assert answer.raw_content != faults.encode_json(doc())
        f.response = answer
        assert rg.inj.learn(f) is sessions.Update.STORED
        assert rg.inj.tracker.get(KEY).document() == doc()  # type: ignore[union-attr]


# --- delays -----------------------------------------------------------------------------------

def test_a_delay_waits_then_forwards(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("lag", "{delay: 300ms}"))) as rg:
        f = make_flow()
        rg.router.request(f)
        started = time.monotonic()
        pending = rg.inj.request(f)
        assert pending is not None and f.response is None  # mitmproxy awaits it
        run(pending)
        assert time.monotonic() - started >= 0.3
        assert f.response is None and f.error is None  # then it goes to the service
        f.response = service_answer(200, doc(2), '"e2"')
        run(rg.inj.response(f))
        assert rg.inj.tracker.get(KEY).etag == '"e2"'  # type: ignore[union-attr]
    assert provenance(f) == {"source": "injected", "rule": "lag", "scenario": "test", "seed": 1,
                             "phase": "request", "fault": "delay", "delay_ms": 300.0,
                             "forwarded": True}


def test_delays_do_not_block_other_flows(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("lag", "{delay: 400ms}"))) as rg:
        flows = [make_flow() for _ in range(3)]
        for f in flows:
            rg.router.request(f)

        async def all_at_once() -> None:
            await asyncio.gather(*[rg.inj.request(f) for f in flows])  # type: ignore[misc]

        started = time.monotonic()
        asyncio.run(all_at_once())
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 1.0  # three 400 ms waits overlap instead of adding up


def test_a_delay_then_a_status(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("slow-503", "{delay: 200ms, status: 503}"))) as rg:
        started = time.monotonic()
        f = rg.exchange(make_flow())
        assert time.monotonic() - started >= 0.2
    assert f.response.status_code == 503  # type: ignore[union-attr]
    assert provenance(f)["fault"] == "status" and provenance(f)["delay_ms"] == 200.0


@pytest.mark.parametrize(("delay", "sample"), [
    ("{uniform: [100ms, 300ms]}", lambda rng: rng.uniform(0.1, 0.3)),
    ("{lognormal: {median: 100ms, sigma: 0.5, max: 300ms}}",
     lambda rng: min(0.3, rng.lognormvariate(-2.302585092994046, 0.5))),
])
def test_random_delays_repeat_with_the_seed(tmp_path: Path, delay: str, sample: Any) -> None:
    with rig(tmp_path, scenario_text(rule("pad", "{status: 503}", match="{method: PUT}"),
                                     rule("jitter", f"{{delay: {delay}}}"), seed=42)) as rg:
        f = make_flow()
        started = time.monotonic()
        rg.exchange(f)
        elapsed = time.monotonic() - started
    expected = sample(random.Random("42:1:delay"))  # the rule's own stream of draws
    assert provenance(f)["delay_ms"] == pytest.approx(expected * 1000, abs=0.001)
    assert elapsed >= expected


# --- connection faults ------------------------------------------------------------------------

def test_drop_closes_without_an_answer(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("drop", "{drop: true}"))) as rg:
        f = rg.exchange(make_flow())
    assert f.response is None
    assert f.error is not None and f.error.msg == f.error.KILLED_MESSAGE
    assert provenance(f)["fault"] == "drop"
    assert classifier.classify_flow(f).id is None


def test_reset_without_a_socket_degrades_to_a_close_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with rig(tmp_path, scenario_text(rule("rst", "{reset: true}"))) as rg:
        f = rg.exchange(make_flow())
    assert f.response is None and f.error is not None
    assert provenance(f)["fault"] == "reset"
    assert "rule rst cannot reset this connection" in caplog.text


def test_reset_sets_linger_zero_on_the_client_socket(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The RST itself is seen over a real socket in test_e2e_scenarios."""
    left, right = socket.socketpair()
    with left, right:
        monkeypatch.setattr(injector, "_client_socket", lambda flow: left)
        with rig(tmp_path, scenario_text(rule("rst", "{reset: true}"))) as rg:
            f = rg.exchange(make_flow())
        linger = left.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)
    assert linger[:4] != b"\0\0\0\0" and linger[4:] == b"\0\0\0\0"  # on, 0 seconds
    assert f.error is not None


def test_hang_holds_until_the_limit_then_kills(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("hang", "{hang: true}")), mpsd_hang_max=1) as rg:
        started = time.monotonic()
        f = rg.exchange(make_flow())
        elapsed = time.monotonic() - started
    assert elapsed >= 1.0
    assert f.response is None and f.error is not None
    assert provenance(f)["fault"] == "hang" and provenance(f)["held_s"] >= 1.0


def test_hang_ends_when_the_client_goes_away(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("hang", "{hang: true}")), mpsd_hang_max=30) as rg:
        f = make_flow()
        rg.router.request(f)

        async def client_gives_up() -> None:
            pending = rg.inj.request(f)
            assert pending is not None
            asyncio.get_running_loop().call_later(
                0.3, setattr, f.client_conn, "state", ConnectionState.CAN_WRITE)
            await pending

        asyncio.run(client_gives_up())
    assert f.error is not None and 0.3 <= provenance(f)["held_s"] < 5


def test_truncate_promises_the_whole_body_and_sends_part(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("cut", "{status: 200, truncate: 10}"))) as rg:
        seed_session(rg)
        f = rg.exchange(make_flow())
    full = len(faults.encode_json(doc()))
    assert f.response.raw_content == faults.encode_json(doc())[:10]  # type: ignore[union-attr]
    assert f.response.headers["Content-Length"] == str(full)  # type: ignore[union-attr]
    assert f.response.headers["Connection"] == "close"  # type: ignore[union-attr]
    assert provenance(f)["fault"] == "status"


def test_truncate_cuts_the_real_answer_in_phase_response(tmp_path: Path) -> None:
    text = scenario_text(rule("cut", "{truncate: true}", extra="    phase: response\n"))
    with rig(tmp_path, text) as rg:
        answer = service_answer(200, doc())
        answer.headers["Transfer-Encoding"] = "chunked"
        f = rg.exchange(make_flow(), answer)
    body = faults.encode_json(doc())
    assert f.response.raw_content == body[: len(body) // 2]  # type: ignore[union-attr]
    assert f.response.headers["Content-Length"] == str(len(body))  # type: ignore[union-attr]
    assert "Transfer-Encoding" not in f.response.headers  # type: ignore[union-attr]
    assert provenance(f)["fault"] == "truncate" and provenance(f)["phase"] == "response"


# --- phase response ----------------------------------------------------------------------------

def test_response_phase_replaces_the_real_answer_after_the_service_applied_it(
        tmp_path: Path) -> None:
    text = scenario_text(rule("lost", "{status: 503, retry_after: 2}",
                              match="{method: PUT}", when="{nth: 2}",
                              extra="    phase: response\n"))
    with rig(tmp_path, text) as rg:
        first = rg.exchange(make_flow("PUT", body={}), service_answer(201, doc(1), '"e1"'))
        second = rg.exchange(make_flow("PUT", body={}), service_answer(200, doc(2), '"e2"'))
        assert rg.inj.tracker.get(KEY).etag == '"e2"'  # type: ignore[union-attr]
    assert first.response.status_code == 201  # type: ignore[union-attr]
    assert second.response.status_code == 503  # type: ignore[union-attr]
    assert second.response.headers["Retry-After"] == "2"  # type: ignore[union-attr]
    assert classifier.classify_flow(second).anomalies == ()
    assert provenance(second)["phase"] == "response"
    assert provenance(second)["lost_status"] == 200
    assert "lost_status" not in provenance(first)


def test_a_response_phase_412_carries_the_session_just_written(tmp_path: Path) -> None:
    text = scenario_text(rule("stale", "{status: 412}", extra="    phase: response\n"))
    with rig(tmp_path, text) as rg:
        f = rg.exchange(make_flow("PUT", body={}, headers=[("If-Match", '"e1"')]),
                        service_answer(200, doc(2), '"e2"'))
    assert json.loads(f.response.content) == doc(2)  # type: ignore[union-attr]
    assert f.response.headers["ETag"] == '"e2"'  # type: ignore[union-attr]


def test_response_phase_edits_and_drops(tmp_path: Path) -> None:
    text = scenario_text(
        rule("edit", '{headers: {Retry-After: "9", ETag: null}, content_type: text/plain}',
             match="{method: GET}", extra="    phase: response\n"),
        rule("gone", "{drop: true}", match="{method: PUT}", extra="    phase: response\n"))
    with rig(tmp_path, text) as rg:
        edited = rg.exchange(make_flow(), service_answer(200, doc()))
        dropped = rg.exchange(make_flow("PUT", body={}), service_answer(200, doc(2), '"e2"'))
        assert rg.inj.tracker.get(KEY).etag == '"e2"'  # type: ignore[union-attr]
    assert edited.response.headers["Retry-After"] == "9"  # type: ignore[union-attr]
    assert "ETag" not in edited.response.headers  # type: ignore[union-attr]
    assert edited.response.headers["Content-Type"] == "text/plain"  # type: ignore[union-attr]
    assert provenance(edited)["fault"] == "edit"
    assert dropped.error is not None and provenance(dropped)["fault"] == "drop"
    assert dropped.response is None  # what the title got: the recording must say so
    assert provenance(dropped)["lost_status"] == 200
    assert classifier.classify_flow(dropped).id is None


def test_response_phase_rules_skip_answers_the_proxy_gave(tmp_path: Path) -> None:
    text = scenario_text(rule("first", "{status: 503}", when="{nth: 1}"),
                         rule("late", "{status: 429}", extra="    phase: response\n"))
    with rig(tmp_path, text) as rg:
        f = rg.exchange(make_flow())
        assert f.response.status_code == 503  # type: ignore[union-attr]
        assert rg.stats() == {"first": (1, 1), "late": (0, 0)}
        g = rg.exchange(make_flow())
        assert g.response.status_code == 429  # type: ignore[union-attr]


# --- rules in order, scenarios in order --------------------------------------------------------

def test_the_first_rule_that_fires_wins_and_the_others_still_count(tmp_path: Path) -> None:
    text = scenario_text(rule("first", "{status: 503}", when="{nth: 1}"),
                         rule("second", "{status: 429}", when="{nth: 2}"),
                         rule("puts", "{status: 409}", match="{method: PUT}"))
    with rig(tmp_path, text) as rg:
        statuses = [rg.exchange(make_flow()).response.status_code  # type: ignore[union-attr]
                    for _ in range(3)]
        assert statuses == [503, 429, 200]
        assert rg.stats() == {"first": (3, 1), "second": (3, 1), "puts": (0, 0)}


def test_a_request_one_scenario_answered_is_not_counted_by_the_next(tmp_path: Path) -> None:
    one = scenario_text(rule("a", "{status: 503}", when="{nth: 1}"), name="one")
    two = scenario_text(rule("b", "{status: 429}", when="{nth: 1}"), name="two")
    with rig(tmp_path, one, two) as rg:
        statuses = [rg.exchange(make_flow()).response.status_code  # type: ignore[union-attr]
                    for _ in range(3)]
        assert statuses == [503, 429, 200]
        assert rg.stats() == {"a": (3, 1), "b": (2, 1)}
        g = rg.exchange(make_flow())
        assert provenance(g) == {"source": "forwarded"}


def test_provenance_names_the_scenario_and_its_seed(tmp_path: Path) -> None:
    text = scenario_text(rule("x", "{status: 503}"), name="lobby-pass", seed=77)
    with rig(tmp_path, text) as rg:
        f = rg.exchange(make_flow())
    assert provenance(f)["scenario"] == "lobby-pass" and provenance(f)["seed"] == 77


# --- the shipped scenarios, on a fake clock ----------------------------------------------------

def test_shipped_outage_fires_exactly_in_its_windows(tmp_path: Path) -> None:
    clock = Clock(5000.0)
    inj = injector.FaultInjector(clock=clock)
    with taddons.context(router.Router(), inj) as tctx:
        tctx.configure(inj, mpsd_scenario=[str(ROOT / "scenarios" / "outage.yaml")])
        rg = Rig(tctx, inj, tctx.master.addons.get("router"))

        def status_at(offset: float, path: str = LOBBY) -> int:
            clock.now = 5000.0 + offset
            return rg.exchange(make_flow("GET", path)).response.status_code  # type: ignore

        assert [status_at(t) for t in (0, 29.9, 30, 49.9, 50, 119.9)] == \
               [200, 200, 503, 503, 200, 200]
        assert status_at(120) == 503 and status_at(124.9, f"{LOBBY}/members/me") == 503
        assert status_at(122, HOPPER) == 200  # the aftershock spares everything else
        assert status_at(125) == 200
        clock.now = 5035.0
        f = rg.exchange(make_flow())
        assert f.response.headers["Retry-After"] == "5"  # type: ignore[union-attr]
        assert rg.stats() == {"outage": (11, 3), "aftershock": (10, 2)}


# --- kill switch and commands ------------------------------------------------------------------

def test_the_kill_switch_stops_all_injection_and_counting(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with rig(tmp_path, scenario_text(rule("all", "{status: 503}"))) as rg:
        rg.tctx.command(rg.inj.inject_off)
        assert rg.tctx.options.mpsd_inject is False
        assert rg.exchange(make_flow()).response.status_code == 200  # type: ignore
        assert rg.stats() == {"all": (0, 0)}
        rg.tctx.command(rg.inj.inject_on)
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore
        rg.tctx.configure(rg.inj, mpsd_inject=False)
        assert rg.exchange(make_flow()).response.status_code == 200  # type: ignore
    assert "Fault injection is off" in caplog.text and "Fault injection is on" in caplog.text
    assert any(r.levelname == "ALERT" for r in caplog.records)


def test_rules_switch_off_and_on_by_name(tmp_path: Path) -> None:
    text = scenario_text(rule("Outage", "{status: 503}"), rule("fgrl", "{status: 429}"))
    with rig(tmp_path, text) as rg:
        rg.tctx.command(rg.inj.rule_disable, "outage")
        assert rg.exchange(make_flow()).response.status_code == 429  # type: ignore
        rg.tctx.command(rg.inj.rule_enable, "OUTAGE")
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore
        with pytest.raises(exceptions.CommandError,
                           match="No rule named 'nope'. Valid rules are: Outage, fgrl"):
            rg.tctx.command(rg.inj.rule_disable, "nope")
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore


def test_scenarios_switch_off_and_on_by_name(tmp_path: Path) -> None:
    one = scenario_text(rule("a", "{status: 503}"), name="one")
    two = scenario_text(rule("b", "{status: 429}"), name="two")
    with rig(tmp_path, one, two) as rg:
        rg.tctx.command(rg.inj.scenario_disable, "one")
        assert rg.exchange(make_flow()).response.status_code == 429  # type: ignore
        rg.tctx.command(rg.inj.scenario_enable, "one")
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore
        with pytest.raises(exceptions.CommandError, match="Valid scenarios are: one, two"):
            rg.tctx.command(rg.inj.scenario_enable, "three")


def test_counters_are_logged_and_reset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with rig(tmp_path, scenario_text(rule("once", "{status: 503}", when="{nth: 1}"))) as rg:
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore
        rg.exchange(make_flow())
        rg.tctx.command(rg.inj.counters)
        assert "test: once: 2 matched, 1 fired" in caplog.text
        rg.tctx.command(rg.inj.counters_reset)
        assert rg.stats() == {"once": (0, 0)}
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore


def test_commands_are_registered_with_help(tmp_path: Path) -> None:
    inj = injector.FaultInjector()
    with taddons.context(inj) as tctx:
        names = set(tctx.master.commands.commands)
        for name in ("mpsd.inject.on", "mpsd.inject.off", "mpsd.rule.enable",
                     "mpsd.rule.disable", "mpsd.counters", "mpsd.counters.reset"):
            assert name in names
            assert tctx.master.commands.commands[name].help
        tctx.master.commands.execute("mpsd.inject.off")
        assert tctx.options.mpsd_inject is False


def test_done_prints_and_logs_each_rules_counts(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    text = scenario_text(rule("a", "{status: 503}", when="{nth: 2}"),
                         rule("b", "{status: 429}", match="{method: PUT}"))
    with rig(tmp_path, text) as rg:
        for _ in range(3):
            rg.exchange(make_flow())
        rg.inj.done()
    out = capsys.readouterr().out
    assert "test: a: 3 matched, 1 fired" in out and "test: b: 0 matched, 0 fired" in out
    assert "test: a: 3 matched, 1 fired" in caplog.text


# --- hot reload --------------------------------------------------------------------------------

def test_a_good_edit_is_applied(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock(100.0)
    with rig(tmp_path, scenario_text(rule("old", "{status: 503}")), clock=clock) as rg:
        path = rg.inj.loaded[0].path
        start = rg.inj.loaded[0].engine.start
        assert rg.inj.reload_changed() == []  # nothing changed yet
        write(Path(path), scenario_text(rule("new", "{status: 429}")))
        bump(path)
        assert rg.inj.reload_changed() == [path]
        assert rg.rules() == ["new"]
        assert rg.inj.loaded[0].engine.start == start  # windows still count from the start
        assert rg.exchange(make_flow()).response.status_code == 429  # type: ignore
        assert rg.inj.reload_changed() == []
    assert f"Reloaded {path}" in caplog.text


def test_a_broken_edit_is_reported_once_and_the_old_scenario_stays(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with rig(tmp_path, scenario_text(rule("old", "{status: 503}"))) as rg:
        path = rg.inj.loaded[0].path
        write(Path(path), "name: x\nrules:\n  - name: y\n    fault: {status: 999}\n")
        bump(path)
        assert rg.inj.reload_changed() == []
        assert rg.inj.reload_changed() == []
        assert rg.rules() == ["old"]
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore
        assert caplog.text.count("Not reloading") == 1
        assert f"{path}:4:" in caplog.text and "rules[0].fault.status" in caplog.text
        write(Path(path), scenario_text(rule("fixed", "{status: 429}")))
        bump(path)
        assert rg.inj.reload_changed() == [path]
        assert rg.rules() == ["fixed"]


def test_a_deleted_file_keeps_the_scenario_in_force(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with rig(tmp_path, scenario_text(rule("old", "{status: 503}"))) as rg:
        path = rg.inj.loaded[0].path
        os.unlink(path)
        assert rg.inj.reload_changed() == [] and rg.inj.reload_changed() == []
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore
    assert caplog.text.count(f"Cannot read mpsd_scenario file {path}") == 1


def test_the_watcher_reloads_while_running(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(injector, "RELOAD_INTERVAL", 0.05)
    with rig(tmp_path, scenario_text(rule("old", "{status: 503}"))) as rg:
        path = rg.inj.loaded[0].path

        async def edit_while_running() -> None:
            rg.inj.running()
            write(Path(path), scenario_text(rule("new", "{status: 429}")))
            bump(path)
            for _ in range(100):
                if rg.rules() == ["new"]:
                    break
                await asyncio.sleep(0.02)
            rg.inj.done()

        asyncio.run(edit_while_running())
        assert rg.rules() == ["new"]
        assert rg.inj._watcher is None
