"""What the service writes into members and sessions itself, beyond what a request merged.

The client library reads these fields from every member
(`multiplayer_session_member.cpp`, `_Deserialize`): `gamertag`, `deviceToken`,
`activeTitleId` (a decimal string), `joinTime`, `turn` (a bool), `roles` (role
type -> role name). MultiplayerManager elects a host by writing one member's
`deviceToken` to `properties.system.host` and comparing it with each member's
(protocol notes §5.3b), so every console needs its own token. Sessions get
`properties.system.turn` and `matchmaking` as in the public capture's 201 (protocol
notes §3.2), and the restrictions every session reports (`multiplayer_session.cpp`
reads `joinRestriction`/`readRestriction` from `properties.system`).

Pure functions over plain JSON data, like `documents.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mpsdproxy.emulator.config import default_gamertag

__all__ = [
    "Writer",
    "device_token",
    "stamp_reserved",
    "stamp_joined",
    "session_defaults",
    "refresh_service_fields",
]


def device_token(user: str) -> str:
    """A caller's device token when its member names none: 32 hex digits, stable per
    caller and distinct between callers (one caller is one simulated console)."""
    return hashlib.sha256(f"device:{user}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Writer:
    """Who writes, as the service knows it from the token: the XUID, the console's
    device token, the title, whether the principal includes a server, and how the
    service names users (`gamertags`: XUID -> gamertag, else "Player" + last 4)."""

    xuid: str
    device_token: str
    title_id: int
    server: bool = False
    gamertags: Mapping[str, str] = field(default_factory=dict)

    def gamertag(self, xuid: str) -> str:
        return self.gamertags.get(xuid) or default_gamertag(xuid)


def stamp_reserved(member: dict[str, Any], xuid: str, writer: Writer) -> None:
    """A reservation: the service knows the user (gamertag) but not yet a device."""
    member["gamertag"] = writer.gamertag(xuid)


def stamp_joined(member: dict[str, Any], writer: Writer, now: str,
                 token: str | None = None) -> None:
    """The caller joined (or accepted its reservation) from its console: the fields the
    service takes from the token and the clock."""
    member["gamertag"] = writer.gamertag(writer.xuid)
    member["deviceToken"] = token or writer.device_token
    member["activeTitleId"] = str(writer.title_id)
    member["joinTime"] = now


def _capabilities(constants: Mapping[str, Any]) -> Mapping[str, Any]:
    system = constants.get("system")
    found = system.get("capabilities") if isinstance(system, dict) else None
    return found if isinstance(found, dict) else {}


def session_defaults(constants: Mapping[str, Any]) -> dict[str, Any]:
    """`properties.system` of a new session before the request merges in.

    `turn` and `matchmaking` as the service writes them (protocol notes §3.2). The
    restrictions default to "none", the library's documented default
    (MultiplayerSessionProperties.ReadRestriction "Defaults to none"); a template
    with the `userAuthorizationStyle` capability (console-style sessions: only
    local users may join uninvited) defaults to "local" [INFERRED].
    """
    restriction = "local" if _capabilities(constants).get("userAuthorizationStyle") else "none"
    return {"turn": [], "matchmaking": {}, "joinRestriction": restriction,
            "readRestriction": restriction}


def _turn_flags(document: dict[str, Any]) -> None:
    """Each member's `turn` is true when its index is in `properties.system.turn`."""
    turn = document["properties"]["system"].get("turn")
    indices = {i for i in turn if isinstance(i, int)} if isinstance(turn, list) else set()
    for key, member in document["members"].items():
        if key.isdigit() and int(key) in indices:
            member["turn"] = True
        else:
            member.pop("turn", None)


def _role_counts(document: dict[str, Any]) -> None:
    """Each role's `count` and `memberXuids` from the members' `roles`, as the service
    reports them in `roleTypes` (the library reads both, multiplayer_session.cpp
    `roleTypes`)."""
    role_types = document.get("roleTypes")
    if not isinstance(role_types, dict):
        return
    for type_name, role_type in role_types.items():
        roles = role_type.get("roles") if isinstance(role_type, dict) else None
        if not isinstance(roles, dict):
            continue
        for role_name, role in roles.items():
            if not isinstance(role, dict):
                continue
            xuids = [
                str(m["constants"]["system"].get("xuid"))
                for m in document["members"].values()
                if isinstance(m.get("roles"), dict) and m["roles"].get(type_name) == role_name
            ]
            role["count"] = len(xuids)
            role["memberXuids"] = xuids


def refresh_service_fields(document: dict[str, Any]) -> None:
    """Recompute what the service derives after every write: members' `turn`, roles'
    counts."""
    _turn_flags(document)
    _role_counts(document)
