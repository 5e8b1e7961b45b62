"""Sessions and their elements: GET, PUT and DELETE (protocol notes §3-§4).

Every write goes through `write`: the read-only check, If-Match /
If-None-Match, the caller's XUID, the merge, and the commit that bumps
`changeNumber` and the ETag (even for a write that changes nothing). Every
answer that carries a session carries it as the caller reads it
(`views.render`: its contract's names; a large session's caller as "me").
"""

from __future__ import annotations

import copy
import email.utils
from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from typing import Any

from mpsdproxy import model
from mpsdproxy.emulator import protocol
from mpsdproxy.emulator.config import TemplateConfig
from mpsdproxy.emulator.documents import Merge
from mpsdproxy.emulator.documents import element_delta
from mpsdproxy.emulator.documents import etag_matches
from mpsdproxy.emulator.documents import find_member
from mpsdproxy.emulator.documents import member_xuid
from mpsdproxy.emulator.documents import named_xuid
from mpsdproxy.emulator.documents import new_document
from mpsdproxy.emulator.members import Writer
from mpsdproxy.emulator.members import device_token
from mpsdproxy.emulator.protocol import Identity
from mpsdproxy.emulator.protocol import Refusal
from mpsdproxy.emulator.state import Directory
from mpsdproxy.emulator.state import Session
from mpsdproxy.emulator.views import is_large
from mpsdproxy.emulator.views import render
from mpsdproxy.resources import Resource

__all__ = [
    "get_session",
    "put_session",
    "get_element",
    "put_element",
    "delete_element",
    "write",
    "view",
    "session_reply",
    "writer",
]


def view(directory: Directory, session: Session, who: Identity,
         xuid: str | None = None) -> dict[str, Any]:
    """The stored document as this caller (its XUID, unless a write names it) reads it:
    the directory's view (`nextTimer`) in the caller's contract, a large session's
    caller keyed "me" (see `views.render`)."""
    return render(directory.view(session), xuid=xuid or directory.xuid(who.user),
                  contract=who.contract)


def _expires(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`Expires` at the session's `nextTimer`, when one is pending (as the service does)."""
    due = document.get("nextTimer")
    if not isinstance(due, str):
        return []
    try:
        moment = datetime.fromisoformat(due.replace("Z", "+00:00"))
    except ValueError:
        return []
    return [("Expires", email.utils.format_datetime(moment.astimezone(UTC), usegmt=True))]


def session_reply(directory: Directory, entry_id: str, session: Session, who: Identity,
                  xuid: str | None = None) -> model.Response:
    """A session answer (200/201): the caller's view, its ETag (and Expires while a timer
    is pending). No Content-Location: the service sends none on a session's own URI (the
    public capture's session PUTs); one reached by its handle gets it (`handles`)."""
    shown = view(directory, session, who, xuid)
    headers = [protocol.REVALIDATE, *_expires(shown)]
    return directory.reply(entry_id, session=shown, etag=session.etag, headers=headers)


def writer(directory: Directory, who: Identity, xuid: str) -> Writer:
    """The caller as the service knows it from its token (see `members.Writer`)."""
    config = directory.config
    return Writer(xuid=xuid, device_token=device_token(who.user), title_id=config.title_id,
                  server=who.user in config.server_principals, gamertags=config.gamertags)


def get_session(directory: Directory, request: model.Request, resource: Resource,
                who: Identity) -> model.Response:
    directory.template(resource)
    session = directory.sessions.get(resource.key or "")
    if session is None:
        return directory.reply("204.get-session")
    if etag_matches(request.headers.get("If-None-Match"), session.etag):
        return directory.reply("304.not-modified", headers=[("ETag", session.etag)])
    return session_reply(directory, "200.ok", session, who)


def put_session(directory: Directory, request: model.Request, resource: Resource,
                who: Identity) -> model.Response:
    template = directory.template(resource)
    return write(directory, request, resource, who, template, protocol.json_object(request))


def get_element(directory: Directory, request: model.Request, resource: Resource,
                who: Identity) -> model.Response:
    directory.template(resource)
    session = directory.existing(resource)
    if etag_matches(request.headers.get("If-None-Match"), session.etag):
        return directory.reply("304.not-modified", headers=[("ETag", session.etag)])
    value = _element(directory, session, resource, who)
    if value is None:
        return directory.reply("204.get-element")
    location = f"{session.path}/{resource.element}"
    return directory.reply("200.ok", session=value, etag=session.etag,
                           headers=[("Content-Location", location), protocol.REVALIDATE])


def _element(directory: Directory, session: Session, resource: Resource, who: Identity) -> Any:
    document = session.document
    part, _, rest = (resource.element or "").partition("/")
    if part.lower() == "properties":
        return document["properties"]
    if part.lower() == "servers":
        return document["servers"].get(rest)
    caller = directory.xuid(who.user)
    if rest.lower() == "me":
        index = find_member(document, caller)
        return document["members"].get(index) if index is not None else None
    member = document["members"].get(str(int(rest)))
    if member is not None and is_large(document) and member_xuid(member) != caller:
        return None  # large sessions show no member but the caller's own
    return member


def put_element(directory: Directory, request: model.Request, resource: Resource,
                who: Identity) -> model.Response:
    template = directory.template(resource)
    directory.existing(resource)
    delta = element_delta(resource, protocol.json_object(request))
    return write(directory, request, resource, who, template, delta, element=True)


def delete_element(directory: Directory, request: model.Request, resource: Resource,
                   who: Identity) -> model.Response:
    template = directory.template(resource)
    directory.existing(resource)
    write(directory, request, resource, who, template, element_delta(resource, None),
          element=True)
    return directory.reply("204.element-gone")


def write(directory: Directory, request: model.Request, resource: Resource, who: Identity,
          template: TemplateConfig, delta: Mapping[str, Any], *,
          element: bool = False) -> model.Response:
    """PUT semantics shared by sessions, elements and handles (protocol notes §4)."""
    session = directory.sessions.get(resource.key or "")
    _check_writer(directory, who, session)
    _check_preconditions(directory, request, who, session)
    xuid, named = _writer_xuid(directory, who, delta)
    before = (session.document if session is not None
              else new_document(template.constants, who.contract, directory.now()))
    document = Merge(copy.deepcopy(before), writer=writer(directory, who, xuid),
                     now=directory.now(), creating=session is None,
                     contract=who.contract).apply(delta)
    commit = not protocol.flag(request, "nocommit")
    if not document["members"]:
        if session is not None and commit:
            del directory.sessions[session.key]
        return directory.reply("204.element-gone" if element else "204.put-session-deleted")
    document["changeNumber"] = int(document.get("changeNumber", 0)) + 1
    document["contractVersion"] = who.contract
    where = session or Session(resource.scid or "", template, resource.name or "", {}, "")
    stored = Session(where.scid, template, where.name, document, directory.new_etag(document))
    if commit:
        directory.sessions[stored.key] = stored
        if named:
            directory.xuids.setdefault(who.user, xuid)
    return session_reply(directory, "201.created" if session is None else "200.ok", stored, who,
                         xuid)


def _check_writer(directory: Directory, who: Identity, session: Session | None) -> None:
    if who.user not in directory.config.read_only_users:
        return
    if session is None:
        raise Refusal("403.forbidden", "This caller may read sessions but not create them.")
    raise Refusal("403.read-only", session=view(directory, session, who), etag=session.etag)


def _check_preconditions(directory: Directory, request: model.Request, who: Identity,
                         session: Session | None) -> None:
    """If-Match / If-None-Match on a write (protocol notes §4.2)."""
    if_match = request.headers.get("If-Match")
    if_none_match = request.headers.get("If-None-Match")
    if session is None:
        if if_match is not None:
            raise Refusal("412.precondition-failed")
        return
    if etag_matches(if_none_match, session.etag):
        raise Refusal("412.precondition-failed")
    if if_match is not None and not etag_matches(if_match, session.etag):
        raise Refusal("412.if-match-session", session=view(directory, session, who),
                      etag=session.etag)


def _writer_xuid(directory: Directory, who: Identity,
                 delta: Mapping[str, Any]) -> tuple[str, bool]:
    """The caller's XUID for this write, and whether the write itself names it."""
    bound = directory.xuids.get(who.user)
    named = named_xuid(delta)
    if named is None:
        return bound or directory.xuid(who.user), False
    if not named.isdigit():
        raise Refusal("400.bad-request", f"members.me.constants.system.xuid should be a "
                                         f"decimal XUID, not {named!r}.")
    if bound is not None and named != bound:
        raise Refusal("403.forbidden", f"members.me names XUID {named}, but this caller "
                                       f"is XUID {bound}.")
    return named, True
