"""diff: pairing, volatile fields, renamed sessions, unpaired exchanges, output formats."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mpsdproxy import classify
from mpsdproxy import diff
from mpsdproxy import faults
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy.diff.side import Identities

SCID = "6efc0200-1111-2222-3333-444455556666"
BASE = "https://sessiondirectory.xboxlive.com"


def session_url(name: str, element: str = "") -> str:
    path = f"/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/{name}"
    return BASE + path + (f"/{element}" if element else "")


def session_doc(name: str, active: bool = True, change: int = 1,
                correlation: str = "5c0ffee0-7e57-4000-8000-00000000c0de",
                start: str = "2016-09-20T20:50:00.5180901Z") -> dict[str, Any]:
    return {
        "membersInfo": {"first": 0, "next": 1, "count": 1, "accepted": 1},
        "constants": {"system": {"version": 1, "maxMembersCount": 8}, "custom": {}},
        "properties": {"system": {"joinRestriction": "followed"}, "custom": {"map": name}},
        "members": {"0": {"joinTime": start,
                          "constants": {"system": {"xuid": "2533274800000002", "index": 0}},
                          "properties": {"system": {"active": active}}}},
        "correlationId": correlation,
        "branch": "28b24087-0c0d-4e5f-9a0b-00000000b002",
        "changeNumber": change,
        "startTime": start,
    }


def exchange(method: str, url: str, status: int | None, body: Any = None, *,
             headers: list[tuple[str, str]] | None = None, request_body: Any = None,
             request_headers: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """A record as the recorder writes it, classified for real."""
    raw = faults.encode_json(body) if isinstance(body, dict | list) else (body or b"")
    req_raw = faults.encode_json(request_body) if request_body is not None else b""
    headers = headers if headers is not None else (
        [("Content-Type", "application/json"), ("ETag", '"e1"'),
         ("Date", "Tue, 20 Sep 2016 20:50:00 GMT"), ("X-XblCorrelationId", "c-1")]
        if raw else [])
    request_headers = request_headers or [("Host", "sessiondirectory.xboxlive.com")]
    request = model.Request(method, url, model.Headers(request_headers), req_raw)
    response = None if status is None else model.Response(status, "", model.Headers(headers), raw)
    cls = classify.classify(model.Exchange(request, response))
    return {
        "start": "2016-09-20T20:50:00.000000Z",
        "end": "2016-09-20T20:50:00.050000Z",
        "duration_ms": 50.0,
        "client": "127.0.0.1:50412",
        "request": {"method": method, "url": url, "headers": [list(h) for h in request_headers],
                    "body": recording.encode_body(req_raw)},
        "response": None if status is None else {
            "status": status, "reason": "", "headers": [list(h) for h in headers],
            "body": recording.encode_body(raw)},
        "error": "connection reset" if status is None else None,
        "resource": None,
        "classification": cls.to_dict(),
        "provenance": {"source": "forwarded"},
    }


def lifecycle(name: str = "lobby-1", handle: str = "c3f4d5a6-1b2c-4d3e-8f4a-00000000c003",
              **doc: Any) -> list[dict[str, Any]]:
    """Create, read, advertise, leave: the exchanges of one short session."""
    ref = {"scid": SCID, "templateName": "LobbySession", "name": name}
    return [
        exchange("PUT", session_url(name), 201, session_doc(name, **doc),
                 request_body={"members": {"me": {"properties": {"system": {"active": True}}}}}),
        exchange("GET", session_url(name), 200, session_doc(name, **doc)),
        exchange("POST", BASE + "/handles", 201,
                 {"id": handle, "type": "activity", "version": 1, "sessionRef": ref},
                 headers=[("Content-Type", "application/json"),
                          ("Location", f"/handles/{handle}")],
                 request_body={"type": "activity", "version": 1, "sessionRef": ref}),
        exchange("GET", f"{BASE}/handles/{handle}", 200,
                 {"id": handle, "type": "activity", "version": 1, "sessionRef": ref}),
        exchange("PUT", session_url(name), 204, request_body={"members": {"me": None}}),
    ]


def write(path: Path, records: list[dict[str, Any]]) -> str:
    with recording.Writer(path) as w:
        for r in records:
            w.write(copy.deepcopy(r))
    return str(path)


@pytest.fixture
def pair(tmp_path: Path):
    def make(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> tuple[str, str]:
        return write(tmp_path / "old.jsonl", old), write(tmp_path / "new.jsonl", new)
    return make


def test_identical_recordings_do_not_regress(pair) -> None:
    old, new = pair(lifecycle(), lifecycle())
    result = diff.diff(old, new)
    assert result.pairs == 5
    assert not result.regressed
    assert diff.exit_code(result) == 0
    assert diff.render_text(result).rstrip().endswith("no regressions")


def test_one_changed_status_names_exactly_that_pair(pair) -> None:
    changed = lifecycle()
    changed[3] = exchange("GET", f"{BASE}/handles/c3f4d5a6-1b2c-4d3e-8f4a-00000000c003", 404,
                          b"handle not found",
                          headers=[("Content-Type", "text/plain; charset=utf-8")])
    old, new = pair(lifecycle(), changed)
    result = diff.diff(old, new)
    assert result.regressed and diff.exit_code(result) == 1
    assert [(c.old.seq, c.new.seq) for c in result.changes] == [(4, 4)]
    only = result.changes[0]
    assert (only.old.status, only.new.status) == (200, 404)
    assert (only.old.classification, only.new.classification) == ("200.ok", "404.not-found")
    text = diff.render_text(result)
    assert "#4 -> #4  GET handles/c3f4d5a6-1b2c-4d3e-8f4a-00000000c003\n" in text
    assert "status: 200 -> 404" in text
    assert "REGRESSED" in text


def test_a_changed_json_field_is_reported_by_dotted_path(pair) -> None:
    changed = lifecycle()
    changed[1] = exchange("GET", session_url("lobby-1"), 200, session_doc("lobby-1", active=False))
    result = diff.diff(*pair(lifecycle(), changed))
    assert [c.new.seq for c in result.changes] == [2]
    fields = result.changes[0].fields
    assert [(f.path, f.old, f.new, f.change) for f in fields] == [
        ("members.0.properties.system.active", True, False, "changed")]


def test_the_json_output_stays_json_when_a_body_holds_nan_or_1e400(pair) -> None:
    changed = lifecycle()
    changed[1] = exchange("GET", session_url("lobby-1"), 200,
                          b'{"properties": {"custom": {"x": 1e400, "y": NaN, "z": -1e400}}}',
                          headers=[("Content-Type", "application/json")])
    result = diff.diff(*pair(lifecycle(), changed))

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    shown = json.loads(result.to_json(), parse_constant=refuse)
    values = {f["path"]: f.get("new") for c in shown["changes"] for f in c["fields"]}
    assert values["properties.custom.x"] == "Infinity"
    assert values["properties.custom.y"] == "NaN"
    assert values["properties.custom.z"] == "-Infinity"


def test_volatile_fields_are_ignored_by_default_but_not_when_asked(pair) -> None:
    changed = lifecycle(correlation="00000000-aaaa-bbbb-cccc-000000000000",
                        start="2026-11-25T09:37:44.1234567Z")
    for r in changed:
        if r["response"] and r["response"]["headers"]:
            r["response"]["headers"] = [
                [k, '"other"' if k == "ETag" else "Wed, 25 Nov 2026 09:00:00 GMT" if k == "Date"
                 else v] for k, v in r["response"]["headers"]]
    old, new = pair(lifecycle(), changed)
    assert not diff.diff(old, new).regressed
    strict = diff.diff(old, new, ignore=(), ignore_timestamps=False)
    paths = {f.path for c in strict.changes for f in c.fields}
    assert {"correlationId", "startTime", "members.0.joinTime", "header:etag",
            "header:date"} <= paths


def test_ignore_patterns_are_globs_on_dotted_paths(pair) -> None:
    changed = lifecycle()
    changed[1] = exchange("GET", session_url("lobby-1"), 200, session_doc("lobby-1", active=False))
    old, new = pair(lifecycle(), changed)
    result = diff.diff(old, new, ignore=(*diff.DEFAULT_IGNORES, "members.*.properties"))
    assert not result.regressed
    assert "members.*.properties" in result.to_dict()["ignore"]


def test_change_number_is_compared(pair) -> None:
    old, new = pair(lifecycle(), lifecycle(change=2))
    result = diff.diff(old, new)
    assert {f.path for c in result.changes for f in c.fields} == {"changeNumber"}
    assert not diff.diff(old, new, ignore=(*diff.DEFAULT_IGNORES, "changeNumber")).regressed


def test_renamed_sessions_and_fresh_handle_ids_still_pair(pair) -> None:
    renamed = lifecycle(name="3F2A0C1E-9875-4A53-BB1D-47556775F680",
                        handle="11111111-2222-3333-4444-555555555555")
    for r in renamed:  # the body names the map after the session: same rename there
        body = (r["response"] or {}).get("body") or {}
        if "json" in body and "properties" in body["json"]:
            body["json"]["properties"]["custom"]["map"] = "3F2A0C1E-9875-4A53-BB1D-47556775F680"
    result = diff.diff(*pair(lifecycle(), renamed))
    assert result.pairs == 5
    assert not result.regressed, diff.render_text(result)


def test_unpaired_exchanges_on_either_side(pair) -> None:
    extra = lifecycle()
    extra.insert(2, exchange("GET", session_url("lobby-1"), 200, session_doc("lobby-1")))
    result = diff.diff(*pair(lifecycle()[:-1], extra))
    assert result.regressed
    assert [e.seq for e in result.unpaired_old] == []
    assert sorted((e.seq, e.method) for e in result.unpaired_new) == [(3, "GET"), (6, "PUT")]
    assert not result.changes
    data = result.to_dict()
    assert data["summary"] == {"pairs": 4, "changed": 0, "unpaired_old": 0, "unpaired_new": 2}
    assert {u["side"] for u in data["unpaired"]} == {"new"}
    assert "only in new (2):" in diff.render_text(result)


def test_pairing_is_by_position_within_method_and_resource(pair) -> None:
    old = lifecycle()
    new = lifecycle()
    new[1], new[2] = new[2], new[1]  # the title now advertises before it reads
    assert not diff.diff(*pair(old, new)).regressed


def test_new_anomalies_are_reported(pair) -> None:
    good = faults.build("503.service-unavailable")
    bad_headers = [(k, v) for k, v in good.headers if k != "Retry-After"]
    old_rec = exchange("GET", session_url("x"), 503, good.body, headers=good.headers)
    new_rec = exchange("GET", session_url("x"), 503, good.body, headers=bad_headers)
    result = diff.diff(*pair([old_rec], [new_rec]))
    assert [a.code for a in result.changes[0].new_anomalies] == ["missing-header"]
    assert not result.changes[0].status_changed
    assert "new anomaly missing-header" in diff.render_text(result)


def test_unreadable_lines_are_reported_and_leave_their_partner_unpaired(pair, tmp_path) -> None:
    old, new = pair(lifecycle(), lifecycle())
    lines = Path(new).read_text().splitlines(keepends=True)
    lines[2] = "{not json\n"  # line 1 is the header line: this is record 2
    Path(new).write_text("".join(lines))
    result = diff.diff(old, new)
    assert [(i.path, i.line) for i in result.issues] == [(new, 3)]
    assert [e.seq for e in result.unpaired_old] == [2]
    assert result.to_dict()["issues"][0]["line"] == 3
    assert f"{new}:3:" in diff.render_text(result)


def test_no_response_versus_response(pair) -> None:
    old = [exchange("GET", session_url("x"), 200, session_doc("x"))]
    new = [exchange("GET", session_url("x"), None)]
    change = diff.diff(*pair(old, new)).changes[0]
    assert (change.old.status, change.new.status) == (200, None)
    assert change.new.classification is None


def test_json_output_is_stable_and_complete(pair) -> None:
    changed = lifecycle()
    changed[1] = exchange("GET", session_url("lobby-1"), 200, session_doc("lobby-1", active=False))
    del changed[1]["response"]["body"]["json"]["membersInfo"]
    data = json.loads(diff.diff(*pair(lifecycle(), changed)).to_json())
    assert list(data) == ["version", "old", "new", "regressed", "ignore", "ignore_timestamps",
                          "summary", "changes", "unpaired", "issues"]
    change = data["changes"][0]
    assert change["old_seq"] == change["new_seq"] == 2
    assert change["status"] is None and change["classification"] is None
    fields = {f["path"]: f for f in change["fields"]}
    assert fields["membersInfo"] == {"path": "membersInfo", "change": "removed",
                                     "old": {"first": 0, "next": 1, "count": 1, "accepted": 1}}
    assert fields["members.0.properties.system.active"]["new"] is False


def test_non_json_bodies_compare_whole(pair) -> None:
    old = [exchange("GET", session_url("x"), 400, b"missing field",
                    headers=[("Content-Type", "text/plain")])]
    new = [exchange("GET", session_url("x"), 400, b"bad JSON",
                    headers=[("Content-Type", "text/plain")])]
    fields = diff.diff(*pair(old, new)).changes[0].fields
    assert [(f.path, f.old, f.new) for f in fields] == [("(body)", "missing field", "bad JSON")]


def test_request_body_changes_are_prefixed(pair) -> None:
    old = [exchange("PUT", session_url("x"), 200, session_doc("x"),
                    request_body={"properties": {"custom": {"mode": "ffa"}}})]
    new = [exchange("PUT", session_url("x"), 200, session_doc("x"),
                    request_body={"properties": {"custom": {"mode": "teams"}}})]
    result = diff.diff(*pair(old, new))
    assert [f.path for f in result.changes[0].fields] == ["request:properties.custom.mode"]
    assert not diff.diff(*pair(old, new), ignore=("request:*",)).regressed


@pytest.mark.parametrize("path, patterns, expected", [
    ("correlationId", ("correlationId",), True),
    ("results.0.correlationId", ("correlationId",), True),
    ("members.0.joinTime", ("members.*.joinTime",), True),
    ("members.0.properties.system.active", ("members.*.properties",), True),
    ("members.0.properties.system.active", ("properties.system",), True),
    ("members.0.properties.system.active", ("system.inactive",), False),
    ("xcorrelationId", ("correlationId",), False),
    ("header:etag", ("header:*",), True),
    ("request:properties.custom.mode", ("mode",), True),
    ("request:properties.custom.mode", ("request:*",), True),
    ("properties.custom.mode", ("request:*",), False),
    ("changeNumber", diff.DEFAULT_IGNORES, False),
    ("members.1.properties.system.connection", diff.DEFAULT_IGNORES, True),
    ("request:members.me.properties.system.connection", diff.DEFAULT_IGNORES, True),
    ("members.0.deviceToken", diff.DEFAULT_IGNORES, True),
    ("header:sec-websocket-accept", diff.DEFAULT_IGNORES, True),
    ("header:receivedbytes", diff.DEFAULT_IGNORES, True),  # Fiddler's, on a saved websocket
    ("members.0.properties.system.active", diff.DEFAULT_IGNORES, False),
])
def test_ignored(path: str, patterns: tuple[str, ...], expected: bool) -> None:
    assert diff.ignored(path, patterns) is expected


# ---------------------------------------------------------------- what a wire could not carry


def test_records_no_wire_could_carry_are_issues_with_their_line(pair) -> None:
    bad = lifecycle()
    bad[1]["response"]["status"] = 99999
    bad[3]["response"]["headers"].append(["Set-Cookie", "a=1\r\nX-Evil: 1"])
    old, new = pair(lifecycle(), bad)
    result = diff.diff(old, new)
    assert [(i.path, i.line) for i in result.issues] == [(new, 3), (new, 5)]
    assert "99999" in result.issues[0].problem
    assert "CR, LF or NUL" in result.issues[1].problem
    assert [e.seq for e in result.unpaired_old] == [2, 4]


def test_a_body_nested_1000_deep_compares_whole(pair) -> None:
    deep = b"[" * 1000 + b"]" * 1000
    deeper = b"[" * 1001 + b"]" * 1001
    old = [exchange("PUT", session_url("x"), 200, session_doc("x"), request_body=None)]
    new = [exchange("PUT", session_url("x"), 200, session_doc("x"), request_body=None)]
    old[0]["request"]["body"] = recording.encode_body(deep)
    new[0]["request"]["body"] = recording.encode_body(deeper)
    result = diff.diff(*pair(old, new))
    assert [f.path for f in result.changes[0].fields] == ["request:(body)"]
    json.loads(result.to_json())


# ---------------------------------------------------------------- bytes that are not UTF-8


def not_utf8(title: str) -> list[dict[str, Any]]:
    """A GET whose path holds byte 0xE9 and whose answer's header holds 0xFF."""
    return [exchange("GET", session_url("caf\udce9"), 200, session_doc("x"),
                     headers=[("Content-Type", "application/json"), ("X-Title", title)])]


def test_bytes_that_are_not_utf8_diff_in_text_and_json(pair) -> None:
    old, new = pair(not_utf8("Caf\udcff Racer"), not_utf8("Caf\udcfe Racer"))
    assert "\\udce9" in Path(old).read_text(encoding="utf-8")
    result = diff.diff(old, new)
    assert result.pairs == 1
    assert [(f.path, f.old, f.new) for f in result.changes[0].fields] == [
        ("header:x-title", "Caf\udcff Racer", "Caf\udcfe Racer")]
    text = diff.render_text(result)
    text.encode("utf-8")  # strict: no lone surrogate left
    assert "#1 -> #1  GET sessions/caf\\xe9\n" in text
    assert 'header:x-title: "Caf\\xff Racer" -> "Caf\\xfe Racer"' in text
    data = json.loads(result.to_json().encode("utf-8"))
    change = data["changes"][0]
    assert change["resource"] == "sessions/caf\\xe9"
    assert change["fields"][0]["old"] == "Caf\\xff Racer"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_diff_command_prints_bytes_that_are_not_utf8(pair, fmt: str) -> None:
    from click.testing import CliRunner

    from mpsdproxy.cli import cli

    old, new = pair(not_utf8("Caf\udcff Racer"), not_utf8("Caf\udcfe Racer"))
    done = CliRunner().invoke(cli, ["diff", old, new, "--format", fmt])
    assert done.exit_code == 1, done.output  # the header changed: a regression
    assert "caf\\xe9" in (json.loads(done.output)["changes"][0]["resource"]
                          if fmt == "json" else done.output)


# --- identities: one scan per string, the same result as a regex of every name ----------

_NAME = st.text(alphabet="ab-_.~1é", min_size=1, max_size=6)


def _by_regex_of_every_name(known: list[tuple[str, str]], text: str) -> str:
    """The long way the scan must agree with: one alternation of every known name,
    longest first, each standing whole; a string known as two kinds takes the later kind
    (tables merged session, handle, ticket)."""
    tables: dict[str, dict[str, str]] = {"session": {}, "handle": {}, "ticket": {}}
    for kind, name in known:
        table = tables[kind]
        table.setdefault(name.lower(), f"<{kind}:{len(table) + 1}>")
    replacement = {**tables["session"], **tables["handle"], **tables["ticket"]}
    if not replacement:
        return text
    names = sorted(replacement, key=len, reverse=True)
    pattern = re.compile(rf"(?<![\w-])(?:{'|'.join(map(re.escape, names))})(?![\w-])",
                         re.IGNORECASE)
    return pattern.sub(lambda m: replacement[m.group(0).lower()], text)


@settings(max_examples=400, deadline=None)
@given(known=st.lists(st.tuples(st.sampled_from(["session", "handle", "ticket"]), _NAME),
                      max_size=6),
       words=st.lists(_NAME, max_size=8), glue=st.sampled_from([" ", "/", ".", "", "-"]))
def test_identities_replace_as_a_regex_of_every_name_would(
        known: list[tuple[str, str]], words: list[str], glue: str) -> None:
    ids = Identities()
    for kind, name in known:
        ids.add(kind, name)
    text = glue.join(words + [name.upper() for _, name in known[:2]])
    assert ids.normalise(text) == _by_regex_of_every_name(known, text)


def test_thousands_of_identities_are_each_replaced() -> None:
    """Thousands of sessions (a long playtest) are looked up, not compiled into a regex."""
    ids = Identities()
    for n in range(5000):
        ids.add("session", f"lobby-{n}")
        assert ids.normalise(f"/sessions/lobby-{n}/members/me") == \
            f"/sessions/<session:{n + 1}>/members/me"
