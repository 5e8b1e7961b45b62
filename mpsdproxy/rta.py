"""Real-Time Activity (RTA) messages: the websocket that tells a title its session changed.

MultiplayerManager re-reads a session only when a shoulder tap arrives over
`wss://rta.xboxlive.com/connect` (subprotocol `rta.xboxlive.com.V2`). Each
websocket text frame is one JSON array whose first element is the message
type (protocol notes §3.5, from the public capture's `raw/052_w.txt`)::

    client -> [1, 1, "https://sessiondirectory.xboxlive.com/connections/"]   subscribe
    server -> [1, 1, 0, 0, {"ConnectionId": "<connection id>"}]             its result
    server -> [3, 0, {"ncid": "<id>", "shoulderTaps": [{                   an event
                 "timestamp": "...", "subscription": "<member subscription id>",
                 "resourceType": "mpsd/session",
                 "resource": "<scid>~<template>~<name>",
                 "branch": "<branch>", "changeNumber": 2}]}]
    client -> [2, 5, 0]                                                      unsubscribe
    server -> [2, 5, 0]                                                      its result
    server -> [4]                                                            resync

The session directory's subscription is to `.../connections/`: its result
carries the connection id, which the title writes into its member
(`properties.system.connection`, with `properties.system.subscription`), and
from then on every change of a session it is a member of arrives as a tap on
that subscription. `decode` reads any of these (None for what is not one),
the `*_message` functions write them. Nothing here imports mitmproxy.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SUBPROTOCOL",
    "SUBPROTOCOLS",
    "chosen_subprotocol",
    "CONNECTIONS_URI",
    "RESOURCE_TYPE",
    "Type",
    "Status",
    "Tap",
    "Message",
    "decode",
    "session_key",
    "subscribe_message",
    "subscribe_result_message",
    "subscribe_error_message",
    "unsubscribe_message",
    "unsubscribe_result_message",
    "tap_message",
    "resync_message",
]

SUBPROTOCOL = "rta.xboxlive.com.V2"
#: Every subprotocol the service accepts, the one it prefers first. The client library
#: offers only V2; the public capture's console opens its privacy subscriptions with
#: the older `rta.xboxlive.com`, and the service answers 101 with that one, its frames
#: the same as V2's.
SUBPROTOCOLS = (SUBPROTOCOL, "rta.xboxlive.com")
#: What a title subscribes to for session-change shoulder taps.
CONNECTIONS_URI = "https://sessiondirectory.xboxlive.com/connections/"
RESOURCE_TYPE = "mpsd/session"


class Type(enum.IntEnum):
    """The first element of every RTA message."""

    SUBSCRIBE = 1
    UNSUBSCRIBE = 2
    EVENT = 3
    RESYNC = 4


class Status(enum.IntEnum):
    """A subscribe or unsubscribe result's status (0 is success)."""

    SUCCESS = 0
    UNKNOWN_RESOURCE = 1
    SUBSCRIPTION_LIMIT_REACHED = 2
    NO_RESOURCE_DATA = 3
    THROTTLED = 1001
    SERVICE_UNAVAILABLE = 1002


@dataclass(frozen=True, slots=True)
class Tap:
    """One shoulder tap: this session changed, to this changeNumber."""

    resource: str  # "<scid>~<template>~<name>", as the service names the session
    change_number: int | None
    branch: str | None = None
    subscription: str | None = None  # the member's subscription id
    timestamp: str | None = None

    @property
    def session(self) -> str:
        """The session's key as `resources.Resource.key` spells it (lower case)."""
        return self.resource.lower()


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded RTA message. Which fields are set depends on `type` and direction:
    a subscribe has `sequence` and `uri`; its result `sequence`, `status`,
    `subscription_id` and `data`; an event `subscription_id`, `data` and its `taps`."""

    type: Type
    sequence: int | None = None
    uri: str | None = None
    status: int | None = None
    subscription_id: int | None = None
    data: Any = None
    taps: tuple[Tap, ...] = ()

    @property
    def connection_id(self) -> str | None:
        """The connection id a subscribe result to `.../connections/` carries."""
        if isinstance(self.data, dict):
            value = self.data.get("ConnectionId")
            return value if isinstance(value, str) else None
        return None


def chosen_subprotocol(offered: Iterable[str]) -> str | None:
    """The subprotocol the service answers a handshake offering `offered` with (each item
    a `Sec-WebSocket-Protocol` value, possibly a comma-separated list); None when it
    offers none of `SUBPROTOCOLS`, which the service refuses."""
    tokens = {token.strip() for value in offered for token in value.split(",")}
    return next((protocol for protocol in SUBPROTOCOLS if protocol in tokens), None)


def session_key(resource: str) -> str:
    """A tap's `resource` as a session key (`scid~template~name`, lower case)."""
    return resource.lower()


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _taps(data: Any) -> tuple[Tap, ...]:
    listed = data.get("shoulderTaps") if isinstance(data, dict) else None
    if not isinstance(listed, list):
        return ()
    taps = []
    for item in listed:
        # The library skips a tap whose resource is not scid~template~name
        # (multiplayer_subscription.cpp, ~L90-105).
        if (not isinstance(item, dict) or not isinstance(item.get("resource"), str)
                or len(item["resource"].split("~")) != 3):
            continue
        taps.append(Tap(item["resource"], _int(item.get("changeNumber")),
                        item.get("branch") if isinstance(item.get("branch"), str) else None,
                        item.get("subscription")
                        if isinstance(item.get("subscription"), str) else None,
                        item.get("timestamp") if isinstance(item.get("timestamp"), str)
                        else None))
    return tuple(taps)


def decode(text: str | bytes, *, from_client: bool) -> Message | None:
    """The RTA message a text frame holds, or None for anything else. `from_client`
    tells a subscribe (`[1, seq, uri]`) from its result (`[1, seq, status, id, data]`)."""
    # Some titles pad a frame with NULs after the JSON (the public capture's privacy
    # subscriptions end in three): the message is the JSON.
    text = text.rstrip(b"\x00 \t\r\n") if isinstance(text, bytes) else text.rstrip("\x00 \t\r\n")
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, list) or not value or _int(value[0]) not in iter(Type):
        return None
    kind = Type(value[0])
    rest = value[1:]
    if kind is Type.RESYNC:
        return Message(kind)
    if kind is Type.EVENT:
        if len(rest) < 2:
            return None
        return Message(kind, subscription_id=_int(rest[0]), data=rest[1], taps=_taps(rest[1]))
    if kind is Type.SUBSCRIBE and from_client:
        if len(rest) < 2 or not isinstance(rest[1], str):
            return None
        return Message(kind, sequence=_int(rest[0]), uri=rest[1])
    if kind is Type.SUBSCRIBE:
        if len(rest) < 2:
            return None
        return Message(kind, sequence=_int(rest[0]), status=_int(rest[1]),
                       subscription_id=_int(rest[2]) if len(rest) > 2 else None,
                       data=rest[3] if len(rest) > 3 else None)
    if len(rest) < 2:  # unsubscribe: [2, seq, id] from the client, [2, seq, status] back
        return None
    if from_client:
        return Message(kind, sequence=_int(rest[0]), subscription_id=_int(rest[1]))
    return Message(kind, sequence=_int(rest[0]), status=_int(rest[1]))


def _text(value: list[Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def subscribe_message(sequence: int, uri: str = CONNECTIONS_URI) -> str:
    return _text([Type.SUBSCRIBE, sequence, uri])


def subscribe_result_message(sequence: int, status: int, subscription_id: int,
                             data: Any = None) -> str:
    return _text([Type.SUBSCRIBE, sequence, status, subscription_id, data])


def subscribe_error_message(sequence: int, status: int) -> str:
    """A failed subscribe's result: sequence and status only (the library reads no more of
    it: real_time_activity_connection.cpp SubscribeResponseHandler)."""
    return _text([Type.SUBSCRIBE, sequence, status])


def unsubscribe_message(sequence: int, subscription_id: int) -> str:
    return _text([Type.UNSUBSCRIBE, sequence, subscription_id])


def unsubscribe_result_message(sequence: int, status: int) -> str:
    return _text([Type.UNSUBSCRIBE, sequence, status])


def tap_message(subscription_id: int, taps: list[Tap], ncid: str) -> str:
    """An event carrying shoulder taps, as the service sends them."""
    listed = [{"timestamp": t.timestamp, "subscription": t.subscription,
               "resourceType": RESOURCE_TYPE, "resource": t.resource, "branch": t.branch,
               "changeNumber": t.change_number} for t in taps]
    return _text([Type.EVENT, subscription_id, {"ncid": ncid, "shoulderTaps": listed}])


def resync_message() -> str:
    return _text([Type.RESYNC])
