"""Matching a `model.Request` against a rule, and the row of the table a fault answers with."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from test_scenario_engine import HOPPER
from test_scenario_engine import LOBBY
from test_scenario_engine import MPSD
from test_scenario_engine import SCID
from test_scenario_engine import Pairs
from test_scenario_engine import request

from mpsdproxy import model
from mpsdproxy import scenario
from mpsdproxy.scenario import Engine


@pytest.mark.parametrize("spec,method,path,headers,host,matches", [
    ({}, "DELETE", "/anything", {}, MPSD, True),
    ({"method": "PUT"}, "put", LOBBY, {}, MPSD, True),
    ({"method": ["GET", "PUT"]}, "DELETE", LOBBY, {}, MPSD, False),
    ({"resource": "session"}, "GET", LOBBY, {}, MPSD, True),
    ({"resource": "session"}, "GET", LOBBY + "/members/me", {}, MPSD, False),
    ({"resource": "member"}, "DELETE", LOBBY + "/members/me", {}, MPSD, True),
    ({"resource": "element"}, "DELETE", LOBBY + "/servers/host", {}, MPSD, True),
    ({"resource": "element"}, "PUT", LOBBY + "/properties", {}, MPSD, True),
    ({"resource": "handle"}, "POST", "/handles", {}, MPSD, True),
    ({"resource": "handle"}, "POST", "/handles/query", {}, MPSD, True),
    ({"resource": "handle"}, "PUT", "/handles/ab12/session", {}, MPSD, True),
    ({"resource": "hopper"}, "GET", HOPPER + "/stats", {}, MPSD, True),
    ({"resource": "hopper"}, "GET", HOPPER + "/tickets/t1", {}, MPSD, False),
    ({"resource": "ticket"}, "DELETE", HOPPER + "/tickets/t1", {}, MPSD, True),
    ({"resource": "query"}, "GET", f"/serviceconfigs/{SCID}/sessions?xuid=1", {}, MPSD, True),
    ({"resource": "batch"}, "POST", f"/serviceconfigs/{SCID}/batch", {}, MPSD, True),
    ({"resource": ["ticket", "batch"]}, "GET", LOBBY, {}, MPSD, False),
    ({"resource": "any"}, "GET", "/not/mpsd", {}, MPSD, True),
    ({"path": "*/sessions/lobby-1"}, "GET", LOBBY + "?nocommit=true", {}, MPSD, True),
    ({"path": "*nocommit*"}, "GET", LOBBY + "?nocommit=true", {}, MPSD, False),
    ({"path": ["/handles*", "*/lobby-1"]}, "GET", LOBBY, {}, MPSD, True),
    ({"host": "sessiondirectory.xboxlive.com"}, "GET", LOBBY, {},
     "SessionDirectory.XboxLive.com:443", True),
    ({"host": "*.xboxlive.com"}, "GET", LOBBY, {}, "127.0.0.1:8081", False),
    ({"headers": {"If-Match": "*"}}, "PUT", LOBBY, {"if-match": '"abc"'}, MPSD, True),
    ({"headers": {"If-Match": "*"}}, "PUT", LOBBY, {}, MPSD, False),
    ({"headers": {"If-Match": '"a*"'}}, "PUT", LOBBY, [("If-Match", '"b1"'), ("If-Match", '"a1"')],
     MPSD, True),
    ({"headers": {"If-Match": True}}, "PUT", LOBBY, {"If-Match": ""}, MPSD, True),
    ({"headers": {"If-None-Match": False}}, "GET", LOBBY, {"If-None-Match": "*"}, MPSD, False),
    ({"headers": {"If-None-Match": False}}, "GET", LOBBY, {"If-Match": "*"}, MPSD, True),
])
def test_match(spec: dict[str, Any], method: str, path: str, headers: Pairs, host: str,
               matches: bool) -> None:
    match = scenario.parse_match(spec)
    assert scenario.matches(match, request(method, path, host, headers)) is matches


CAFE_RULE = 'rules: [{name: cafe, match: {headers: {X-Title: "Café*"}}, fault: {status: 503}}]'


def test_a_utf8_header_matches_a_glob_written_with_the_same_text() -> None:
    """The title sends X-Title as UTF-8 bytes; the rule is written in the same text, so it
    matches (header values are decoded once, by model's one rule, not as latin-1)."""
    engine = Engine(scenario.parse_scenario(CAFE_RULE), start=0.0)
    title = model.Headers.from_raw([(b"X-Title", "Café Racer".encode())])
    cafe = model.Request("PUT", f"https://{MPSD}{LOBBY}", title)
    fired = engine.evaluate(cafe, now=1.0)
    assert fired is not None and fired.rule.name == "cafe"
    other = model.Headers.from_raw([(b"X-Title", b"Cafeteria")])
    assert engine.evaluate(model.Request("PUT", f"https://{MPSD}{LOBBY}", other), now=1.0) is None


def test_a_header_byte_that_is_not_utf8_is_not_the_letter_it_means_in_latin1() -> None:
    """0xE9 alone is not UTF-8: by the one rule it is kept as that byte, and a rule
    written as "Café*" (UTF-8 é) does not claim it; a glob of `Caf?*` still does."""
    latin1 = model.Headers.from_raw([(b"X-Title", b"Caf\xe9 Racer")])
    sent = request("PUT", headers=latin1)
    assert not scenario.matches(scenario.parse_match({"headers": {"X-Title": "Café*"}}), sent)
    assert scenario.matches(scenario.parse_match({"headers": {"X-Title": "Caf?*"}}), sent)


MATCH_SPECS = [
    {}, {"method": ["GET", "PUT"], "resource": ["session", "element"]},
    {"path": "*/sessions/*", "host": "*.xboxlive.com"},
    {"headers": {"If-Match": "*", "If-None-Match": False, "X": "[ab]?"}},
    {"resource": "any", "path": ["/handles*", "*[0-9]"]},
]
PATH_CHARS = st.characters(blacklist_categories=("Cs", "Zs", "Cc"), blacklist_characters="#?")
WIRE_BYTES = st.binary(max_size=12).filter(lambda b: not set(b) & {0x0A, 0x0D, 0x00})


@settings(max_examples=300, deadline=None)
@given(spec=st.sampled_from(MATCH_SPECS), method=st.sampled_from(["GET", "put", "X-Y"]),
       host=st.sampled_from([MPSD, "EXAMPLE.org:8080", "[::1]:1", "127.0.0.1"]),
       path=st.text(PATH_CHARS, max_size=60), query=st.text(PATH_CHARS, max_size=10),
       headers=st.lists(st.tuples(st.sampled_from([b"If-Match", b"x", b"If-None-Match"]),
                                  WIRE_BYTES), max_size=4))
def test_match_never_raises_on_any_request_the_model_can_hold(
        spec: dict[str, Any], method: str, host: str, path: str, query: str,
        headers: list[tuple[bytes, bytes]]) -> None:
    sent = model.Request(method, f"https://{host}/{path}?{query}",
                         model.Headers.from_raw(headers))
    assert scenario.matches(scenario.parse_match(spec), sent) in (True, False)


def test_equal_matches_compile_to_equal_matchers() -> None:
    """The engine checks each distinct match once per request, so equal ones must compare
    equal once compiled (methods and header names in any case or order)."""
    one = scenario.parse_match({"method": ["GET", "put"], "path": "*/sessions/*",
                                "headers": {"If-Match": "*"}})
    two = scenario.parse_match({"method": ["PUT", "get"], "path": "*/sessions/*",
                                "headers": {"if-match": "*"}})
    assert scenario.Matcher.of(one) == scenario.Matcher.of(two)
    assert scenario.Matcher.of(one) != scenario.Matcher.of(scenario.parse_match({"method": "GET"}))


# --- the row a fault answers with -------------------------------------------------------


@pytest.mark.parametrize("fault,method,path,headers,row", [
    ({"status": 412}, "PUT", LOBBY, {"If-Match": '"e1"'}, "412.if-match-session"),
    ({"status": 412}, "DELETE", LOBBY, {"If-Match": '"e1"'}, "412.if-match-session"),
    ({"status": 412}, "PUT", LOBBY, {"if-none-match": "*"}, "412.precondition-failed"),
    ({"status": 412}, "POST", "/handles", {"If-Match": "*"}, "412.precondition-failed"),
    ({"status": 403}, "PUT", LOBBY, {}, "403.forbidden"),
    ({"entry": "403.read-only"}, "GET", LOBBY, {}, "403.read-only"),
    ({"status": 204}, "GET", LOBBY, {}, "204.get-session"),
    ({"status": 204}, "GET", LOBBY + "/members/3", {}, "204.get-element"),
    ({"status": 204}, "PUT", LOBBY, {}, "204.put-session-deleted"),
    ({"status": 204}, "DELETE", LOBBY + "/members/me", {}, "204.element-gone"),
    ({"status": 304}, "GET", LOBBY, {"If-None-Match": '"e1"'}, "304.not-modified"),
    ({"status": 304}, "PUT", LOBBY, {}, "304.not-modified"),  # nothing fits: the only row
    ({"status": 503}, "GET", HOPPER, {}, "503.service-unavailable"),
    ({"throttle": {"burst": 1, "sustained": 1}}, "GET", LOBBY, {}, "429.too-many-requests"),
    ({"delay": "1s"}, "GET", LOBBY, {}, None),
])
def test_fault_row(fault: dict[str, Any], method: str, path: str, headers: dict[str, str],
                   row: str | None) -> None:
    chosen = scenario.parse_fault(fault).row(request(method, path, headers=headers))
    assert (chosen.id if chosen else None) == row
