"""Session documents as the service writes them, read the way the client library reads
them: members' service fields, session defaults, host election through deviceToken,
large sessions keyed "me", any-JSON custom constants and servers, roles, contracts
105 and 107, server principals and signatures.

Request bodies are our own data in the shapes the library's unit tests send
(MultiplayerTests.cpp with TestResponses/Multiplayer.json); each test names the one
it follows."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from mpsdproxy import emulator
from mpsdproxy import model

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
BASE = f"/serviceconfigs/{SCID}/sessiontemplates"
LOBBY = f"{BASE}/LobbySession/sessions/lobby"
GAME = f"{BASE}/GameSession/sessions/match"
LARGE = f"{BASE}/LargeSession/sessions/arena"
LOBBY_KEY = f"{SCID}~lobbysession~lobby"
CONFIG = emulator.default_config()
ANN, BO, CY = "2533274800000001", "2533274800000002", "2533274800004321"


class Title:
    """One simulated console: a user hash, a contract version, optionally a signature."""

    def __init__(self, emu: emulator.Emulator, user: str, *, contract: int = 107,
                 signed: bool = False) -> None:
        self.emu, self.user, self.contract, self.signed = emu, user, contract, signed

    def send(self, method: str, target: str, body: Any = None) -> model.Response:
        headers = [("x-xbl-contract-version", str(self.contract)),
                   ("Authorization", f"XBL3.0 x={self.user};token-of-{self.user}")]
        if self.signed:
            headers.append(("Signature", "AAAAAQHaSynthetic"))
        data = b"" if body is None else json.dumps(body).encode()
        return self.emu.handle(model.Request(
            method, f"https://sessiondirectory.xboxlive.com{target}", headers, data))

    def json(self, method: str, target: str, body: Any = None) -> Any:
        answer = self.send(method, target, body)
        assert answer.status in (200, 201), (answer.status, answer.body)
        return json.loads(answer.body)


def join(xuid: str, **system: Any) -> dict[str, Any]:
    """members.me as the library's Join() writes it (MultiplayerTests defaultJsonWrite)."""
    return {"members": {"me": {
        "constants": {"system": {"xuid": xuid, "initialize": True, **system}},
        "properties": {"system": {"active": True}},
    }}}


@pytest.fixture
def emu() -> emulator.Emulator:
    return emulator.Emulator(CONFIG, wallclock=lambda: 1_700_000_000.0)


def _member(document: dict[str, Any], xuid: str) -> dict[str, Any]:
    return next(m for m in document["members"].values()
                if m["constants"]["system"]["xuid"] == xuid)


# -- members as the service writes them ------------------------------------------------


def test_members_carry_what_the_service_adds(emu: emulator.Emulator) -> None:
    ann, cy = Title(emu, "ann"), Title(emu, "cy")
    ann.json("PUT", LOBBY, join(ANN))
    document = cy.json("PUT", LOBBY, join(CY))
    first, second = _member(document, ANN), _member(document, CY)
    assert first["gamertag"] == "Synthetic Ann", "the configured gamertag"
    assert second["gamertag"] == "Player4321", "else Player + the XUID's last four digits"
    assert first["activeTitleId"] == second["activeTitleId"] == str(CONFIG.title_id)
    assert first["joinTime"] == "2023-11-14T22:13:20.000000Z"
    for member in (first, second):
        assert len(member["deviceToken"]) == 32 and int(member["deviceToken"], 16) >= 0
    assert first["deviceToken"] != second["deviceToken"], "one token per console"
    again = ann.json("GET", LOBBY)
    assert _member(again, ANN)["deviceToken"] == first["deviceToken"], "stable per caller"


def test_a_device_token_the_title_names_is_the_members(emu: emulator.Emulator) -> None:
    ann = Title(emu, "ann")
    document = ann.json("PUT", LOBBY, join(ANN, deviceToken="00ff00ff00ff00ff"))
    member = _member(document, ANN)
    assert member["deviceToken"] == "00ff00ff00ff00ff"
    assert "deviceToken" not in member["constants"]["system"]
    assert ann.send("PUT", LOBBY, join(ANN, deviceToken="00FF00FF00FF00FF")).status == 200
    moved = ann.send("PUT", LOBBY, join(ANN, deviceToken="1234"))
    assert moved.status == 409, "a joined member's console does not change"
    assert ann.send("PUT", LOBBY, join(ANN, deviceToken=7)).status == 400


def test_reserved_members_get_a_gamertag_and_the_rest_on_joining(
        emu: emulator.Emulator) -> None:
    """MultiplayerTests TestWriteSessionAsyncWithAddMemberReservation: reserve_0 with a
    custom constant, then the reserved user joins."""
    ann, bo = Title(emu, "ann"), Title(emu, "bo")
    ann.json("PUT", LOBBY, join(ANN))
    reserved = ann.json("PUT", LOBBY, {"members": {"reserve_0": {"constants": {
        "system": {"xuid": BO, "initialize": True}, "custom": {"rank": 7}}}}})
    member = _member(reserved, BO)
    assert member["reserved"] is True and member["gamertag"] == "Synthetic Bo"
    assert not {"deviceToken", "joinTime", "activeTitleId"} & member.keys()
    joined = _member(bo.json("PUT", LOBBY, join(BO)), BO)
    assert "reserved" not in joined and joined["constants"]["custom"] == {"rank": 7}
    assert {"deviceToken", "joinTime", "activeTitleId"} <= joined.keys()


def test_new_sessions_get_the_system_property_defaults(emu: emulator.Emulator) -> None:
    ann = Title(emu, "ann")
    lobby = ann.json("PUT", LOBBY, join(ANN))
    assert lobby["properties"]["system"] == {"turn": [], "matchmaking": {},
                                             "joinRestriction": "none",
                                             "readRestriction": "none"}
    styled = ann.json("PUT", GAME, {**join(ANN), "constants": {"system": {
        "capabilities": {"userAuthorizationStyle": True}}}})
    system = styled["properties"]["system"]
    assert (system["joinRestriction"], system["readRestriction"]) == ("local", "local")
    chosen = ann.json("PUT", f"{BASE}/GameSession/sessions/other", {
        **join(ANN), "properties": {"system": {"joinRestriction": "followed",
                                               "readRestriction": "followed"}}})
    assert chosen["properties"]["system"]["joinRestriction"] == "followed"
    assert chosen["properties"]["system"]["turn"] == []


def test_turn_marks_the_member_whose_turn_it_is(emu: emulator.Emulator) -> None:
    """MultiplayerTests TestWriteSessionAsyncWithTurnAsync (turnJson): the library reads
    each member's `turn` bool."""
    ann, bo = Title(emu, "ann"), Title(emu, "bo")
    ann.json("PUT", LOBBY, join(ANN))
    bo.json("PUT", LOBBY, join(BO))
    document = ann.json("PUT", LOBBY, {"properties": {"system": {"turn": [1]}}})
    assert _member(document, BO)["turn"] is True
    assert "turn" not in _member(document, ANN)


# -- host election (MultiplayerManager) -------------------------------------------------


def test_two_consoles_agree_on_the_host_through_device_tokens(emu: emulator.Emulator) -> None:
    """MultiplayerTests TestWriteSessionAsyncWithSetHostDeviceToken (hostDeviceTokenJson),
    as MultiplayerManager's lobby uses it: the host writes its own member's deviceToken."""
    ann, bo = Title(emu, "ann"), Title(emu, "bo")
    ann.json("PUT", LOBBY, join(ANN))
    document = bo.json("PUT", LOBBY, join(BO))
    token = _member(document, ANN)["deviceToken"]
    ann.json("PUT", LOBBY, {"properties": {"system": {"host": token}}})
    for title in (ann, bo):
        seen = title.json("GET", LOBBY)
        hosts = [m["constants"]["system"]["xuid"] for m in seen["members"].values()
                 if m["deviceToken"] == seen["properties"]["system"]["host"]]
        assert hosts == [ANN]


# -- large sessions -----------------------------------------------------------------------


def test_large_ness_comes_from_the_capability_and_the_caller_is_me(
        emu: emulator.Emulator) -> None:
    """MultiplayerTests TestSessionCapabilities (sessionCapabilitiesJson) and the large
    session document: a request makes a session large; reads and writes key the caller
    as "me", and hide the other members."""
    ann, bo = Title(emu, "ann"), Title(emu, "bo")
    created = ann.json("PUT", GAME, {**join(ANN), "constants": {"system": {
        "capabilities": {"large": True}}}})
    assert list(created["members"]) == ["me"]
    assert created["members"]["me"]["constants"]["system"]["xuid"] == ANN
    written = bo.json("PUT", GAME, join(BO))
    assert list(written["members"]) == ["me"]
    assert written["members"]["me"]["constants"]["system"] == {"xuid": BO, "index": 1}
    assert written["membersInfo"]["count"] == 2
    assert ann.json("GET", GAME)["members"]["me"]["constants"]["system"]["xuid"] == ANN
    assert Title(emu, "cy").json("GET", GAME)["members"] == {}, "not a member: none"
    stored, _ = emu.session(f"{SCID}~gamesession~match") or ({}, "")
    assert sorted(stored["members"]) == ["0", "1"], "stored by index, as the service does"
    assert ann.send("PUT", GAME, {"members": {"reserve_0": {
        "constants": {"system": {"xuid": CY}}}}}).status == 409


def test_the_large_template_is_large_through_its_capability(emu: emulator.Emulator) -> None:
    template = CONFIG.scids[0].template("LargeSession")
    assert template is not None
    assert template.constants["system"]["capabilities"]["large"] is True
    document = Title(emu, "ann").json("PUT", LARGE, join(ANN))
    assert document["constants"]["system"]["capabilities"]["large"] is True
    assert list(document["members"]) == ["me"]


# -- what a write may carry ----------------------------------------------------------------


def test_member_custom_constants_are_any_json(emu: emulator.Emulator) -> None:
    """MultiplayerTests TestWriteSessionAsync (defaultJsonWrite): Join() sends a string."""
    ann = Title(emu, "ann")
    body = join(ANN)
    body["members"]["me"]["constants"]["custom"] = "Hi there"
    document = ann.json("PUT", LOBBY, body)
    assert _member(document, ANN)["constants"]["custom"] == "Hi there"
    assert ann.send("PUT", LOBBY, body).status == 200, "the same value again is no conflict"
    body["members"]["me"]["constants"]["custom"] = ["other"]
    assert ann.send("PUT", LOBBY, body).status == 409, "member constants are fixed"


def test_servers_are_any_json(emu: emulator.Emulator) -> None:
    """MultiplayerTests TestSetServersJson (serversJson): a server entry is a number."""
    ann = Title(emu, "ann")
    ann.json("PUT", LOBBY, join(ANN))
    assert ann.json("PUT", LOBBY, {"servers": {"relay": 42}})["servers"] == {"relay": 42}
    replaced = ann.json("PUT", LOBBY, {"servers": {"relay": {"constants": {"x": 1}}}})
    assert replaced["servers"] == {"relay": {"constants": {"x": 1}}}
    assert ann.json("PUT", LOBBY, {"servers": {"relay": None}})["servers"] == {}


def test_role_types_and_member_roles_are_kept_and_counted(emu: emulator.Emulator) -> None:
    """MultiplayerTests TestSetMutableRoleSettings (roleTypesRequestJson) and the roles a
    member writes (defaultJsonWrite `roles`)."""
    ann, bo = Title(emu, "ann"), Title(emu, "bo")
    ann.json("PUT", LOBBY, {**join(ANN), "roleTypes": {"squad": {"roles": {
        "leader": {"max": 1}, "medic": {"max": 3, "target": 2}}}}})
    body = join(BO)
    body["members"]["me"]["roles"] = {"squad": "medic"}
    bo.json("PUT", LOBBY, body)
    mine = join(ANN)
    mine["members"]["me"]["roles"] = {"squad": "leader"}
    document = ann.json("PUT", LOBBY, mine)
    roles = document["roleTypes"]["squad"]["roles"]
    assert roles["leader"] == {"max": 1, "count": 1, "memberXuids": [ANN]}
    assert roles["medic"] == {"max": 3, "target": 2, "count": 1, "memberXuids": [BO]}
    assert _member(document, BO)["roles"] == {"squad": "medic"}
    body["members"]["me"]["roles"] = {"squad": None}
    document = bo.json("PUT", LOBBY, body)
    assert "roles" not in _member(document, BO)
    assert document["roleTypes"]["squad"]["roles"]["medic"]["count"] == 0
    bad = join(BO)
    bad["members"]["me"]["roles"] = {"squad": 5}
    assert bo.send("PUT", LOBBY, bad).status == 400


# -- contracts 105 and 107 ------------------------------------------------------------------


TIMEOUTS_107 = {"reservedRemovalTimeout": 31000, "inactiveRemovalTimeout": 0,
                "readyRemovalTimeout": 170000, "sessionEmptyTimeout": 0}


def test_contract_105_and_107_each_in_their_own_names(emu: emulator.Emulator) -> None:
    """MultiplayerTests TestWriteSessionAsyncWithTimeouts / WithManagedInitialization /
    WithMemberInitialization (timeoutsJson, managedInitializationJson): 105 names
    `timeouts` and `managedInitialization.autoEvaluate`, 107 flattens the timeouts and
    says `memberInitialization.externalEvaluation`."""
    old, new = Title(emu, "ann", contract=105), Title(emu, "bo", contract=107)
    created = old.json("PUT", GAME, {**join(ANN), "constants": {"system": {
        "timeouts": {"reserved": 31000, "inactive": 0, "ready": 170000, "sessionEmpty": 0},
        "managedInitialization": {"joinTimeout": 4000, "autoEvaluate": True,
                                  "membersNeededToStart": 2}}}})
    system = created["constants"]["system"]
    assert created["contractVersion"] == 105
    assert system["timeouts"] == {"reserved": 31000, "inactive": 0, "ready": 170000,
                                  "sessionEmpty": 0}
    assert system["managedInitialization"] == {"joinTimeout": 4000, "autoEvaluate": True,
                                               "membersNeededToStart": 2}
    assert not {"memberInitialization", "reservedRemovalTimeout"} & system.keys()

    read = new.json("GET", GAME)
    system = read["constants"]["system"]
    assert read["contractVersion"] == 107
    assert {k: system[k] for k in TIMEOUTS_107} == TIMEOUTS_107
    assert system["memberInitialization"] == {"joinTimeout": 4000, "externalEvaluation": False,
                                              "membersNeededToStart": 2}
    assert not {"timeouts", "managedInitialization"} & system.keys()

    same = old.send("PUT", GAME, {"constants": {"system": {"timeouts": {"reserved": 31000}}}})
    assert same.status == 200, "a 105 write is compared in 107 names"
    clash = new.send("PUT", GAME, {"constants": {"system": {"reservedRemovalTimeout": 5}}})
    assert clash.status == 409


# -- principals and signatures ------------------------------------------------------------


def test_only_a_server_principal_deletes_other_members(emu: emulator.Emulator) -> None:
    ann, bo, server = Title(emu, "ann"), Title(emu, "bo"), Title(emu, "gameserver")
    ann.json("PUT", LOBBY, join(ANN))
    bo.json("PUT", LOBBY, join(BO))
    refused = ann.send("PUT", LOBBY, {"members": {"1": None}})
    assert refused.status == 403 and b"server principal" in refused.body
    assert len(ann.json("GET", LOBBY)["members"]) == 2
    own = bo.json("PUT", LOBBY, {"members": {"1": None}})
    assert list(own["members"]) == ["0"], "a caller may delete its own member by index"
    bo.json("PUT", LOBBY, join(BO))
    kicked = server.json("PUT", LOBBY, {"members": {"2": None}})
    assert [m["constants"]["system"]["xuid"] for m in kicked["members"].values()] == [ANN]


def test_require_signature_refuses_unsigned_requests() -> None:
    emu = emulator.Emulator(replace(CONFIG, require_signature=True))
    unsigned = Title(emu, "ann").send("PUT", LOBBY, join(ANN))
    assert unsigned.status == 403 and b"Signature" in unsigned.body
    assert (unsigned.header("Content-Type") or "").startswith("text/plain")
    signed = Title(emu, "ann", signed=True)
    assert signed.send("PUT", LOBBY, join(ANN)).status == 201
    assert Title(emu, "ann").send("GET", LOBBY).status == 403
    assert signed.send("GET", LOBBY).status == 200


def test_signatures_are_not_required_by_default(emu: emulator.Emulator) -> None:
    assert CONFIG.require_signature is False
    assert Title(emu, "ann").send("PUT", LOBBY, join(ANN)).status == 201
