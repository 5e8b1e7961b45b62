"""How tickets progress: searching, then found (or expired) on the configured schedule.

SmartMatch as the stand-in plays it (the documented flow: the ticket session
is told `searching` when its ticket is created; when a match is made the
service creates or picks the target session, reserves the matched players in
it and marks each ticket session `found` with the target's reference):

- A ticket can be matched `found_after_s` seconds after it was created, and
  is `expired` `expires_after_s` seconds after (sooner when its own
  `giveUpDuration` is shorter), unless it was matched first.
- Tickets of one hopper (one SCID) are matched in the order they became
  ready, first fit, until their players (the ticket session's accepted
  members when the ticket was created, else its owner) make
  `players_per_match`. A ticket with more players than a match holds, or
  without a `ticketSessionRef` (no session to tell), is never matched and
  expires.
- The target session is the first matched ticket session whose ticket says
  `preserveSession: always` and that still exists; else a new session (a GUID
  name) under the first ticket session's SCID and template. Every matched
  player is reserved in it (not in large sessions: MPSD refuses that).
- Each ticket session gets `servers.matchmaking.properties.system` =
  `{status, statusDetails, typicalWait[, targetSessionRef]}`: the object and
  names the library reads (multiplayer_session.cpp, `_Deserialize`, the servers
  block at its end: servers -> matchmaking -> properties -> system; and
  multiplayer_session_matchmaking_server.cpp `_Deserialize`: status,
  statusDetails, typicalWait, targetSessionRef). Every session written this
  way has its changeNumber and ETag move on, as for any other writer.

Nothing runs in the background: `advance` works out, at the moment a ticket,
a hopper (or, when the service calls it, anything) is read, everything the
schedule says has happened since, in time order, so the answer is the same
whenever it is asked. Time is the Emulator's clock (`Emulator(clock=)`, the one
the FGRL windows and session timers run on; `directory.clock`), so a test moves
matchmaking by advancing it; documents are stamped by the wall clock as ever.
"""

from __future__ import annotations

import copy
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mpsdproxy import resources
from mpsdproxy.emulator.config import TemplateConfig
from mpsdproxy.emulator.documents import Merge
from mpsdproxy.emulator.documents import member_xuid
from mpsdproxy.emulator.documents import new_document
from mpsdproxy.emulator.members import Writer
from mpsdproxy.emulator.protocol import Refusal
from mpsdproxy.emulator.state import Directory
from mpsdproxy.emulator.state import Session
from mpsdproxy.resources import Kind

__all__ = [
    "Schedule",
    "schedule_of",
    "typical_wait",
    "advance",
    "ticket_session",
    "tell_session",
    "players_of",
]

SEARCHING = "searching"
FOUND = "found"
EXPIRED = "expired"
CANCELED = "canceled"
#: The contract version a new target session is written with when no ticket session says.
_CONTRACT = 107


@dataclass(frozen=True)
class Schedule:
    """When tickets progress: the `matchmaking:` section of the config, with its defaults."""

    found_after_s: float = 2.0
    expires_after_s: float = 60.0
    players_per_match: int = 2


def schedule_of(directory: Directory) -> Schedule:
    """The configured schedule (`EmulatorConfig.matchmaking`)."""
    given = directory.config.matchmaking
    return Schedule(float(given.found_after_s), float(given.expires_after_s),
                    int(given.players_per_match))


def typical_wait(directory: Directory) -> int:
    """The wait the hopper reports (`waitTime`, `typicalWait`): whole seconds to a match."""
    return max(0, math.ceil(schedule_of(directory).found_after_s))


# -- the ticket record ---------------------------------------------------------------------
#
# `directory.tickets[ticketId]` is {"document": <what GET answers>, "scid", "hopper",
# "created": <clock s>, "deadline": <clock s>} (the Emulator's clock, `directory.clock`).


def _ready_at(record: dict[str, Any], schedule: Schedule) -> float:
    return float(record["created"]) + schedule.found_after_s


def _status(record: dict[str, Any]) -> str:
    return str(record["document"]["ticketStatus"])


def _pool(record: dict[str, Any]) -> tuple[str, str]:
    return (str(record["scid"]).lower(), str(record["hopper"]).lower())


def _players(record: dict[str, Any]) -> list[str]:
    return [p["xuid"] for p in record["document"].get("players", [])]


# -- sessions --------------------------------------------------------------------------------


def ticket_session(directory: Directory, ref: dict[str, str] | None) -> Session | None:
    """The stored session a `{scid, templateName, name}` reference names, if any."""
    if ref is None:
        return None
    key = _key(ref)
    return directory.sessions.get(key) if key is not None else None


def _key(ref: dict[str, str]) -> str | None:
    path = (f"/serviceconfigs/{ref['scid']}/sessiontemplates/{ref['templateName']}"
            f"/sessions/{ref['name']}")
    resource = resources.parse(path)
    return resource.key if resource.kind is Kind.SESSION else None


def players_of(directory: Directory, ref: dict[str, str] | None, owner: str) -> list[str]:
    """Who a ticket brings: its session's accepted members (in index order), else its owner."""
    session = ticket_session(directory, ref)
    members = session.document.get("members", {}) if session is not None else {}
    xuids = [member_xuid(m) for m in members.values() if not m.get("reserved")]
    found = [x for x in xuids if x is not None]
    return found or [owner]


def _commit(directory: Directory, session: Session, document: dict[str, Any]) -> None:
    """Store a changed document as a write does: changeNumber + 1 and a new ETag."""
    document["changeNumber"] = int(document.get("changeNumber", 0)) + 1
    session.document = document
    session.etag = directory.new_etag(document)


def tell_session(directory: Directory, ref: dict[str, str] | None, status: str,
                 target: dict[str, str] | None = None) -> None:
    """Write the matchmaking result into the ticket session (nothing when it is gone)."""
    session = ticket_session(directory, ref)
    if session is None:
        return
    system: dict[str, Any] = {"status": status, "statusDetails": "",
                              "typicalWait": typical_wait(directory)}
    if target is not None:
        system["targetSessionRef"] = dict(target)
    document = copy.deepcopy(session.document)
    servers = document.setdefault("servers", {})
    servers["matchmaking"] = {"properties": {"system": system}}
    _commit(directory, session, document)


def _reservations(xuids: Iterable[str]) -> dict[str, Any]:
    return {"members": {f"reserve_{i}": {"constants": {"system": {"xuid": x}}}
                        for i, x in enumerate(xuids)}}


def _template(directory: Directory, scid: str, name: str) -> TemplateConfig:
    """The target's template; one a config doesn't list is learned, as a seed's is."""
    found = directory.find_template(scid, name)
    if found is None:
        found = TemplateConfig(name)
        directory.learned[(scid.lower(), name.lower())] = found
    return found


def _smartmatch(directory: Directory) -> Writer:
    """SmartMatch as a writer: a server principal with no user or console of its own."""
    config = directory.config
    return Writer(xuid="", device_token="", title_id=config.title_id, server=True,
                  gamertags=config.gamertags)


def _reserve(directory: Directory, session: Session, xuids: list[str], *,
             creating: bool) -> dict[str, Any]:
    """The session's document with the players reserved; unchanged when MPSD would refuse
    the reservations (a large session takes no member but the caller)."""
    document = copy.deepcopy(session.document)
    if not xuids:
        return document
    try:
        return Merge(document, writer=_smartmatch(directory), now=directory.now(),
                     creating=creating).apply(_reservations(xuids))
    except Refusal:
        return copy.deepcopy(session.document)


def _target(directory: Directory, group: list[dict[str, Any]]) -> Session:
    """The session the matched players meet in, with every one of them reserved."""
    players = [x for record in group for x in _players(record)]
    for record in group:
        if record["document"]["preserveSession"] == "always":
            preserved = ticket_session(directory, record["document"]["ticketSessionRef"])
            if preserved is not None:
                reserved = _reserve(directory, preserved, players, creating=False)
                if reserved != preserved.document:
                    _commit(directory, preserved, reserved)
                return preserved
    first = group[0]["document"]["ticketSessionRef"]
    template = _template(directory, first["scid"], first["templateName"])
    source = ticket_session(directory, first)
    contract = source.document.get("contractVersion", _CONTRACT) if source else _CONTRACT
    document = new_document(template.constants, contract, directory.now())
    session = Session(first["scid"], template, str(uuid.uuid4()), document, "")
    _commit(directory, session, _reserve(directory, session, players, creating=True))
    directory.sessions[session.key] = session
    return session


def _match(directory: Directory, group: list[dict[str, Any]]) -> None:
    target = _target(directory, group)
    ref = {"scid": target.scid, "templateName": target.template.name, "name": target.name}
    for record in group:
        record["document"]["ticketStatus"] = FOUND
        record["document"]["targetSessionRef"] = dict(ref)
        tell_session(directory, record["document"]["ticketSessionRef"], FOUND, ref)


def _expire(directory: Directory, record: dict[str, Any]) -> None:
    record["document"]["ticketStatus"] = EXPIRED
    tell_session(directory, record["document"].get("ticketSessionRef"), EXPIRED)


# -- the schedule ----------------------------------------------------------------------------


def _first_fit(pool: list[dict[str, Any]], size: int) -> list[dict[str, Any]] | None:
    """Tickets from the pool (in order) whose players make exactly `size`, if any do."""
    chosen: list[dict[str, Any]] = []
    count = 0
    for record in pool:
        players = len(_players(record))
        if count + players <= size:
            chosen.append(record)
            count += players
            if count == size:
                return chosen
    return None


def _matchable(record: dict[str, Any], schedule: Schedule) -> bool:
    return (record["document"].get("ticketSessionRef") is not None
            and len(_players(record)) <= schedule.players_per_match)


def advance(directory: Directory) -> None:
    """Bring every searching ticket up to now: the matches and expiries the schedule made
    since the last look, in the order they happened."""
    schedule = schedule_of(directory)
    now = directory.clock()
    searching = [r for r in directory.tickets.values() if _status(r) == SEARCHING]
    searching.sort(key=lambda r: (_ready_at(r, schedule), r["created"]))
    pools: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in searching:
        moment = _ready_at(record, schedule)
        if moment > now:
            break
        pool = pools.setdefault(_pool(record), [])
        for waiting in [w for w in pool if w["deadline"] <= moment]:
            pool.remove(waiting)
            _expire(directory, waiting)
        if record["deadline"] <= moment or not _matchable(record, schedule):
            continue
        pool.append(record)
        group = _first_fit(pool, schedule.players_per_match)
        if group is not None:
            for matched in group:
                pool.remove(matched)
            _match(directory, group)
    for record in searching:
        if _status(record) == SEARCHING and record["deadline"] <= now:
            _expire(directory, record)
