"""Matchmaking: hoppers and their tickets, with the fields named as the library reads them.

The client library (microsoft/xbox-live-api, Source/Services/Matchmaking/
matchmaking_service.cpp) calls SmartMatch with contract 103 and parses:

- create ticket (POST the hopper): `ticketId` (required) and `waitTime`
  (`DeserializeCreateMatchTicketResponseResult`, ~L158);
- ticket details (GET the ticket): `ticketStatus` (required; searching,
  found, expired or canceled, compared without case), `waitTime`,
  `preserveSession`, `ticketSessionRef`, `targetSessionRef` and
  `ticketAttributes` (`DeserializeMatchTicketDetailsResponse`, ~L206);
- hopper statistics (GET the hopper's stats): `name` (required), `waitTime`
  and `population` (`DeserializeHopperStatisticsResponseResult`, ~L132).

Any other spelling makes the library's call fail. The ticket also carries the
`players` it brings ({xuid, playerAttributes}), as the library's own test data
for ticket details does (MatchmakingTests.cpp, `TestGetMatchTicketAsync`).

How tickets progress (searching, found, expired) and what the ticket session
is told is `matchmaker.py`; every handler here first brings the tickets up to
now (`matchmaker.advance`).

DELETE of a ticket answers 202 Accepted: on the real service the cancellation
completes asynchronously; the stand-in forgets the ticket at once, so a later
GET of it answers 404, and a ticket session still searching is told
`canceled` (the status the library's match client waits for on cancel).
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

from mpsdproxy import model
from mpsdproxy.emulator import matchmaker
from mpsdproxy.emulator import protocol
from mpsdproxy.emulator.documents import member_xuid
from mpsdproxy.emulator.documents import session_ref
from mpsdproxy.emulator.matchmaker import advance
from mpsdproxy.emulator.protocol import Identity
from mpsdproxy.emulator.protocol import Refusal
from mpsdproxy.emulator.state import Directory
from mpsdproxy.resources import Resource

__all__ = ["post_ticket", "hopper_stats", "get_ticket", "delete_ticket", "advance"]


def _hopper(directory: Directory, resource: Resource) -> tuple[str, str]:
    """The SCID and hopper name as configured (404 for either unknown)."""
    scid = directory.require_scid(resource.scid)
    config = directory.config.scid(scid)
    hopper = config.hopper(resource.name or "") if config is not None else None
    if hopper is None:
        raise Refusal("404.not-found", f"The hopper {resource.name!r} wasn't found.")
    return scid, hopper


def _give_up(body: dict[str, Any]) -> int:
    give_up = body.get("giveUpDuration", 60)
    if isinstance(give_up, bool) or not isinstance(give_up, int) or give_up < 0:
        raise Refusal("400.bad-request", f"giveUpDuration should be whole seconds, not "
                                         f"{json.dumps(give_up)}.")
    return give_up


def _preserve(body: dict[str, Any]) -> str:
    preserve = body.get("preserveSession", "never")
    if preserve not in ("always", "never"):
        raise Refusal("400.bad-request", f"preserveSession should be always or never, "
                                         f"not {json.dumps(preserve)}.")
    return preserve


def _match_attrs(member: Any) -> Any:
    properties = member.get("properties") if isinstance(member, dict) else None
    custom = properties.get("custom") if isinstance(properties, dict) else None
    return custom.get("matchAttrs") if isinstance(custom, dict) else None


def _players(directory: Directory, ref: dict[str, str] | None,
             owner: str) -> list[dict[str, Any]]:
    """The ticket's players, each with the `matchAttrs` its member set (the documented
    per-member attributes, properties.custom.matchAttrs)."""
    session = matchmaker.ticket_session(directory, ref)
    members = session.document.get("members", {}) if session is not None else {}
    attributes = {member_xuid(m): _match_attrs(m) for m in members.values()}
    players = []
    for xuid in matchmaker.players_of(directory, ref, owner):
        given = attributes.get(xuid)
        players.append({"xuid": xuid, "playerAttributes":
                        copy.deepcopy(given) if isinstance(given, dict) else {}})
    return players


def _new_ticket(directory: Directory, body: dict[str, Any], owner: str) -> dict[str, Any]:
    give_up = _give_up(body)
    ticket: dict[str, Any] = {
        "ticketId": str(uuid.uuid4()), "ticketStatus": matchmaker.SEARCHING,
        "waitTime": matchmaker.typical_wait(directory), "giveUpDuration": give_up,
        "preserveSession": _preserve(body),
    }
    ref = None
    if body.get("ticketSessionRef") is not None:
        ref = ticket["ticketSessionRef"] = session_ref(body["ticketSessionRef"],
                                                       "ticketSessionRef")
    if body.get("ticketAttributes") is not None:
        attributes = protocol.require_object(body["ticketAttributes"], "ticketAttributes")
        ticket["ticketAttributes"] = copy.deepcopy(attributes)
    ticket["players"] = _players(directory, ref, owner)
    return ticket


def post_ticket(directory: Directory, request: model.Request, resource: Resource,
                who: Identity) -> model.Response:
    scid, hopper = _hopper(directory, resource)
    advance(directory)
    body = protocol.json_object(request, empty_ok=True)
    document = _new_ticket(directory, body, directory.xuid(who.user))
    created = directory.clock()
    schedule = matchmaker.schedule_of(directory)
    lasts = schedule.expires_after_s
    if document["giveUpDuration"] > 0:
        lasts = min(lasts, float(document["giveUpDuration"]))
    directory.tickets[document["ticketId"]] = {
        "document": document, "scid": scid, "hopper": hopper,
        "created": created, "deadline": created + lasts,
    }
    matchmaker.tell_session(directory, document.get("ticketSessionRef"), matchmaker.SEARCHING)
    advance(directory)  # a schedule of 0 s matches at once
    return directory.reply("200.ok", session={"ticketId": document["ticketId"],
                                              "waitTime": document["waitTime"]},
                           headers=[protocol.NO_STORE])


def hopper_stats(directory: Directory, request: model.Request, resource: Resource,
                 who: Identity) -> model.Response:
    scid, hopper = _hopper(directory, resource)
    advance(directory)
    population = sum(len(r["document"]["players"]) for r in _tickets_of(directory, scid, hopper)
                     if r["document"]["ticketStatus"] == matchmaker.SEARCHING)
    return directory.reply("200.ok", session={"name": hopper,
                                              "waitTime": matchmaker.typical_wait(directory),
                                              "population": population},
                           headers=[protocol.NO_STORE])


def _tickets_of(directory: Directory, scid: str, hopper: str) -> list[dict[str, Any]]:
    return [r for r in directory.tickets.values()
            if r["scid"].lower() == scid.lower() and r["hopper"] == hopper]


def _ticket_of(directory: Directory, resource: Resource) -> dict[str, Any]:
    scid, hopper = _hopper(directory, resource)
    advance(directory)
    record = directory.tickets.get((resource.element or "").lower())
    if record is None or record["scid"].lower() != scid.lower() or record["hopper"] != hopper:
        raise Refusal("404.not-found", f"The ticket {resource.element!r} wasn't found.")
    return record


def get_ticket(directory: Directory, request: model.Request, resource: Resource,
               who: Identity) -> model.Response:
    return directory.reply("200.ok", session=_ticket_of(directory, resource)["document"],
                           headers=[protocol.NO_STORE])


def delete_ticket(directory: Directory, request: model.Request, resource: Resource,
                  who: Identity) -> model.Response:
    record = _ticket_of(directory, resource)
    document = record["document"]
    del directory.tickets[document["ticketId"]]
    if document["ticketStatus"] == matchmaker.SEARCHING:
        matchmaker.tell_session(directory, document.get("ticketSessionRef"),
                                matchmaker.CANCELED)
    return directory.reply("202.accepted")
