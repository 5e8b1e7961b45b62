"""The operation a call is: what a sweep schedules faults for, and how cells are named.

An operation is the call as the title's code makes it, not one request: its
method, the kind of resource it names and the session template (a member
write to LobbySession is one operation however many lobbies the title
joins). It is the key the client library's per-API Retry-After cache uses too
(libHttpClient httpcall.cpp, `ShouldFailFast`: one `retryAfterCacheId` per
xbox_live_api call), so a fault on one operation says nothing of another.

The RTA side is one operation per session template too: the shoulder taps the
session-change subscription brings for it (`RTA tap LobbySession`, `of_tap`),
on which the sweep's RTA faults act.

Cell names are stable strings (`PUT session LobbySession × 412.if-match-session`):
the state file, the recording's fault note and the JUnit cases all use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mpsdproxy import model
from mpsdproxy.resources import Kind
from mpsdproxy.resources import Resource

__all__ = ["CELL_SEPARATOR", "NO_TEMPLATE", "Operation", "cell_name", "split_cell"]

#: Between an operation and a fault in a cell name.
CELL_SEPARATOR = " × "
#: Said in place of the template for a call that names none (handles, hoppers).
NO_TEMPLATE = "-"


@dataclass(frozen=True, order=True, slots=True)
class Operation:
    """One kind of call the title makes: `GET session LobbySession`."""

    method: str
    kind: str
    template: str = NO_TEMPLATE

    @classmethod
    def of_resource(cls, method: str, resource: Resource) -> Operation | None:
        """The operation of a call (None for a path outside the MPSD grammar)."""
        if resource.kind is Kind.UNKNOWN:
            return None
        return cls(method.upper(), resource.kind.value, resource.template or NO_TEMPLATE)

    @classmethod
    def of(cls, request: model.Request) -> Operation | None:
        return cls.of_resource(request.method, request.resource)

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> Operation | None:
        """The operation of a recorded exchange (its `resource` and request method)."""
        request = record.get("request") or {}
        resource = record.get("resource")
        method = request.get("method") if isinstance(request, Mapping) else None
        if not isinstance(resource, Mapping) or not isinstance(method, str):
            return None
        try:
            parsed = Resource.from_dict(dict(resource))
        except (KeyError, TypeError, ValueError):
            return None
        return cls.of_resource(method, parsed)

    @classmethod
    def of_tap(cls, session: str) -> tuple[Operation, Resource] | None:
        """The RTA operation of a shoulder tap for `scid~template~name` (the session-change
        subscription, per template: `RTA tap LobbySession`), and the session it names."""
        parts = session.split("~")
        if len(parts) != 3 or not all(parts):
            return None
        scid, template, name = parts
        resource = Resource(Kind.SESSION, scid, template, name)
        return cls("RTA", "tap", template), resource

    @property
    def rta(self) -> bool:
        return self.method == "RTA"

    @property
    def name(self) -> str:
        return f"{self.method} {self.kind} {self.template}"

    @property
    def writes(self) -> bool:
        return self.method in ("PUT", "POST", "DELETE")

    def __str__(self) -> str:
        return self.name


def cell_name(operation: Operation | str, fault: str) -> str:
    """`PUT session LobbySession × 412.if-match-session`."""
    return f"{operation}{CELL_SEPARATOR}{fault}"


def split_cell(name: str) -> tuple[str, str]:
    """(operation name, fault name) of a cell name; ValueError when it is not one."""
    operation, sep, fault = name.partition(CELL_SEPARATOR)
    if not sep or not operation or not fault:
        raise ValueError(f"{name!r} is not a sweep cell (OPERATION{CELL_SEPARATOR}FAULT)")
    return operation, fault
