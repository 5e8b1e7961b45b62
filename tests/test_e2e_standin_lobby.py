"""End to end: the stand-in over a real loopback socket, two simulated consoles (two
users) in one lobby, as MultiplayerManager drives it: both join, one elects itself host
by writing its member's deviceToken to `properties.system.host`, and both read back the
same host. A large session answers each caller as `members.me`.

The request bodies follow the library's writes (MultiplayerTests.cpp: Join's
defaultJsonWrite, hostDeviceTokenJson, memberStatusActiveJson), with our own data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mpsdproxy import emulator

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/party-7"
ARENA = f"/serviceconfigs/{SCID}/sessionTemplates/LargeSession/sessions/arena-7"


class Console:
    """One console with one signed-in user, speaking HTTP/1.1 to the stand-in."""

    def __init__(self, port: int, user: str, xuid: str) -> None:
        self.xuid = xuid
        self.etag: str | None = None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers={
            "x-xbl-contract-version": "107",
            "Authorization": f"XBL3.0 x={user};token-of-{user}",
            "Content-Type": "application/json; charset=utf-8",
        })

    def join(self, path: str) -> dict[str, Any]:
        return self.write(path, {"members": {"me": {
            "constants": {"system": {"xuid": self.xuid, "initialize": True},
                          "custom": "ready to play"},
            "properties": {"system": {"active": True}},
        }}})

    def write(self, path: str, body: dict[str, Any], if_match: str | None = None
              ) -> dict[str, Any]:
        headers = {"If-Match": if_match} if if_match else {}
        answer = self.http.put(path, json=body, headers=headers)
        assert answer.status_code in (200, 201), (answer.status_code, answer.text)
        self.etag = answer.headers["ETag"]
        return answer.json()

    def read(self, path: str) -> dict[str, Any]:
        answer = self.http.get(path)
        assert answer.status_code == 200, (answer.status_code, answer.text)
        self.etag = answer.headers["ETag"]
        return answer.json()

    def me(self, document: dict[str, Any]) -> dict[str, Any] | None:
        """The current user as the library finds it: by XUID among the members."""
        return next((m for m in document["members"].values()
                     if m["constants"]["system"]["xuid"] == self.xuid), None)


def host_of(document: dict[str, Any]) -> str | None:
    """Who hosts, as MultiplayerManager decides: the member whose deviceToken is the
    session's properties.system.host."""
    host = document["properties"]["system"].get("host")
    found = [m["constants"]["system"]["xuid"] for m in document["members"].values()
             if host and m.get("deviceToken") == host]
    assert len(found) <= 1, "device tokens must be distinct per console"
    return found[0] if found else None


@pytest.fixture
def consoles() -> Iterator[tuple[Console, Console]]:
    with emulator.running() as (_, port):
        first = Console(port, "console-a", "2533274800000001")
        second = Console(port, "console-b", "2533274800000002")
        try:
            yield first, second
        finally:
            first.http.close()
            second.http.close()


def test_two_consoles_elect_one_host(consoles: tuple[Console, Console]) -> None:
    a, b = consoles
    created = a.join(LOBBY)
    assert host_of(created) is None
    lobby = b.join(LOBBY)
    tokens = {m["constants"]["system"]["xuid"]: m["deviceToken"]
              for m in lobby["members"].values()}
    assert len(set(tokens.values())) == 2
    assert {m["gamertag"] for m in lobby["members"].values()} == {"Synthetic Ann",
                                                                  "Synthetic Bo"}

    mine = a.me(a.read(LOBBY))
    assert mine is not None
    elected = a.write(LOBBY, {"properties": {"system": {"host": mine["deviceToken"]}}},
                      if_match=a.etag)
    assert elected["properties"]["system"]["host"] == tokens[a.xuid]

    seen_by_a, seen_by_b = a.read(LOBBY), b.read(LOBBY)
    assert host_of(seen_by_a) == host_of(seen_by_b) == a.xuid
    assert b.me(seen_by_b) is not None and a.me(seen_by_a) is not None
    assert seen_by_a["changeNumber"] == seen_by_b["changeNumber"] == 3

    b.write(LOBBY, {"members": {"me": None}})
    assert host_of(a.read(LOBBY)) == a.xuid


def test_a_large_session_answers_each_caller_as_me(consoles: tuple[Console, Console]) -> None:
    a, b = consoles
    first = a.join(ARENA)
    assert first["constants"]["system"]["capabilities"]["large"] is True
    assert list(first["members"]) == ["me"]
    second = b.join(ARENA)
    assert list(second["members"]) == ["me"]
    assert second["members"]["me"]["constants"]["system"]["xuid"] == b.xuid
    assert second["membersInfo"]["count"] == 2
    for console in (a, b):
        document = console.read(ARENA)
        assert list(document["members"]) == ["me"]
        assert document["members"]["me"]["constants"]["system"]["xuid"] == console.xuid
        assert document["members"]["me"]["constants"]["custom"] == "ready to play"
