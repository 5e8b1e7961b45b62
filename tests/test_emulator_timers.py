"""Session timers and per-service FGRL limits in the stand-in, on an injected clock.

Timers: the MPSD docs' member and session timeouts ("Session timeouts"; the
names the client library writes in multiplayer_session_constants.cpp
`_Serialize`): reservations, inactive and ready members, empty sessions; each
firing is a change (changeNumber, ETag) and `nextTimer` says when the next is
due. The library's own MultiplayerTests set timeouts with `SetTimeouts` on a
new session (TestSetTimeouts-like flows); the data here is our own.
Limits: protocol notes §5.1, per caller and per service.
"""

from __future__ import annotations

import json
from datetime import UTC
from datetime import datetime
from typing import Any

import pytest
from conftest import ManualClock

from mpsdproxy import emulator
from mpsdproxy import fgrl
from mpsdproxy import model
from mpsdproxy.emulator import timers

SCID = "5c8e0d1a-2b3c-4d5e-8f90-a1b2c3d40001"
BASE = f"/serviceconfigs/{SCID}"
TIMED = f"{BASE}/sessiontemplates/TimedLobby/sessions/evening"
TIMED_KEY = f"{SCID}~timedlobby~evening"
PLAIN = f"{BASE}/sessiontemplates/PlainLobby/sessions/morning"
HOPPER = f"{BASE}/hoppers/Duel"
ALICE, BOB, CAROL = "2533274800000001", "2533274800000002", "2533274800000003"
EPOCH = 1_700_000_000.0

#: Milliseconds, as a session template carries them (contract 107 names).
TIMEOUTS = {"reservedRemovalTimeout": 1000, "inactiveRemovalTimeout": 5000,
            "readyRemovalTimeout": 2000, "sessionEmptyTimeout": 3000}


class Clock(ManualClock):
    """The stand-in's clock and wall clock, advanced together by the test."""

    def wall(self) -> float:
        return EPOCH + self.now

    def iso(self, offset: float = 0.0) -> str:
        moment = datetime.fromtimestamp(self.wall() + offset, UTC)
        return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def config(**system: Any) -> emulator.EmulatorConfig:
    timed = emulator.TemplateConfig("TimedLobby", {
        "system": {"version": 1, "maxMembersCount": 8, **system}, "custom": {}})
    plain = emulator.TemplateConfig("PlainLobby", {
        "system": {"version": 1, "maxMembersCount": 8}, "custom": {}})
    return emulator.EmulatorConfig(
        scids=(emulator.ScidConfig(SCID, (timed, plain), ("Duel",)),))


class Title:
    """Sends requests as one console per user, on the shared clock."""

    def __init__(self, clock: Clock, **system: Any) -> None:
        self.clock = clock
        self.emu = emulator.Emulator(config(**system), clock=clock, wallclock=clock.wall)

    def __call__(self, method: str, target: str, body: Any = None, *, user: str = ALICE,
                 headers: tuple[tuple[str, str], ...] = ()) -> model.Response:
        sent = [("x-xbl-contract-version", "107"),
                ("Authorization", f"XBL3.0 x={user};token-of-{user}"), *headers]
        data = b"" if body is None else json.dumps(body).encode()
        asked = model.Request(method, f"https://sessiondirectory.xboxlive.com{target}", sent,
                              data)
        return self.emu.handle(asked)


def join(xuid: str, **system: Any) -> dict[str, Any]:
    return {"constants": {"system": {"xuid": xuid}}, "properties": {"system": system}}


def reserve(xuid: str) -> dict[str, Any]:
    return {"constants": {"system": {"xuid": xuid}}}


def body(response: model.Response) -> dict[str, Any]:
    return json.loads(response.body)


def xuids(document: dict[str, Any]) -> list[str]:
    return [m["constants"]["system"]["xuid"] for m in document["members"].values()]


@pytest.fixture
def clock() -> Clock:
    return Clock(500.0)


@pytest.fixture
def title(clock: Clock) -> Title:
    return Title(clock, **TIMEOUTS)


def _lobby_with_reservation(title: Title) -> model.Response:
    created = title("PUT", TIMED, {"members": {"me": join(ALICE, active=True),
                                               "reserve_0": reserve(BOB)}})
    assert created.status == 201
    return created


# -- reading the timeouts ----------------------------------------------------------------


def test_timeouts_read_contract_107_names_then_the_105_object() -> None:
    modern = {"constants": {"system": dict(TIMEOUTS)}}
    assert timers.timeouts(modern) == timers.Timeouts(1.0, 5.0, 2.0, 3.0)
    legacy = {"constants": {"system": {"timeouts": {
        "reserved": 30000, "inactive": 0, "ready": 180000, "sessionEmpty": 0}}}}
    assert timers.timeouts(legacy) == timers.Timeouts(30.0, 0.0, 180.0, 0.0)
    assert timers.timeouts({}) == timers.Timeouts(None, None, None, None)
    odd = {"constants": {"system": {"reservedRemovalTimeout": "soon",
                                    "readyRemovalTimeout": -1}}}
    assert timers.timeouts(odd) == timers.Timeouts(None, None, None, None)


@pytest.mark.parametrize(("member", "state"), [
    ({"reserved": True}, "reserved"),
    ({"properties": {"system": {"ready": True}}}, "ready"),
    ({"properties": {"system": {"active": True}}}, "active"),
    ({"properties": {"system": {"active": False}}}, "inactive"),
    ({}, "inactive"),
])
def test_member_states(member: dict[str, Any], state: str) -> None:
    assert timers.member_state(member) == state


# -- reservations --------------------------------------------------------------------------


def test_reservation_removed_after_its_timeout_as_one_change(title: Title,
                                                             clock: Clock) -> None:
    created = _lobby_with_reservation(title)
    document = body(created)
    assert document["nextTimer"] == clock.iso(1.0)
    assert created.header("Expires") is not None
    clock.now += 0.9
    early = title("GET", TIMED)
    assert xuids(body(early)) == [ALICE, BOB]
    assert early.header("ETag") == created.header("ETag")
    assert body(early)["changeNumber"] == document["changeNumber"]
    clock.now += 0.2
    late = title("GET", TIMED)
    after = body(late)
    assert xuids(after) == [ALICE]
    assert after["changeNumber"] == document["changeNumber"] + 1
    assert late.header("ETag") != created.header("ETag")
    assert after["membersInfo"]["count"] == 1 and after["membersInfo"]["accepted"] == 1
    assert "nextTimer" not in after and late.header("Expires") is None
    stale = title("GET", TIMED, headers=(("If-None-Match", created.header("ETag") or ""),))
    assert stale.status == 200, "the old ETag no longer matches"


def test_joining_in_time_stops_the_reservation_timer(title: Title, clock: Clock) -> None:
    _lobby_with_reservation(title)
    clock.now += 0.5
    joined = title("PUT", TIMED, {"members": {"me": join(BOB, active=True)}}, user=BOB)
    assert joined.status == 200 and "nextTimer" not in body(joined)
    clock.now += 10
    assert xuids(body(title("GET", TIMED))) == [ALICE, BOB]


def test_contract_105_timeouts_object_is_honoured(clock: Clock) -> None:
    title = Title(clock, timeouts={"reserved": 1000, "sessionEmpty": 0})
    created = _lobby_with_reservation(title)
    assert body(created)["nextTimer"] == clock.iso(1.0)
    clock.now += 1.0  # due exactly now
    assert xuids(body(title("GET", TIMED))) == [ALICE]


def test_timeouts_sent_when_the_session_is_created(clock: Clock) -> None:
    """As the library's SetTimeouts writes them: in constants.system of a new session."""
    title = Title(clock)
    plain = title("PUT", PLAIN, {
        "constants": {"system": {"reservedRemovalTimeout": 1500}},
        "members": {"me": join(ALICE, active=True), "reserve_0": reserve(BOB)}})
    assert body(plain)["nextTimer"] == clock.iso(1.5)
    clock.now += 2
    assert xuids(body(title("GET", PLAIN))) == [ALICE]


def test_no_timeouts_no_timers(clock: Clock) -> None:
    title = Title(clock)
    created = title("PUT", PLAIN, {"members": {"me": join(ALICE), "reserve_0": reserve(BOB)}})
    assert "nextTimer" not in body(created)
    clock.now += 86_400
    later = title("GET", PLAIN)
    assert xuids(body(later)) == [ALICE, BOB] and later.header("ETag") == created.header("ETag")


def test_two_timers_due_in_one_update_are_one_change(title: Title, clock: Clock) -> None:
    created = title("PUT", TIMED, {"members": {
        "me": join(ALICE, active=True), "reserve_0": reserve(BOB), "reserve_1": reserve(CAROL)}})
    clock.now += 5
    after = body(title("GET", TIMED))
    assert xuids(after) == [ALICE]
    assert after["changeNumber"] == body(created)["changeNumber"] + 1


# -- inactive and ready members ------------------------------------------------------------


def test_inactive_member_removed_after_the_inactive_timeout(title: Title,
                                                           clock: Clock) -> None:
    title("PUT", TIMED, {"members": {"me": join(ALICE, active=True)}})
    clock.now += 1
    title("PUT", TIMED, {"members": {"me": join(BOB, active=True)}}, user=BOB)
    clock.now += 1
    # Bob goes inactive at 502: his member is removed 5 s later, at 507.
    gone_inactive = title("PUT", TIMED, {"members": {"me": {"properties": {
        "system": {"active": False}}}}}, user=BOB)
    assert body(gone_inactive)["nextTimer"] == clock.iso(5.0)
    clock.now += 4.5
    assert xuids(body(title("GET", TIMED))) == [ALICE, BOB]
    clock.now += 0.5
    assert xuids(body(title("GET", TIMED))) == [ALICE]


def test_becoming_active_again_cancels_the_inactive_timer(title: Title, clock: Clock) -> None:
    title("PUT", TIMED, {"members": {"me": join(ALICE, active=True)}})
    title("PUT", TIMED, {"members": {"me": join(BOB)}}, user=BOB)  # joins inactive
    clock.now += 4
    title("PUT", TIMED, {"members": {"me": join(BOB, active=True)}}, user=BOB)
    clock.now += 60
    assert xuids(body(title("GET", TIMED))) == [ALICE, BOB]


def test_ready_member_turns_inactive_then_is_removed(title: Title, clock: Clock) -> None:
    title("PUT", TIMED, {"members": {"me": join(ALICE, active=True)}})
    ready = title("PUT", TIMED, {"members": {"me": join(BOB, ready=True)}}, user=BOB)
    assert body(ready)["nextTimer"] == clock.iso(2.0)
    clock.now += 2.5
    # One transition per member per update: ready -> inactive now; the inactive
    # timer started when the ready one fired (at +2 s), so it is due at +7 s.
    turned = body(title("GET", TIMED))
    bob = next(m for m in turned["members"].values()
               if m["constants"]["system"]["xuid"] == BOB)
    assert timers.member_state(bob) == "inactive"
    assert turned["nextTimer"] == clock.iso(4.5)
    clock.now += 4.5
    assert xuids(body(title("GET", TIMED))) == [ALICE]


# -- empty sessions ------------------------------------------------------------------------


def test_session_emptied_by_a_timer_is_deleted_after_session_empty_timeout(
        title: Title, clock: Clock) -> None:
    _lobby_with_reservation(title)
    assert title("PUT", TIMED, {"members": {"me": None}}).status == 200, "Bob is reserved"
    clock.now += 1.5  # Bob's reservation ran out at +1 s: empty since then
    empty = title("GET", TIMED)
    assert empty.status == 200 and body(empty)["members"] == {}
    assert body(empty)["nextTimer"] == clock.iso(2.5)
    assert [s["key"] for s in title.emu.sessions()] == [TIMED_KEY]
    clock.now += 2.5
    assert title("GET", TIMED).status == 204
    assert title.emu.sessions() == []


def test_session_emptied_by_a_timer_without_session_empty_timeout_goes_at_once(
        clock: Clock) -> None:
    title = Title(clock, reservedRemovalTimeout=1000)
    _lobby_with_reservation(title)
    title("PUT", TIMED, {"members": {"me": None}})
    clock.now += 1
    assert title("GET", TIMED).status == 204


# -- what scripts and other modules read ---------------------------------------------------


def test_state_switches_see_the_timers(title: Title, clock: Clock) -> None:
    created = _lobby_with_reservation(title)
    clock.now += 2
    listed = title.emu.sessions()
    assert listed[0]["changeNumber"] == body(created)["changeNumber"] + 1
    stored = title.emu.session(TIMED_KEY)
    assert stored is not None and xuids(stored[0]) == [ALICE]
    assert stored[1] == listed[0]["etag"]


def test_queries_see_the_timers(title: Title, clock: Clock) -> None:
    _lobby_with_reservation(title)
    clock.now += 2
    found = title("GET", f"{BASE}/sessions?xuid={BOB}&reservations=true", user=BOB)
    assert found.status == 200 and body(found)["results"] == []


def test_reset_forgets_the_timers(title: Title, clock: Clock) -> None:
    _lobby_with_reservation(title)
    title.emu.reset()
    clock.now += 10
    assert title("GET", TIMED).status == 204


# -- per-service limits --------------------------------------------------------------------


def _fgrl_answer(budget: fgrl.Budget, times: list[float]) -> dict[str, Any]:
    caller = fgrl.Caller(budget)
    return fgrl.message([caller.admit(t) for t in times][-1])


def test_smartmatch_has_its_own_ten_per_fifteen_seconds(title: Title, clock: Clock) -> None:
    for _ in range(10):
        assert title("GET", f"{HOPPER}/stats").status != 429
        clock.now += 1
    throttled = title("GET", f"{HOPPER}/stats")
    assert throttled.status == 429
    assert throttled.header("Retry-After") == "5"
    assert body(throttled) == _fgrl_answer(fgrl.Budget(10, 100),
                                           [float(t) for t in range(11)])
    assert title("GET", TIMED).status == 204, "the session directory counts apart"
    assert title("GET", f"{HOPPER}/stats", user=BOB).status != 429, "per caller"


def test_session_directory_keeps_its_thirty(title: Title) -> None:
    statuses = [title("GET", PLAIN).status for _ in range(31)]
    assert statuses[:30] == [204] * 30 and statuses[30] == 429


def _search_handle() -> dict[str, Any]:
    return {"version": 1, "type": "search",
            "sessionRef": {"scid": SCID, "templateName": "PlainLobby", "name": "morning"},
            "searchAttributes": {"tags": ["casual"]}}


def test_search_handles_read_and_write_one_per_fifteen_seconds(clock: Clock) -> None:
    title = Title(clock)
    title("PUT", PLAIN, {"members": {"me": join(ALICE, active=True)}})
    assert title("POST", "/handles", _search_handle()).status != 429
    clock.now += 1
    write = title("POST", "/handles", _search_handle())
    assert (write.status, write.header("Retry-After")) == (429, "14")
    assert body(write) == _fgrl_answer(fgrl.Budget(1, 20), [0.0, 1.0])
    query = {"type": "search", "scid": SCID, "templateName": "PlainLobby"}
    assert title("POST", "/handles/query", query).status != 429, "reads count apart"
    assert title("POST", "/handles/query", query).status == 429
    activity = dict(_search_handle(), type="activity")
    assert title("POST", "/handles", activity).status != 429, "activity handles are MPSD's"
    clock.now += 15
    assert title("POST", "/handles", _search_handle()).status != 429


def test_a_search_handle_read_and_cleared_counts_as_search_handle_calls(clock: Clock) -> None:
    """The library's clear_search_handle is a DELETE of the handle: a write."""
    title = Title(clock)
    title("PUT", PLAIN, {"members": {"me": join(ALICE, active=True)}})
    handle = body(title("POST", "/handles", _search_handle()))["id"]
    assert title("GET", f"/handles/{handle}").status == 200, "a read: its own window"
    assert title("GET", f"/handles/{handle}").status == 429
    assert title("DELETE", f"/handles/{handle}").status == 429, "the write just made one"
    clock.now += 15
    assert title("DELETE", f"/handles/{handle}").status == 200


def test_template_rate_limit_override_still_applies(clock: Clock) -> None:
    limited = emulator.TemplateConfig("PlainLobby", rate_limit=emulator.RateLimit(burst=2))
    scids = (emulator.ScidConfig(SCID, (limited,)),)
    emu = emulator.Emulator(emulator.EmulatorConfig(scids=scids), clock=clock,
                            wallclock=clock.wall)
    sent = [("x-xbl-contract-version", "107"), ("Authorization", "XBL3.0 x=a;t")]
    statuses = [emu.handle(model.Request("GET", f"https://sessiondirectory.xboxlive.com{PLAIN}",
                                         sent, b"")).status for _ in range(3)]
    assert statuses == [204, 204, 429]
