"""Session queries, batch queries and template listings (protocol notes §1.3)."""

from __future__ import annotations

from typing import Any

from mpsdproxy import model
from mpsdproxy.emulator import protocol
from mpsdproxy.emulator.documents import find_member
from mpsdproxy.emulator.documents import member_status
from mpsdproxy.emulator.documents import take
from mpsdproxy.emulator.protocol import Identity
from mpsdproxy.emulator.protocol import Refusal
from mpsdproxy.emulator.state import Directory
from mpsdproxy.emulator.state import Session
from mpsdproxy.resources import Resource

__all__ = ["query_sessions", "batch_query", "list_templates", "get_template"]

#: The contract version template listings report.
TEMPLATE_CONTRACT_VERSION = 107


def query_sessions(directory: Directory, request: model.Request, resource: Resource,
                   who: Identity) -> model.Response:
    _query_scope(directory, resource)
    args = protocol.query_of(request)
    xuid, keyword = args.get("xuid"), args.get("keyword")
    if not xuid and not keyword:
        raise Refusal("400.bad-request", "A session query needs a keyword or an xuid "
                                         "filter (or both).")
    return _session_results(directory, request, resource, who, [xuid] if xuid else [], keyword)


def batch_query(directory: Directory, request: model.Request, resource: Resource,
                who: Identity) -> model.Response:
    _query_scope(directory, resource)
    xuids = protocol.json_object(request).get("xuids")
    if not isinstance(xuids, list) or not xuids or not all(isinstance(x, str) for x in xuids):
        raise Refusal("400.bad-request", "A batch query needs {\"xuids\": [...]}, a "
                                         "non-empty list of strings.")
    return _session_results(directory, request, resource, who, xuids,
                            protocol.query_of(request).get("keyword"))


def _query_scope(directory: Directory, resource: Resource) -> None:
    if resource.template:
        directory.template(resource)
    else:
        directory.require_scid(resource.scid)


def _session_results(directory: Directory, request: model.Request, resource: Resource,
                     who: Identity, xuids: list[str], keyword: str | None) -> model.Response:
    if protocol.flag(request, "private") or protocol.flag(request, "reservations"):
        caller = directory.xuid(who.user)
        if not xuids or any(x != caller for x in xuids):
            raise Refusal("403.forbidden", "private=true and reservations=true need an "
                                           "xuid filter that is the caller's own.")
    limit = take(protocol.query_of(request).get("take"))
    scope = [s for s in sorted(directory.sessions.values(), key=lambda s: s.key)
             if s.scid.lower() == (resource.scid or "").lower()
             and (not resource.template or s.template.name.lower() == resource.template.lower())
             and _listed(request, s, keyword)]
    results: list[dict[str, Any]] = []
    for xuid in xuids:
        for session in scope:
            index = find_member(session.document, xuid)
            if index is not None and _member_listed(request, session, index):
                results.append(_query_result(session, xuid, index))
    if not xuids:
        results = [_query_result(s, None, None) for s in scope]
    return directory.reply("200.ok", session={"results": results[:limit]},
                           headers=[protocol.NO_STORE])


def _listed(request: model.Request, session: Session, keyword: str | None) -> bool:
    document = session.document
    visibility = document["constants"]["system"].get("visibility", "open")
    if visibility == "private" and not protocol.flag(request, "private"):
        return False
    wanted = protocol.query_of(request).get("visibility")
    if wanted and wanted.lower() != str(visibility).lower():
        return False
    if keyword:
        keywords = document["properties"]["system"].get("keywords") or []
        return keyword.lower() in (str(k).lower() for k in keywords)
    return True


def _member_listed(request: model.Request, session: Session, index: str) -> bool:
    status = member_status(session.document["members"][index])
    if status == "reserved":
        return protocol.flag(request, "reservations")
    return status == "active" or protocol.flag(request, "inactive")


def _query_result(session: Session, xuid: str | None, index: str | None) -> dict[str, Any]:
    """One entry of a query's `results` (protocol notes §1.3)."""
    document = session.document
    system = document["properties"]["system"]
    result: dict[str, Any] = {} if xuid is None else {"xuid": xuid}
    member = document["members"].get(index) if index is not None else None
    turn = system.get("turn") or []
    result.update(
        startTime=document.get("startTime"),
        sessionRef={"scid": session.scid, "templateName": session.template.name,
                    "name": session.name},
        accepted=document["membersInfo"].get("accepted", 0),
        status=member_status(member) if member is not None else "active",
        visibility=document["constants"]["system"].get("visibility", "open"),
        joinRestriction=system.get("joinRestriction", "none"),
        myTurn=index is not None and index.isdigit() and int(index) in turn,
        keywords=list(system.get("keywords") or []),
    )
    return result


def list_templates(directory: Directory, request: model.Request, resource: Resource,
                   who: Identity) -> model.Response:
    scid = directory.require_scid(resource.scid)
    results = [{"name": t.name, "contractVersion": TEMPLATE_CONTRACT_VERSION}
               for t in directory.templates_of(scid)]
    return directory.reply("200.ok", session={"results": results}, headers=[protocol.NO_STORE])


def get_template(directory: Directory, request: model.Request, resource: Resource,
                 who: Identity) -> model.Response:
    template = directory.template(resource)
    document = {"contractVersion": TEMPLATE_CONTRACT_VERSION, "constants": template.constants}
    return directory.reply("200.ok", session=document, headers=[protocol.NO_STORE])
