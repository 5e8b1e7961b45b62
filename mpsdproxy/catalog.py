"""The MPSD status-code table as data: the single source of truth.

Every other module (classifier, fault builder, stand-in, report) asks this one
what a status code means, which content type and body it carries and which
headers it must have. Nothing else spells those out.

It also says when the service can give each row (`Entry.cases`, `why_not`): for
which methods and resources, under which request preconditions, and whether
the session must exist. Scenario rules ask it so that a fault is one the
service could give for that request (an injected 412 to `If-Match: *` on an
existing session, or a 201 to an update, would test a title against answers it
never meets).

Source: "Multiplayer session status codes" (learn.microsoft.com, gaming/xbox-live,
features/multiplayer/mpsd/how-to/live-mpsd-status-codes). The note above the
table applies to every 4xx that returns a session: "The 4xx status codes
returning the session always return the entire session, even if the URI points
to a session element."
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mpsdproxy import model
from mpsdproxy import resources
from mpsdproxy.resources import Kind

__all__ = [
    "BodyKind",
    "Target",
    "Entry",
    "Sent",
    "Existence",
    "Case",
    "ANYWHERE",
    "ALL_METHODS",
    "SESSION_URI_KINDS",
    "Situation",
    "ENTRIES",
    "BY_ID",
    "BY_STATUS",
    "WHOLE_SESSION_NOTE",
    "SESSION_DOCUMENT_KEYS",
    "UnknownEntryError",
    "get",
    "for_status",
    "is_listed",
    "succeeded",
    "listed_statuses",
    "RETRY_AFTER_STATUSES",
    "target_of",
    "why_not",
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


class Sent(enum.StrEnum):
    """What a case needs of a precondition header (If-Match, If-None-Match) in the request."""

    ANY = "any"  # sent or not, any value
    ABSENT = "absent"
    PRESENT = "present"  # any value, `*` included
    ETAG = "etag"  # a value other than `*`: the title names the version it last saw


class Existence(enum.StrEnum):
    """What a case needs of the session a session or element URI names."""

    ANY = "any"
    EXISTS = "exists"  # unknown (None) does not do: the rule waits until the proxy saw it
    ABSENT = "absent"  # unknown (None) does: a session the proxy has not seen may be missing


#: All the methods a row can be about when it names none.
ALL_METHODS: frozenset[str] = frozenset({"GET", "PUT", "POST", "DELETE"})

#: The kinds whose URI names a session, so whether it exists decides some rows. A
#: handle's session (`/handles/{id}/session`) is not among them: which session it names
#: is only known from the answer, so existence is not judged there.
SESSION_URI_KINDS: frozenset[Kind] = frozenset({Kind.SESSION}) | resources.ELEMENT_KINDS


@dataclass(frozen=True, slots=True)
class Case:
    """One situation in which the service gives a row; a row can be given when any of its
    cases holds (and the request's method and target are the row's).

    `methods` and `kinds` narrow the row's own (None: no narrowing); `session` is
    judged only on URIs that name a session (`SESSION_URI_KINDS`).
    """

    methods: frozenset[str] | None = None
    kinds: frozenset[Kind] | None = None
    if_match: Sent = Sent.ANY
    if_none_match: Sent = Sent.ANY
    session: Existence = Existence.ANY


#: A row the service can give to any request its methods and target allow.
ANYWHERE: tuple[Case, ...] = (Case(),)


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
    #: When the service can give this row (any one case); see `why_not`.
    cases: tuple[Case, ...] = ANYWHERE
    #: What the cases need, in words, for `why_not` ("If-Match with an ETag on an
    #: existing session"); empty for a row possible anywhere.
    needs: str = ""

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

_WRITES = _methods("PUT", "POST", "DELETE")
_ELEMENTS = resources.ELEMENT_KINDS
#: Kinds the 405 row judges by the verbs they take (others are not modelled: any verb).
_VERBS: dict[frozenset[Kind], frozenset[str]] = {
    # XSAPI reads and writes a session with GET and PUT only; it leaves one by writing
    # (multiplayer_service.cpp WriteSessionUsingSubpath); there is no DELETE of a session.
    frozenset({Kind.SESSION, Kind.HANDLE_SESSION}): _methods("GET", "PUT"),
    # members/me, servers/{name}, properties: read, written and removed (DELETE members/me).
    _ELEMENTS: _methods("GET", "PUT", "DELETE"),
}
_OTHER_KINDS = frozenset(Kind).difference(*_VERBS)

#: The table, in the order of the documentation. Ids are stable: recordings,
#: scenarios and reports refer to rows by them. Beside each row: when the service
#: can give it (its `cases`), and why, from the table text and the protocol notes
#: (mpsd/protocol.md §4.2 for the preconditions, §5.3b for what the client sends).
ENTRIES: tuple[Entry, ...] = (
    # "read (GET) or updated (PUT)": a read or an update of a session that exists (a read
    # of a missing one is 204, a create 201); an update is not a create-only write
    # (If-None-Match: * on an existing session is 412). POST (handles, queries, batch,
    # tickets) names no session.
    Entry(
        "200.ok", 200, "OK", JSON, BodyKind.SESSION,
        "Successfully read (GET) or updated (PUT).",
        methods=_methods("GET", "PUT", "POST"),
        cases=(Case(_methods("GET"), session=Existence.EXISTS),
               Case(_methods("PUT"), if_none_match=Sent.ABSENT, session=Existence.EXISTS),
               Case(_methods("POST"))),
        needs="a read or an update of a session that exists, or a POST",
    ),
    # "created": a PUT that creates a session, so one that does not exist yet, sent
    # without If-Match (If-Match on a missing session is 412, §4.2); or a POST that
    # creates a handle or a ticket (protocol notes §3.4, trace 055/060).
    Entry(
        "201.created", 201, "Created", JSON, BodyKind.SESSION,
        "Successfully created.",
        methods=_methods("PUT", "POST"),
        cases=(Case(_methods("PUT"), if_match=Sent.ABSENT, session=Existence.ABSENT),
               Case(_methods("POST"))),
        needs="a create: a PUT without If-Match to a session that does not exist, or a POST",
    ),
    # The table names no situation. A valid (existing) session is always answered at
    # once (the write is applied or refused), so not there; elsewhere (handles,
    # matchmaking) it is left possible.
    Entry(
        "202.accepted", 202, "Accepted", TEXT, BodyKind.NONE,
        "The request was accepted but hasn't yet been completed.",
        cases=(Case(session=Existence.ABSENT),),
        needs="a request that does not name an existing session",
    ),
    # "On a GET for a session, the session doesn't exist."
    Entry(
        "204.get-session", 204, "No Content", None, BodyKind.NONE,
        "On a GET for a session, the session doesn't exist.",
        methods=_methods("GET"), target=Target.SESSION,
        session_gone=True,
        cases=(Case(session=Existence.ABSENT),),
        needs="a GET of a session that does not exist",
    ),
    # "On a GET of a session element, the session exists but the element doesn't."
    Entry(
        "204.get-element", 204, "No Content", None, BodyKind.NONE,
        "On a GET of a session element, the session exists but the element doesn't.",
        methods=_methods("GET"), target=Target.ELEMENT,
        cases=(Case(session=Existence.EXISTS),),
        needs="a GET of an element of a session that exists",
    ),
    # "On a PUT for a session, the session was deleted as a result of the PUT": the last
    # member left an existing session (not on a create-only write, which is 412 there);
    # or, from the FAQ (§4.1), a create that adds no member, so no If-Match.
    Entry(
        "204.put-session-deleted", 204, "No Content", None, BodyKind.NONE,
        "On a PUT for a session, the session was deleted as a result of the PUT operation.",
        methods=_methods("PUT"), target=Target.SESSION,
        session_gone=True,
        cases=(Case(if_none_match=Sent.ABSENT, session=Existence.EXISTS),
               Case(if_match=Sent.ABSENT, session=Existence.ABSENT)),
        needs="a PUT that empties an existing session, or a create without members",
    ),
    # "the session existed when the operation began".
    Entry(
        "204.element-gone", 204, "No Content", None, BodyKind.NONE,
        "On a PUT or DELETE for a session element, the session existed when the operation "
        "began, but neither the session nor the element exists.",
        methods=_methods("PUT", "DELETE"), target=Target.ELEMENT,
        session_gone=True,
        cases=(Case(session=Existence.EXISTS),),
        needs="a PUT or DELETE of an element of a session that exists",
    ),
    # "On a GET with the If-None-Match header, the session hasn't changed": so it exists.
    Entry(
        "304.not-modified", 304, "Not Modified", None, BodyKind.NONE,
        "On a GET with the If-None-Match header, the session hasn't changed.",
        methods=_methods("GET"), preconditions=("If-None-Match",),
        cases=(Case(if_none_match=Sent.PRESENT, session=Existence.EXISTS),),
        needs="a GET with If-None-Match of a session that exists",
    ),
    # Anywhere: any request can be malformed.
    Entry(
        "400.bad-request", 400, "Bad Request", TEXT, BodyKind.MESSAGE,
        "The request is invalid on first examination: a required field is missing or the "
        "JSON is malformed.",
    ),
    # Anywhere: authorization can fail on any request.
    Entry(
        "403.forbidden", 403, "Forbidden", TEXT, BodyKind.MESSAGE,
        "The request is invalid for its context: authorization has failed.",
    ),
    # "The session can't be updated by the user, but it can be read", and comes back
    # whole: a write (PUT, DELETE) to a session or its element that exists.
    Entry(
        "403.read-only", 403, "Forbidden", JSON, BodyKind.SESSION,
        "The session can't be updated by the user, but it can be read.",
        methods=_methods("PUT", "DELETE", "POST"),
        cases=(Case(_methods("PUT", "DELETE"), SESSION_URI_KINDS | {Kind.HANDLE_SESSION},
                    session=Existence.EXISTS),),
        needs="a PUT or DELETE to a session (or its element) that exists",
    ),
    # "the URI is invalid; the handle, SCID, or template can't be found; a hopper can't be
    # found; a session element can't be accessed because the session doesn't exist; or
    # the element lookup is invalid": on a session URI only when there is no such
    # session (a read of a missing session is 204, but a wrong SCID or template is 404);
    # an element lookup can be invalid on an existing session; anywhere else.
    Entry(
        "404.not-found", 404, "Not Found", TEXT, BodyKind.MESSAGE,
        "The URI is invalid, or the handle, SCID, session template, hopper or session "
        "element can't be found.",
        cases=(Case(kinds=frozenset({Kind.SESSION}), session=Existence.ABSENT),
               Case(kinds=frozenset(Kind) - {Kind.SESSION})),
        needs="a URI that names nothing: on a session URI, a session that does not exist",
    ),
    # "The request URI is plausible, but the verb is wrong": only a verb the resource
    # does not take (_VERBS); never a GET or PUT of a session.
    Entry(
        "405.method-not-allowed", 405, "Method Not Allowed", TEXT, BodyKind.MESSAGE,
        "The request URI is plausible, but the verb is wrong.",
        cases=(*(Case(ALL_METHODS - verbs, kinds) for kinds, verbs in _VERBS.items()),
               Case(kinds=_OTHER_KINDS)),
        needs="a verb the resource does not take (a session takes GET and PUT; an element "
              "GET, PUT and DELETE)",
    ),
    # "The session couldn't be updated because the request is incompatible": a write;
    # constants can conflict with the template's, so a create can draw it too.
    Entry(
        "409.conflict", 409, "Conflict", TEXT, BodyKind.MESSAGE,
        "The request is incompatible with the session: conflicting constants, or members "
        "other than the caller added to or removed from a large session.",
        cases=(Case(_WRITES),),
        needs="a write (PUT, POST or DELETE)",
    ),
    # Bodiless: If-None-Match (create-only, `*`) on a session that exists, or If-Match
    # (an ETag or `*`, "update existing") on one that does not (§4.2). An If-Match ETag
    # on an existing session is the next row, with the session.
    Entry(
        "412.precondition-failed", 412, "Precondition Failed", None, BodyKind.NONE,
        "The If-Match header, or the If-None-Match header (for an operation other than a "
        "GET), couldn't be satisfied.",
        methods=_methods("PUT", "DELETE", "POST"),
        preconditions=("If-Match", "If-None-Match"),
        cases=(Case(if_none_match=Sent.PRESENT, session=Existence.EXISTS),
               Case(if_match=Sent.PRESENT, session=Existence.ABSENT)),
        needs="If-None-Match on a session that exists, or If-Match on one that does not",
    ),
    # "The If-Match header couldn't be satisfied on a PUT or DELETE operation for an
    # existing session": an ETag that is no longer the current one. `If-Match: *` is
    # satisfied by any existing session (the client's "update existing" writes and
    # MultiplayerManager's commit and leave send it, multiplayer_service.cpp
    # WriteSessionUsingSubpath), so it never draws this row.
    Entry(
        "412.if-match-session", 412, "Precondition Failed", JSON, BodyKind.SESSION,
        "The If-Match header couldn't be satisfied on a PUT or DELETE for an existing "
        "session; the current session and its current ETag are returned.",
        methods=_methods("PUT", "DELETE"),
        preconditions=("If-Match",),
        required_headers=("ETag",),
        cases=(Case(kinds=SESSION_URI_KINDS | {Kind.HANDLE_SESSION}, if_match=Sent.ETAG,
                    session=Existence.EXISTS),),
        needs="If-Match with an ETag on an existing session",
    ),
    # Anywhere: FGRL counts every call (§5.1).
    Entry(
        "429.too-many-requests", 429, "Too Many Requests", JSON, BodyKind.FGRL,
        "The call was throttled for exceeding the Fine-Grained Rate Limiting (FGRL) "
        "restrictions.",
        required_headers=("Retry-After",),
    ),
    # Anywhere: an overloaded service refuses any call.
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


def succeeded(status: int) -> bool:
    """Whether an answer with this status did what the call asked: a 2xx, or a 304 (the
    copy the title holds is the current one). Every 4xx and 5xx row of the table is a
    failure the title has to handle."""
    return 200 <= status < 400


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


# --- when the service can give a row ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Situation:
    """What decides whether the service can give a row: the request's method, resource
    and precondition headers, and whether its session exists as far as the proxy knows
    (True, False, or None when the proxy has not seen the session yet)."""

    method: str  # upper case
    resource: resources.Resource
    if_match: str | None  # the request's If-Match value, None when not sent
    if_none_match: str | None
    exists: bool | None

    @classmethod
    def of(cls, request: model.Request, exists: bool | None = None) -> Situation:
        headers = request.headers
        return cls(request.method.upper(), request.resource, headers.first("If-Match"),
                   headers.first("If-None-Match"), exists)

    @property
    def shape(self) -> tuple[str, resources.Kind, str | None, str | None, bool | None]:
        """All that `why_not` reads: the method, the resource kind, each precondition as
        absent, `*` or an ETag, and whether the session exists. Two situations of one
        shape get the same answer, so a caller may remember answers by it."""
        return _shape(self.method, self.resource.kind, self.if_match, self.if_none_match,
                      self.exists)

    @staticmethod
    def shape_of(request: model.Request, exists: bool | None = None
                 ) -> tuple[str, resources.Kind, str | None, str | None, bool | None]:
        """`Situation.of(request, exists).shape` without building the situation: a caller
        that remembers answers by shape builds one only for a shape it has not seen."""
        headers = request.headers
        return _shape(request.method.upper(), request.resource.kind, headers.first("If-Match"),
                      headers.first("If-None-Match"), exists)


def _shape(method: str, kind: resources.Kind, if_match: str | None, if_none_match: str | None,
           exists: bool | None) -> tuple[str, resources.Kind, str | None, str | None, bool | None]:
    """A situation's shape (`Situation.shape`), from what the situation is made of."""
    return method, kind, _sent_as(if_match), _sent_as(if_none_match), exists


def _sent_as(value: str | None) -> str | None:
    """A precondition header as `why_not` tells them apart: absent (None), `*`, an ETag."""
    if value is None:
        return None
    return "*" if value.strip() == "*" else "an ETag"


def _sent_fails(need: Sent, name: str, value: str | None) -> str | None:
    """What the request sent that a header condition rules out (None: it holds)."""
    if need is Sent.ANY:
        return None
    if value is None:
        return None if need is Sent.ABSENT else f"this request sent no {name}"
    sent = _sent_as(value)
    if need is Sent.ABSENT or (need is Sent.ETAG and sent == "*"):
        return f"this request sent {name}: *" if sent == "*" else (
            f"this request sent {name} with an ETag")
    return None


def _existence_fails(need: Existence, situation: Situation) -> str | None:
    """Why the session's state rules a case out (None: it does not)."""
    if need is Existence.ANY or situation.resource.kind not in SESSION_URI_KINDS:
        return None
    exists = situation.exists
    if need is Existence.EXISTS and exists is not True:
        return ("the session does not exist" if exists is False
                else "the proxy has not seen this session yet")
    if need is Existence.ABSENT and exists is True:
        return "the session exists"
    return None


def _case_fails(case: Case, situation: Situation) -> tuple[list[str], list[str]]:
    """What about the situation this case rules out: the request's method or resource,
    then its headers or its session's state (both empty: the case holds)."""
    kind = situation.resource.kind
    shape = [
        f"this request is a {situation.method}"
        if case.methods is not None and situation.method not in case.methods else None,
        f"this request is to {_a(kind.value)}"
        if case.kinds is not None and kind not in case.kinds else None,
    ]
    state = [
        _sent_fails(case.if_match, "If-Match", situation.if_match),
        _sent_fails(case.if_none_match, "If-None-Match", situation.if_none_match),
        _existence_fails(case.session, situation),
    ]
    return [r for r in shape if r is not None], [r for r in state if r is not None]


def _names(methods: frozenset[str]) -> str:
    return ", ".join(sorted(methods))


def why_not(entry: Entry, situation: Situation) -> str | None:
    """None when the service can give `entry` in this situation; else one line for
    people saying why not, e.g. "412.if-match-session needs If-Match with an ETag on an
    existing session; this request sent If-Match: *"."""
    if situation.method not in entry.methods:
        return (f"{entry.id} answers only {_names(entry.methods)}; "
                f"this request is a {situation.method}")
    target = target_of(situation.resource)
    if entry.target is not Target.ANY and entry.target is not target:
        return (f"{entry.id} answers only a request to {_a(entry.target.value)}; this "
                f"request is to {_a(situation.resource.kind.value)}")
    ruled_out = [_case_fails(case, situation) for case in entry.cases]
    if any(not shape and not state for shape, state in ruled_out):
        return None
    # The cases that fit the request's method and resource best say why; the facts of
    # all of them that fit equally well, each once.
    rank = min((len(shape), len(state)) for shape, state in ruled_out)
    facts = [reason for shape, state in ruled_out if (len(shape), len(state)) == rank
             for reason in (*shape, *state)]
    facts = list(dict.fromkeys(facts))
    method, kind = f"this request is a {situation.method}", "this request is to "
    if method in facts and any(f.startswith(kind) for f in facts):
        facts = [f"{method} to {f.removeprefix(kind)}" if f.startswith(kind) else f
                 for f in facts if f != method]
    return f"{entry.id} needs {entry.needs}; {' and '.join(facts)}"


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"
