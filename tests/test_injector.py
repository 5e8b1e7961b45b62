"""FaultInjector addon through its hooks: which flows, the table's answers, throttling, delays,
phase response."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from injector_kit import ETAG
from injector_kit import HOPPER
from injector_kit import KEY
from injector_kit import LOBBY
from injector_kit import Clock
from injector_kit import doc
from injector_kit import make_flow
from injector_kit import media
from injector_kit import provenance
from injector_kit import rig
from injector_kit import rule
from injector_kit import run
from injector_kit import scenario_text
from injector_kit import seed_session
from injector_kit import service_answer
from mitmproxy import http

from mpsdproxy import catalog
from mpsdproxy import faults
from mpsdproxy import fgrl
from mpsdproxy.addons import classifier
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.catalog import BodyKind
from mpsdproxy.catalog import Target
from mpsdproxy.resources import Kind

# --- which flows are touched ----------------------------------------------------------------

def test_a_header_rule_matches_utf8_text_as_recorded(tmp_path: Path) -> None:
    """The request the rules see is decoded by the one rule the recording uses (UTF-8)."""
    text = scenario_text(rule("cafe", "{status: 503}", match='{headers: {X-Title: "Café*"}}'))
    with rig(tmp_path, text) as rg:
        f = make_flow()
        f.request.headers[b"X-Title"] = "Café Racer".encode()
        g = make_flow()
        g.request.headers[b"X-Title"] = "Café Racer".encode("latin-1")
        assert rg.exchange(f).response.status_code == 503  # type: ignore[union-attr]
        assert rg.exchange(g).response.status_code == 200  # type: ignore[union-attr]


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

#: A path of each kind a row's case may name.
PATHS = {Kind.SESSION: LOBBY, Kind.MEMBER: f"{LOBBY}/members/me",
         Kind.HANDLE: "/handles/7f0c1b7e-0000-4000-8000-000000000001", Kind.HOPPER: HOPPER}
#: The If-Match / If-None-Match value that satisfies what a case needs.
SENT = {catalog.Sent.PRESENT: "*", catalog.Sent.ETAG: ETAG}


def situation_for(entry: catalog.Entry) -> tuple[http.HTTPFlow, bool]:
    """A request in a situation where the service gives the row (its first case), and
    whether the session must have been seen to exist."""
    case = entry.cases[0]
    methods = case.methods or entry.methods
    method = next(m for m in ("GET", "PUT", "POST", "DELETE") if m in methods)
    kinds = case.kinds or ({Kind.MEMBER} if entry.target is Target.ELEMENT else {Kind.SESSION})
    kind = next(k for k in (Kind.SESSION, Kind.MEMBER, Kind.HANDLE, Kind.HOPPER) if k in kinds)
    headers = [(name, SENT[sent]) for name, sent in (("If-Match", case.if_match),
                                                      ("If-None-Match", case.if_none_match))
               if sent in SENT]
    body = {"properties": {"custom": {}}} if method in ("PUT", "POST") else None
    flow = make_flow(method, PATHS[kind], body, headers)
    assert catalog.why_not(entry, catalog.Situation.of(
        flows.request_of(flow), case.session is not catalog.Existence.ABSENT or None)) is None
    return flow, case.session is not catalog.Existence.ABSENT


def injected_in_situation(tmp_path: Path, fault: str, entry: catalog.Entry) -> http.HTTPFlow:
    """A rule with `fault` applied to a request in the row's situation (the session seeded
    when the row needs it to exist)."""
    with rig(tmp_path, scenario_text(rule("row", fault))) as rg:
        request, seen = situation_for(entry)
        if seen:
            seed_session(rg)
        return rg.exchange(request)


def check_conformant(f: http.HTTPFlow, entry: catalog.Entry) -> None:
    """Content type, body kind and required headers as the table says, and no anomaly."""
    assert f.response is not None
    assert f.response.status_code == entry.status
    assert f.response.reason == entry.reason
    assert media(f) == entry.content_type
    content = f.response.content or b""
    if entry.body is BodyKind.SESSION and entry.status == 412:
        # Someone else wrote: the session one change on, with an ETag of its own.
        assert json.loads(content) == doc(2)
        assert f.response.headers["ETag"] != ETAG
    elif entry.body is BodyKind.SESSION:
        assert json.loads(content) == doc()
        assert f.response.headers["ETag"] == ETAG
    elif entry.body in (BodyKind.MESSAGE, BodyKind.FGRL):
        assert content
    else:
        assert content == b""
    for name in entry.required_headers:
        assert name in f.response.headers
    assert "Date" in f.response.headers and "X-XblCorrelationId" in f.response.headers
    verdict = classifier.classify_flow(f)
    assert verdict.id == entry.id
    assert verdict.anomalies == (), verdict.anomalies


#: Rows a rule can answer before the request reaches the service. A create's 201 carries
#: the session the service made, which the proxy cannot know beforehand: only a
#: `phase: response` rule gives it (scenarios/every-fault.yaml does).
BEFORE_THE_SERVICE = [e for e in catalog.ENTRIES if e.id != "201.created"]


@pytest.mark.parametrize("entry", BEFORE_THE_SERVICE, ids=lambda e: e.id)
def test_every_row_is_injected_exactly_as_the_table_says(tmp_path: Path,
                                                        entry: catalog.Entry) -> None:
    f = injected_in_situation(tmp_path, f"{{entry: {entry.id}}}", entry)
    check_conformant(f, entry)
    assert provenance(f) == {"source": "injected", "rule": "row", "scenario": "test",
                             "seed": 1, "phase": "request", "fault": "status",
                             **({"change_number": 2} if entry.id == "412.if-match-session"
                                else {})}


#: For each status, the row a request in that row's situation gets (412 to an ETag: the
#: narrower row, with the session).
FIRST_ROWS = [catalog.get("412.if-match-session") if s == 412 else catalog.for_status(s)[0]
              for s in catalog.listed_statuses() if s != 201]


@pytest.mark.parametrize("entry", FIRST_ROWS, ids=lambda e: str(e.status))
def test_every_status_picks_the_row_that_fits_the_request(tmp_path: Path,
                                                         entry: catalog.Entry) -> None:
    check_conformant(injected_in_situation(tmp_path, f"{{status: {entry.status}}}", entry),
                     entry)


def test_a_status_the_service_cannot_give_here_is_not_injected(tmp_path: Path) -> None:
    rules = scenario_text(rule("created", "{status: 201}"), rule("forced", "{status: 405}",
                               match="{method: PUT}"), rule("f2", "{status: 405, force: true}",
                                                      when="{nth: 2}"))
    with rig(tmp_path, rules) as rg:
        seed_session(rg)
        update = rg.exchange(make_flow("PUT", body={}), service_answer(200, doc(2), '"e2"'))
        forced = rg.exchange(make_flow("PUT", body={}))
    assert provenance(update)["source"] == "forwarded"  # no 201 to an update, no 405 to a PUT
    assert forced.response.status_code == 405  # type: ignore[union-attr]
    assert provenance(forced)["rule"] == "f2"  # unless the rule says force: true


def test_the_default_429_carries_the_fgrl_message_and_retry_after(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("fgrl", "{status: 429}"))) as rg:
        f = rg.exchange(make_flow())
    message = json.loads(f.response.content)  # type: ignore[union-attr]
    assert set(message) == {"version", "currentRequests", "maxRequests", "periodInSeconds",
                            "limitType"}
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
    # Someone else wrote: the session one change on from the newest seen, with a new ETag.
    assert f.response.status_code == 412  # type: ignore[union-attr]
    assert json.loads(f.response.content) == doc(3)  # type: ignore[union-attr]
    assert f.response.headers["ETag"] not in ('"e1"', '"e2"')  # type: ignore[union-attr]
    assert f.response.headers["Cache-Control"] == "no-cache, no-store"  # type: ignore
    assert classifier.classify_flow(f).id == "412.if-match-session"
    assert provenance(f)["change_number"] == 3


class Queue:
    """The chain's after-answer queue, held by the test: jobs run when it says."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, tuple[Any, ...]]] = []

    def soon(self, job: Any, *args: Any) -> None:
        self.jobs.append((job, args))

    def drain(self) -> None:
        for job, args in self.jobs:
            job(*args)
        self.jobs.clear()


def test_learning_waits_for_the_answer_when_no_rule_acts_on_answers(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("x", "{status: 503}", match="{method: DELETE}"))) as rg:
        queue = Queue()
        rg.inj.after_answer = queue  # type: ignore[assignment]
        rg.exchange(make_flow(), service_answer(200, doc(1), '"e1"'))
        assert rg.inj.tracker.get(KEY) is None and len(queue.jobs) == 1
        queue.drain()
        assert rg.inj.tracker.get(KEY).etag == '"e1"'  # type: ignore[union-attr]


def test_learning_comes_first_when_a_rule_acts_on_answers(tmp_path: Path) -> None:
    text = scenario_text(rule("late", "{status: 503}", match="{method: DELETE}",
                              extra="    phase: response\n"))
    with rig(tmp_path, text) as rg:
        queue = Queue()
        rg.inj.after_answer = queue  # type: ignore[assignment]
        rg.exchange(make_flow(), service_answer(200, doc(1), '"e1"'))
        assert queue.jobs == []
        assert rg.inj.tracker.get(KEY).etag == '"e1"'  # type: ignore[union-attr]


def test_injected_answers_teach_the_tracker_nothing(tmp_path: Path) -> None:
    # `nth` counts the requests the row can answer: the first read of a session the proxy
    # has not seen yet is not one of them.
    with rig(tmp_path, scenario_text(rule("ok", "{status: 200}", when="{nth: 1}"))) as rg:
        rg.exchange(make_flow(), service_answer(200, doc(1), '"e1"'))
        rg.exchange(make_flow())  # answered by the proxy from the tracker
        assert rg.inj.tracker.get(KEY).etag == '"e1"'  # type: ignore[union-attr]
        rg.exchange(make_flow(), service_answer(200, doc(3), '"e3"'))
        assert rg.inj.tracker.get(KEY).etag == '"e3"'  # type: ignore[union-attr]


def test_a_412_waits_until_the_proxy_has_seen_the_session(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The proxy never reads a session from the service itself (that GET would be unsigned):
    # a rule whose row needs the session does not fire until the proxy has seen it.
    write_rule = rule("stale", "{status: 412}", match="{method: PUT, headers: {If-Match: true}}")
    with rig(tmp_path, scenario_text(write_rule)) as rg:
        unseen = rg.exchange(make_flow("PUT", body={}, headers=[("If-Match", '"old"')]),
                             service_answer(200, doc(4), '"e4"'))
        seen = rg.exchange(make_flow("PUT", body={}, headers=[("If-Match", '"e4"')]))
        lines = rg.inj.scenarios.count_lines()
    assert provenance(unseen)["source"] == "forwarded"
    assert unseen.response.status_code == 200  # type: ignore[union-attr]
    assert seen.response.status_code == 412  # type: ignore[union-attr]
    assert json.loads(seen.response.content)["changeNumber"] == 5  # type: ignore[union-attr]
    assert len(lines) == 1 and lines[0].startswith("test: stale: 1 matched, 1 fired, "
                                                   "1 not applicable (")


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
        wait = int(f.response.headers["Retry-After"])  # type: ignore[union-attr]
        message = json.loads(f.response.content)  # type: ignore[union-attr]
        assert message == fgrl.message(fgrl.Decision(False, wait, 3, 2, 15))
        assert provenance(f)["fault"] == "throttle" and provenance(f)["retry_after"] == wait
        assert classifier.classify_flow(f).anomalies == ()
        assert rg.exchange(make_flow(user="bob")).response.status_code == 200  # type: ignore
        clock.now = 1000.5 + wait - 1
        assert rg.exchange(make_flow()).response.status_code == 429  # type: ignore
        clock.now = 1000.5 + wait
        assert rg.exchange(make_flow()).response.status_code == 200  # type: ignore


def test_throttling_counts_callers_by_their_authorization_else_their_address(
        tmp_path: Path) -> None:
    """One token from two addresses is one caller; without a token, each address is one."""
    def from_peer(user: str | None, address: str) -> http.HTTPFlow:
        f = make_flow(user=user)
        f.client_conn.peername = (address, 50000)
        return f

    with rig(tmp_path, scenario_text(rule("fgrl", "{throttle: {burst: 1, sustained: 100}}")),
             clock=Clock()) as rg:
        def status(f: http.HTTPFlow) -> int:
            return rg.exchange(f).response.status_code  # type: ignore[union-attr]

        assert status(from_peer("alice", "10.0.0.1")) == 200
        assert status(from_peer("alice", "10.0.0.2")) == 429
        assert status(from_peer("bob", "10.0.0.1")) == 200
        assert status(from_peer(None, "10.0.0.3")) == 200
        assert status(from_peer(None, "10.0.0.4")) == 200
        assert status(from_peer(None, "10.0.0.3")) == 429


def test_a_compressed_answer_teaches_the_tracker_its_document(tmp_path: Path) -> None:
    """The tracker reads the body with its Content-Encoding undone: the 412 that follows
    carries the document, not the compressed bytes."""
    text = scenario_text(rule("stale", "{status: 412}", match="{method: PUT}"))
    with rig(tmp_path, text) as rg:
        answer = service_answer(200, doc(4), '"e4"')
        answer.encode("gzip")
        assert answer.raw_content != faults.encode_json(doc(4))
        rg.exchange(make_flow(), answer)
        f = rg.exchange(make_flow("PUT", body={}, headers=[("If-Match", '"e1"')]))
    assert json.loads(f.response.content) == doc(5)  # type: ignore[union-attr]
    assert f.response.headers["ETag"] not in ('"e1"', '"e4"')  # type: ignore[union-attr]


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
    text = scenario_text(rule("stale", "{status: 412}", match="{method: PUT}",
                              extra="    phase: response\n"))
    with rig(tmp_path, text) as rg:
        rg.exchange(make_flow(), service_answer(200, doc(1), '"e1"'))
        f = rg.exchange(make_flow("PUT", body={}, headers=[("If-Match", '"e1"')]),
                        service_answer(200, doc(2), '"e2"'))
    # The write went through (changeNumber 2), then someone else wrote: the title hears 412
    # with the session one change later.
    assert json.loads(f.response.content) == doc(3)  # type: ignore[union-attr]
    assert f.response.headers["ETag"] not in ('"e1"', '"e2"')  # type: ignore[union-attr]


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
