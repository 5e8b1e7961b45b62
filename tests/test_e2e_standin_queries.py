"""End to end over a real loopback socket: three consoles set their activity in the
stand-in, and a `friends` query (GetActivitiesForSocialGroup in the client library's
MultiplayerTests.cpp) returns only the handles of the asker's friends, with what the
library reads (titleId, ownerXuid, relatedInfo, customProperties)."""

from __future__ import annotations

from typing import Any

import httpx

from mpsdproxy import emulator

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
ANNA, BEN, CORA = "2533274800000011", "2533274800000012", "2533274800000013"
CONFIG = emulator.parse_config(f"""
version: 1
title_id: 1122334455
friends:
  "{ANNA}": ["{BEN}"]
scids:
  {SCID}:
    templates:
      LobbySession:
        constants:
          system: {{version: 1, maxMembersCount: 8, visibility: open, inviteProtocol: game}}
          custom: {{}}
""")


def headers(user: str) -> dict[str, str]:
    return {"x-xbl-contract-version": "107", "Authorization": f"XBL3.0 x={user};token-{user}"}


def lobby_of(client: httpx.Client, user: str, xuid: str) -> dict[str, Any]:
    """Join a lobby of one's own, say what it is playing, and set it as one's activity."""
    name = f"lobby-{user}"
    joined = client.put(f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/{name}",
                        headers=headers(user), json={
                            "members": {"me": {
                                "constants": {"system": {"xuid": xuid, "initialize": True}},
                                "properties": {"system": {"active": True}}}},
                            "properties": {"custom": {"Map": f"map-of-{user}"}}})
    assert joined.status_code == 201, joined.text
    created = client.post("/handles", headers=headers(user), json={
        "type": "activity", "version": 1,
        "sessionRef": {"scid": SCID, "templateName": "LobbySession", "name": name}})
    assert created.status_code == 201, created.text
    return created.json()


def test_a_friends_query_over_the_wire_returns_only_friends() -> None:
    with emulator.running(CONFIG) as (_, port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        lobby_of(client, "anna", ANNA)
        bens = lobby_of(client, "ben", BEN)
        lobby_of(client, "cora", CORA)

        answer = client.post("/handles/query?include=relatedInfo,customProperties",
                             headers=headers("anna"), json={
                                 "type": "activity", "scid": SCID, "owners": {"people": {
                                     "moniker": "friends", "monikerXuid": ANNA}}})

        assert answer.status_code == 200
        assert answer.headers["Cache-Control"] == "no-cache, no-store"
        [found] = answer.json()["results"]
        assert found["id"] == bens["id"] and found["ownerXuid"] == BEN
        assert found["titleId"] == "1122334455"
        assert found["customProperties"] == {"Map": "map-of-ben"}
        assert found["relatedInfo"]["membersCount"] == 1
        assert found["relatedInfo"]["maxMembersCount"] == 8

        everyone = client.post("/handles/query", headers=headers("anna"), json={
            "type": "activity", "scid": SCID, "owners": {"xuids": [ANNA, BEN, CORA]}})
        assert sorted(h["ownerXuid"] for h in everyone.json()["results"]) == [ANNA, BEN, CORA]
