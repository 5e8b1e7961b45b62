"""Handles and handle queries in the stand-in, as the client library sends and reads them.

Each request re-expresses (with our own ids and values) what a test of the client
library's MultiplayerTests.cpp sends, and checks the fields its parser reads
(multiplayer_serializers.cpp, multiplayer_search_handle_details.cpp):
activities (SetActivity, GetActivitiesForUsers, GetActivitiesForSocialGroup),
search handles (CreateSearchHandle, GetSearchHandles with and without a social
group), invites (SendInvites) and transfer handles (SetTransferHandle).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import ManualClock

from mpsdproxy import emulator
from mpsdproxy import model

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
BASE = f"/serviceconfigs/{SCID}/sessiontemplates"
ALICE, BOB, CAROL = "2533274800000001", "2533274800000002", "2533274800000003"
USERS = {ALICE: "alice", BOB: "bob", CAROL: "carol"}
TITLE_ID = 987654321

CONFIG_TEXT = f"""
version: 1
title_id: {TITLE_ID}
friends:
  "{ALICE}": ["{BOB}"]
  "{BOB}": ["{ALICE}", "{CAROL}"]
scids:
  {SCID}:
    templates:
      LobbySession:
        constants:
          system: {{version: 1, maxMembersCount: 8, visibility: open, inviteProtocol: party}}
          custom: {{}}
      GameSession:
        constants:
          system: {{version: 1, maxMembersCount: 4, visibility: open}}
          custom: {{}}
      BrowseSession:
        constants:
          system: {{version: 1, maxMembersCount: 6, visibility: open}}
          custom: {{}}
"""




class Title:
    """Sends requests to one Emulator as the user whose XUID it is given.

    Each request comes 301 s after the last on the rate-limit clock, so the search
    handles' FGRL windows (1 per 15 s, 20 per 300 s) never refuse one here.
    """

    def __init__(self) -> None:
        self.wallclock = ManualClock(1700000000.0)
        self.spacing = ManualClock(1700000000.0)
        self.emu = emulator.Emulator(emulator.parse_config(CONFIG_TEXT), clock=self.spacing,
                                     wallclock=self.wallclock)

    def __call__(self, xuid: str, method: str, target: str,
                 body: Any = None) -> model.Response:
        headers = [("x-xbl-contract-version", "107"),
                   ("Authorization", f"XBL3.0 x={USERS[xuid]};token")]
        data = b"" if body is None else json.dumps(body).encode()
        self.spacing.now += 301
        return self.emu.handle(model.Request(
            method, f"https://sessiondirectory.xboxlive.com{target}", headers, data))

    def join(self, xuid: str, template: str, name: str, **custom: Any) -> None:
        """Create or join a session as `xuid` (and set session custom properties)."""
        body: dict[str, Any] = {"members": {"me": {
            "constants": {"system": {"xuid": xuid, "initialize": True}},
            "properties": {"system": {"active": True}}}}}
        if custom:
            body["properties"] = {"custom": custom}
        answer = self(xuid, "PUT", f"{BASE}/{template}/sessions/{name}", body)
        assert answer.status in (200, 201), answer.body

    def handle(self, xuid: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
        answer = self(xuid, "POST", "/handles", body)
        assert answer.status == status, answer.body
        return json.loads(answer.body) if status == 201 else {}

    def query(self, xuid: str, body: dict[str, Any],
              include: str = "relatedInfo,customProperties") -> list[dict[str, Any]]:
        answer = self(xuid, "POST", f"/handles/query?include={include}", body)
        assert answer.status == 200, answer.body
        return json.loads(answer.body)["results"]


def ref(template: str, name: str) -> dict[str, str]:
    return {"scid": SCID, "templateName": template, "name": name}


def activity(template: str, name: str) -> dict[str, Any]:
    return {"type": "activity", "sessionRef": ref(template, name), "version": 1}


@pytest.fixture
def title() -> Title:
    return Title()


# -- activities (MultiplayerTests: SetActivity, GetActivitiesForUsers/SocialGroup) ------


def test_an_activity_carries_the_title_and_the_session_invite_protocol(title: Title) -> None:
    title.join(ALICE, "LobbySession", "lobby-a")
    handle = title.handle(ALICE, activity("LobbySession", "lobby-a"))
    assert handle["titleId"] == str(TITLE_ID)
    assert handle["ownerXuid"] == ALICE
    assert handle["inviteProtocol"] == "party"
    assert handle["gameTypes"]["era"] == {"titleId": str(TITLE_ID)}
    assert handle["createTime"].endswith("Z") and handle["id"]
    other = title.handle(ALICE, activity("GameSession", "no-such-game"))
    assert other["inviteProtocol"] == "game"


def test_a_new_activity_replaces_the_callers_old_one(title: Title) -> None:
    title.join(ALICE, "LobbySession", "lobby-a")
    first = title.handle(ALICE, activity("LobbySession", "lobby-a"))
    second = title.handle(ALICE, activity("LobbySession", "lobby-b"))
    mine = title.query(ALICE, {"type": "activity", "scid": SCID, "owners": {"xuids": [ALICE]}})
    assert [h["id"] for h in mine] == [second["id"]]
    assert title(ALICE, "GET", f"/handles/{first['id']}").status == 404


def test_activities_for_users_carry_what_the_library_reads(title: Title) -> None:
    title.join(BOB, "LobbySession", "lobby-b", Joinability="joinable_by_friends", Map="Dunes")
    handle = title.handle(BOB, activity("LobbySession", "lobby-b"))
    [found] = title.query(ALICE, {"type": "activity", "scid": SCID,
                                  "owners": {"xuids": [BOB, CAROL]}})
    assert found["id"] == handle["id"] and found["type"] == "activity"
    assert found["titleId"] == str(TITLE_ID) and int(found["titleId"]) < 2 ** 32
    assert found["ownerXuid"] == BOB
    assert found["customProperties"] == {"Joinability": "joinable_by_friends", "Map": "Dunes"}
    assert found["relatedInfo"] == {"visibility": "open", "joinRestriction": found[
        "relatedInfo"]["joinRestriction"], "closed": False, "maxMembersCount": 8,
        "membersCount": 1}
    bare = title.query(ALICE, {"type": "activity", "scid": SCID,
                               "owners": {"xuids": [BOB]}}, include="")
    assert "relatedInfo" not in bare[0] and "customProperties" not in bare[0]


def test_a_friends_query_returns_only_the_friends_handles(title: Title) -> None:
    for xuid, name in ((ALICE, "lobby-a"), (BOB, "lobby-b"), (CAROL, "lobby-c")):
        title.join(xuid, "LobbySession", name)
        title.handle(xuid, activity("LobbySession", name))
    for moniker in ("friends", "People", "favorites"):
        found = title.query(ALICE, {"type": "activity", "scid": SCID, "owners": {
            "people": {"moniker": moniker, "monikerXuid": ALICE}}})
        assert [h["ownerXuid"] for h in found] == [BOB], moniker
    of_bob = title.query(BOB, {"type": "activity", "scid": SCID, "owners": {
        "people": {"moniker": "friends", "monikerXuid": BOB}}})
    assert sorted(h["ownerXuid"] for h in of_bob) == [ALICE, CAROL]
    nobody = title.query(CAROL, {"type": "activity", "scid": SCID, "owners": {
        "people": {"moniker": "friends", "monikerXuid": CAROL}}})
    assert nobody == []


def test_malformed_social_queries_are_refused(title: Title) -> None:
    for people in ({"moniker": "rivals", "monikerXuid": ALICE},
                   {"moniker": "friends", "monikerXuid": 2533274800000001},
                   {"moniker": "friends"}):
        answer = title(ALICE, "POST", "/handles/query",
                       {"type": "activity", "scid": SCID, "owners": {"people": people}})
        assert answer.status == 400, people


# -- search handles (MultiplayerTests: CreateSearchHandle, GetSearchHandles) ----------


def search(name: str, tags: list[str] | None = None, strings: dict[str, str] | None = None,
           numbers: dict[str, float] | None = None,
           template: str = "BrowseSession") -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if tags is not None:
        attributes["tags"] = tags
    if strings is not None:
        attributes["strings"] = strings
    if numbers is not None:
        attributes["numbers"] = numbers
    return {"type": "search", "sessionRef": ref(template, name), "version": 1,
            "searchAttributes": attributes}


def browse(title: Title, **extra: Any) -> list[str]:
    body = {"type": "search", "scid": SCID, "templateName": "BrowseSession", "global": True,
            **extra}
    found = title.query(ALICE, body, include="relatedInfo,roleInfo,customProperties")
    return [h["sessionRef"]["name"] for h in found]


@pytest.fixture
def browsing(title: Title) -> Title:
    """Three search handles a second apart: s1 (ctf, 12.5, mics), s2 (ctf, 30), s3 (dm, 7).
    Bob is in s1 and Carol in s3; s2's session does not exist."""
    title.join(ALICE, "LobbySession", "lobby-a")
    title.join(BOB, "BrowseSession", "s1", Mode="ctf")
    title.join(CAROL, "BrowseSession", "s3")
    title.handle(BOB, search("s1", ["MicsRequired"], {"Mode": "CTF"}, {"Skill": 12.5}))
    title.wallclock.now += 1
    title.handle(ALICE, search("s2", [], {"Mode": "ctf"}, {"Skill": 30}))
    title.wallclock.now += 1
    title.handle(CAROL, search("s3", ["casual"], {"Mode": "dm"}, {"Skill": 7}))
    title.handle(ALICE, search("other", [], {"Mode": "ctf"}, template="GameSession"))
    return title


def test_a_search_handle_answers_as_the_library_parses_it(browsing: Title) -> None:
    created = browsing.handle(BOB, search("s1", ["girlsonly"], {"Class": "A"},
                                          {"Skill_D": 10.5, "Skill_I": 14}))
    assert created["type"] == "search" and created["id"] and created["createTime"]
    assert created["searchAttributes"]["numbers"] == {"Skill_D": 10.5, "Skill_I": 14}
    [found] = [h for h in browsing.query(ALICE, {
        "type": "search", "scid": SCID, "templateName": "BrowseSession", "global": True,
        "filter": "Strings/Class eq 'A'"}, include="relatedInfo,roleInfo,customProperties")]
    assert found["id"] == created["id"], "a new search handle replaces the session's old one"
    assert found["relatedInfo"]["membersCount"] == 1
    assert found["relatedInfo"]["maxMembersCount"] == 6
    assert found["relatedInfo"]["sessionOwners"] == []
    assert found["customProperties"] == {"Mode": "ctf"}


def test_a_search_result_carries_the_sessions_role_types(title: Title) -> None:
    written = title(BOB, "PUT", f"{BASE}/BrowseSession/sessions/r1", {
        "roleTypes": {"squad": {"roles": {"medic": {"max": 2}}}},
        "members": {"me": {"constants": {"system": {"xuid": BOB, "initialize": True}},
                           "roles": {"squad": "medic"}}}})
    assert written.status == 201, written.body
    title.handle(BOB, search("r1", ["squads"]))
    [found] = title.query(ALICE, {"type": "search", "scid": SCID,
                                  "templateName": "BrowseSession"}, include="roleInfo")
    assert found["roleInfo"]["roleTypes"]["squad"]["roles"]["medic"]["max"] == 2
    assert "relatedInfo" not in found


def test_search_filters_on_strings_numbers_and_tags(browsing: Title) -> None:
    assert browse(browsing) == ["s1", "s2", "s3"]
    assert browse(browsing, filter="", orderBy="") == ["s1", "s2", "s3"]
    assert browse(browsing, filter="Strings/Mode eq 'ctf'") == ["s1", "s2"]
    assert browse(browsing, filter="strings/mode ne 'CTF'") == ["s3"]
    assert browse(browsing, filter="Numbers/Skill gt 12.5") == ["s2"]
    assert browse(browsing, filter="Numbers/Skill ge 12.5 AND Numbers/Skill le 20") == ["s1"]
    assert browse(browsing, filter="Numbers/Skill lt 10 or Tags/tag eq 'micsrequired'") == \
        ["s1", "s3"]
    assert browse(browsing, filter="Tags/any(d:d eq 'casual')") == ["s3"]
    assert browse(browsing, filter="(Strings/Mode eq 'ctf' or Strings/Mode eq 'dm') and "
                                   "Numbers/Skill gt 10") == ["s1", "s2"]
    assert browse(browsing, filter="Numbers/Missing eq 1") == []
    assert browse(browsing, filter=f"MemberXuids/any(d:d eq '{CAROL}')") == ["s3"]
    assert browse(browsing, filter=f"OwnerXuids/any(d:d eq '{ALICE}')") == ["s2"]


def test_search_orders_by_attribute_or_timestamp(browsing: Title) -> None:
    assert browse(browsing, orderBy="Numbers/Skill desc") == ["s2", "s1", "s3"]
    assert browse(browsing, orderBy="Skill asc") == ["s3", "s1", "s2"]
    assert browse(browsing, orderBy="Timestamp desc") == ["s3", "s2", "s1"]
    browsing.handle(BOB, search("s4", [], {}, {}))
    assert browse(browsing, orderBy="Numbers/Skill desc")[-1] == "s4"


def test_search_with_a_social_group_keeps_sessions_with_a_friend(browsing: Title) -> None:
    people = {"people": {"moniker": "favorites", "monikerXuid": ALICE}}
    assert browse(browsing, sessionMembers=people) == ["s1"]
    people = {"people": {"moniker": "friends", "monikerXuid": BOB}}
    assert browse(browsing, sessionMembers=people, filter="Numbers/Skill lt 10") == ["s3"]


@pytest.mark.parametrize("extra", [
    {"filter": "Strings/Mode eq"}, {"filter": "Strings/Mode like 'ctf'"},
    {"filter": "Numbers/Skill eq 'high'"}, {"filter": "Strings/Mode eq 3"},
    {"filter": "Mode eq 'ctf'"}, {"filter": "(Strings/Mode eq 'ctf'"},
    {"filter": "Levels/any(d:d eq 'x')"}, {"orderBy": "Numbers/Skill sideways"},
    {"templateName": None}, {"scid": None}, {"filter": 7},
])
def test_unreadable_search_queries_are_refused(title: Title, extra: dict[str, Any]) -> None:
    body = {"type": "search", "scid": SCID, "templateName": "BrowseSession", "global": True}
    body.update(extra)
    body = {k: v for k, v in body.items() if v is not None}
    assert title(ALICE, "POST", "/handles/query", body).status == 400


@pytest.mark.parametrize("attributes", [
    {"tags": "ctf"}, {"tags": [1]}, {"strings": {"Mode": 3}}, {"numbers": {"Skill": "high"}},
    {"numbers": {"Skill": True}}, {"strings": []},
])
def test_malformed_search_attributes_are_refused(title: Title,
                                                 attributes: dict[str, Any]) -> None:
    body = {**search("s9"), "searchAttributes": attributes}
    assert title(ALICE, "POST", "/handles", body).status == 400


# -- invites and transfers (MultiplayerTests: SendInvites, SetTransferHandle) ----------


def test_an_invite_names_sender_invitee_and_expires(title: Title) -> None:
    title.join(ALICE, "LobbySession", "lobby-a")
    body = {"type": "invite", "sessionRef": ref("LobbySession", "lobby-a"), "version": 1,
            "invitedXuid": BOB, "inviteAttributes": {"titleId": str(TITLE_ID),
                                                     "contextString": "join_me"}}
    invite = title.handle(ALICE, body)
    assert invite["id"] and invite["senderXuid"] == ALICE and invite["invitedXuid"] == BOB
    assert invite["inviteAttributes"] == {"titleId": str(TITLE_ID), "contextString": "join_me"}
    assert invite["expiration"] == "2023-11-14T23:13:20.000000Z"
    assert title(BOB, "GET", f"/handles/{invite['id']}").status == 200
    title.wallclock.now += 3600
    assert title(BOB, "GET", f"/handles/{invite['id']}").status == 404
    title.handle(ALICE, {**body, "invitedXuid": None}, status=400)
    title.handle(ALICE, {**body, "invitedXuid": "bob"}, status=400)


def test_a_transfer_handle_is_the_request_and_its_id(title: Title) -> None:
    body = {"originSessionRef": ref("LobbySession", "lobby-a"),
            "sessionRef": ref("GameSession", "game-a"), "type": "transfer", "version": 1}
    handle = title.handle(ALICE, body)
    assert set(handle) == {*body, "id"}
    assert {k: handle[k] for k in body} == body
