"""The MPSD status-code table as data: the single source of truth.

Every other module (classifier, fault builder, stand-in, report) asks this one
what a status code means, which content type and body it carries and which
headers it must have. Nothing else spells those out.

Source: "Multiplayer session status codes" (learn.microsoft.com, gaming/xbox-live,
features/multiplayer/mpsd/how-to/live-mpsd-status-codes). The note above the
table applies to every 4xx that returns a session: "The 4xx status codes
returning the session always return the entire session, even if the URI points
to a session element."
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mpsdproxy import resources

__all__ = [
    "BodyKind",
    "Target",
    "Entry",
    "ENTRIES",
    "BY_ID",
    "BY_STATUS",
    "WHOLE_SESSION_NOTE",
    "SESSION_DOCUMENT_KEYS",
    "UnknownEntryError",
    "get",
    "for_status",
    "is_listed",
    "listed_statuses",
    "RETRY_AFTER_STATUSES",
    "target_of",
]

WHOLE_SESSION_NOTE = (
    "The 4xx status codes returning the session always return the entire session, "
    "even if the URI points to a session element."
)

#: Top-level keys every whole session document carries (protocol notes §3.1). A
#: body missing any of them is a fragment, not "the entire session".
SESSION_DOCUMENT_KEYS: frozenset[str] = frozenset({"constants", "properties", "changeNumber"})


class BodyKind(enum.StrEnum):
    """What the table says the body holds."""

    SESSION = "session"  # the whole session document, JSON
    MESSAGE = "message"  # a human-readable message (text/plain)
    FGRL = "fgrl"  # the fine-grained rate limit's JSON message (fgrl.message)
    NONE = "none"  # no body


class Target(enum.StrEnum):
    """Which URI the row talks about."""

    SESSION = "session"  # .../sessions/{name}
    ELEMENT = "element"  # .../sessions/{name}/members/me, /servers/{n}, /properties, ...
    ANY = "any"  # any MPSD URI


@dataclass(frozen=True)
class Entry:
    """One row or sub-row of the status table.

    `methods`, `target` and `preconditions` describe the situation the row is
    about; the classifier uses them to tell sub-rows of one code apart and to
    notice a response that came without its documented situation (a 304 to a
    request that never sent If-None-Match). `required_headers` are the response
    headers the row promises to the client.
    """

    id: str
    status: int
    reason: str
    content_type: str | None
    body: BodyKind
    meaning: str
    methods: frozenset[str] = frozenset({"GET", "PUT", "POST", "DELETE"})
    target: Target = Target.ANY
    #: Request headers that make this row possible; any one of them suffices.
    preconditions: tuple[str, ...] = ()
    required_headers: tuple[str, ...] = ()
    #: The answer says the session no longer exists (a tracked copy must be forgotten).
    session_gone: bool = False

    def __post_init__(self) -> None:
        if not 100 <= self.status < 600:
            raise ValueError(f"status should be in range [100, 600), not {self.status}")

    @property
    def returns_session(self) -> bool:
        return self.body is BodyKind.SESSION


def _methods(*names: str) -> frozenset[str]:
    return frozenset(names)


JSON = "application/json"
TEXT = "text/plain"

#: The table, in the order of the documentation. Ids are stable: recordings,
#: scenarios and reports refer to rows by them.
ENTRIES: tuple[Entry, ...] = (
    Entry(
        "200.ok", 200, "OK", JSON, BodyKind.SESSION,
        "Successfully read (GET) or updated (PUT).",
        methods=_methods("GET", "PUT", "POST"),
    ),
    Entry(
        "201.created", 201, "Created", JSON, BodyKind.SESSION,
        "Successfully created.",
        methods=_methods("PUT", "POST"),
    ),
    Entry(
        "202.accepted", 202, "Accepted", TEXT, BodyKind.NONE,
        "The request was accepted but hasn't yet been completed.",
    ),
    Entry(
        "204.get-session", 204, "No Content", None, BodyKind.NONE,
        "On a GET for a session, the session doesn't exist.",
        methods=_methods("GET"), target=Target.SESSION,
        session_gone=True,
    ),
    Entry(
        "204.get-element", 204, "No Content", None, BodyKind.NONE,
        "On a GET of a session element, the session exists but the element doesn't.",
        methods=_methods("GET"), target=Target.ELEMENT,
    ),
    Entry(
        "204.put-session-deleted", 204, "No Content", None, BodyKind.NONE,
        "On a PUT for a session, the session was deleted as a result of the PUT operation.",
        methods=_methods("PUT"), target=Target.SESSION,
        session_gone=True,
    ),
    Entry(
        "204.element-gone", 204, "No Content", None, BodyKind.NONE,
        "On a PUT or DELETE for a session element, the session existed when the operation "
        "began, but neither the session nor the element exists.",
        methods=_methods("PUT", "DELETE"), target=Target.ELEMENT,
        session_gone=True,
    ),
    Entry(
        "304.not-modified", 304, "Not Modified", None, BodyKind.NONE,
        "On a GET with the If-None-Match header, the session hasn't changed.",
        methods=_methods("GET"), preconditions=("If-None-Match",),
    ),
    Entry(
        "400.bad-request", 400, "Bad Request", TEXT, BodyKind.MESSAGE,
        "The request is invalid on first examination: a required field is missing or the "
        "JSON is malformed.",
    ),
    Entry(
        "403.forbidden", 403, "Forbidden", TEXT, BodyKind.MESSAGE,
        "The request is invalid for its context: authorization has failed.",
    ),
    Entry(
        "403.read-only", 403, "Forbidden", JSON, BodyKind.SESSION,
        "The session can't be updated by the user, but it can be read.",
        methods=_methods("PUT", "DELETE", "POST"),
    ),
    Entry(
        "404.not-found", 404, "Not Found", TEXT, BodyKind.MESSAGE,
        "The URI is invalid, or the handle, SCID, session template, hopper or session "
        "element can't be found.",
    ),
    Entry(
        "405.method-not-allowed", 405, "Method Not Allowed", TEXT, BodyKind.MESSAGE,
        "The request URI is plausible, but the verb is wrong.",
    ),
    Entry(
        "409.conflict", 409, "Conflict", TEXT, BodyKind.MESSAGE,
        "The request is incompatible with the session: conflicting constants, or members "
        "other than the caller added to or removed from a large session.",
    ),
    Entry(
        "412.precondition-failed", 412, "Precondition Failed", None, BodyKind.NONE,
        "The If-Match header, or the If-None-Match header (for an operation other than a "
        "GET), couldn't be satisfied.",
        methods=_methods("PUT", "DELETE", "POST"),
        preconditions=("If-Match", "If-None-Match"),
    ),
    Entry(
        "412.if-match-session", 412, "Precondition Failed", JSON, BodyKind.SESSION,
        "The If-Match header couldn't be satisfied on a PUT or DELETE for an existing "
        "session; the current session and its current ETag are returned.",
        methods=_methods("PUT", "DELETE"),
        preconditions=("If-Match",),
        required_headers=("ETag",),
    ),
    Entry(
        "429.too-many-requests", 429, "Too Many Requests", JSON, BodyKind.FGRL,
        "The call was throttled for exceeding the Fine-Grained Rate Limiting (FGRL) "
        "restrictions.",
        required_headers=("Retry-After",),
    ),
    Entry(
        "503.service-unavailable", 503, "Service Unavailable", TEXT, BodyKind.NONE,
        "The service is overloaded; retry later, honouring the Retry-After header.",
        required_headers=("Retry-After",),
    ),
)

BY_ID: dict[str, Entry] = {e.id: e for e in ENTRIES}
BY_STATUS: dict[int, tuple[Entry, ...]] = {}
for _e in ENTRIES:
    BY_STATUS[_e.status] = (*BY_STATUS.get(_e.status, ()), _e)
del _e

#: The statuses whose rows say "retry later" with a Retry-After in whole seconds.
RETRY_AFTER_STATUSES: frozenset[int] = frozenset(
    e.status for e in ENTRIES if "Retry-After" in e.required_headers
)


class UnknownEntryError(LookupError):
    """A status or entry id that the table does not list."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def get(entry_id: str) -> Entry:
    """The entry with this stable id, or UnknownEntryError listing the valid ids."""
    try:
        return BY_ID[entry_id]
    except KeyError:
        valid = ", ".join(BY_ID)
        raise UnknownEntryError(
            f"{entry_id!r} is not a catalog entry. Valid entries are: {valid}."
        ) from None


def for_status(status: int) -> tuple[Entry, ...]:
    """Every sub-row for a status code (empty when the table does not list it)."""
    return BY_STATUS.get(status, ())


def is_listed(status: int) -> bool:
    return status in BY_STATUS


def listed_statuses() -> list[int]:
    """The status codes of the table, ascending."""
    return sorted(BY_STATUS)


def target_of(resource: resources.Resource) -> Target:
    """Which of the table's targets a resource is: the one resource-to-target map."""
    if resource.kind is resources.Kind.SESSION:
        return Target.SESSION
    if resource.is_element:
        return Target.ELEMENT
    return Target.ANY
