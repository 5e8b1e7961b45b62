"""What the stand-in remembers between requests, and the lookups every handler shares.

`Directory` holds the sessions, handles, tickets, callers' XUIDs, the
templates learned from seeded sessions and the sessions' timers (`timers.py`).
It is plain state: the `Emulator` owns one, guards it with its lock and hands
it to the handlers. It runs the timers (`run_timers`) before each request and
records what the request changed (`observe`) after it; a session it shows
carries `nextTimer` (and the response an `Expires` header with the same time,
MPSD docs, "Timeouts") while a timer is pending.

`observe` is also where a change becomes visible to the rest of the stand-in: every
session whose ETag moved since the last look (a write, a timer, a handle, matchmaking,
`/_emulator/change`) is handed to the change observers (`watch`) as a `Change`, once.
Checking the ETag there, not at each place that writes, catches every writer, present
and future; the RTA hub (`rtahub.py`) turns a change into shoulder taps.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any
from typing import NamedTuple

from mpsdproxy import model
from mpsdproxy.emulator import protocol
from mpsdproxy.emulator.config import EmulatorConfig
from mpsdproxy.emulator.config import TemplateConfig
from mpsdproxy.emulator.documents import Merge
from mpsdproxy.emulator.documents import derived_xuid
from mpsdproxy.emulator.protocol import Refusal
from mpsdproxy.emulator.timers import Fired
from mpsdproxy.emulator.timers import Timers
from mpsdproxy.resources import Resource

__all__ = ["Session", "Directory", "Change", "ChangeObserver", "stamp"]

logger = logging.getLogger(__name__)


@dataclass
class Session:
    """A stored session: where it lives, its document and its current ETag."""

    scid: str
    template: TemplateConfig
    name: str
    document: dict[str, Any]
    etag: str

    @property
    def path(self) -> str:
        return (f"/serviceconfigs/{self.scid}/sessiontemplates/{self.template.name}"
                f"/sessions/{self.name}")

    @property
    def key(self) -> str:
        return f"{self.scid}~{self.template.name}~{self.name}".lower()


class Change(NamedTuple):
    """A session whose changeNumber (and ETag) moved. `document` is the stored document,
    lent for the call only: an observer reads what it needs and neither keeps nor
    changes it (observers run under the Emulator's lock)."""

    key: str  # scid~template~name, lower case, as a shoulder tap names the session
    change_number: int
    branch: str | None
    document: Mapping[str, Any]


ChangeObserver = Callable[[Change], None]


class Directory:
    """The session directory's stored state. Not thread-safe: the Emulator locks."""

    def __init__(self, config: EmulatorConfig, wallclock: Callable[[], float], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.wallclock = wallclock
        self.clock = clock
        self.timers = Timers()
        self.etags = itertools.count(1)
        self.sessions: dict[str, Session] = {}
        self.handles: dict[str, dict[str, Any]] = {}
        self.tickets: dict[str, dict[str, Any]] = {}
        self.xuids: dict[str, str] = {}
        self.learned: dict[tuple[str, str], TemplateConfig] = {}
        self.observers: list[ChangeObserver] = []
        self.announced: dict[str, str] = {}  # key -> the ETag observers last heard of

    def watch(self, observer: ChangeObserver) -> Callable[[], None]:
        """Call `observer` with every later `Change`; the answer stops it (call it when the
        observer's server stops). Observers survive `clear`: they belong to the server."""
        self.observers.append(observer)

        def stop() -> None:
            if observer in self.observers:
                self.observers.remove(observer)

        return stop

    def clear(self) -> None:
        """Forget every session, handle, ticket, identity and learned template."""
        self.sessions.clear()
        self.handles.clear()
        self.tickets.clear()
        self.xuids.clear()
        self.learned.clear()
        self.timers.clear()
        self.announced.clear()

    # -- answers ------------------------------------------------------------------------

    def reply(self, entry_id: str, *, session: Any = None, etag: str | None = None,
              message: str | bytes | None = None,
              headers: Iterable[tuple[str, str]] = ()) -> model.Response:
        return protocol.reply(entry_id, self.wallclock(), session=session, etag=etag,
                              message=message, headers=headers)

    def view(self, session: Session) -> dict[str, Any]:
        """The stored document with `nextTimer` while a timer is pending (how a caller
        sees it, in its contract and with a large session's caller as "me", is
        `sessions.view`)."""
        return _with_next_timer(session.document, self._next_timer(session))

    # -- timers -------------------------------------------------------------------------

    def _next_timer(self, session: Session) -> float | None:
        """When the session's next timer is due, on the wall clock (epoch seconds)."""
        now = self.clock()
        due = self.timers.next_due(session.key, session.document, now)
        return None if due is None else self.wallclock() + (due - now)

    def run_timers(self) -> None:
        """Fire every timer due by now (the service does so just before a request): each
        session a timer changed gets one new changeNumber and ETag, as a write would."""
        now = self.clock()
        for key, session in list(self.sessions.items()):
            fired = self.timers.fire(key, session.document, session.etag, now)
            if fired is Fired.DELETED:
                del self.sessions[key]
            elif fired is Fired.CHANGED:
                document = Merge(session.document, now=self.now(),
                                 creating=False).apply({})  # membersInfo
                document["changeNumber"] = int(document.get("changeNumber", 0)) + 1
                session.document = document
                session.etag = self.new_etag(document)

    def observe(self) -> None:
        """Record the member states the last request left (their timers start now)."""
        now = self.clock()
        for key, session in self.sessions.items():
            self.timers.observe(key, session.document, session.etag, now)
        self.timers.keep(set(self.sessions))
        self._announce()

    def _announce(self) -> None:
        """Tell the observers of every session whose ETag moved since they last heard; a
        deleted session is forgotten (nobody is left in it to tell)."""
        moved = [s for key, s in self.sessions.items() if self.announced.get(key) != s.etag]
        for gone in set(self.announced) - set(self.sessions):
            del self.announced[gone]
        for session in moved:
            self.announced[session.key] = session.etag
            document = session.document
            number, branch = document.get("changeNumber"), document.get("branch")
            change = Change(session.key, number if isinstance(number, int) else 0,
                            branch if isinstance(branch, str) else None, document)
            for observer in list(self.observers):
                try:
                    observer(change)
                except Exception:  # a broken observer must not fail the request
                    logger.exception(f"a change observer failed on session {session.key}")

    # -- lookups ------------------------------------------------------------------------

    def find_template(self, scid: str, name: str) -> TemplateConfig | None:
        config = self.config.scid(scid)
        found = config.template(name) if config is not None else None
        return found or self.learned.get((scid.lower(), name.lower()))

    def templates_of(self, scid: str) -> list[TemplateConfig]:
        config = self.config.scid(scid)
        known = list(config.templates) if config is not None else []
        known += [t for (s, _), t in self.learned.items() if s == scid.lower()]
        return known

    def require_scid(self, scid: str | None) -> str:
        if not scid or (self.config.scid(scid) is None and not self.templates_of(scid)):
            raise Refusal("404.not-found", "The requested service config is either invalid "
                                           "or not configured for sessions.")
        return scid

    def template(self, resource: Resource) -> TemplateConfig:
        scid = self.require_scid(resource.scid)
        template = self.find_template(scid, resource.template or "")
        if template is None:
            raise Refusal("404.not-found",
                          f"The session template {resource.template!r} wasn't found.")
        return template

    def existing(self, resource: Resource) -> Session:
        session = self.sessions.get(resource.key or "")
        if session is None:
            raise Refusal("404.not-found", "The requested session wasn't found.")
        return session

    def xuid(self, user: str) -> str:
        return self.xuids.get(user) or derived_xuid(user)

    def now(self) -> str:
        """The wall-clock time as documents carry it (ISO 8601, UTC, microseconds)."""
        return stamp(self.wallclock())

    def new_etag(self, document: Mapping[str, Any]) -> str:
        seed = f"{document.get('branch')}:{document.get('changeNumber')}:{next(self.etags)}"
        return '"' + hashlib.sha256(seed.encode()).hexdigest()[:32] + '"'

    def touch(self, key: str) -> None:
        """A change the document does not show (a new handle) still bumps changeNumber."""
        session = self.sessions.get(key)
        if session is not None:
            session.document["changeNumber"] += 1
            session.etag = self.new_etag(session.document)


def stamp(epoch: float) -> str:
    """A wall-clock time as documents carry it (ISO 8601, UTC, microseconds)."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _with_next_timer(document: dict[str, Any], due: float | None) -> dict[str, Any]:
    """The document with `nextTimer` (after `startTime`, where the service puts it) when a
    timer is pending, and without one (a seeded document's stale value) when none is."""
    if due is None:
        if "nextTimer" not in document:
            return document
        return {k: v for k, v in document.items() if k != "nextTimer"}
    shown: dict[str, Any] = {}
    for key, value in document.items():
        if key != "nextTimer":
            shown[key] = value
        if key == "startTime":
            shown["nextTimer"] = stamp(due)
    shown.setdefault("nextTimer", stamp(due))
    return shown
