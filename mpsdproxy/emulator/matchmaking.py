"""Matchmaking: hoppers and their tickets.

DELETE of a ticket answers 202 Accepted: on the real service the cancellation
completes asynchronously; the stand-in forgets the ticket at once, so a later
GET of it answers 404.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

from mpsdproxy import model
from mpsdproxy.emulator import protocol
from mpsdproxy.emulator.documents import session_ref
from mpsdproxy.emulator.protocol import Identity
from mpsdproxy.emulator.protocol import Refusal
from mpsdproxy.emulator.state import Directory
from mpsdproxy.resources import Resource

__all__ = ["post_ticket", "hopper_stats", "get_ticket", "delete_ticket"]

#: How long a ticket's search is said to take, in seconds.
TICKET_WAIT_TIME = 60


def _hopper(directory: Directory, resource: Resource) -> str:
    config = directory.config.scid(directory.require_scid(resource.scid))
    hopper = config.hopper(resource.name or "") if config is not None else None
    if hopper is None:
        raise Refusal("404.not-found", f"The hopper {resource.name!r} wasn't found.")
    return hopper


def _new_ticket(body: dict[str, Any], hopper: str, owner: str, now: str) -> dict[str, Any]:
    give_up = body.get("giveUpDuration", 60)
    if isinstance(give_up, bool) or not isinstance(give_up, int) or give_up < 0:
        raise Refusal("400.bad-request", f"giveUpDuration should be whole seconds, not "
                                         f"{json.dumps(give_up)}.")
    preserve = body.get("preserveSession", "never")
    if preserve not in ("always", "never"):
        raise Refusal("400.bad-request", f"preserveSession should be always or never, "
                                         f"not {json.dumps(preserve)}.")
    ticket: dict[str, Any] = {
        "ticketId": str(uuid.uuid4()), "hopperName": hopper, "status": "searching",
        "waitTime": TICKET_WAIT_TIME, "giveUpDuration": give_up, "preserveSession": preserve,
        "ownerXuid": owner, "createTime": now,
    }
    if body.get("ticketSessionRef") is not None:
        ticket["ticketSessionRef"] = session_ref(body["ticketSessionRef"], "ticketSessionRef")
    if body.get("ticketAttributes") is not None:
        attributes = protocol.require_object(body["ticketAttributes"], "ticketAttributes")
        ticket["ticketAttributes"] = copy.deepcopy(attributes)
    return ticket


def post_ticket(directory: Directory, request: model.Request, resource: Resource,
                who: Identity) -> model.Response:
    hopper = _hopper(directory, resource)
    body = protocol.json_object(request, empty_ok=True)
    ticket = _new_ticket(body, hopper, directory.xuid(who.user), directory.now())
    directory.tickets[ticket["ticketId"]] = ticket
    return directory.reply("200.ok", session={"ticketId": ticket["ticketId"],
                                              "waitTime": TICKET_WAIT_TIME},
                           headers=[protocol.NO_STORE])


def hopper_stats(directory: Directory, request: model.Request, resource: Resource,
                 who: Identity) -> model.Response:
    hopper = _hopper(directory, resource)
    population = sum(1 for t in directory.tickets.values() if t["hopperName"] == hopper)
    return directory.reply("200.ok", session={"hopperName": hopper,
                                              "waitTime": TICKET_WAIT_TIME,
                                              "population": population},
                           headers=[protocol.NO_STORE])


def _ticket_of(directory: Directory, resource: Resource) -> dict[str, Any]:
    hopper = _hopper(directory, resource)
    ticket = directory.tickets.get((resource.element or "").lower())
    if ticket is None or ticket["hopperName"] != hopper:
        raise Refusal("404.not-found", f"The ticket {resource.element!r} wasn't found.")
    return ticket


def get_ticket(directory: Directory, request: model.Request, resource: Resource,
               who: Identity) -> model.Response:
    return directory.reply("200.ok", session=_ticket_of(directory, resource),
                           headers=[protocol.NO_STORE])


def delete_ticket(directory: Directory, request: model.Request, resource: Resource,
                  who: Identity) -> model.Response:
    del directory.tickets[_ticket_of(directory, resource)["ticketId"]]
    return directory.reply("202.accepted")
