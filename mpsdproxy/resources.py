"""MPSD URI grammar: a request path -> the resource it names.

The service treats literal segments, SCIDs, template and session names without
regard to case (XSAPI itself sends both `/sessionTemplates/` and
`/sessiontemplates/`, protocol notes §1.6), so matching here is
case-insensitive; the names are kept as sent, and `Resource.key` gives the
lower-cased identity used to track a session.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from dataclasses import field
from urllib.parse import unquote
from urllib.parse import urlsplit

__all__ = ["Kind", "Resource", "parse", "ELEMENT_KINDS", "MPSD_HOSTS", "RTA_HOSTS",
           "bare_host", "is_mpsd_host"]

#: The session directory's and matchmaking's hosts: the traffic the status table is about.
MPSD_HOSTS: tuple[str, ...] = (
    "sessiondirectory.xboxlive.com",
    "momatch.xboxlive.com",
    "smartmatch.xboxlive.com",
)
#: The Real-Time Activity host, whose shoulder taps tell a title its session changed.
RTA_HOSTS: tuple[str, ...] = ("rta.xboxlive.com",)


def bare_host(host: str) -> str:
    """A host name as the lists above hold it: lower case, no port, no trailing dot."""
    return host.strip().lower().rsplit(":", 1)[0].rstrip(".")


def is_mpsd_host(host: str) -> bool:
    """Whether a host name (any case, with or without a port) is MPSD's."""
    return bare_host(host) in MPSD_HOSTS


class Kind(enum.StrEnum):
    SESSION = "session"  # /serviceconfigs/{scid}/sessiontemplates/{t}/sessions/{name}
    MEMBER = "member"  # .../sessions/{name}/members/{me|index}
    SERVER = "server"  # .../sessions/{name}/servers/{server-name}
    PROPERTIES = "properties"  # .../sessions/{name}/properties
    HANDLE = "handle"  # /handles, /handles/{id}
    HANDLE_SESSION = "handle-session"  # /handles/{id}/session
    HANDLE_QUERY = "handle-query"  # /handles/query
    HOPPER = "hopper"  # /serviceconfigs/{scid}/hoppers/{hopper}[/stats]
    TICKET = "ticket"  # /serviceconfigs/{scid}/hoppers/{hopper}/tickets[/{id}]
    QUERY = "query"  # /serviceconfigs/{scid}[/sessiontemplates/{t}]/sessions
    BATCH = "batch"  # /serviceconfigs/{scid}[/sessiontemplates/{t}]/batch
    TEMPLATE = "template"  # /serviceconfigs/{scid}/sessiontemplates[/{t}]
    UNKNOWN = "unknown"


#: Each kind by its name (what `Kind(name)` finds, without its exception for a miss).
_KINDS: dict[str, Kind] = {kind.value: kind for kind in Kind}

#: Kinds that name a part of a session rather than the session itself.
ELEMENT_KINDS: frozenset[Kind] = frozenset({Kind.MEMBER, Kind.SERVER, Kind.PROPERTIES})


@dataclass(frozen=True, slots=True)
class Resource:
    """What one MPSD path names. Fields a kind does not have are None.

    `element` is the element's own path below the session (`members/me`,
    `servers/host`, `properties`), the handle id for handles, the ticket id for
    tickets, and `stats` for hopper statistics.
    """

    kind: Kind
    scid: str | None = None
    template: str | None = None
    name: str | None = None
    element: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """Plain data for recordings and flow metadata (which must stay serialisable)."""
        return {
            "kind": self.kind.value,
            "scid": self.scid,
            "template": self.template,
            "name": self.name,
            "element": self.element,
        }

    @classmethod
    def from_dict(cls, data: dict[str, str | None]) -> Resource:
        try:
            kind = _KINDS.get(data.get("kind") or "unknown", Kind.UNKNOWN)
        except TypeError:  # not a kind's name, nor even hashable
            kind = Kind.UNKNOWN
        return cls(kind, data.get("scid"), data.get("template"), data.get("name"),
                   data.get("element"))

    @property
    def is_element(self) -> bool:
        return self.kind in ELEMENT_KINDS

    @property
    def is_session_or_element(self) -> bool:
        return self.kind is Kind.SESSION or self.kind in ELEMENT_KINDS

    #: `scid~template~name` in lower case (the RTA resource form), for sessions and
    #: their elements; None for everything else. Worked out once, with the resource:
    #: the injector, the tracker and the verdicts each ask it of every request.
    key: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (f"{self.scid}~{self.template}~{self.name}".lower()
               if self.is_session_or_element else None)
        object.__setattr__(self, "key", key)

    @property
    def session_path(self) -> str | None:
        """The canonical path of the session this resource belongs to."""
        if not self.is_session_or_element:
            return None
        return (
            f"/serviceconfigs/{self.scid}/sessiontemplates/{self.template}"
            f"/sessions/{self.name}"
        )

    @property
    def short(self) -> str:
        """A compact label for logs: `sessions/lobby-1/members/me`, `handles/ab12`."""
        match self.kind:
            case Kind.SESSION:
                return f"sessions/{self.name}"
            case Kind.MEMBER | Kind.SERVER | Kind.PROPERTIES:
                return f"sessions/{self.name}/{self.element}"
            case Kind.HANDLE:
                return f"handles/{self.element}" if self.element else "handles"
            case Kind.HANDLE_SESSION:
                return f"handles/{self.element}/session"
            case Kind.HANDLE_QUERY:
                return "handles/query"
            case Kind.HOPPER:
                suffix = f"/{self.element}" if self.element else ""
                return f"hoppers/{self.name}{suffix}"
            case Kind.TICKET:
                suffix = f"/{self.element}" if self.element else ""
                return f"hoppers/{self.name}/tickets{suffix}"
            case Kind.QUERY:
                return f"sessiontemplates/{self.template}/sessions" if self.template else "sessions"
            case Kind.BATCH:
                return f"sessiontemplates/{self.template}/batch" if self.template else "batch"
            case Kind.TEMPLATE:
                return f"sessiontemplates/{self.template}" if self.template else "sessiontemplates"
        return "?"


UNKNOWN = Resource(Kind.UNKNOWN)


def _segments(path: str) -> list[str]:
    """Path (possibly a full URL, possibly with a query) -> decoded segments."""
    if "://" in path:
        path = urlsplit(path).path
    else:
        path = path.split("?", 1)[0].split("#", 1)[0]
    segments = [s for s in path.split("/") if s]
    if "%" not in path:  # as a title sends them: nothing to decode (a call per segment)
        return segments
    return [unquote(s, errors="surrogateescape") for s in segments]


def _session_part(scid: str, template: str, name: str, rest: list[str]) -> Resource:
    """Resolve what lies below /serviceconfigs/{scid}/sessiontemplates/{t}/sessions/{name}."""
    low = [s.lower() for s in rest]
    if not rest:
        return Resource(Kind.SESSION, scid, template, name)
    if low == ["properties"]:
        return Resource(Kind.PROPERTIES, scid, template, name, "properties")
    if len(rest) == 2 and low[0] == "members":
        return Resource(Kind.MEMBER, scid, template, name, f"members/{rest[1]}")
    if len(rest) == 2 and low[0] == "servers":
        return Resource(Kind.SERVER, scid, template, name, f"servers/{rest[1]}")
    return UNKNOWN


def _serviceconfig(scid: str, rest: list[str]) -> Resource:
    """Resolve the part of a path below /serviceconfigs/{scid}."""
    low = [s.lower() for s in rest]
    if low == ["sessions"]:
        return Resource(Kind.QUERY, scid)
    if low == ["batch"]:
        return Resource(Kind.BATCH, scid)
    if low and low[0] == "sessiontemplates":
        if len(rest) == 1:
            return Resource(Kind.TEMPLATE, scid)
        template = rest[1]
        if len(rest) == 2:
            return Resource(Kind.TEMPLATE, scid, template)
        if low[2:] == ["sessions"]:
            return Resource(Kind.QUERY, scid, template)
        if low[2:] == ["batch"]:
            return Resource(Kind.BATCH, scid, template)
        if low[2] == "sessions" and len(rest) >= 4:
            return _session_part(scid, template, rest[3], rest[4:])
        return UNKNOWN
    if low and low[0] == "hoppers" and len(rest) >= 2:
        hopper = rest[1]
        if len(rest) == 2:
            return Resource(Kind.HOPPER, scid, name=hopper)
        if low[2:] == ["stats"]:
            return Resource(Kind.HOPPER, scid, name=hopper, element="stats")
        if low[2] == "tickets" and len(rest) <= 4:
            ticket = rest[3] if len(rest) == 4 else None
            return Resource(Kind.TICKET, scid, name=hopper, element=ticket)
    return UNKNOWN


def _handles(rest: list[str]) -> Resource:
    """Resolve the part of a path below /handles."""
    low = [s.lower() for s in rest]
    if not rest:
        return Resource(Kind.HANDLE)
    if low == ["query"]:
        return Resource(Kind.HANDLE_QUERY)
    if len(rest) == 1:
        return Resource(Kind.HANDLE, element=rest[0])
    if len(rest) == 2 and low[1] == "session":
        return Resource(Kind.HANDLE_SESSION, element=rest[0])
    return UNKNOWN


def parse(path: str) -> Resource:
    """The resource a request path (or full URL) names; Kind.UNKNOWN when none.

    Never raises: anything that is not MPSD grammar is simply UNKNOWN. (A request
    works its resource out once: `model.Request.resource`.)
    """
    try:
        segs = _segments(path)
    except (ValueError, TypeError, AttributeError):
        return UNKNOWN
    if not segs:
        return UNKNOWN
    head = segs[0].lower()
    if head == "serviceconfigs" and len(segs) >= 2:
        return _serviceconfig(segs[1], segs[2:])
    if head == "handles":
        return _handles(segs[1:])
    return UNKNOWN

