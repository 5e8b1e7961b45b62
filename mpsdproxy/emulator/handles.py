"""Session handles (/handles): create, read, delete, query, and reach their session.

Creating a handle that names an existing session bumps that session's
`changeNumber` and ETag, as the service does. A handle whose session does not
exist reads as a session that doesn't exist (204).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from typing import Any

from mpsdproxy import model
from mpsdproxy.emulator import protocol
from mpsdproxy.emulator import sessions
from mpsdproxy.emulator.documents import handle_type
from mpsdproxy.emulator.documents import session_ref
from mpsdproxy.emulator.protocol import Identity
from mpsdproxy.emulator.protocol import Refusal
from mpsdproxy.emulator.state import Directory
from mpsdproxy.resources import Kind
from mpsdproxy.resources import Resource

__all__ = [
    "post_handle",
    "get_handle",
    "delete_handle",
    "get_handle_session",
    "put_handle_session",
    "query_handles",
]

#: Most handles a query returns.
QUERY_LIMIT = 100


def post_handle(directory: Directory, request: model.Request, resource: Resource,
                who: Identity) -> model.Response:
    body = protocol.json_object(request)
    kind = handle_type(body)
    if body.get("version") != 1 or isinstance(body.get("version"), bool):
        raise Refusal("400.bad-request",
                      f"version should be 1, not {json.dumps(body.get('version'))}.")
    ref = session_ref(body.get("sessionRef"), "sessionRef")
    target = Resource(Kind.SESSION, ref["scid"], ref["templateName"], ref["name"])
    directory.template(target)
    handle = copy.deepcopy(body)
    handle.update(id=str(uuid.uuid4()), type=kind, version=1, sessionRef=ref,
                  ownerXuid=directory.xuid(who.user), createTime=directory.now())
    directory.handles[handle["id"]] = handle
    directory.touch(target.key or "")
    location = f"/handles/{handle['id']}"
    return directory.reply("201.created", session=handle, headers=[
        ("Location", location), ("Content-Location", location), protocol.NO_STORE])


def _handle_of(directory: Directory, resource: Resource) -> dict[str, Any]:
    handle = directory.handles.get((resource.element or "").lower())
    if handle is None:
        raise Refusal("404.not-found", f"The handle {resource.element!r} wasn't found.")
    return handle


def get_handle(directory: Directory, request: model.Request, resource: Resource,
               who: Identity) -> model.Response:
    return directory.reply("200.ok", session=_handle_of(directory, resource),
                           headers=[protocol.NO_STORE])


def delete_handle(directory: Directory, request: model.Request, resource: Resource,
                  who: Identity) -> model.Response:
    handle = directory.handles.pop(_handle_of(directory, resource)["id"])
    return directory.reply("200.ok", session=handle, headers=[protocol.NO_STORE])


def _handle_session(directory: Directory, resource: Resource) -> Resource:
    ref = _handle_of(directory, resource)["sessionRef"]
    return Resource(Kind.SESSION, ref["scid"], ref["templateName"], ref["name"])


def get_handle_session(directory: Directory, request: model.Request, resource: Resource,
                       who: Identity) -> model.Response:
    return sessions.get_session(directory, request, _handle_session(directory, resource), who)


def put_handle_session(directory: Directory, request: model.Request, resource: Resource,
                       who: Identity) -> model.Response:
    return sessions.put_session(directory, request, _handle_session(directory, resource), who)


def _owners(body: Mapping[str, Any]) -> list[str] | None:
    """The owners.xuids filter of a handle query (None: any owner)."""
    owners = body.get("owners")
    if owners is None or protocol.require_object(owners, "owners").get("xuids") is None:
        return None
    xuids = owners["xuids"]
    if not isinstance(xuids, list) or not all(isinstance(x, str) for x in xuids):
        raise Refusal("400.bad-request", "owners.xuids must be a list of strings.")
    return xuids


def query_handles(directory: Directory, request: model.Request, resource: Resource,
                  who: Identity) -> model.Response:
    body = protocol.json_object(request)
    kind = handle_type(body)
    scid = body.get("scid")
    xuids = _owners(body)
    include = {p.strip().lower() for p in protocol.query_of(request).get("include", "").split(",")}
    results = []
    for handle in directory.handles.values():
        if handle["type"] != kind or (xuids is not None and handle["ownerXuid"] not in xuids):
            continue
        if isinstance(scid, str) and handle["sessionRef"]["scid"].lower() != scid.lower():
            continue
        item = dict(handle)
        related = _related_info(directory, handle)
        if "relatedinfo" in include and related is not None:
            item["relatedInfo"] = related
        results.append(item)
    return directory.reply("200.ok", session={"results": results[:QUERY_LIMIT]},
                           headers=[protocol.NO_STORE])


def _related_info(directory: Directory, handle: Mapping[str, Any]) -> dict[str, Any] | None:
    ref = handle["sessionRef"]
    key = f"{ref['scid']}~{ref['templateName']}~{ref['name']}".lower()
    session = directory.sessions.get(key)
    if session is None:
        return None
    document = session.document
    system = document["constants"]["system"]
    properties = document["properties"]["system"]
    return {
        "visibility": system.get("visibility", "open"),
        "joinRestriction": properties.get("joinRestriction", "none"),
        "closed": bool(properties.get("closed", False)),
        "maxMembersCount": system.get("maxMembersCount", 100),
        "membersCount": document["membersInfo"].get("count", 0),
    }
