"""The status catalog: stable ids, the sub-rows the table distinguishes, and the table itself."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from mpsdproxy import catalog
from mpsdproxy import model
from mpsdproxy import resources
from mpsdproxy.catalog import BodyKind
from mpsdproxy.catalog import Target

TABLE_FILE = Path(__file__).resolve().parent / "../../shared/mpsd/status-codes.txt"

#: (status, content type, body) for every row and sub-row of the published table, used
#: when the table text is not beside the checkout (and checked against it when it is).
TABLE_ROWS: list[tuple[int, str | None, str]] = [
    (200, "application/json", "session"),
    (201, "application/json", "session"),
    (202, "text/plain", "none"),
    (204, None, "none"),
    (204, None, "none"),
    (204, None, "none"),
    (204, None, "none"),
    (304, None, "none"),
    (400, "text/plain", "message"),
    (403, "text/plain", "message"),
    (403, "application/json", "session"),
    (404, "text/plain", "message"),
    (405, "text/plain", "message"),
    (409, "text/plain", "message"),
    (412, None, "none"),
    (412, "application/json", "session"),
    (429, "application/json", "message"),
    (503, "text/plain", "none"),
]

_CODE_ROW = re.compile(r"^(\d{3}) (.*)$")
_TYPED = re.compile(r"\b(application/json|text/plain) (Session|Message|None)\b")


def parse_table(text: str) -> list[tuple[int, str | None, str]]:
    """The table text -> (status, content type, body) per row and sub-row.

    A line that starts with a content type continues the row above it (the
    403 and 412 sub-rows); the 204 row lists its situations as "On a ..."
    sentences, one sub-row each.
    """
    rows: list[tuple[int, str | None, str]] = []
    status: int | None = None
    for line in text.splitlines():
        code_row = _CODE_ROW.match(line)
        if code_row:
            status, rest = int(code_row[1]), code_row[2]
        elif status is not None and line.startswith(("application/", "text/")):
            rest = line
        else:
            continue
        typed = _TYPED.search(rest)
        content_type, body = (typed[1], typed[2].lower()) if typed else (None, "none")
        repeat = max(1, rest.count("On a ")) if status == 204 else 1
        rows.extend([(status, content_type, body)] * repeat)
    return rows


def table_body(kind: BodyKind) -> str:
    """The table's word for a body kind: it calls the FGRL JSON of the 429 a message."""
    return "message" if kind is BodyKind.FGRL else kind.value


def catalog_rows() -> list[tuple[int, str | None, str]]:
    return [(e.status, e.content_type, table_body(e.body)) for e in catalog.ENTRIES]


def test_ids_are_unique_and_stable_shape():
    ids = [e.id for e in catalog.ENTRIES]
    assert len(ids) == len(set(ids)) == 18
    for entry in catalog.ENTRIES:
        assert re.fullmatch(r"\d{3}\.[a-z]+(-[a-z]+)*", entry.id), entry.id
        assert entry.id.startswith(f"{entry.status}.")
        assert catalog.get(entry.id) is entry


@pytest.mark.parametrize(
    "entry_id",
    ["204.get-session", "412.if-match-session", "503.service-unavailable", "403.read-only"],
)
def test_ids_other_modules_rely_on(entry_id):
    assert catalog.get(entry_id).id == entry_id


@pytest.mark.parametrize(
    "status, count",
    [(200, 1), (201, 1), (202, 1), (204, 4), (304, 1), (403, 2), (412, 2), (429, 1), (500, 0)],
)
def test_sub_rows_per_status(status, count):
    assert len(catalog.for_status(status)) == count


def test_four_distinct_204_situations():
    situations = {
        (e.target, frozenset(e.methods)) for e in catalog.for_status(204)
    }
    assert situations == {
        (Target.SESSION, frozenset({"GET"})),
        (Target.ELEMENT, frozenset({"GET"})),
        (Target.SESSION, frozenset({"PUT"})),
        (Target.ELEMENT, frozenset({"PUT", "DELETE"})),
    }
    assert all(e.body is BodyKind.NONE and e.content_type is None
               for e in catalog.for_status(204))


def test_two_403s_differ_by_content_type():
    by_type = {e.content_type: e for e in catalog.for_status(403)}
    assert set(by_type) == {"text/plain", "application/json"}
    assert by_type["text/plain"].id == "403.forbidden"
    assert by_type["text/plain"].body is BodyKind.MESSAGE
    assert "authorization" in by_type["text/plain"].meaning.lower()
    assert by_type["application/json"].id == "403.read-only"
    assert by_type["application/json"].returns_session


def test_two_412s():
    plain, with_session = catalog.for_status(412)
    assert plain.id == "412.precondition-failed"
    assert not plain.returns_session and plain.required_headers == ()
    assert with_session.id == "412.if-match-session"
    assert with_session.returns_session
    assert with_session.content_type == "application/json"
    assert with_session.preconditions == ("If-Match",)


@pytest.mark.parametrize(
    "entry_id, headers",
    [
        ("503.service-unavailable", ("Retry-After",)),
        ("429.too-many-requests", ("Retry-After",)),
        ("412.if-match-session", ("ETag",)),
        ("412.precondition-failed", ()),
        ("200.ok", ()),
    ],
)
def test_required_headers(entry_id, headers):
    assert catalog.get(entry_id).required_headers == headers


def test_retry_after_statuses():
    assert catalog.RETRY_AFTER_STATUSES == {429, 503}


def test_304_needs_if_none_match():
    (entry,) = catalog.for_status(304)
    assert entry.preconditions == ("If-None-Match",)
    assert entry.methods == {"GET"}


def test_get_unknown_id_lists_valid_ids():
    with pytest.raises(catalog.UnknownEntryError, match="'999.nope' is not a catalog entry") as e:
        catalog.get("999.nope")
    message = str(e.value)
    assert "Valid entries are:" in message
    for entry in catalog.ENTRIES:
        assert entry.id in message
    assert isinstance(e.value, LookupError) and not isinstance(e.value, KeyError)


def test_whole_session_note():
    assert catalog.WHOLE_SESSION_NOTE == (
        "The 4xx status codes returning the session always return the entire session, "
        "even if the URI points to a session element."
    )
    if TABLE_FILE.exists():
        assert catalog.WHOLE_SESSION_NOTE in TABLE_FILE.read_text(encoding="utf-8")


def test_session_document_keys():
    assert {"constants", "properties", "changeNumber"} <= catalog.SESSION_DOCUMENT_KEYS


@pytest.mark.parametrize("status", [99, 600, 1000, -1])
def test_entry_validates_status_range(status):
    with pytest.raises(ValueError, match=rf"range \[100, 600\), not {status}"):
        catalog.Entry("x.y", status, "R", None, BodyKind.NONE, "m")


def test_listed_statuses():
    assert catalog.listed_statuses() == sorted({s for s, _, _ in TABLE_ROWS})
    assert catalog.is_listed(412)
    assert not catalog.is_listed(500)
    assert catalog.for_status(418) == ()


def test_catalog_matches_embedded_rows():
    assert Counter(catalog_rows()) == Counter(TABLE_ROWS)


@pytest.mark.skipif(not TABLE_FILE.exists(), reason="status-codes.txt is not beside the checkout")
def test_catalog_matches_table_text():
    text = TABLE_FILE.read_text(encoding="utf-8")
    rows = parse_table(text)
    assert Counter(rows) == Counter(TABLE_ROWS)
    assert Counter(rows) == Counter(catalog_rows())
    listed = {int(m[1]) for m in map(_CODE_ROW.match, text.splitlines()) if m}
    assert listed == set(catalog.listed_statuses())


@pytest.mark.skipif(not TABLE_FILE.exists(), reason="status-codes.txt is not beside the checkout")
def test_reason_phrases_match_table_text():
    lines = {int(m[1]): m[2].lower() for m in map(_CODE_ROW.match,
                                                    TABLE_FILE.read_text().splitlines()) if m}
    for entry in catalog.ENTRIES:
        assert lines[entry.status].startswith(entry.reason.lower()), entry.id


def test_entries_are_frozen():
    entry = catalog.get("200.ok")
    with pytest.raises(AttributeError):
        entry.status = 201  # type: ignore[misc]


def test_the_429_body_is_the_fgrl_message():
    assert catalog.get("429.too-many-requests").body is BodyKind.FGRL
    assert [e.id for e in catalog.ENTRIES if e.body is BodyKind.FGRL] == ["429.too-many-requests"]


@pytest.mark.parametrize("path, target", [
    ("/serviceconfigs/s/sessiontemplates/t/sessions/n", Target.SESSION),
    ("/serviceconfigs/s/sessiontemplates/t/sessions/n/members/me", Target.ELEMENT),
    ("/handles/abc", Target.ANY),
    ("/whatever", Target.ANY),
])
def test_target_of_is_the_one_resource_to_target_map(path, target):
    assert catalog.target_of(resources.parse(path)) is target


# --- when the service can give a row ----------------------------------------------------

SESSION = "/serviceconfigs/scid/sessiontemplates/LobbySession/sessions/lobby-1"
MEMBER = SESSION + "/members/me"


def situation(method: str, path: str = SESSION, exists: bool | None = True,
              if_match: str | None = None,
              if_none_match: str | None = None) -> catalog.Situation:
    headers = [(k, v) for k, v in (("If-Match", if_match), ("If-None-Match", if_none_match))
               if v is not None]
    request = model.Request(method, f"https://sessiondirectory.xboxlive.com{path}", headers)
    return catalog.Situation.of(request, exists)


#: (row, situation, whether the service can give the row there). Each row has at least
#: one situation where it can and, unless it can happen anywhere, one where it cannot.
WHEN = [
    ("200.ok", situation("GET"), True),
    ("200.ok", situation("GET", exists=None), False),  # waits until the proxy saw it
    ("200.ok", situation("GET", exists=False), False),  # a missing session reads as 204
    ("200.ok", situation("PUT", if_match="*"), True),
    ("200.ok", situation("PUT", if_none_match="*"), False),  # create-only: 412 there
    ("200.ok", situation("POST", "/handles", exists=None), True),
    ("201.created", situation("PUT", exists=False), True),
    ("201.created", situation("PUT", exists=None, if_none_match="*"), True),
    ("201.created", situation("PUT"), False),  # an update is no create
    ("201.created", situation("PUT", exists=False, if_match="*"), False),
    ("201.created", situation("POST", "/handles"), True),
    ("202.accepted", situation("POST", "/handles"), True),
    ("202.accepted", situation("PUT"), False),  # not on a valid session
    ("204.get-session", situation("GET", exists=False), True),
    ("204.get-session", situation("GET", exists=None), True),
    ("204.get-session", situation("GET"), False),
    ("204.get-element", situation("GET", MEMBER), True),
    ("204.get-element", situation("GET", MEMBER, exists=None), False),
    ("204.put-session-deleted", situation("PUT", if_match='"e1"'), True),
    ("204.put-session-deleted", situation("PUT", exists=False), True),  # a create, no member
    ("204.put-session-deleted", situation("PUT", if_none_match="*"), False),
    ("204.element-gone", situation("DELETE", MEMBER), True),
    ("204.element-gone", situation("DELETE", MEMBER, exists=False), False),
    ("304.not-modified", situation("GET", if_none_match='"e1"'), True),
    ("304.not-modified", situation("GET"), False),
    ("304.not-modified", situation("GET", exists=None, if_none_match='"e1"'), False),
    ("304.not-modified", situation("PUT", if_none_match='"e1"'), False),
    ("400.bad-request", situation("GET", exists=None), True),
    ("403.forbidden", situation("DELETE", MEMBER, exists=False), True),
    ("403.read-only", situation("PUT"), True),
    ("403.read-only", situation("PUT", exists=False), False),
    ("403.read-only", situation("GET"), False),
    ("404.not-found", situation("GET", "/handles/h1/session"), True),
    ("404.not-found", situation("PUT", exists=None), True),
    ("404.not-found", situation("PUT"), False),  # not on a valid session
    ("404.not-found", situation("GET", MEMBER), True),  # an invalid element lookup
    ("405.method-not-allowed", situation("DELETE"), True),
    ("405.method-not-allowed", situation("POST", MEMBER), True),
    ("405.method-not-allowed", situation("PUT"), False),  # a session takes PUT
    ("405.method-not-allowed", situation("DELETE", MEMBER), False),
    ("409.conflict", situation("PUT"), True),
    ("409.conflict", situation("GET"), False),
    ("412.precondition-failed", situation("PUT", if_none_match="*"), True),
    ("412.precondition-failed", situation("PUT", exists=False, if_match="*"), True),
    ("412.precondition-failed", situation("PUT", exists=None, if_match='"e1"'), True),
    ("412.precondition-failed", situation("PUT", if_match="*"), False),
    ("412.precondition-failed", situation("PUT", exists=False, if_none_match="*"), False),
    ("412.precondition-failed", situation("PUT"), False),
    ("412.if-match-session", situation("PUT", if_match='"e1"'), True),
    ("412.if-match-session", situation("DELETE", MEMBER, if_match='"e1"'), True),
    ("412.if-match-session", situation("PUT", if_match="*"), False),
    ("412.if-match-session", situation("PUT", exists=None, if_match='"e1"'), False),
    ("412.if-match-session", situation("PUT", exists=False, if_match='"e1"'), False),
    ("412.if-match-session", situation("GET", if_match='"e1"'), False),
    ("429.too-many-requests", situation("PUT", exists=None, if_match="*"), True),
    ("503.service-unavailable", situation("GET", exists=False), True),
]


@pytest.mark.parametrize("entry_id, where, possible", WHEN)
def test_why_not_says_where_the_service_can_give_each_row(entry_id, where, possible):
    reason = catalog.why_not(catalog.get(entry_id), where)
    assert (reason is None) is possible, reason
    if reason is not None:
        assert reason.startswith(f"{entry_id} ") and "\n" not in reason


def test_every_row_is_judged_somewhere_possible():
    assert {entry_id for entry_id, _, possible in WHEN if possible} == set(catalog.BY_ID)


@pytest.mark.parametrize("entry_id, where, reason", [
    ("412.if-match-session", situation("PUT", if_match="*"),
     "412.if-match-session needs If-Match with an ETag on an existing session; "
     "this request sent If-Match: *"),
    ("412.if-match-session", situation("PUT", exists=None, if_match='"e1"'),
     "412.if-match-session needs If-Match with an ETag on an existing session; "
     "the proxy has not seen this session yet"),
    ("201.created", situation("PUT"),
     "201.created needs a create: a PUT without If-Match to a session that does not exist, "
     "or a POST; the session exists"),
    ("405.method-not-allowed", situation("PUT"),
     "405.method-not-allowed needs a verb the resource does not take (a session takes GET "
     "and PUT; an element GET, PUT and DELETE); this request is a PUT to a session"),
    ("304.not-modified", situation("PUT"),
     "304.not-modified answers only GET; this request is a PUT"),
    ("204.element-gone", situation("PUT"),
     "204.element-gone answers only a request to an element; this request is to a session"),
])
def test_why_not_says_why_in_one_line(entry_id, where, reason):
    assert catalog.why_not(catalog.get(entry_id), where) == reason


def test_situation_of_a_request():
    request = model.Request("put", f"https://sessiondirectory.xboxlive.com{MEMBER}",
                            [("if-match", '"e1"')])
    found = catalog.Situation.of(request)
    assert (found.method, found.resource.kind, found.if_match, found.if_none_match,
            found.exists) == ("PUT", resources.Kind.MEMBER, '"e1"', None, None)


def test_existence_is_judged_only_where_a_uri_names_a_session():
    """A handle's session is known only from the answer: existence does not decide there."""
    by_handle = situation("PUT", "/handles/h1/session", exists=None, if_match='"e1"')
    assert catalog.why_not(catalog.get("412.if-match-session"), by_handle) is None
