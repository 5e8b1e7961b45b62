"""End to end over real sockets: two consoles matchmake through the stand-in as the client
library's MultiplayerManager does (multiplayer_match_client.cpp: create the ticket with
contract 103, read the ticket session until `servers.matchmaking` says found, then join
the target session it names), and the ticket reaches "found"."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from conftest import Launcher
from conftest import ManualClock

from mpsdproxy import emulator

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
BASE = f"/serviceconfigs/{SCID}"
HOPPER = f"{BASE}/hoppers/QuickMatch"
CONFIG_TEXT = f"""\
version: 1
scids:
  {SCID}:
    templates:
      LobbySession:
        constants: {{system: {{version: 1, maxMembersCount: 8, visibility: open}}}}
    hoppers: [QuickMatch]
matchmaking: {{found_after_s: FOUND, expires_after_s: 30, players_per_match: 2}}
"""


def config_text(found_after_s: float) -> str:
    return CONFIG_TEXT.replace("FOUND", str(found_after_s))




class Console:
    """One simulated console: its own connection, user and XUID."""

    def __init__(self, base: str, user: str, xuid: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=10)
        self.user, self.xuid = user, xuid

    def send(self, method: str, path: str, body: Any = None,
             contract: str = "107") -> httpx.Response:
        headers = {"x-xbl-contract-version": contract,
                   "Authorization": f"XBL3.0 x={self.user};token-of-{self.user}",
                   "Content-Type": "application/json; charset=utf-8"}
        content = None if body is None else json.dumps(body).encode()
        return self.client.request(method, path, headers=headers, content=content)

    def join(self, path: str) -> httpx.Response:
        return self.send("PUT", path, {"members": {"me": {
            "constants": {"system": {"xuid": self.xuid, "initialize": True}},
            "properties": {"system": {"active": True}}}}})

    def find_match(self, lobby: str) -> str:
        ticket = self.send("POST", HOPPER, {
            "giveUpDuration": 20, "preserveSession": "never",
            "ticketSessionRef": {"scid": SCID, "templateName": "LobbySession", "name": lobby}},
            contract="103")
        assert ticket.status_code == 200, ticket.text
        assert set(ticket.json()) == {"ticketId", "waitTime"}
        return f"{HOPPER}/tickets/{ticket.json()['ticketId']}"

    def close(self) -> None:
        self.client.close()


def lobby_path(name: str) -> str:
    return f"{BASE}/sessiontemplates/LobbySession/sessions/{name}"


def server_of(answer: httpx.Response) -> dict[str, Any]:
    return answer.json()["servers"]["matchmaking"]["properties"]["system"]


def play(base: str, tick: Any) -> None:
    """Two consoles, each in its own lobby, find one match; `tick()` lets time pass."""
    alice = Console(base, "alice", "2533274800000001")
    bob = Console(base, "bob", "2533274800000002")
    try:
        lobbies = {alice: "lobby-alice", bob: "lobby-bob"}
        for console, name in lobbies.items():
            assert console.join(lobby_path(name)).status_code == 201
        tickets = {console: console.find_match(name) for console, name in lobbies.items()}
        before = {c: c.send("GET", lobby_path(n)) for c, n in lobbies.items()}
        assert {server_of(a)["status"] for a in before.values()} == {"searching"}

        details: dict[Console, dict[str, Any]] = {}
        deadline = time.monotonic() + 10
        while len(details) < 2 and time.monotonic() < deadline:
            tick()
            for console, path in tickets.items():
                got = console.send("GET", path, contract="103")
                assert got.status_code == 200
                if got.json()["ticketStatus"] == "found":
                    details[console] = got.json()
        assert len(details) == 2, "the tickets were never found"
        target = details[alice]["targetSessionRef"]
        assert details[bob]["targetSessionRef"] == target

        for console, name in lobbies.items():
            after = console.send("GET", lobby_path(name))
            assert server_of(after) == {"status": "found", "statusDetails": "",
                                        "typicalWait": server_of(before[console])[
                                            "typicalWait"], "targetSessionRef": target}
            assert after.json()["changeNumber"] > before[console].json()["changeNumber"]
            assert after.headers["etag"] != before[console].headers["etag"]

        game = f"{BASE}/sessiontemplates/{target['templateName']}/sessions/{target['name']}"
        reserved = alice.send("GET", game).json()["members"]
        assert sorted(m["constants"]["system"]["xuid"] for m in reserved.values()) == [
            alice.xuid, bob.xuid]
        for console in (alice, bob):
            assert console.join(game).status_code == 200
        joined = bob.send("GET", game).json()
        assert joined["membersInfo"]["accepted"] == 2
    finally:
        alice.close()
        bob.close()


def test_a_match_is_found_in_process_server() -> None:
    clock = ManualClock(5000.0)
    emu = emulator.Emulator(emulator.parse_config(config_text(2)), clock=clock)

    def tick() -> None:
        clock.now += 1

    with emulator.running(emulator=emu) as (_, port):
        play(f"http://127.0.0.1:{port}", tick)


def test_a_match_is_found_by_mpsdproxy_emulate(tmp_path: Path, launch: Launcher) -> None:
    path = tmp_path / "standin.yaml"
    path.write_text(config_text(0.5))
    standin = launch.standin("--config", str(path))
    play(standin.url, lambda: time.sleep(0.3))
