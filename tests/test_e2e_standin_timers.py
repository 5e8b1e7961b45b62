"""End to end over real loopback sockets: a reservation with a 1 s timeout expires.

Once on the stand-in's real clock (a short, bounded wait), once on an injected
clock served by `emulator.running(emulator=...)`. The reservation and its
timeout are sent as the client library sends them: `reserve_0` in a session
PUT, the timeout in `constants.system.reservedRemovalTimeout` of the new
session (multiplayer_session_constants.cpp `_Serialize`).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from conftest import ManualClock

from mpsdproxy import emulator

SCID = "5c8e0d1a-2b3c-4d5e-8f90-a1b2c3d40002"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/Lobby/sessions/night"
LOBBY_KEY = f"{SCID}~lobby~night"
HOST, GUEST = "2533274800000011", "2533274800000012"
CONFIG = emulator.EmulatorConfig(scids=(emulator.ScidConfig(SCID, (emulator.TemplateConfig(
    "Lobby", {"system": {"version": 1, "maxMembersCount": 4}, "custom": {}}),)),))
HEADERS = {"x-xbl-contract-version": "107", "Authorization": "XBL3.0 x=host;token-of-host"}
CREATE = {
    "constants": {"system": {"reservedRemovalTimeout": 1000}},
    "members": {"me": {"constants": {"system": {"xuid": HOST}},
                       "properties": {"system": {"active": True}}},
                "reserve_0": {"constants": {"system": {"xuid": GUEST}}}},
}


def _xuids(document: dict[str, Any]) -> list[str]:
    return [m["constants"]["system"]["xuid"] for m in document["members"].values()]




def test_reservation_expires_on_the_real_clock() -> None:
    with emulator.running(CONFIG) as (_, port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HEADERS) as client:
        created = client.put(LOBBY, json=CREATE)
        assert created.status_code == 201 and _xuids(created.json()) == [HOST, GUEST]
        assert "nextTimer" in created.json() and "Expires" in created.headers
        time.sleep(1.1)
        after = client.get(LOBBY)
        assert after.status_code == 200 and _xuids(after.json()) == [HOST]
        assert after.json()["changeNumber"] == created.json()["changeNumber"] + 1
        assert after.headers["ETag"] != created.headers["ETag"]


def test_reservation_expires_on_an_injected_clock_and_the_switches_see_it() -> None:
    clock = ManualClock(100.0)
    emu = emulator.Emulator(CONFIG, clock=clock)
    with emulator.running(emulator=emu) as (_, port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HEADERS) as client:
        created = client.put(LOBBY, json=CREATE)
        assert created.status_code == 201
        clock.now += 0.99
        assert _xuids(client.get(LOBBY).json()) == [HOST, GUEST]
        clock.now += 0.01
        listed = client.get("/_emulator/sessions").json()
        assert [(s["key"], s["changeNumber"]) for s in listed] == [
            (LOBBY_KEY, created.json()["changeNumber"] + 1)]
        after = client.get(LOBBY)
        assert _xuids(after.json()) == [HOST] and "nextTimer" not in after.json()
        assert after.headers["ETag"] == listed[0]["etag"]
