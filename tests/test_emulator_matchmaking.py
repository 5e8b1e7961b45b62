"""Matchmaking in the stand-in as the client library reads it: the field names of its
parsers (matchmaking_service.cpp), tickets that progress on the configured schedule, and
the ticket session's `servers.matchmaking` (multiplayer_session.cpp).

Request bodies and answers are re-expressed from the library's MatchmakingTests.cpp with
this project's own ids and values; each test names the source test it follows."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import ManualClock

from mpsdproxy import emulator
from mpsdproxy import model

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
BASE = f"/serviceconfigs/{SCID}"
HOPPER = f"{BASE}/hoppers/QuickMatch"
RANKED = f"{BASE}/hoppers/Ranked"
XUID_A, XUID_B, XUID_C = "2533274800000001", "2533274800000002", "2533274800000003"

CONFIG_TEXT = f"""\
version: 1
scids:
  {SCID}:
    templates:
      LobbySession:
        constants: {{system: {{version: 1, maxMembersCount: 8, visibility: open}}}}
      GameSession:
        constants: {{system: {{version: 1, maxMembersCount: 4, visibility: open}}}}
    hoppers: [QuickMatch, Ranked]
"""


def config(**schedule: Any) -> emulator.EmulatorConfig:
    """A config with two hoppers; `schedule` is its matchmaking section."""
    text = CONFIG_TEXT
    if schedule:
        text += f"matchmaking: {json.dumps(schedule)}\n"
    return emulator.parse_config(text)




class Console:
    """One caller, as a title on one console sends its requests."""

    def __init__(self, emu: emulator.Emulator, user: str, xuid: str) -> None:
        self.emu, self.user, self.xuid = emu, user, xuid

    def send(self, method: str, path: str, body: Any = None, contract: str = "107",
             headers: tuple[tuple[str, str], ...] = ()) -> model.Response:
        sent = [("x-xbl-contract-version", contract),
                ("Authorization", f"XBL3.0 x={self.user};token-of-{self.user}"), *headers]
        data = b"" if body is None else json.dumps(body).encode()
        host = "smartmatch" if "/hoppers/" in path else "sessiondirectory"
        return self.emu.handle(model.Request(method, f"https://{host}.xboxlive.com{path}",
                                             sent, data))

    def lobby(self, name: str, template: str = "LobbySession") -> dict[str, Any]:
        body = {"members": {"me": {"constants": {"system": {"xuid": self.xuid,
                                                             "initialize": True}},
                                   "properties": {"system": {"active": True}}}}}
        answer = self.send("PUT", session_path(name, template), body)
        assert answer.status in (200, 201)
        return ref(name, template)

    def ticket(self, session: dict[str, str] | None, hopper: str = HOPPER,
               preserve: str = "never", give_up: int = 60, **extra: Any) -> str:
        """A match ticket, its body built in the order the library builds it."""
        body: dict[str, Any] = {"giveUpDuration": give_up, "preserveSession": preserve}
        body.update(extra)
        if session is not None:
            body["ticketSessionRef"] = session
        answer = self.send("POST", hopper, body, contract="103")
        assert answer.status == 200, answer.body
        return answer.json["ticketId"]

    def details(self, ticket: str, hopper: str = HOPPER) -> dict[str, Any]:
        answer = self.send("GET", f"{hopper}/tickets/{ticket}", contract="103")
        assert answer.status == 200
        return answer.json

    def session(self, session: dict[str, str]) -> model.Response:
        return self.send("GET", session_path(session["name"], session["templateName"]))


def session_path(name: str, template: str = "LobbySession") -> str:
    return f"{BASE}/sessiontemplates/{template}/sessions/{name}"


def ref(name: str, template: str = "LobbySession") -> dict[str, str]:
    return {"scid": SCID, "templateName": template, "name": name}


def matchmaking_of(answer: model.Response) -> dict[str, Any]:
    """servers.matchmaking.properties.system, where the library reads it
    (multiplayer_session.cpp `_Deserialize`)."""
    return answer.json["servers"]["matchmaking"]["properties"]["system"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1700000000.0)


@pytest.fixture
def emu(clock: ManualClock) -> emulator.Emulator:
    return emulator.Emulator(config(), clock=clock, wallclock=clock)


@pytest.fixture
def alice(emu: emulator.Emulator) -> Console:
    return Console(emu, "alice", XUID_A)


@pytest.fixture
def bob(emu: emulator.Emulator) -> Console:
    return Console(emu, "bob", XUID_B)


# -- field names as the library's parsers read them ------------------------------------


def test_create_ticket_answers_ticket_id_and_wait_time(alice: Console) -> None:
    """After TestCreateMatchTicketAsync: the body the library sends is accepted and the
    answer has the two fields `DeserializeCreateMatchTicketResponseResult` reads."""
    answer = alice.send("POST", HOPPER, {
        "giveUpDuration": 15, "preserveSession": "never",
        "ticketAttributes": {"arena": "Harbour", "mode": "Relay"},
        "ticketSessionRef": ref("lobby-a")}, contract="103")
    assert answer.status == 200
    assert set(answer.json) == {"ticketId", "waitTime"}
    assert isinstance(answer.json["ticketId"], str) and answer.json["ticketId"]
    assert answer.json["waitTime"] == 2  # the configured found_after_s, in whole seconds


def test_ticket_details_name_the_status_ticket_status(alice: Console) -> None:
    """After TestGetMatchTicketAsync: `ticketStatus` (required), waitTime, preserveSession,
    ticketSessionRef and ticketAttributes; never `status`."""
    lobby = alice.lobby("lobby-a")
    ticket = alice.ticket(lobby, preserve="always", ticketAttributes={"arena": "Harbour"})
    details = alice.details(ticket)
    assert details["ticketStatus"] == "searching" and "status" not in details
    assert isinstance(details["waitTime"], int)
    assert details["preserveSession"] == "always"
    assert details["ticketSessionRef"] == lobby
    assert details["ticketAttributes"] == {"arena": "Harbour"}
    assert "targetSessionRef" not in details
    assert details["players"] == [{"xuid": XUID_A, "playerAttributes": {}}]


def test_hopper_stats_name_the_hopper_name(alice: Console, bob: Console) -> None:
    """After TestGetStatsForHopperAsync: `name` (required), waitTime and population."""
    alice.ticket(alice.lobby("lobby-a"))
    answer = bob.send("GET", f"{HOPPER}/stats", contract="103")
    assert answer.status == 200
    assert answer.json == {"name": "QuickMatch", "waitTime": 2, "population": 1}


def test_player_attributes_come_from_match_attrs(alice: Console) -> None:
    lobby = alice.lobby("lobby-a")
    alice.send("PUT", session_path("lobby-a"), {"members": {"me": {
        "properties": {"custom": {"matchAttrs": {"skill": 12}}}}}})
    details = alice.details(alice.ticket(lobby))
    assert details["players"] == [{"xuid": XUID_A, "playerAttributes": {"skill": 12}}]


# -- the schedule -------------------------------------------------------------------------


def test_tickets_of_one_hopper_are_found_together(clock: ManualClock, alice: Console,
                                                  bob: Console) -> None:
    first, second = alice.lobby("lobby-a"), bob.lobby("lobby-b")
    tickets = [alice.ticket(first), bob.ticket(second)]
    clock.now += 1.9
    assert [alice.details(t)["ticketStatus"] for t in tickets] == ["searching"] * 2
    clock.now += 0.2
    found = [alice.details(t) for t in tickets]
    assert [d["ticketStatus"] for d in found] == ["found", "found"]
    target = found[0]["targetSessionRef"]
    assert found[1]["targetSessionRef"] == target
    assert target["scid"] == SCID and target["templateName"] == "LobbySession"
    assert target["name"] not in ("lobby-a", "lobby-b")
    assert alice.send("GET", f"{HOPPER}/stats").json["population"] == 0


def test_found_is_written_to_each_ticket_session(clock: ManualClock, alice: Console,
                                                 bob: Console) -> None:
    first, second = alice.lobby("lobby-a"), bob.lobby("lobby-b")
    alice.ticket(first)
    searching = alice.session(first)
    assert matchmaking_of(searching) == {"status": "searching", "statusDetails": "",
                                         "typicalWait": 2}
    ticket = bob.ticket(second)
    clock.now += 5
    target = bob.details(ticket)["targetSessionRef"]
    for console, lobby in ((alice, first), (bob, second)):
        answer = console.session(lobby)
        assert matchmaking_of(answer) == {"status": "found", "statusDetails": "",
                                          "typicalWait": 2, "targetSessionRef": target}
    found = alice.session(first)
    assert found.json["changeNumber"] == searching.json["changeNumber"] + 1
    assert found.header("ETag") != searching.header("ETag")
    stale = alice.send("GET", session_path("lobby-a"),
                       headers=(("If-None-Match", searching.header("ETag") or ""),))
    assert stale.status == 200


def test_the_target_session_holds_every_matched_player(clock: ManualClock, alice: Console,
                                                       bob: Console) -> None:
    alice.ticket(alice.lobby("lobby-a"))
    ticket = bob.ticket(bob.lobby("lobby-b"))
    clock.now += 2
    target = bob.details(ticket)["targetSessionRef"]
    answer = alice.session(target)
    assert answer.status == 200 and answer.json["changeNumber"] >= 1
    members = answer.json["members"].values()
    assert sorted(m["constants"]["system"]["xuid"] for m in members) == [XUID_A, XUID_B]
    assert all(m.get("reserved") for m in members)
    assert answer.json["constants"]["system"]["maxMembersCount"] == 8
    joined = alice.send("PUT", session_path(target["name"]), {"members": {"me": {
        "constants": {"system": {"xuid": XUID_A}}, "properties": {"system": {"active": True}}}}})
    assert joined.status == 200


def test_preserve_always_makes_the_ticket_session_the_target(clock: ManualClock, alice: Console,
                                                             bob: Console) -> None:
    game = alice.lobby("game-a", "GameSession")
    mine = alice.ticket(game, preserve="always")
    theirs = bob.ticket(bob.lobby("lobby-b"))
    clock.now += 2
    assert alice.details(mine)["targetSessionRef"] == game
    assert bob.details(theirs)["targetSessionRef"] == game
    answer = alice.session(game)
    xuids = sorted(m["constants"]["system"]["xuid"] for m in answer.json["members"].values())
    assert xuids == [XUID_A, XUID_B]
    assert matchmaking_of(answer)["targetSessionRef"] == game


def test_a_lone_ticket_expires(clock: ManualClock, alice: Console) -> None:
    lobby = alice.lobby("lobby-a")
    ticket = alice.ticket(lobby, give_up=120)
    clock.now += 59.9
    assert alice.details(ticket)["ticketStatus"] == "searching"
    clock.now += 0.1
    assert alice.details(ticket)["ticketStatus"] == "expired"
    assert matchmaking_of(alice.session(lobby))["status"] == "expired"


def test_give_up_duration_ends_the_search_sooner(clock: ManualClock, alice: Console) -> None:
    ticket = alice.ticket(alice.lobby("lobby-a"), give_up=10)
    clock.now += 10
    assert alice.details(ticket)["ticketStatus"] == "expired"


def test_progress_is_worked_out_in_time_order(clock: ManualClock, alice: Console,
                                              bob: Console, emu: emulator.Emulator) -> None:
    """Read long after: what was matched before the first ticket expired stays matched,
    and a ticket that expired first is not matched with a later one."""
    early = alice.ticket(alice.lobby("lobby-a"))
    clock.now += 30
    late = bob.ticket(bob.lobby("lobby-b"))
    clock.now += 500
    assert [alice.details(t)["ticketStatus"] for t in (early, late)] == ["found", "found"]
    carol = Console(emu, "carol", XUID_C)
    gone = carol.ticket(carol.lobby("lobby-c"))
    clock.now += 61
    dave = Console(emu, "dave", "2533274800000004")
    fresh = dave.ticket(dave.lobby("lobby-d"))
    clock.now += 3
    assert carol.details(gone)["ticketStatus"] == "expired"
    assert dave.details(fresh)["ticketStatus"] == "searching"


def test_hoppers_match_apart(clock: ManualClock, alice: Console, bob: Console) -> None:
    quick = alice.ticket(alice.lobby("lobby-a"))
    ranked = bob.ticket(bob.lobby("lobby-b"), hopper=RANKED)
    clock.now += 5
    assert alice.details(quick)["ticketStatus"] == "searching"
    assert bob.details(ranked, RANKED)["ticketStatus"] == "searching"
    assert bob.send("GET", f"{RANKED}/stats").json["population"] == 1


def test_a_party_fills_a_match_by_itself(clock: ManualClock, alice: Console, bob: Console) -> None:
    party = alice.lobby("party")
    bob.send("PUT", session_path("party"), {"members": {"me": {
        "constants": {"system": {"xuid": XUID_B}}}}})
    ticket = alice.ticket(party)
    assert alice.send("GET", f"{HOPPER}/stats").json["population"] == 2
    clock.now += 2
    details = alice.details(ticket)
    assert details["ticketStatus"] == "found"
    assert [p["xuid"] for p in details["players"]] == [XUID_A, XUID_B]


def test_a_ticket_without_a_session_is_never_matched(clock: ManualClock, alice: Console,
                                                     bob: Console) -> None:
    lone = alice.ticket(None)
    other = bob.ticket(bob.lobby("lobby-b"))
    clock.now += 5
    assert alice.details(lone)["ticketStatus"] == "searching"
    assert bob.details(other)["ticketStatus"] == "searching"


def test_cancel_tells_the_ticket_session(alice: Console) -> None:
    """After TestDeleteMatchTicketAsync: DELETE with no body is 202; the ticket is gone and
    the ticket session reads `canceled` (what the library's match client waits for)."""
    lobby = alice.lobby("lobby-a")
    ticket = alice.ticket(lobby)
    answer = alice.send("DELETE", f"{HOPPER}/tickets/{ticket}", contract="103")
    assert answer.status == 202
    assert alice.send("GET", f"{HOPPER}/tickets/{ticket}", contract="103").status == 404
    assert matchmaking_of(alice.session(lobby))["status"] == "canceled"


def test_unknown_hoppers_and_tickets(alice: Console) -> None:
    assert alice.send("POST", f"{BASE}/hoppers/Nope", {}, contract="103").status == 404
    ticket = alice.ticket(None)
    assert alice.send("GET", f"{RANKED}/tickets/{ticket}", contract="103").status == 404
    assert alice.send("POST", HOPPER, {"giveUpDuration": "soon"}).status == 400
    assert alice.send("POST", HOPPER, {"ticketSessionRef": {"scid": SCID}}).status == 400


# -- the configured schedule --------------------------------------------------------------


def test_the_schedule_comes_from_the_config(clock: ManualClock) -> None:
    emu = emulator.Emulator(config(found_after_s=10, expires_after_s=30, players_per_match=3),
                            clock=clock, wallclock=clock)
    consoles = [Console(emu, f"user{i}", f"25332748000001{i:02d}") for i in range(3)]
    tickets = [c.ticket(c.lobby(f"lobby-{i}")) for i, c in enumerate(consoles)]
    assert consoles[0].send("GET", f"{HOPPER}/stats").json["waitTime"] == 10
    clock.now += 9
    assert consoles[0].details(tickets[0])["ticketStatus"] == "searching"
    clock.now += 1
    assert {consoles[0].details(t)["ticketStatus"] for t in tickets} == {"found"}


def test_a_zero_schedule_matches_at_once(clock: ManualClock) -> None:
    emu = emulator.Emulator(config(found_after_s=0, expires_after_s=30, players_per_match=1),
                            clock=clock, wallclock=clock)
    alice = Console(emu, "alice", XUID_A)
    lobby = alice.lobby("lobby-a")
    ticket = alice.ticket(lobby)
    assert alice.details(ticket)["ticketStatus"] == "found"
    assert matchmaking_of(alice.session(lobby))["status"] == "found"
