"""The MPSD stand-in: every row of the status table from a real request, the session
lifecycle, handles, rate limits with an injected clock, the config file, and the
HTTP/1.1 server over real loopback sockets."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ManualClock
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mpsdproxy import catalog
from mpsdproxy import emulator
from mpsdproxy import fgrl
from mpsdproxy import model
from mpsdproxy.classify import Classification
from mpsdproxy.classify import classify

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
BASE = f"/serviceconfigs/{SCID}"
LOBBY = f"{BASE}/sessiontemplates/LobbySession/sessions/lobby"
LOBBY_KEY = f"{SCID}~lobbysession~lobby"
BUSY = f"{BASE}/sessiontemplates/ThrottledSession/sessions/busy"
LARGE = f"{BASE}/sessiontemplates/LargeSession/sessions/arena"
HOPPER = f"{BASE}/hoppers/QuickMatch"
CONFIG = emulator.default_config()
ROOT = Path(__file__).resolve().parent.parent


def auth(user: str | None = "alice") -> list[tuple[str, str]]:
    headers = [("x-xbl-contract-version", "107")]
    if user is not None:
        headers.append(("Authorization", f"XBL3.0 x={user};token-of-{user}"))
    return headers


def me(xuid: str, **properties: Any) -> dict[str, Any]:
    return {"members": {"me": {
        "constants": {"system": {"xuid": xuid, "initialize": True}},
        "properties": {"system": {"active": True, **properties}},
    }}}


def request(method: str, target: str, headers: Any = (), body: bytes = b"") -> model.Request:
    """A request as the title sends it to the session directory (the stand-in here)."""
    return model.Request(method, f"https://sessiondirectory.xboxlive.com{target}",
                         list(headers), body)


@dataclass
class Exchange:
    request: model.Request
    response: model.Response

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def body(self) -> str:
        return self.response.body.decode()

    def json(self) -> Any:
        return json.loads(self.response.body)

    def header(self, name: str) -> str | None:
        return self.response.header(name)

    def classification(self) -> Classification:
        return classify(model.Exchange(self.request, self.response))


class Title:
    """Sends requests to an Emulator as one caller (or another, per call)."""

    def __init__(self, emu: emulator.Emulator, user: str | None = "alice") -> None:
        self.emu = emu
        self.user = user

    def __call__(self, method: str, target: str, body: Any = None, *, user: str | None = "",
                 headers: tuple[tuple[str, str], ...] = ()) -> Exchange:
        sent = [*auth(self.user if user == "" else user), *headers]
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
        asked = request(method, target, sent, data)
        return Exchange(asked, self.emu.handle(asked))




@pytest.fixture
def emu() -> emulator.Emulator:
    return emulator.Emulator(CONFIG)


@pytest.fixture
def title(emu: emulator.Emulator) -> Title:
    return Title(emu)


# -- every row of the table -------------------------------------------------------------


def _lobby(title: Title) -> Exchange:
    created = title("PUT", LOBBY, me("1001"))
    assert created.status == 201
    return created


def _ticket(title: Title) -> Exchange:
    ticket = title("POST", HOPPER, {"giveUpDuration": 30, "preserveSession": "never"}).json()
    return title("DELETE", f"{HOPPER}/tickets/{ticket['ticketId']}")


def _element_gone(title: Title) -> Exchange:
    _lobby(title)
    title("PUT", LOBBY, me("1002"), user="bob")
    return title("DELETE", f"{LOBBY}/members/me", user="bob")


def _not_modified(title: Title) -> Exchange:
    etag = _lobby(title).header("ETag") or ""
    return title("GET", LOBBY, headers=(("If-None-Match", etag),))


def _stale_write(title: Title) -> Exchange:
    stale = _lobby(title).header("ETag") or ""
    title("PUT", LOBBY, me("1002"), user="bob")
    return title("PUT", LOBBY, {"properties": {"custom": {"mode": "ctf"}}},
                 headers=(("If-Match", stale),))


def _throttled(title: Title) -> Exchange:
    title("PUT", BUSY, me("1003"))
    title("GET", BUSY)
    return title("GET", BUSY)


def _overloaded(title: Title) -> Exchange:
    title.emu.overload(3)
    return title("GET", LOBBY)


def _with_lobby(method: str, target: str, body: Any = None,
                **options: Any) -> Callable[[Title], Exchange]:
    """A scenario: alice creates the lobby, then this request is sent."""

    def scenario(title: Title) -> Exchange:
        _lobby(title)
        return title(method, target, body, **options)

    return scenario


SCENARIOS: dict[str, Callable[[Title], Exchange]] = {
    "200.ok": _with_lobby("GET", LOBBY),
    "201.created": _lobby,
    "202.accepted": _ticket,
    "204.get-session": lambda t: t("GET", LOBBY),
    "204.get-element": _with_lobby("GET", f"{LOBBY}/members/7"),
    "204.put-session-deleted": _with_lobby("PUT", LOBBY, {"members": {"me": None}}),
    "204.element-gone": _element_gone,
    "304.not-modified": _not_modified,
    "400.bad-request": lambda t: t("PUT", LOBBY, b'{"members": '),
    "403.forbidden": lambda t: t("GET", LOBBY, user=None),
    "403.read-only": _with_lobby("PUT", LOBBY, {}, user="spectator"),
    "404.not-found": lambda t: t("GET", "/handles/0b7d1a2e-0000-4000-8000-000000000000"),
    "405.method-not-allowed": _with_lobby("DELETE", LOBBY),
    "409.conflict": _with_lobby("PUT", LOBBY, {"constants": {"system": {"maxMembersCount": 99}}}),
    "412.precondition-failed": lambda t: t("PUT", LOBBY, me("1001"), headers=(("If-Match", "*"),)),
    "412.if-match-session": _stale_write,
    "429.too-many-requests": _throttled,
    "503.service-unavailable": _overloaded,
}


def test_scenarios_cover_the_whole_table() -> None:
    assert set(SCENARIOS) == set(catalog.BY_ID)


@pytest.mark.parametrize("entry_id", [e.id for e in catalog.ENTRIES])
def test_every_catalog_entry_is_produced_and_classified(title: Title, entry_id: str) -> None:
    exchange = SCENARIOS[entry_id](title)
    result = exchange.classification()
    assert (result.id, result.anomalies) == (entry_id, ()), exchange.response
    assert (exchange.header("Date") or "").endswith(" GMT")
    assert len(exchange.header("X-XblCorrelationId") or "") == 36


def test_whole_session_rows_return_the_whole_session_and_current_etag(title: Title) -> None:
    stale = _stale_write(title)
    document, etag = title.emu.session(LOBBY_KEY) or ({}, "")
    assert stale.header("ETag") == etag
    assert stale.json() == document
    assert catalog.SESSION_DOCUMENT_KEYS <= stale.json().keys()


_SEGMENTS = ["serviceconfigs", SCID, "sessiontemplates", "LobbySession", "LargeSession",
             "sessions", "lobby", "members", "me", "0", "7", "servers", "properties", "handles",
             "query", "session", "hoppers", "QuickMatch", "tickets", "stats", "batch",
             "_emulator", "overload", "sessions?xuid=1001", "x?nocommit=true", "%zz", ""]
_KEYS = ["members", "me", "reserve_0", "0", "constants", "system", "custom", "properties",
         "servers", "xuid", "active", "type", "version", "sessionRef", "xuids", "retry_after"]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from(["1001", "activity", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner,
                                                                 max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"]),
    segments=st.lists(st.sampled_from(_SEGMENTS), max_size=9),
    body=st.one_of(st.binary(max_size=24), _JSON.map(lambda v: json.dumps(v).encode())),
    user=st.sampled_from([None, "alice", "bob", "spectator"]),
    condition=st.sampled_from([(), (("If-Match", "*"),), (("If-None-Match", "*"),),
                               (("If-Match", '"stale"'),)]),
)
def test_any_request_gets_a_conformant_row(method: str, segments: list[str], body: bytes,
                                           user: str | None,
                                           condition: tuple[tuple[str, str], ...]) -> None:
    """Whatever arrives, the answer is a row of the table that classifies without anomaly."""
    title = Title(emulator.Emulator(CONFIG))
    _lobby(title)
    title("PUT", LARGE, me("1001"))
    exchange = title(method, "/" + "/".join(segments), body, user=user, headers=condition)
    result = exchange.classification()
    assert (result.id is not None, result.anomalies) == (True, ()), (exchange, result)


# -- sessions ----------------------------------------------------------------------------


def test_session_lifecycle(title: Title) -> None:
    created = _lobby(title)
    assert created.header("Content-Location") is None  # as the service: only by handle
    first = created.header("ETag") or ""
    assert first.startswith('"') and first.endswith('"')
    assert created.json()["changeNumber"] == 1
    assert {"contractVersion", "branch", "correlationId", "startTime", "members", "membersInfo",
            "servers"} <= created.json().keys()

    joined = title("PUT", LOBBY, me("1002"), user="bob")
    assert joined.status == 200
    assert joined.json()["changeNumber"] == 2
    assert joined.json()["membersInfo"] == {"first": 0, "next": 2, "count": 2,
                                                "accepted": 2, "active": 2}
    current = joined.header("ETag") or ""
    assert current != first

    assert title("GET", LOBBY, headers=(("If-None-Match", current),)).status == 304
    assert title("GET", LOBBY, headers=(("If-None-Match", first),)).status == 200

    stale = title("PUT", LOBBY, {"properties": {"custom": {"mode": "ctf"}}},
                  headers=(("If-Match", first),))
    assert stale.status == 412
    assert stale.header("ETag") == current
    assert stale.json()["changeNumber"] == 2
    assert "mode" not in stale.json()["properties"]["custom"]

    retried = title("PUT", LOBBY, {"properties": {"custom": {"mode": "ctf"}}},
                    headers=(("If-Match", stale.header("ETag") or ""),))
    assert retried.status == 200
    assert retried.json()["properties"]["custom"] == {"mode": "ctf"}

    assert title("PUT", LOBBY, {"members": {"me": None}}, user="bob").status == 200
    left = title("PUT", LOBBY, {"members": {"me": None}})
    assert left.classification().id == "204.put-session-deleted"
    assert title.emu.session(LOBBY_KEY) is None
    assert title("GET", LOBBY).classification().id == "204.get-session"


def test_create_without_members_creates_nothing(title: Title) -> None:
    answer = title("PUT", LOBBY, {"properties": {"custom": {"a": 1}}})
    assert answer.classification().id == "204.put-session-deleted"
    assert title.emu.session(LOBBY_KEY) is None


def test_nocommit_returns_the_merge_without_storing(title: Title) -> None:
    _lobby(title)
    before = title.emu.session(LOBBY_KEY)
    dry = title("PUT", f"{LOBBY}?nocommit=true", {"properties": {"custom": {"x": 1}}})
    assert dry.status == 200 and dry.json()["properties"]["custom"] == {"x": 1}
    assert title.emu.session(LOBBY_KEY) == before


@pytest.mark.parametrize("body,fragment", [
    (b"", "empty"),
    (b"[1, 2]", "JSON object, not an array"),
    ({"properties": []}, "properties must be a JSON object"),
    ({"members": {"me": 5}}, "members.me must be a JSON object"),
    ({"members": {"someone": {}}}, "member keys are"),
    ({"members": {"reserve_0": {}}}, "xuid is required"),
    (b'{"properties": {"custom": {"x": NaN}}}', "NaN, Infinity"),
    (b'{"properties": {"custom": {"x": 1e400}}}', "too large for a double"),
])
def test_bad_bodies_are_400_and_change_nothing(title: Title, body: Any, fragment: str) -> None:
    _lobby(title)
    before = title.emu.session(LOBBY_KEY)
    answer = title("PUT", LOBBY, body)
    assert answer.status == 400
    assert fragment in answer.body
    assert title.emu.session(LOBBY_KEY) == before


def test_constants_conflict_with_template_and_session(title: Title) -> None:
    clash = title("PUT", LOBBY, {**me("1001"), "constants": {"system": {"maxMembersCount": 3}}})
    assert clash.status == 409 and "session template" in clash.body
    created = title("PUT", LOBBY, {**me("1001"), "constants": {"custom": {"map": "dunes"}}})
    assert created.status == 201
    assert created.json()["constants"]["custom"] == {"map": "dunes"}
    same = title("PUT", LOBBY, {"constants": {"custom": {"map": "dunes"}}})
    assert same.status == 200
    added = title("PUT", LOBBY, {"constants": {"custom": {"mode": "ctf"}}})
    assert added.status == 409


def test_conditional_writes(title: Title) -> None:
    assert title("PUT", LOBBY, me("1001"), headers=(("If-None-Match", "*"),)).status == 201
    assert title("PUT", LOBBY, me("1001"), headers=(("If-None-Match", "*"),)).status == 412
    assert title("PUT", LOBBY, {}, headers=(("If-Match", "*"),)).status == 200
    gone = f"{BASE}/sessiontemplates/LobbySession/sessions/nobody"
    missing = title("PUT", gone, me("1001"), headers=(("If-Match", '"abc"'),))
    assert missing.classification().id == "412.precondition-failed"
    assert missing.body == ""


def test_reservations_and_member_removal(title: Title) -> None:
    _lobby(title)
    reserved = title("PUT", LOBBY, {"members": {"reserve_0": {
        "constants": {"system": {"xuid": "1005", "initialize": True}}}}})
    assert reserved.json()["members"]["1"]["reserved"] is True
    assert reserved.json()["membersInfo"]["accepted"] == 1
    accepted = title("PUT", LOBBY, me("1005"), user="dave")
    assert "reserved" not in accepted.json()["members"]["1"]
    kicked_by_a_user = title("DELETE", f"{LOBBY}/members/1")
    assert kicked_by_a_user.classification().id == "403.forbidden"
    assert "server principal" in kicked_by_a_user.body
    removed = title("DELETE", f"{LOBBY}/members/1", user="gameserver")
    assert removed.classification().id == "204.element-gone"
    document, _ = title.emu.session(LOBBY_KEY) or ({}, "")
    assert list(document["members"]) == ["0"]
    update_other = title("PUT", LOBBY, {"members": {"0": {"properties": {}}}}, user="bob")
    assert update_other.classification().id == "403.forbidden"


def test_large_sessions_refuse_other_members_and_show_only_the_caller(title: Title) -> None:
    assert title("PUT", LARGE, me("1001")).status == 201
    joined = title("PUT", LARGE, me("1002"), user="bob").json()["members"]  # the caller as me
    assert joined.keys() == {"me"} and joined["me"]["constants"]["system"]["index"] == 1
    reserve = title("PUT", LARGE, {"members": {"reserve_0": {
        "constants": {"system": {"xuid": "1009"}}}}})
    assert reserve.classification().id == "409.conflict"
    kick = title("PUT", LARGE, {"members": {"1": None}})
    assert kick.classification().id == "409.conflict"
    assert title("GET", LARGE).json()["membersInfo"]["count"] == 2


def test_read_only_users_read_but_do_not_write(title: Title) -> None:
    _lobby(title)
    assert title("GET", LOBBY, user="spectator").status == 200
    refused = title("DELETE", f"{LOBBY}/members/me", user="spectator")
    assert refused.classification().id == "403.read-only"
    create = title("PUT", f"{BASE}/sessiontemplates/LobbySession/sessions/other", me("7"),
                   user="spectator")
    assert create.classification().id == "403.forbidden"


def test_a_caller_cannot_claim_another_xuid(title: Title) -> None:
    _lobby(title)
    answer = title("PUT", f"{BASE}/sessiontemplates/GameSession/sessions/g", me("2002"))
    assert answer.status == 403 and "1001" in answer.body


# -- elements --------------------------------------------------------------------------


def test_elements(title: Title) -> None:
    missing = title("PUT", f"{LOBBY}/properties", {"custom": {"a": 1}})
    assert missing.classification().id == "404.not-found"
    assert title("GET", f"{LOBBY}/members/me").classification().id == "404.not-found"
    _lobby(title)
    props = title("PUT", f"{LOBBY}/properties", {"custom": {"a": 1}})
    assert props.status == 200 and props.json()["properties"]["custom"] == {"a": 1}
    system = {"turn": [], "matchmaking": {}, "joinRestriction": "none", "readRestriction": "none"}
    assert title("GET", f"{LOBBY}/properties").json() == {"system": system, "custom": {"a": 1}}
    mine = title("GET", f"{LOBBY}/members/me")
    assert mine.status == 200 and mine.json()["constants"]["system"]["xuid"] == "1001"
    assert title("GET", f"{LOBBY}/servers/host").classification().id == "204.get-element"
    server = title("PUT", f"{LOBBY}/servers/host", {"constants": {"system": {"x": 1}}})
    assert server.json()["servers"] == {"host": {"constants": {"system": {"x": 1}}}}
    assert title("GET", f"{LOBBY}/servers/host").status == 200
    gone = title("DELETE", f"{LOBBY}/servers/host")
    assert gone.classification().id == "204.element-gone"
    assert title("GET", f"{LOBBY}/servers/host").status == 204
    put_index = title("PUT", f"{LOBBY}/members/0", {})
    assert put_index.classification().id == "405.method-not-allowed"
    assert put_index.header("Allow") == "GET, DELETE"
    last = title("DELETE", f"{LOBBY}/members/me")
    assert last.classification().id == "204.element-gone"
    assert title.emu.session(LOBBY_KEY) is None


# -- handles -----------------------------------------------------------------------------


def _handle(kind: str = "activity", name: str = "lobby") -> dict[str, Any]:
    return {"type": kind, "version": 1,
            "sessionRef": {"scid": SCID, "templateName": "LobbySession", "name": name}}


def test_handle_creation_bumps_change_number_and_etag(title: Title) -> None:
    etag = _lobby(title).header("ETag") or ""
    created = title("POST", "/handles", _handle())
    assert created.classification().id == "201.created"
    handle_id = created.json()["id"]
    assert created.header("Location") == created.header("Content-Location") == \
        f"/handles/{handle_id}"
    document, current = title.emu.session(LOBBY_KEY) or ({}, "")
    assert document["changeNumber"] == 2 and current != etag
    stale = title("PUT", LOBBY, {}, headers=(("If-Match", etag),))
    assert stale.classification().id == "412.if-match-session"
    assert stale.header("ETag") == current

    by_handle = title("GET", f"/handles/{handle_id}/session")
    assert by_handle.status == 200 and by_handle.header("Content-Location") == LOBBY
    written = title("PUT", f"/handles/{handle_id}/session", {"properties": {"custom": {"h": 1}}})
    assert written.status == 200 and written.json()["changeNumber"] == 3

    found = title("POST", "/handles/query?include=relatedInfo",
                  {"type": "activity", "scid": SCID, "owners": {"xuids": ["1001"]}})
    assert [h["id"] for h in found.json()["results"]] == [handle_id]
    assert found.json()["results"][0]["relatedInfo"]["membersCount"] == 1

    assert title("DELETE", f"/handles/{handle_id}").json()["id"] == handle_id
    assert title("GET", f"/handles/{handle_id}").classification().id == "404.not-found"


def test_handles_for_missing_sessions_and_bad_bodies(title: Title) -> None:
    dangling = title("POST", "/handles", _handle("transfer", "never-created"))
    assert dangling.status == 201
    assert title("GET", f"/handles/{dangling.json()['id']}/session").status == 204
    assert title("POST", "/handles", {"version": 1}).status == 400
    assert title("POST", "/handles", {**_handle(), "version": 2}).status == 400
    assert title("POST", "/handles", {**_handle(), "sessionRef": {"scid": SCID}}).status == 400
    unknown = title("POST", "/handles", {**_handle(), "sessionRef": {
        "scid": SCID, "templateName": "Nope", "name": "x"}})
    assert unknown.status == 404
    wrong_verb = title("PUT", "/handles", _handle())
    assert (wrong_verb.status, wrong_verb.header("Allow")) == (405, "POST")


# -- queries, hoppers, templates -----------------------------------------------------------


def test_session_queries_and_batch(title: Title) -> None:
    title("PUT", LOBBY, {**me("1001"), "properties": {"system": {"keywords": ["ctf"]}}})
    by_xuid = title("GET", f"{BASE}/sessions?xuid=1001")
    assert [r["sessionRef"]["name"] for r in by_xuid.json()["results"]] == ["lobby"]
    assert by_xuid.json()["results"][0]["status"] == "active"
    assert len(title("GET", f"{BASE}/sessiontemplates/LobbySession/sessions?keyword=CTF")
               .json()["results"]) == 1
    assert title("GET", f"{BASE}/sessions?keyword=none").json() == {"results": []}
    assert title("GET", f"{BASE}/sessions").status == 400
    private = title("GET", f"{BASE}/sessions?xuid=2002&private=true")
    assert private.classification().id == "403.forbidden"
    assert title("GET", f"{BASE}/sessions?xuid=1001&private=true").status == 200
    batch = title("POST", f"{BASE}/batch", {"xuids": ["2002", "1001"]})
    assert [r["xuid"] for r in batch.json()["results"]] == ["1001"]
    assert title("POST", f"{BASE}/batch", {"xuids": "1001"}).status == 400
    assert title("GET", "/serviceconfigs/00000000-0000-0000-0000-000000000000/sessions?xuid=1"
                 ).status == 404


def test_hoppers_tickets_and_templates(title: Title) -> None:
    ticket = title("POST", HOPPER, {"ticketSessionRef": {
        "scid": SCID, "templateName": "LobbySession", "name": "lobby"}})
    assert ticket.status == 200 and set(ticket.json()) == {"ticketId", "waitTime"}
    ticket_path = f"{HOPPER}/tickets/{ticket.json()['ticketId']}"
    assert title("GET", f"{HOPPER}/stats").json()["population"] == 1
    assert title("GET", ticket_path).json()["ticketStatus"] == "searching"
    assert title("DELETE", ticket_path).classification().id == "202.accepted"
    assert title("GET", ticket_path).status == 404
    assert title("POST", f"{BASE}/hoppers/Nope", {}).status == 404
    assert title("POST", HOPPER, {"preserveSession": "sometimes"}).status == 400
    names = [t["name"] for t in title("GET", f"{BASE}/sessiontemplates").json()["results"]]
    assert names == ["LobbySession", "GameSession", "LargeSession", "ThrottledSession"]
    template = title("GET", f"{BASE}/sessiontemplates/gamesession").json()
    assert template["constants"]["system"]["maxMembersCount"] == 4


def test_headers_are_required(title: Title) -> None:
    no_contract = title.emu.handle(request("GET", LOBBY, [("Authorization", "XBL3.0 x=a;t")]))
    assert no_contract.status == 400 and b"x-xbl-contract-version" in no_contract.body
    malformed = title.emu.handle(request("GET", LOBBY, [("Authorization", "Bearer abc"),
                                                        ("x-xbl-contract-version", "107")]))
    assert malformed.status == 403
    assert title("GET", "/not/mpsd").classification().id == "404.not-found"


# -- rate limits ---------------------------------------------------------------------------


def _fgrl_answer(budget: fgrl.Budget, times: list[float]) -> fgrl.Decision:
    """What the one FGRL window decides for the last of these calls by one caller."""
    caller = fgrl.Caller(budget)
    return [caller.admit(t) for t in times][-1]


def test_template_burst_limit_with_truthful_retry_after() -> None:
    clock = ManualClock(1000.0)
    title = Title(emulator.Emulator(CONFIG, clock=clock))
    assert title("PUT", BUSY, me("1003")).status == 201
    clock.now += 1
    assert title("GET", BUSY).status == 200
    clock.now += 1
    throttled = title("GET", BUSY)
    assert throttled.classification().id == "429.too-many-requests"
    assert throttled.header("Retry-After") == "13"
    expected = _fgrl_answer(fgrl.Budget(2, 300), [0, 1, 2])
    assert throttled.json() == fgrl.message(expected)
    assert (throttled.json()["maxRequests"], throttled.json()["periodInSeconds"]) == (2, 15)
    clock.now += 12.5
    assert title("GET", BUSY).header("Retry-After") == "1"
    clock.now += 0.5  # 15 s after the first request: a slot is free
    assert title("GET", BUSY).status == 200
    assert title("GET", LOBBY).status == 204, "other templates keep the title-wide limit"


def test_sustain_window_counts_throttled_requests() -> None:
    clock = ManualClock(1000.0)
    config = emulator.EmulatorConfig(CONFIG.scids, rate_limit=emulator.RateLimit(100, 3))
    title = Title(emulator.Emulator(config, clock=clock))
    for _ in range(3):
        assert title("GET", LOBBY).status == 204
        clock.now += 1
    # t=3 after t=0,1,2: refused, and counted, so one more fits once t=0 and t=1 leave, at 301
    first = title("GET", LOBBY)
    assert (first.status, first.header("Retry-After")) == (429, "298")
    assert first.json() == fgrl.message(_fgrl_answer(fgrl.Budget(100, 3), [0, 1, 2, 3]))
    assert first.json()["periodInSeconds"] == 300
    clock.now += 1
    second = title("GET", LOBBY)  # t=4 counts too: t=2 must leave, at 302
    assert second.header("Retry-After") == "298"
    assert title("GET", LOBBY, user="bob").status == 204, "limits are per caller"
    clock.now += 298
    assert title("GET", LOBBY).status == 204


# -- the overload switch -------------------------------------------------


def test_configured_overload_starts_on() -> None:
    config = emulator.EmulatorConfig(CONFIG.scids, overload=emulator.Overload(7, 2))
    title = Title(emulator.Emulator(config))
    assert [(x.status, x.header("Retry-After")) for x in
            (title("GET", LOBBY), title("GET", LOBBY))] == [(503, "7")] * 2
    assert title("GET", LOBBY).status == 204


# -- state for other modules ----------------------------------------------------------------


def test_seed_then_serve_the_seeded_session(title: Title) -> None:
    document = {"constants": {"system": {"visibility": "open"}, "custom": {}},
                "properties": {"system": {}, "custom": {}}, "changeNumber": 7,
                "members": {"0": {"constants": {"system": {"xuid": "1001", "index": 0}}}},
                "membersInfo": {"first": 0, "next": 1, "count": 1}}
    path = "/serviceconfigs/00000000-0000-0000-0000-0000000000aa/sessiontemplates/T/sessions/s"
    title.emu.seed(path, document, '"seeded"')
    stored = title.emu.session("00000000-0000-0000-0000-0000000000aa~t~s")
    assert stored is not None and stored[1] == '"seeded"'
    read = title("GET", path)
    assert (read.status, read.header("ETag"), read.json()["changeNumber"]) == (200, '"seeded"', 7)
    written = title("PUT", path, me("1001"), headers=(("If-Match", '"seeded"'),))
    assert written.status == 200 and written.json()["changeNumber"] == 8
    assert list(written.json()["members"]) == ["0"], "the seeded member is the caller"
    with pytest.raises(ValueError, match="session path"):
        title.emu.seed("/handles/abc", document, '"x"')
    with pytest.raises(ValueError, match="JSON object"):
        title.emu.seed(path, [], '"x"')  # type: ignore[arg-type]
    title.emu.seed(LOBBY, {}, None)
    assert title("GET", LOBBY).header("ETag") not in (None, '"seeded"')
