"""What each kind of handle looks like as the service writes and returns it.

A POST /handles body is checked and completed per `type` (protocol notes §3.4):

- activity: the service adds `titleId` (a decimal string), `ownerXuid`, `id`,
  `inviteProtocol`, `gameTypes` and `createTime` (the public capture's POST
  /handles answer). The library reads `titleId` with a string extractor and
  converts it (`DeserializeMultiplayerActivityDetails`, multiplayer_serializers.cpp
  ≈ line 35), so it is a string here too. `inviteProtocol` is the session's
  `constants.system.inviteProtocol`, else "game"; `gameTypes` names the title id
  for the console (`era`) and the PC (`uwp-desktop`), without a package name,
  which the config does not know. One activity per caller per SCID: a new one
  replaces the caller's old one (`ClearActivity`, multiplayer_service.cpp ≈ line
  610, treats more than one as an error).
- invite: `invitedXuid` is required (one invite per POST, `SendInvites` ≈ line 720);
  the answer adds `id`, `senderXuid` (the caller) and `expiration`, as the library's
  mocked inviteResponseJson shows; the library reads only `id`
  (`DeserializeMultiplayerInvite`). An invite stops existing at its expiration:
  reads of it answer 404 and queries skip it. Its lifetime is `INVITE_LIFETIME_S`.
- search: `searchAttributes` `{tags: [str], strings: {name: str}, numbers: {name:
  number}}` as `MultiplayerSearchHandleRequest::Serialize` sends them
  (multiplayer_search_handle_request.cpp ≈ line 70); the answer adds `id`,
  `createTime` and `ownerXuid` (the creator; the library ignores it). One search
  handle per session: a new one replaces the old.
- transfer: the answer is the request plus `id` (the capture's transfer POST).
"""

from __future__ import annotations

import copy
import json
import math
import uuid
from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from typing import Any

from mpsdproxy import jsonbody
from mpsdproxy.emulator.documents import session_ref
from mpsdproxy.emulator.protocol import Identity
from mpsdproxy.emulator.protocol import Refusal
from mpsdproxy.emulator.protocol import require_object
from mpsdproxy.emulator.state import Directory
from mpsdproxy.emulator.state import Session

__all__ = [
    "INVITE_LIFETIME_S",
    "title_id",
    "session_of",
    "build_handle",
    "replaced_by",
    "expired",
    "forget_expired",
]

#: How long an invite handle lives after it is sent (seconds).
INVITE_LIFETIME_S = 3600.0


def title_id(directory: Directory) -> str:
    """The stand-in's title id as handles carry it: a decimal string."""
    return str(directory.config.title_id)


def session_of(directory: Directory, handle: Mapping[str, Any]) -> Session | None:
    """The stored session a handle points to, if it exists."""
    ref = handle["sessionRef"]
    return directory.sessions.get(f"{ref['scid']}~{ref['templateName']}~{ref['name']}".lower())


def _stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="microseconds") \
        .replace("+00:00", "Z")


def _xuid_string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.isdigit():
        raise Refusal("400.bad-request",
                      f"{where} should be a XUID as a decimal string, not {json.dumps(value)}.")
    return value


def _search_attributes(value: Any) -> None:
    """400 unless searchAttributes is {tags: [str], strings: {str: str}, numbers: {str: n}}."""
    data = require_object(value, "searchAttributes")
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise Refusal("400.bad-request", "searchAttributes.tags must be a list of "
                                         "non-empty strings.")
    for part, wanted in (("strings", "a string"), ("numbers", "a number")):
        values = require_object(data.get(part, {}), f"searchAttributes.{part}")
        for name, item in values.items():
            number = isinstance(item, int | float) and not isinstance(item, bool) \
                and math.isfinite(item)
            if (isinstance(item, str) if part == "strings" else number):
                continue
            raise Refusal("400.bad-request", f"searchAttributes.{part}.{name} must be "
                                             f"{wanted}, not {jsonbody.json_kind(item)}.")


def build_handle(directory: Directory, body: Mapping[str, Any], kind: str,
                 ref: dict[str, str], who: Identity) -> dict[str, Any]:
    """The handle document the service stores and answers for a POST /handles body."""
    handle = copy.deepcopy(dict(body))
    handle.update(type=kind, version=1, sessionRef=ref)
    handle_id = str(uuid.uuid4())
    caller = directory.xuid(who.user)
    if kind == "transfer":
        if body.get("originSessionRef") is not None:
            handle["originSessionRef"] = session_ref(body["originSessionRef"],
                                                     "originSessionRef")
        handle["id"] = handle_id
    elif kind == "activity":
        session = session_of(directory, handle)
        protocol = "game"
        if session is not None:
            protocol = session.document["constants"]["system"].get("inviteProtocol", "game")
        tid = title_id(directory)
        handle.update(titleId=tid, ownerXuid=caller, id=handle_id, inviteProtocol=protocol,
                      gameTypes={"uwp-desktop": {"titleId": tid}, "era": {"titleId": tid}},
                      createTime=directory.now())
    elif kind == "invite":
        handle["invitedXuid"] = _xuid_string(body.get("invitedXuid"), "invitedXuid")
        attributes = require_object(body.get("inviteAttributes", {}), "inviteAttributes")
        handle["inviteAttributes"] = {"titleId": title_id(directory), **attributes}
        handle.update(expiration=_stamp(directory.wallclock() + INVITE_LIFETIME_S),
                      id=handle_id, senderXuid=caller)
    else:  # search
        _search_attributes(body.get("searchAttributes", {}))
        handle.update(id=handle_id, createTime=directory.now(), ownerXuid=caller)
    return handle


def replaced_by(directory: Directory, handle: Mapping[str, Any]) -> list[str]:
    """Ids of the stored handles a new one replaces: the owner's activity in the same
    SCID, or the session's search handle."""
    kind, ref = handle["type"], handle["sessionRef"]
    if kind == "activity":
        return [h["id"] for h in directory.handles.values()
                if h["type"] == "activity" and h.get("ownerXuid") == handle["ownerXuid"]
                and h["sessionRef"]["scid"].lower() == ref["scid"].lower()]
    if kind == "search":
        key = (ref["scid"].lower(), ref["templateName"].lower(), ref["name"].lower())
        return [h["id"] for h in directory.handles.values()
                if h["type"] == "search" and key == (h["sessionRef"]["scid"].lower(),
                                                     h["sessionRef"]["templateName"].lower(),
                                                     h["sessionRef"]["name"].lower())]
    return []


def expired(directory: Directory, handle: Mapping[str, Any]) -> bool:
    """Whether an invite has passed its expiration (other handles do not expire)."""
    stamp = handle.get("expiration")
    if handle["type"] != "invite" or not isinstance(stamp, str):
        return False
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return directory.wallclock() >= moment


def forget_expired(directory: Directory) -> None:
    """Drop every invite past its expiration (the service forgets them)."""
    for handle_id in [i for i, h in directory.handles.items() if expired(directory, h)]:
        del directory.handles[handle_id]
