"""The social graph behind monikers: who is whose friend, from the config's `friends`.

A handle query names a social group as `{"people": {"moniker": ..., "monikerXuid":
...}}`: under `owners` for activity handles (MultiplayerActivityQueryPostRequest,
multiplayer_activity_query_post_request.cpp ≈ line 70) and under `sessionMembers`
for search handles (multiplayer_query_search_handle_request.cpp ≈ line 115). The
library's tests send the monikers "friends" (activitiesForSocialGroupRequestJson in
TestResponses/Multiplayer.json) and "favorites" (searchHandlesWithSocialGroupRequestJson);
the documentation names "People" and "Favorites".

The stand-in has one graph, the config's `friends: {xuid: [xuid, ...]}`, read as
listed (A listing B does not make B list A, as following is one-way). Every known
moniker uses it: the config does not say who is a favorite. Another moniker is a
400, as the service refuses a social group it does not know.
"""

from __future__ import annotations

import json
from typing import Any

from mpsdproxy.emulator.config import EmulatorConfig
from mpsdproxy.emulator.protocol import Refusal
from mpsdproxy.emulator.protocol import require_object

__all__ = ["MONIKERS", "friends_of", "moniker_group"]

#: Social groups a query may name (matched without case).
MONIKERS = ("people", "friends", "favorites")


def friends_of(config: EmulatorConfig, xuid: str) -> frozenset[str]:
    """Whom `xuid` lists as friends in the config (empty when it lists no one)."""
    return frozenset(config.friends.get(xuid, ()))


def moniker_group(config: EmulatorConfig, value: Any, where: str) -> frozenset[str] | None:
    """The XUIDs a `{people: {moniker, monikerXuid}}` object selects; None when `value`
    is absent or names no `people`. 400 for a malformed one or an unknown moniker."""
    if value is None:
        return None
    people = require_object(value, where).get("people")
    if people is None:
        return None
    people = require_object(people, f"{where}.people")
    moniker, xuid = people.get("moniker"), people.get("monikerXuid")
    if not isinstance(moniker, str) or moniker.lower() not in MONIKERS:
        raise Refusal("400.bad-request", f"{where}.people.moniker should be one of "
                                         f"{', '.join(MONIKERS)}, not {moniker!r}.")
    if not isinstance(xuid, str) or not xuid.isdigit():
        raise Refusal("400.bad-request", f"{where}.people.monikerXuid should be a XUID "
                                         f"as a decimal string, not {json.dumps(xuid)}.")
    return friends_of(config, xuid)
