"""POST /handles/query: handles by owner or social group, search handles by filter.

Two bodies reach this URI (protocol notes §1.4, §3.4):

- Activity queries (`GetActivitiesForUsers` / `GetActivitiesForSocialGroup`,
  multiplayer_service.cpp ≈ lines 830-960) send `{"type": "activity", "scid",
  "owners": {"xuids": [...]}}` or `"owners": {"people": {"moniker", "monikerXuid"}}`.
  A moniker selects the handles owned by the moniker user's friends in the config
  (`social`); the user's own handles are not among them.
- Search-handle queries (`GetSearchHandles` ≈ line 990) send `{"type": "search",
  "scid", "templateName", "filter", "orderBy", "global": true}` and optionally
  `"sessionMembers": {"people": {...}}`, which keeps handles whose session has a
  member in the group. `filter` and `orderBy` are read by `search_filter`. The
  library refuses a query without `scid` or `templateName`, so the stand-in
  answers 400 for one.

Each result is the stored handle plus, as `?include=` asks: `relatedInfo`
(`visibility`, `joinRestriction`, `closed`, `maxMembersCount`, `membersCount`,
and for search handles `sessionOwners`, the XUIDs of the session's owners),
`customProperties` (the session's `properties.custom`) and `roleInfo`
(`{"roleTypes": ...}` of the session). The library reads them in
`DeserializeMultiplayerActivityDetails` (multiplayer_serializers.cpp ≈ line 9) and
`XblMultiplayerSearchHandleDetails::Deserialize` (multiplayer_search_handle_details.cpp
≈ line 80; it requires `membersCount` and `maxMembersCount` whenever `relatedInfo` is
there). A handle whose session no longer exists has none of them. The library's
GET_ACTIIVITIES_SUBPATH asks for relatedInfo and customProperties, and
GET_SEARCH_HANDLES_SUBPATH for relatedInfo, roleInfo and customProperties.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy.emulator import protocol
from mpsdproxy.emulator import search_filter
from mpsdproxy.emulator.documents import handle_type
from mpsdproxy.emulator.documents import member_xuid
from mpsdproxy.emulator.handle_kinds import forget_expired
from mpsdproxy.emulator.handle_kinds import session_of
from mpsdproxy.emulator.protocol import Identity
from mpsdproxy.emulator.protocol import Refusal
from mpsdproxy.emulator.social import moniker_group
from mpsdproxy.emulator.state import Directory
from mpsdproxy.emulator.state import Session
from mpsdproxy.resources import Resource

__all__ = ["QUERY_LIMIT", "query_handles", "owner_of", "search_subject"]

#: Most handles a query returns (uri-handlesquerypost.md: up to 100).
QUERY_LIMIT = 100


def query_handles(directory: Directory, request: model.Request, resource: Resource,
                  who: Identity) -> model.Response:
    body = protocol.json_object(request)
    kind = handle_type(body)
    forget_expired(directory)
    if kind == "search":
        found = _search(directory, body)
    else:
        found = _owned(directory, body, kind)
    include = {p.strip().lower()
               for p in protocol.query_of(request).get("include", "").split(",")}
    results = [_result(directory, h, include) for h in found[:QUERY_LIMIT]]
    return directory.reply("200.ok", session={"results": results},
                           headers=[protocol.NO_STORE])


def owner_of(handle: Mapping[str, Any]) -> str | None:
    """Whose handle it is: its owner, or for an invite its sender."""
    owner = handle.get("ownerXuid", handle.get("senderXuid"))
    return owner if isinstance(owner, str) else None


def _string_field(body: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise Refusal("400.bad-request", f"{name} is required (a non-empty string).")
    return value


def _owners(directory: Directory, body: Mapping[str, Any]) -> frozenset[str] | None:
    """The owners a query selects: `owners.xuids`, or a moniker's group (None: any)."""
    owners = body.get("owners")
    if owners is None:
        return None
    owners = protocol.require_object(owners, "owners")
    if owners.get("xuids") is not None:
        xuids = owners["xuids"]
        if not isinstance(xuids, list) or not all(isinstance(x, str) for x in xuids):
            raise Refusal("400.bad-request", "owners.xuids must be a list of strings.")
        return frozenset(xuids)
    return moniker_group(directory.config, owners, "owners")


def _optional_text(body: Mapping[str, Any], name: str) -> str | None:
    """`filter` or `orderBy`: absent, or a string that may be empty (the library's
    older serializer always sends `filter`, empty when the title gave none)."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise Refusal("400.bad-request", f"{name} must be a string, not "
                                         f"{jsonbody.json_kind(value)}.")
    return value


def _in_scid(handle: Mapping[str, Any], scid: str | None) -> bool:
    return scid is None or handle["sessionRef"]["scid"].lower() == scid.lower()


def _owned(directory: Directory, body: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    scid = _string_field(body, "scid", required=False)
    owners = _owners(directory, body)
    return [h for h in directory.handles.values()
            if h["type"] == kind and _in_scid(h, scid)
            and (owners is None or owner_of(h) in owners)]


def _member_xuids(session: Session | None) -> list[str]:
    if session is None:
        return []
    found = (member_xuid(m) for m in session.document.get("members", {}).values())
    return [x for x in found if x is not None]


def _session_owners(session: Session | None) -> list[str]:
    """The XUIDs of the members `properties.system.owners` names (by index)."""
    if session is None:
        return []
    members = session.document.get("members", {})
    indices = session.document["properties"]["system"].get("owners") or []
    found = (member_xuid(members.get(str(i))) for i in indices if isinstance(i, int | str))
    return [x for x in found if x is not None]


def search_subject(directory: Directory, handle: Mapping[str, Any]) -> search_filter.Subject:
    """What a filter sees of a search handle. OwnerXuids are the session's owners, or
    the handle's creator when the session names no owners."""
    attributes = handle.get("searchAttributes") or {}
    session = session_of(directory, handle)
    owners = _session_owners(session) or [x for x in [owner_of(handle)] if x]
    return search_filter.Subject(
        strings=attributes.get("strings") or {}, numbers=attributes.get("numbers") or {},
        tags=attributes.get("tags") or [], member_xuids=_member_xuids(session),
        owner_xuids=owners, timestamp=str(handle.get("createTime", "")),
        handle_id=handle["id"])


def _search(directory: Directory, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    scid = _string_field(body, "scid", required=True)
    template = (_string_field(body, "templateName", required=True) or "").lower()
    group = moniker_group(directory.config, body.get("sessionMembers"), "sessionMembers")
    try:
        keep = search_filter.parse_filter(_optional_text(body, "filter"))
        order = _optional_text(body, "orderBy")
        search_filter.parse_order(order)
    except search_filter.FilterError as e:
        raise Refusal("400.bad-request", f"The search query can't be read: {e}.") from None
    subjects = [search_subject(directory, h) for h in directory.handles.values()
                if h["type"] == "search" and _in_scid(h, scid)
                and h["sessionRef"]["templateName"].lower() == template]
    chosen = [s for s in subjects if keep(s)
              and (group is None or not group.isdisjoint(s.member_xuids))]
    return [directory.handles[s.handle_id] for s in search_filter.ordered(chosen, order)]


def _related_info(session: Session, search: bool) -> dict[str, Any]:
    document = session.document
    system = document["constants"]["system"]
    properties = document["properties"]["system"]
    info: dict[str, Any] = {
        "visibility": system.get("visibility", "open"),
        "joinRestriction": properties.get("joinRestriction", "none"),
        "closed": bool(properties.get("closed", False)),
        "maxMembersCount": system.get("maxMembersCount", 100),
        "membersCount": document["membersInfo"].get("count", 0),
    }
    if search:
        info["sessionOwners"] = _session_owners(session)
    return info


def _result(directory: Directory, handle: Mapping[str, Any],
            include: Iterable[str]) -> dict[str, Any]:
    item = dict(handle)
    session = session_of(directory, handle)
    if session is None:
        return item
    if "relatedinfo" in include:
        item["relatedInfo"] = _related_info(session, handle["type"] == "search")
    if "customproperties" in include:
        item["customProperties"] = copy.deepcopy(
            session.document["properties"].get("custom") or {})
    role_types = session.document.get("roleTypes")
    if "roleinfo" in include and isinstance(role_types, dict):
        item["roleInfo"] = {"roleTypes": copy.deepcopy(role_types)}
    return item
