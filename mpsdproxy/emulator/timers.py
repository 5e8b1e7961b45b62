"""Session timers as MPSD runs them: reservations, inactive and ready members, empty sessions.

Everything that decides when a timer is due and what it does when it fires
lives in this file; `state.Directory` only calls it (`run_timers` before each
request, `observe` after it, `next_due` when a document is shown).

The service applies timers lazily: "the session states and timeouts are only
updated immediately before a read or write request is processed" (MPSD docs,
"Session timeouts"). So does the stand-in, on its own clock (the `Emulator`'s
`clock=`), which is what lets a test advance time instead of waiting.

Timeouts are the session's `constants.system` values in milliseconds, by the
names the client library writes and reads for contract 107
(`multiplayer_session_constants.cpp` `_Serialize`, about L520, and
`_Deserialize`, about L600: `reservedRemovalTimeout`, `inactiveRemovalTimeout`,
`readyRemovalTimeout`, `sessionEmptyTimeout`), else the contract 104/105
`constants.system.timeouts` object (`reserved`, `inactive`, `ready`,
`sessionEmpty`; protocol notes §3.2). A timeout that is absent is infinite (no
timer); 0 is immediate. What each does (MPSD docs, "Member timeouts"):

- a reserved member who has not joined within `reservedRemovalTimeout` is removed;
- an inactive member is removed `inactiveRemovalTimeout` after becoming inactive;
- a ready member goes back to inactive `readyRemovalTimeout` after becoming
  ready (its inactive timer starts then);
- a session with no members is deleted `sessionEmptyTimeout` after it became
  empty. A write that removes the last member deletes the session at once, as
  before; a session that timers empty is deleted at once unless the timeout is
  set and above 0.

Timers do not stack: one transition per member per update. An update that
fires timers is one change, as a write is: `changeNumber` + 1 and a new ETag.
A member's state comes from its `properties.system` flags `ready` / `active`
(neither: inactive) or its `reserved` mark. `nextTimer` is when the next timer
is due; the library reads it as a time (`multiplayer_session.cpp` `_Deserialize`,
about L1390, `extract_json_time`), and the stand-in writes it as it writes
`startTime`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import NamedTuple

__all__ = ["Timeouts", "Timer", "Fired", "Timers", "timeouts", "member_state"]

#: Each timeout: its contract 107 name in constants.system, and its name in the contract
#: 104/105 `timeouts` object.
_NAMES = {
    "reserved": ("reservedRemovalTimeout", "reserved"),
    "inactive": ("inactiveRemovalTimeout", "inactive"),
    "ready": ("readyRemovalTimeout", "ready"),
    "empty": ("sessionEmptyTimeout", "sessionEmpty"),
}


class Timeouts(NamedTuple):
    """A session's timeouts in seconds; None is infinite (no timer)."""

    reserved: float | None
    inactive: float | None
    ready: float | None
    empty: float | None


class Timer(NamedTuple):
    """One pending timer: when it is due (on the Emulator's clock) and what it does."""

    due: float
    index: str | None  # the member's index; None for the session-empty timer
    action: str  # "remove" the member, make it "inactive", or "delete" the session


class Fired(enum.Enum):
    """What an update did to a session."""

    NOTHING = "nothing"
    CHANGED = "changed"
    DELETED = "deleted"


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _seconds(value: Any) -> float | None:
    """Milliseconds as the document carries them, in seconds; None when not a duration."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return value / 1000


def timeouts(document: Mapping[str, Any]) -> Timeouts:
    """The session's timeouts, by the contract 107 names, else the 104/105 ones."""
    system = _object(_object(document.get("constants")).get("system"))
    legacy = _object(system.get("timeouts"))
    values = {key: _seconds(system[new] if new in system else legacy.get(old))
              for key, (new, old) in _NAMES.items()}
    return Timeouts(**values)


def member_state(member: Mapping[str, Any]) -> str:
    """reserved, ready, active or inactive (the service's member states)."""
    if member.get("reserved"):
        return "reserved"
    system = _object(_object(member.get("properties")).get("system"))
    if system.get("ready") is True:
        return "ready"
    return "active" if system.get("active") is True else "inactive"


def _unready(member: dict[str, Any]) -> None:
    """A ready member back to inactive: its `ready` flag goes."""
    properties = member.get("properties")
    system = properties.get("system") if isinstance(properties, dict) else None
    if isinstance(system, dict):
        system.pop("ready", None)


def _members(document: Mapping[str, Any]) -> Mapping[str, Any]:
    return _object(document.get("members"))


@dataclass
class _Tracked:
    """When each member entered its present state, and when the session became empty."""

    branch: Any
    etag: str = ""
    states: dict[str, tuple[str, float]] = field(default_factory=dict)
    empty_since: float | None = None
    due: float | None = None  # the next timer, as of the ETag observed


class Timers:
    """The start times of every session's timers, by session key. Not thread-safe: the
    Emulator's lock guards it with the rest of the Directory."""

    def __init__(self) -> None:
        self._tracked: dict[str, _Tracked] = {}

    def clear(self) -> None:
        self._tracked.clear()

    def _current(self, key: str, document: Mapping[str, Any]) -> _Tracked | None:
        """What is tracked for this very session (a re-created session starts afresh)."""
        tracked = self._tracked.get(key)
        return tracked if tracked is not None and tracked.branch == document.get("branch") \
            else None

    def pending(self, key: str, document: Mapping[str, Any], now: float) -> list[Timer]:
        """The session's timers, soonest first. A state not yet observed started `now`
        (the request being answered made it)."""
        limits = timeouts(document)
        tracked = self._current(key, document)
        states = tracked.states if tracked is not None else {}
        by_state = {"reserved": limits.reserved, "inactive": limits.inactive,
                    "ready": limits.ready}
        timers = []
        for index, member in _members(document).items():
            state = member_state(_object(member))
            limit = by_state.get(state)
            if limit is None:
                continue
            seen = states.get(index)
            since = seen[1] if seen is not None and seen[0] == state else now
            timers.append(Timer(since + limit, index, "inactive" if state == "ready"
                                else "remove"))
        if not _members(document) and limits.empty is not None:
            since = tracked.empty_since if tracked is not None else None
            timers.append(Timer((now if since is None else since) + limits.empty, None,
                                "delete"))
        return sorted(timers, key=lambda t: (t.due, t.index or ""))

    def next_due(self, key: str, document: Mapping[str, Any], now: float) -> float | None:
        """When the session's next timer is due, or None when it has none."""
        timers = self.pending(key, document, now)
        return timers[0].due if timers else None

    def fire(self, key: str, document: dict[str, Any], etag: str, now: float) -> Fired:
        """Apply the timers due by `now` to the stored document, in place (one update).

        The caller refreshes `membersInfo` and bumps `changeNumber` and the ETag on
        CHANGED, and forgets the session on DELETED. A session observed at this ETag
        whose next timer is not due is passed over without a look at its members.
        """
        known = self._current(key, document)
        if known is not None and known.etag == etag and (known.due is None or known.due > now):
            return Fired.NOTHING
        due = [t for t in self.pending(key, document, now) if t.due <= now]
        if not due:
            return Fired.NOTHING
        if any(t.action == "delete" for t in due):
            self._tracked.pop(key, None)
            return Fired.DELETED
        tracked = self._current(key, document) or self._start(key, document)
        members = document["members"]
        emptied_at = now
        for timer in due:
            assert timer.index is not None
            if timer.action == "remove":
                members.pop(timer.index, None)
                tracked.states.pop(timer.index, None)
                emptied_at = timer.due
            else:  # ready -> inactive; the inactive timer starts when the ready one fired
                _unready(members[timer.index])
                tracked.states[timer.index] = ("inactive", timer.due)
        if not members:
            tracked.empty_since = emptied_at
            limit = timeouts(document).empty
            if not limit or emptied_at + limit <= now:
                self._tracked.pop(key, None)
                return Fired.DELETED
        return Fired.CHANGED

    def _start(self, key: str, document: Mapping[str, Any]) -> _Tracked:
        tracked = self._tracked[key] = _Tracked(document.get("branch"))
        return tracked

    def observe(self, key: str, document: Mapping[str, Any], etag: str, now: float) -> None:
        """Record the states a request left the session in: a member whose state changed
        (or who is new) starts its timer `now`. Cheap when the ETag has not moved."""
        tracked = self._current(key, document)
        if tracked is not None and tracked.etag == etag:
            return
        if tracked is None:
            tracked = self._start(key, document)
        tracked.etag = etag
        members = _members(document)
        states = {}
        for index, member in members.items():
            state = member_state(_object(member))
            seen = tracked.states.get(index)
            states[index] = seen if seen is not None and seen[0] == state else (state, now)
        tracked.states = states
        if members:
            tracked.empty_since = None
        elif tracked.empty_since is None:
            tracked.empty_since = now
        tracked.due = self.next_due(key, document, now)

    def keep(self, keys: set[str]) -> None:
        """Forget the sessions that are gone (deleted by a write, or reset)."""
        for key in [k for k in self._tracked if k not in keys]:
            del self._tracked[key]
