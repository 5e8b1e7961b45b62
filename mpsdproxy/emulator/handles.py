"""Session handles (/handles): create, read, delete, and reach their session.

Creating a handle that names an existing session bumps that session's
`changeNumber` and ETag, as the service does. A handle whose session does not
exist reads as a session that doesn't exist (204). What each kind of handle
carries is `handle_kinds`; queries (`POST /handles/query`) are `handle_queries`.
"""

from __future__ import annotations

import json
from typing import Any

from mpsdproxy import model
from mpsdproxy.emulator import handle_queries
from mpsdproxy.emulator import protocol
from mpsdproxy.emulator import sessions
from mpsdproxy.emulator.documents import handle_type
from mpsdproxy.emulator.documents import session_ref
from mpsdproxy.emulator.handle_kinds import build_handle
from mpsdproxy.emulator.handle_kinds import forget_expired
from mpsdproxy.emulator.handle_kinds import replaced_by
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

#: Most handles a query returns (kept here for callers of the earlier layout).
QUERY_LIMIT = handle_queries.QUERY_LIMIT


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
    handle = build_handle(directory, body, kind, ref, who)
    for old in replaced_by(directory, handle):
        del directory.handles[old]
    directory.handles[handle["id"]] = handle
    directory.touch(target.key or "")
    location = f"/handles/{handle['id']}"
    return directory.reply("201.created", session=handle, headers=[
        ("Location", location), ("Content-Location", location), protocol.NO_STORE])


def _handle_of(directory: Directory, resource: Resource) -> dict[str, Any]:
    forget_expired(directory)
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
    target = _handle_session(directory, resource)
    return _located(directory, target, sessions.get_session(directory, request, target, who))


def put_handle_session(directory: Directory, request: model.Request, resource: Resource,
                       who: Identity) -> model.Response:
    target = _handle_session(directory, resource)
    return _located(directory, target, sessions.put_session(directory, request, target, who))


def _located(directory: Directory, target: Resource, answer: model.Response) -> model.Response:
    """A session reached by its handle answers with where it lives (Content-Location): the
    library takes the session's reference from it (protocol notes §2.2,
    `GetCurrentSessionByHandle`, `WriteSessionUsingSubpath`)."""
    session = directory.sessions.get(target.key or "")
    if session is None or answer.status not in (200, 201):
        return answer
    return answer.with_headers(answer.headers.with_value("Content-Location", session.path))


def query_handles(directory: Directory, request: model.Request, resource: Resource,
                  who: Identity) -> model.Response:
    """POST /handles/query: activity (and other) handles by owner, search handles by
    filter (see `handle_queries`)."""
    return handle_queries.query_handles(directory, request, resource, who)
