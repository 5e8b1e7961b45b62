"""Scenario files: parsers, validation, the schema, shipped scenarios, triggers and the engine."""

from __future__ import annotations

import json
import random
import re
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mpsdproxy import catalog
from mpsdproxy import classify
from mpsdproxy import faults
from mpsdproxy import resources
from mpsdproxy import scenario
from mpsdproxy.scenario import Engine
from mpsdproxy.scenario import Per
from mpsdproxy.scenario import Phase
from mpsdproxy.scenario import RequestView
from mpsdproxy.scenario import Trigger
from mpsdproxy.scenario import When

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))
SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
GAME = f"/serviceconfigs/{SCID}/sessiontemplates/GameSession/sessions/game-1"
HOPPER = f"/serviceconfigs/{SCID}/hoppers/QuickMatch"

ISSUE_EXAMPLE = """\
name: lobby-under-pressure
description: Stale ETags on join, FGRL throttling on reads, a short outage.
seed: 7
rules:
  - name: stale-etag-on-join
    match:
      method: PUT
      resource: member
      path: "*/sessions/lobby-*"
      host: sessiondirectory.xboxlive.com
      headers: {If-Match: "*"}
    when: {nth: 2}
    fault: {status: 412}
  - name: fgrl
    match: {resource: session, method: GET}
    when: {probability: 0.2}
    fault: {status: 429}
  - name: outage
    when: {after: 20s, for: 10s}
    fault: {status: 503, retry_after: 5}
  - name: lag
    match: {resource: hopper}
    fault: {delay: 1500ms}
  - name: lost-answer
    match: {method: PUT}
    when: {nth: 5}
    phase: response
    fault: {status: 503, retry_after: 2}
  - name: drop
    when: {nth: 9}
    fault: {drop: true}
"""


def rules_yaml(*rules: str, top: str = "") -> str:
    """A scenario text from rule bodies written as YAML flow mappings."""
    return top + "rules:\n" + "".join(f"  - {r}\n" for r in rules)


def problems_of(text: str) -> list[scenario.Problem]:
    with pytest.raises(scenario.ScenarioError) as raised:
        scenario.parse_scenario(text, "t.yaml")
    return list(raised.value.problems)


def view(method: str = "GET", path: str = LOBBY, **kw: Any) -> RequestView:
    return RequestView(method, path, **kw)


# --- durations and globs ----------------------------------------------------------------


@pytest.mark.parametrize("value,seconds", [
    ("1500ms", 1.5), ("2s", 2.0), ("1.5s", 1.5), ("3m", 180.0), ("1h", 3600.0),
    (".5s", 0.5), ("0", 0.0), ("20", 20.0), (5, 5.0), (0.25, 0.25), ("0ms", 0.0),
])
def test_parse_duration(value: Any, seconds: float) -> None:
    assert scenario.parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value,fragment", [
    ("-1s", "negative"), (-1, "negative"), (-0.5, "negative"), ("2 s", "not '2 s'"),
    ("abc", "duration"), ("1.5.5s", "duration"), ("s", "duration"), ("", "duration"),
    ("1d", "duration"), ("2S", "duration"), (True, "boolean"), (None, "null"),
    ([1], "a list"), (float("inf"), "finite"), (float("nan"), "finite"),
])
def test_parse_duration_rejects(value: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        scenario.parse_duration(value)


@pytest.mark.parametrize("text", [
    "1500ms", "2s", "1.5s", "3m", "1h", ".5s", "0", "-1s", "2 s", "abc", "1.5.5s", "s", "1d",
    "1.s", "01s", "1e3", "+2s",
])
def test_schema_duration_pattern_agrees_with_parse_duration(text: str) -> None:
    pattern = scenario.schema()["$defs"]["duration"]["anyOf"][1]["pattern"]
    try:
        scenario.parse_duration(text)
        parses = True
    except ValueError:
        parses = False
    assert (re.search(pattern, text) is not None) == parses


@pytest.mark.parametrize("glob,value,matches", [
    ("*/sessions/lobby-*", LOBBY, True),
    ("*/sessions/lobby-*", LOBBY.upper(), True),
    ("*/sessions/lobby-*", GAME, False),
    ("*/SessionTemplates/lobbysession/*", LOBBY, True),
    ("/serviceconfigs/*/hoppers/?uickMatch", HOPPER, True),
    ("*lobby-[0-9]", LOBBY, True),
    ("*lobby-[!0-9]", LOBBY, False),
    ("*.xboxlive.com", "sessiondirectory.xboxlive.com", True),
    ("*", "", True),
    ("[[]x", "[x", True),
])
def test_parse_glob_matches(glob: str, value: str, matches: bool) -> None:
    assert scenario.parse_glob(glob).matches(value) is matches


@pytest.mark.parametrize("glob,fragment", [
    ("[a-", "never closed"), ("abc[", "never closed"), ("[!", "never closed"),
    ("[z-a]", "is empty"), ("", "empty glob"), (5, "not an integer"),
])
def test_parse_glob_rejects(glob: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        scenario.parse_glob(glob)


# --- match ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec,method,path,headers,host,matches", [
    ({}, "DELETE", "/anything", {}, "", True),
    ({"method": "PUT"}, "put", LOBBY, {}, "", True),
    ({"method": ["GET", "PUT"]}, "DELETE", LOBBY, {}, "", False),
    ({"resource": "session"}, "GET", LOBBY, {}, "", True),
    ({"resource": "session"}, "GET", LOBBY + "/members/me", {}, "", False),
    ({"resource": "member"}, "DELETE", LOBBY + "/members/me", {}, "", True),
    ({"resource": "element"}, "DELETE", LOBBY + "/servers/host", {}, "", True),
    ({"resource": "element"}, "PUT", LOBBY + "/properties", {}, "", True),
    ({"resource": "handle"}, "POST", "/handles", {}, "", True),
    ({"resource": "handle"}, "POST", "/handles/query", {}, "", True),
    ({"resource": "handle"}, "PUT", "/handles/ab12/session", {}, "", True),
    ({"resource": "hopper"}, "GET", HOPPER + "/stats", {}, "", True),
    ({"resource": "hopper"}, "GET", HOPPER + "/tickets/t1", {}, "", False),
    ({"resource": "ticket"}, "DELETE", HOPPER + "/tickets/t1", {}, "", True),
    ({"resource": "query"}, "GET", f"/serviceconfigs/{SCID}/sessions?xuid=1", {}, "", True),
    ({"resource": "batch"}, "POST", f"/serviceconfigs/{SCID}/batch", {}, "", True),
    ({"resource": ["ticket", "batch"]}, "GET", LOBBY, {}, "", False),
    ({"resource": "any"}, "GET", "/not/mpsd", {}, "", True),
    ({"path": "*/sessions/lobby-1"}, "GET", LOBBY + "?nocommit=true", {}, "", True),
    ({"path": "*/sessions/lobby-1"}, "GET", "https://h.example" + LOBBY + "?x=1", {}, "", True),
    ({"path": ["/handles*", "*/lobby-1"]}, "GET", LOBBY, {}, "", True),
    ({"host": "sessiondirectory.xboxlive.com"}, "GET", LOBBY, {},
     "SessionDirectory.XboxLive.com:443", True),
    ({"host": "*.xboxlive.com"}, "GET", LOBBY, {}, "127.0.0.1:8081", False),
    ({"headers": {"If-Match": "*"}}, "PUT", LOBBY, {"if-match": '"abc"'}, "", True),
    ({"headers": {"If-Match": "*"}}, "PUT", LOBBY, {}, "", False),
    ({"headers": {"If-Match": '"a*"'}}, "PUT", LOBBY, [("If-Match", '"b1"'), ("If-Match", '"a1"')],
     "", True),
    ({"headers": {"If-Match": True}}, "PUT", LOBBY, {"If-Match": ""}, "", True),
    ({"headers": {"If-None-Match": False}}, "GET", LOBBY, {"If-None-Match": "*"}, "", False),
    ({"headers": {"If-None-Match": False}}, "GET", LOBBY, {"If-Match": "*"}, "", True),
])
def test_match(spec: dict[str, Any], method: str, path: str, headers: Any, host: str,
               matches: bool) -> None:
    match = scenario.parse_match(spec)
    assert match.matches(method, host, path, headers, resources.parse(path)) is matches
    assert match.matches(method, host, path, headers) is matches  # parses the path itself


def test_match_resource_names_are_the_schema_enum() -> None:
    assert scenario.schema()["$defs"]["resource"]["enum"] == list(scenario.RESOURCE_KINDS)


MATCH_SPECS = [
    {}, {"method": ["GET", "PUT"], "resource": ["session", "element"]},
    {"path": "*/sessions/*", "host": "*.xboxlive.com"},
    {"headers": {"If-Match": "*", "If-None-Match": False, "X": "[ab]?"}},
    {"resource": "any", "path": ["/handles*", "*[0-9]"]},
]


@settings(max_examples=300, deadline=None)
@given(spec=st.sampled_from(MATCH_SPECS), method=st.text(max_size=8), host=st.text(max_size=20),
       path=st.text(max_size=60),
       headers=st.one_of(
           st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=4),
           st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), max_size=4),
           st.lists(st.one_of(st.integers(), st.text(), st.tuples(st.integers())), max_size=3),
           st.none(), st.integers()),
       resource=st.one_of(st.none(), st.builds(
           resources.Resource, st.sampled_from(list(resources.Kind)),
           st.one_of(st.none(), st.text(max_size=8)), st.one_of(st.none(), st.text(max_size=8)))))
def test_match_never_raises(spec: dict[str, Any], method: str, host: str, path: str,
                            headers: Any, resource: resources.Resource | None) -> None:
    match = scenario.parse_match(spec)
    assert match.matches(method, host, path, headers, resource) in (True, False)


# --- loading ----------------------------------------------------------------------------


def test_issue_example_loads_into_records() -> None:
    s = scenario.parse_scenario(ISSUE_EXAMPLE, "lobby.yaml")
    assert (s.name, s.seed, s.path) == ("lobby-under-pressure", 7, "lobby.yaml")
    assert [r.name for r in s.rules] == [
        "stale-etag-on-join", "fgrl", "outage", "lag", "lost-answer", "drop"]
    join = s.rules[0]
    assert join.match.methods == frozenset({"PUT"})
    assert join.match.resources == ("member",)
    assert [g.text for g in join.match.paths] == ["*/sessions/lobby-*"]
    assert join.match.headers == (scenario.HeaderMatch("If-Match"),)
    assert join.when == When(nth=2)
    assert join.fault == scenario.Fault(status=412)
    assert (join.phase, join.per) == (Phase.REQUEST, Per.GLOBAL)
    assert s.rules[2].when == When(after=20.0, for_=10.0)
    assert s.rules[2].fault.retry_after == 5
    assert s.rules[3].fault.delay == scenario.FixedDelay(1.5)
    assert s.rules[4].phase is Phase.RESPONSE
    assert s.rules[5].fault.connection == "drop"
    assert s.rule("FGRL") is s.rules[1]


def test_records_are_immutable() -> None:
    s = scenario.parse_scenario(ISSUE_EXAMPLE)
    with pytest.raises(AttributeError):
        s.rules[0].name = "other"  # type: ignore[misc]


def test_defaults_and_extensions() -> None:
    text = """\
version: 1
rules:
  - name: a
    description: the first rule
    enabled: false
    per: session
    when: {after: 1m, for: 30s, from: first-match, times: 2}
    fault:
      entry: 403.read-only
      headers: {X-Why: test, Retry-After: 3, Cache-Control: null}
      body: {"note": "json body"}
      delay: {lognormal: {median: 300ms, sigma: 0.5, max: 5s}}
  - name: b
    phase: response
    fault: {headers: {ETag: '"bogus"'}, truncate: 10}
"""
    s = scenario.parse_scenario(text, "dir/my-pass.yaml")
    assert (s.name, s.seed, s.description) == ("my-pass", 0, "")
    a, b = s.rules
    assert (a.enabled, a.per, a.description) == (False, Per.SESSION, "the first rule")
    assert a.when.from_ is scenario.Origin.FIRST_MATCH and a.when.times == 2
    assert (a.fault.status, a.fault.entry) == (403, "403.read-only")
    assert a.fault.headers == (("X-Why", "test"), ("Retry-After", "3"), ("Cache-Control", None))
    assert json.loads(a.fault.body or b"") == {"note": "json body"}
    assert a.fault.delay == scenario.LognormalDelay(0.3, 0.5, 5.0)
    assert (b.phase, b.fault.truncate, b.fault.truncate_to, b.fault.status) == (
        Phase.RESPONSE, True, 10, None)


@pytest.mark.parametrize("rule,key,fragment", [
    ("{name: a, fault: {status: 412, headers: {Retry-After: 5}}}", None, None),
    ("{name: a, phase: response, fault: {body: replaced}}", None, None),
    ("{name: a, phase: response, fault: {truncate: true}}", None, None),
    ("{name: a, fault: {status: 200, truncate: true}}", None, None),
    ("{name: a, fault: {throttle: {burst: 1, sustained: 1}, status: 429, body: ''}}", None, None),
    ("{name: a, fault: {drop: true, delay: 2s}}", None, None),
    ("{name: a, phase: response, fault: {truncate: 0}}", None, None),
    ("{name: a, phase: response, fault: {truncate: false}}", "rules[0].fault", "does nothing"),
    ("{name: a, fault: {drop: true, truncate: 0}}", "rules[0].fault.drop", "with truncate"),
    ("{name: a, fault: {delay: 0s}}", "rules[0].fault", "does nothing"),
    ("{name: a, fault: {throttle: {burst: 1, sustained: 1}, status: 503}}",
     "rules[0].fault.status", "answers 429 by itself"),
    ("{name: a, fault: {hang: true, status: 503}}", "rules[0].fault.hang", "with status"),
    ("{name: a, fault: {status: 204, truncate: true}}", "rules[0].fault.truncate", "no body"),
    ("{name: a, when: {first: 2, every: 2}, fault: {status: 503}}", "rules[0].when.every",
     "cannot be combined"),
    ("{name: a, match: {resource: [hopper, session]}, per: session, fault: {status: 503}}",
     None, None),
    ("{name: a, match: {headers: {If-Match: x, if-match: y}}, fault: {status: 412}}",
     "rules[0].match.headers.if-match", "repeats header"),
])
def test_semantic_checks(rule: str, key: str | None, fragment: str | None) -> None:
    text = rules_yaml(rule)
    if key is None:
        scenario.parse_scenario(text)
        return
    (problem,) = problems_of(text)
    assert problem.key_path == key
    assert fragment in problem.message


def test_every_problem_is_reported_at_once() -> None:
    text = """\
name: many
seed: x
rules:
  - name: a
    when: {for: 3s}
    fault: {status: 503}
  - name: b
    fault: {status: 418}
  - name: a
    match: {path: "[a-"}
    fault: {drop: true, status: 404}
"""
    found = [(p.line, p.key_path) for p in problems_of(text)]
    assert found == [
        (2, "seed"), (5, "rules[0].when.for"), (8, "rules[1].fault.status"),
        (9, "rules[2].name"), (10, "rules[2].match.path"), (11, "rules[2].fault.drop"),
    ]


def test_problem_renders_like_a_compiler() -> None:
    p = scenario.Problem("s.yaml", 3, 7, "rules[2].when.nth", "must be at least 1, not 0")
    assert str(p) == "s.yaml:3:7: rules[2].when.nth: must be at least 1, not 0"
    err = scenario.ScenarioError([p, p])
    assert isinstance(err, ValueError)
    assert str(err) == f"{p}\n{p}"


def test_merge_keys_and_aliases_are_read_with_their_places() -> None:
    text = """\
rules:
  - name: a
    match: &puts {method: PUT, resource: session}
    fault: {status: 503}
  - name: b
    match: {<<: *puts, path: "[a-"}
    fault: {status: 503}
"""
    (problem,) = problems_of(text)
    assert (problem.line, problem.key_path) == (6, "rules[1].match.path")
    s = scenario.parse_scenario(text.replace("[a-", "*/lobby-*"))
    assert s.rules[1].match.methods == frozenset({"PUT"})
    assert s.rules[1].match.resources == ("session",)
    # a bad value in the anchor is reported for every rule that uses it, where it is written
    found = problems_of(text.replace("method: PUT", "method: FETCH").replace("[a-", "*"))
    assert [(p.line, p.key_path) for p in found] == [
        (3, "rules[0].match.method"), (3, "rules[1].match.method")]


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    (problem,) = problems_of("\n".join(lines) + "\n")
    assert "too large" in problem.message


@pytest.mark.parametrize("depth,fragment", [(60, "deeper than 50"), (600, "too deeply")])
def test_deep_nesting_is_a_problem_not_a_crash(depth: int, fragment: str) -> None:
    (problem,) = problems_of("rules: " + "[" * depth + "]" * depth + "\n")
    assert problem.key_path == scenario.ROOT
    assert fragment in problem.message


# --- load and check on files ------------------------------------------------------------


def test_load_and_check_files(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(ISSUE_EXAMPLE)
    bad = tmp_path / "bad.yaml"
    bad.write_text(rules_yaml("{name: a, fault: {status: 418}}"))
    missing = tmp_path / "missing.yaml"
    assert scenario.load(good).path == str(good)
    assert scenario.check([good]) == []
    lines = scenario.check([good, bad, missing, tmp_path])
    assert lines[0].startswith(f"{bad}:2:31: rules[0].fault.status: 418 is not a valid status")
    assert lines[1] == f"{missing}:1:1: (document): cannot read the file: No such file or directory"
    assert lines[2].startswith(f"{tmp_path}:1:1: (document): cannot read the file: ")
    assert len(lines) == 3


def test_non_utf8_file_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\nrules: []\n")
    (line,) = scenario.check([path])
    assert line.startswith(f"{path}:1:10: (document): not UTF-8 text (byte 0xe9)")


def test_control_characters_are_one_problem() -> None:
    (problem,) = problems_of("name: a\nrules:\x1f\n")
    assert (problem.line, problem.column, problem.key_path) == (2, 7, scenario.ROOT)
    assert "U+001F" in problem.message


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + ISSUE_EXAMPLE.encode())
    assert scenario.load(path).name == "lobby-under-pressure"


YAML_WORDS = st.sampled_from([
    "version", "name", "description", "seed", "rules", "match", "when", "fault", "phase", "per",
    "method", "resource", "path", "host", "headers", "nth", "first", "every", "probability",
    "after", "for", "times", "from", "status", "entry", "body", "retry_after", "content_type",
    "delay", "drop", "reset", "hang", "truncate", "throttle", "burst", "sustained", "uniform",
    "lognormal", "median", "sigma", "max", "If-Match", "enabled",
])
YAML_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 600), st.floats(allow_nan=True),
    st.sampled_from(["GET", "PUT", "session", "hopper", "response", "first-match", "1500ms",
                     "-2s", "*", "[a-", "*/sessions/*", "412.if-match-session", "global"]),
    st.text(max_size=10),
)
YAML_VALUES = st.recursive(
    YAML_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(YAML_WORDS, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_parse_scenario_on_any_text_raises_only_scenario_error(text: str) -> None:
    try:
        scenario.parse_scenario(text)
    except scenario.ScenarioError as e:
        assert e.problems and all(p.line >= 1 and p.column >= 1 for p in e.problems)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(YAML_WORDS, YAML_VALUES, max_size=5),
       st.lists(st.dictionaries(YAML_WORDS, YAML_VALUES, max_size=6), max_size=3))
def test_parse_scenario_on_scenario_like_yaml_raises_only_scenario_error(
        top: dict[str, Any], rules: list[dict[str, Any]]) -> None:
    document = {**top, "rules": rules} if rules else top
    try:
        scenario.parse_scenario(yaml.safe_dump(document))
    except scenario.ScenarioError as e:
        assert e.problems


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=80))
def test_load_on_any_bytes_raises_only_scenario_error(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_bytes(data)
        try:
            scenario.load(path)
        except scenario.ScenarioError as e:
            assert e.problems


# --- the schema -------------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12() -> None:
    s = scenario.schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(s)


def test_schema_statuses_are_the_catalog() -> None:
    fault = scenario.schema()["$defs"]["fault"]["properties"]
    assert fault["status"]["enum"] == catalog.listed_statuses()
    assert fault["entry"]["enum"] == [e.id for e in catalog.ENTRIES]


def _object_schemas(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            found.append(node)
        for value in node.values():
            found += _object_schemas(value)
    elif isinstance(node, list):
        for value in node:
            found += _object_schemas(value)
    return found


def test_schema_describes_every_property_and_closes_every_object() -> None:
    objects = _object_schemas(scenario.schema())
    assert len(objects) >= 8
    for obj in objects:
        assert obj.get("additionalProperties") is not True
        assert "additionalProperties" in obj, obj.get("description")
        for name, prop in obj.get("properties", {}).items():
            assert prop.get("description"), name
    for name, definition in scenario.schema()["$defs"].items():
        assert definition.get("description"), name


def test_schema_accepts_what_load_accepts() -> None:
    validator = jsonschema.Draft202012Validator(scenario.schema())
    for path in SHIPPED:
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == []


# --- shipped scenarios ------------------------------------------------------------------


def test_shipped_scenarios_are_all_there() -> None:
    assert {p.stem for p in SHIPPED} >= {
        "stale-etag-on-join", "fgrl-throttling", "outage", "lost-write-answer",
        "slow-matchmaking", "every-fault", "lobby-under-pressure"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenario_passes_check(path: Path) -> None:
    assert scenario.check([path]) == []
    loaded = scenario.load(path)
    assert loaded.name == path.stem
    assert loaded.description


def test_every_fault_walks_through_every_status() -> None:
    """A title's plain, conditional and create-only reads and writes meet each status once."""
    engine = Engine(scenario.load(ROOT / "scenarios" / "every-fault.yaml"), start=0.0)
    traffic = (
        [view("GET", LOBBY)] * 6
        + [view("GET", LOBBY, headers={"If-None-Match": '"e1"'})]
        + [view("PUT", LOBBY, headers={"If-Match": '"e1"'})]
        + [view("PUT", LOBBY, headers={"If-None-Match": "*"})]
        + [view("PUT", LOBBY)] * 10
        + [view("GET", HOPPER + "/stats")]
    )
    fired = [engine.evaluate(v, now=1.0) for v in traffic]
    statuses = {f.rule.fault.status for f in fired if f is not None} - {None}
    assert statuses == set(catalog.listed_statuses())
    assert fired[9] is None and fired[-1] is None  # the create goes through; hoppers untouched
    kinds = [f.rule.name for f in fired if f is not None and f.rule.fault.status is None]
    assert kinds == ["read-delayed", "write-dropped"]
    assert all(s.fires == 1 for s in engine.stats())
    # each answer, built from its row as the table says, classifies as that row, conformant
    document = {"constants": {}, "properties": {}, "changeNumber": 2}
    for request, firing in zip(traffic, fired, strict=True):
        if firing is None or firing.rule.fault.status is None:
            continue
        fault = firing.rule.fault
        row = fault.row(request.method, resources.parse(request.path), request.headers)
        assert row is not None
        reply = faults.build(row, session=document if row.returns_session else None,
                             etag='"e2"', retry_after=fault.retry_after)
        found = classify.classify(request.method, request.path, request.headers,
                                  reply.status, reply.headers, reply.body)
        assert (found.id, found.anomalies) == (row.id, ()), firing.rule.name


def test_stale_etag_on_join_fires_once_per_lobby() -> None:
    engine = Engine(scenario.load(ROOT / "scenarios" / "stale-etag-on-join.yaml"), start=0.0)
    cond = {"If-Match": '"etag"'}
    other = LOBBY.replace("lobby-1", "lobby-2")
    seq = [view("PUT", LOBBY), view("PUT", LOBBY, headers=cond), view("PUT", LOBBY, headers=cond),
           view("PUT", other, headers=cond), view("PUT", GAME, headers=cond)]
    fired = [engine.evaluate(v, now=1.0) is not None for v in seq]
    assert fired == [False, True, False, True, False]


def shipped_engine(name: str) -> Engine:
    return Engine(scenario.load(ROOT / "scenarios" / f"{name}.yaml"), start=0.0)


def test_outage_windows() -> None:
    engine = shipped_engine("outage")
    seq = [(29.9, LOBBY), (30.0, LOBBY), (49.9, HOPPER), (50.0, LOBBY), (120.0, HOPPER),
           (120.0, LOBBY + "/members/me"), (124.9, LOBBY), (125.0, LOBBY)]
    fired = [engine.evaluate(view("GET", path), now=now) for now, path in seq]
    assert [f.rule.name if f else None for f in fired] == [
        None, "outage", "outage", None, None, "aftershock", "aftershock", None]
    assert (fired[1].rule.fault.status, fired[1].rule.fault.retry_after) == (503, 5)


def test_lost_write_answer_replaces_the_3rd_and_drops_the_6th() -> None:
    engine = shipped_engine("lost-write-answer")
    assert engine.evaluate(view("PUT"), Phase.REQUEST, now=1.0) is None
    fired = [engine.evaluate(view("PUT"), Phase.RESPONSE, now=1.0) for _ in range(8)]
    assert [f.rule.name if f else None for f in fired] == [
        None, None, "write-answered-503", None, None, "write-answer-dropped", None, None]


def test_slow_matchmaking_delays() -> None:
    engine = shipped_engine("slow-matchmaking")
    create = engine.evaluate(view("POST", HOPPER), now=1.0)
    ticket = engine.evaluate(view("GET", HOPPER + "/tickets/t1"), now=1.0)
    stats = engine.evaluate(view("GET", HOPPER + "/stats"), now=1.0)
    assert 0 < create.delay <= 8.0 and 0.2 <= ticket.delay <= 2.0 and stats.delay == 1.5
    assert engine.evaluate(view("GET", LOBBY), now=1.0) is None


def test_fgrl_throttling_answers_429_past_the_burst() -> None:
    engine = shipped_engine("fgrl-throttling")
    fired = [engine.evaluate(view("POST", "/handles", user="alice"), now=1.0) for _ in range(4)]
    assert fired[:3] == [None] * 3
    assert fired[3].rule.name == "fgrl-budget"
    assert fired[3].throttle == scenario.ThrottleDecision(False, 16, 4, 3, 15)
    assert engine.evaluate(view("POST", "/handles", user="bob"), now=1.0) is None


# --- triggers ---------------------------------------------------------------------------


def fires(when: When, times: list[float], scopes: list[str] | None = None,
          seed: int = 0) -> list[bool]:
    trigger = Trigger(when, random.Random(seed), start=100.0)
    scopes = scopes or [""] * len(times)
    return [trigger.fires(now, scope) for now, scope in zip(times, scopes, strict=True)]


T10 = [100.0 + i for i in range(10)]


@pytest.mark.parametrize("when,expected", [
    (When(), [True] * 10),
    (When(nth=3), [False, False, True] + [False] * 7),
    (When(first=2), [True, True] + [False] * 8),
    (When(every=3), [False, False, True, False, False, True, False, False, True, False]),
    (When(every=2, times=2), [False, True, False, True] + [False] * 6),
    (When(times=3), [True] * 3 + [False] * 7),
    (When(after=3.0), [False] * 3 + [True] * 7),
    (When(after=3.0, for_=2.0), [False] * 3 + [True, True] + [False] * 5),
    (When(after=2.0, nth=2), [False, False, False, True] + [False] * 6),
    (When(after=0.0, for_=1.5, first=5), [True, True] + [False] * 8),
    (When(probability=0.0), [False] * 10),
    (When(probability=1.0), [True] * 10),
])
def test_trigger_on_a_fake_clock(when: When, expected: list[bool]) -> None:
    assert fires(when, T10) == expected


def test_window_from_first_match_counts_per_scope() -> None:
    when = When(after=5.0, for_=5.0, from_=scenario.Origin.FIRST_MATCH)
    times = [200.0, 204.0, 205.0, 209.9, 210.0, 206.0, 211.0, 212.0]
    scopes = ["a", "a", "a", "a", "a", "b", "b", "b"]
    assert fires(when, times, scopes) == [False, False, True, True, False, False, True, True]


def test_per_scope_counters_are_independent() -> None:
    scopes = ["s1", "s2", "s1", "s1", "s2", "s2", "s3"]
    assert fires(When(nth=2), [1.0] * 7, scopes) == [
        False, False, True, False, True, False, False]
    trigger = Trigger(When(nth=2), random.Random(0), start=0.0)
    for scope in scopes:
        trigger.fires(1.0, scope)
    assert (trigger.match_count, trigger.fire_count) == (7, 2)


def test_probability_repeats_with_the_seed_and_is_about_right() -> None:
    when = When(probability=0.3)
    run1 = fires(when, [1.0] * 2000, seed=7)
    assert run1 == fires(when, [1.0] * 2000, seed=7)
    assert run1 != fires(when, [1.0] * 2000, seed=8)
    assert 500 < sum(run1) < 700


def test_scopes_are_bounded() -> None:
    trigger = Trigger(When(nth=1), random.Random(0), start=0.0, max_scopes=3)
    assert [trigger.fires(1.0, s) for s in "abcd"] == [True] * 4
    assert trigger.fires(1.0, "a") is True  # "a" was forgotten: counting starts again
    assert trigger.fires(1.0, "d") is False


@pytest.mark.parametrize("max_scopes", [1, 2, 3, 0])
def test_scope_counters_are_least_recently_used_whatever_the_order(max_scopes: int) -> None:
    """Counting the same scope again in a row takes no look-up, and forgets nothing a
    plain LRU of `max_scopes` scopes would keep."""
    rng = random.Random(max_scopes)
    scopes = [rng.choice("aabbcde") for _ in range(500)]
    trigger = Trigger(When(every=3), random.Random(0), start=0.0, max_scopes=max_scopes)
    model: dict[str, int] = {}  # scope -> matches, least recently used first
    for scope in scopes:
        trigger.count(1.0, scope) if rng.random() < 0.5 else trigger.step(1.0, scope)
        model[scope] = model.pop(scope, 0) + 1
        while len(model) > max_scopes:
            del model[next(iter(model))]
        assert {k: c.matches for k, c in trigger._scopes.items()} == model
    assert trigger.match_count == len(scopes)


@pytest.mark.parametrize("when", [
    When(), When(nth=3), When(first=2), When(every=3), When(every=2, times=2), When(times=3),
    When(after=3.0), When(after=3.0, for_=2.0), When(after=2.0, nth=2),
    When(after=0.0, for_=1.5, first=5), When(probability=0.3),
    When(after=5.0, for_=5.0, from_=scenario.Origin.FIRST_MATCH, every=2),
])
def test_step_is_count_then_ready(when: When) -> None:
    """The engine's one-call `step` decides, counts and draws exactly as `count` then
    `ready` do, scope by scope."""
    times = [100.0 + i / 2 for i in range(40)]
    scopes = [("a", "b", "")[i % 3] for i in range(40)]
    one = Trigger(when, random.Random(5), start=100.0, max_scopes=2)
    two = Trigger(when, random.Random(5), start=100.0, max_scopes=2)
    for now, scope in zip(times, scopes, strict=True):
        counters = one.count(now, scope)
        expected = one.ready(now, counters)
        if expected:
            one.record_fire(counters)
        stepped = two.step(now, scope)
        assert (stepped is not None) == expected
        if stepped is not None:
            two.record_fire(stepped)
        assert stepped is None or stepped == counters
    assert (one.match_count, one.fire_count) == (two.match_count, two.fire_count)
    assert dict(one._scopes) == dict(two._scopes)


# --- delays -----------------------------------------------------------------------------


def test_delay_sampling() -> None:
    rng = random.Random(1)
    assert scenario.Fault().delay_seconds(rng) == 0.0
    assert scenario.Fault(delay=scenario.FixedDelay(1.5)).delay_seconds(rng) == 1.5
    uniform = scenario.UniformDelay(0.2, 2.0)
    draws = [uniform.sample(rng) for _ in range(500)]
    assert all(0.2 <= d <= 2.0 for d in draws) and max(draws) - min(draws) > 1.5
    lognormal = scenario.LognormalDelay(0.3, 1.5, 2.0)
    draws = [lognormal.sample(rng) for _ in range(2000)]
    assert max(draws) == 2.0 and min(draws) > 0
    assert sorted(draws)[1000] == pytest.approx(0.3, rel=0.25)
    again = random.Random(1)
    assert scenario.Fault(delay=uniform).delay_seconds(again) == \
        scenario.Fault(delay=uniform).delay_seconds(random.Random(1))


@pytest.mark.parametrize("fault,method,path,headers,row", [
    ({"status": 412}, "PUT", LOBBY, {"If-Match": '"e1"'}, "412.if-match-session"),
    ({"status": 412}, "DELETE", LOBBY, {"If-Match": '"e1"'}, "412.if-match-session"),
    ({"status": 412}, "PUT", LOBBY, {"If-None-Match": "*"}, "412.precondition-failed"),
    ({"status": 412}, "POST", "/handles", {"If-Match": "*"}, "412.precondition-failed"),
    ({"status": 403}, "PUT", LOBBY, {}, "403.forbidden"),
    ({"entry": "403.read-only"}, "GET", LOBBY, {}, "403.read-only"),
    ({"status": 204}, "GET", LOBBY, {}, "204.get-session"),
    ({"status": 204}, "GET", LOBBY + "/members/3", {}, "204.get-element"),
    ({"status": 204}, "PUT", LOBBY, {}, "204.put-session-deleted"),
    ({"status": 204}, "DELETE", LOBBY + "/members/me", {}, "204.element-gone"),
    ({"status": 304}, "GET", LOBBY, {"If-None-Match": '"e1"'}, "304.not-modified"),
    ({"status": 304}, "PUT", LOBBY, {}, "304.not-modified"),  # nothing fits: the only row
    ({"status": 503}, "GET", HOPPER, {}, "503.service-unavailable"),
    ({"throttle": {"burst": 1, "sustained": 1}}, "GET", LOBBY, {}, "429.too-many-requests"),
    ({"delay": "1s"}, "GET", LOBBY, {}, None),
])
def test_fault_row(fault: dict[str, Any], method: str, path: str, headers: dict[str, str],
                   row: str | None) -> None:
    chosen = scenario.parse_fault(fault).row(method, resources.parse(path), headers)
    assert (chosen.id if chosen else None) == row


@pytest.mark.parametrize("truncate_to,body,expected", [
    (None, b"0123456789", b"01234"), (3, b"0123456789", b"012"),
    (100, b"0123456789", b"012345678"), (None, b"", b""), (0, b"x", b""),
])
def test_truncate_cuts_short(truncate_to: int | None, body: bytes, expected: bytes) -> None:
    assert scenario.Fault(truncate=True, truncate_to=truncate_to).cut(body) == expected


# --- throttling -------------------------------------------------------------------------


def test_throttle_burst_and_truthful_retry_after() -> None:
    throttle = scenario.Throttle(scenario.ThrottleSpec(burst=3, sustained=100))
    assert [throttle.allow(10.0 + i / 10, "u").ok for i in range(3)] == [True] * 3
    decision = throttle.allow(10.5, "u")
    assert decision == scenario.ThrottleDecision(False, 16, 4, 3, 15)
    assert throttle.allow(10.5, "other").ok  # each user has a budget
    assert not throttle.allow(10.5 + decision.retry_after - 1, "u").ok
    assert throttle.allow(10.5 + decision.retry_after, "u").ok


def test_throttle_never_lets_more_than_burst_through_in_15_seconds() -> None:
    throttle = scenario.Throttle(scenario.ThrottleSpec(burst=5, sustained=1000))
    allowed = [t / 4 for t in range(400) if throttle.allow(t / 4, "u").ok]
    for i, t in enumerate(allowed):
        assert sum(1 for u in allowed[i:] if u - t < 15) <= 5


def test_throttle_sustained_counts_throttled_requests() -> None:
    throttle = scenario.Throttle(scenario.ThrottleSpec(burst=4, sustained=6))
    oks = [throttle.allow(t * 20.0, "u").ok for t in range(8)]
    assert oks == [True] * 6 + [False] * 2
    decision = throttle.allow(160.0, "u")
    assert (decision.ok, decision.maximum, decision.period, decision.current) == (
        False, 6, 300, 9)
    # nine requests so far: the four oldest (t=0 to 60) must leave the 300 s window
    assert decision.retry_after == 60 + 301 - 160
    assert throttle.allow(160.0 + decision.retry_after, "u").ok


# --- the engine -------------------------------------------------------------------------


def engine_for(*rules: str, seed: int = 0) -> Engine:
    return Engine(scenario.parse_scenario(rules_yaml(*rules, top=f"seed: {seed}\n")), start=0.0)


def test_first_rule_that_fires_wins_and_the_others_still_count() -> None:
    engine = engine_for(
        "{name: every-2nd, when: {every: 2}, fault: {status: 503}}",
        "{name: third, when: {nth: 3}, fault: {status: 404}}",
        "{name: fourth, when: {nth: 4}, fault: {status: 409}}",
    )
    names = [getattr(engine.evaluate(view(), now=1.0), "rule", None) for _ in range(5)]
    assert [r.name if r else None for r in names] == [None, "every-2nd", "third", "every-2nd", None]
    stats = {s.name: (s.matches, s.fires) for s in engine.stats()}
    assert stats == {"every-2nd": (5, 2), "third": (5, 1), "fourth": (5, 0)}
    assert list(engine.stats_lines())[0] == "every-2nd: 5 matched, 2 fired"


def test_rules_only_see_their_phase_and_their_match() -> None:
    engine = engine_for(
        "{name: put-answer, match: {method: PUT}, phase: response, fault: {status: 503}}",
        "{name: hopper-lag, match: {resource: hopper}, fault: {delay: 2s}}",
    )
    assert engine.evaluate(view("PUT"), Phase.REQUEST, now=1.0) is None
    fired = engine.evaluate(view("PUT"), Phase.RESPONSE, now=1.0)
    assert fired is not None and fired.rule.name == "put-answer"
    lag = engine.evaluate(view("POST", HOPPER), now=1.0)
    assert lag is not None and lag.delay == 2.0 and lag.throttle is None
    assert engine.evaluate(view("POST", HOPPER), Phase.RESPONSE, now=1.0) is None


def test_per_client_and_per_session_scopes() -> None:
    engine = engine_for(
        "{name: 2nd-per-client, per: client, when: {nth: 2}, fault: {status: 429}}",
        "{name: 1st-per-session, per: session, match: {method: PUT}, when: {nth: 1}, "
        "fault: {status: 412}}",
    )
    seq = [("GET", LOBBY, "a"), ("GET", LOBBY, "b"), ("GET", GAME, "a"), ("PUT", GAME, "b"),
           ("PUT", GAME, "c"), ("PUT", HOPPER, "c"), ("PUT", LOBBY, "d")]
    fired = [engine.evaluate(view(m, p, client=c), now=1.0) for m, p, c in seq]
    # GAME's first PUT was answered by the per-client rule, so only LOBBY's fires; the
    # hopper names no session, so the per-session rule does not see it
    assert [(f.rule.name, f.scope) if f else None for f in fired] == [
        None, None, ("2nd-per-client", "a"), ("2nd-per-client", "b"), None,
        ("2nd-per-client", "c"), ("1st-per-session", resources.parse(LOBBY).key)]


def test_probability_and_delay_repeat_with_the_scenario_seed() -> None:
    rules = ("{name: p, when: {probability: 0.5}, fault: {delay: {uniform: [0s, 1s]}}}",
             "{name: q, when: {probability: 0.5}, fault: {status: 503}}")

    def run(seed: int) -> list[tuple[str, float] | None]:
        engine = engine_for(*rules, seed=seed)
        out = []
        for _ in range(50):
            f = engine.evaluate(view(), now=1.0)
            out.append((f.rule.name, f.delay) if f else None)
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)
    assert {f[0] for f in run(7) if f} == {"p", "q"}


def test_throttle_rule_fires_only_past_the_budget() -> None:
    engine = engine_for(
        "{name: fgrl, fault: {throttle: {burst: 2, sustained: 10}}}",
        "{name: rest, fault: {status: 404}}",
    )
    got = [engine.evaluate(view(user="alice"), now=5.0) for _ in range(3)]
    assert [f.rule.name for f in got if f] == ["rest", "rest", "fgrl"]
    throttled = got[2]
    assert throttled.throttle == scenario.ThrottleDecision(False, 16, 3, 2, 15)
    bob = engine.evaluate(view(user="bob"), now=5.0)
    assert bob is not None and bob.rule.name == "rest"


def test_enable_disable_and_reset() -> None:
    engine = engine_for("{name: a, when: {nth: 1}, fault: {status: 503}}",
                        "{name: b, fault: {status: 404}}")
    engine.disable("A")
    assert engine.evaluate(view(), now=1.0).rule.name == "b"
    assert [s.matches for s in engine.stats()] == [0, 1]
    engine.enable("a")
    assert engine.evaluate(view(), now=1.0).rule.name == "a"  # a's first match: off, it never saw
    engine.disable()
    assert engine.evaluate(view(), now=1.0) is None
    assert [s.matches for s in engine.stats()] == [1, 2]
    engine.enable()
    engine.reset()
    assert [(s.matches, s.fires) for s in engine.stats()] == [(0, 0), (0, 0)]
    assert engine.evaluate(view(), now=1.0).rule.name == "a"
    with pytest.raises(ValueError, match="no rule named 'zzz'.*rules are: a, b"):
        engine.disable("zzz")


def test_rules_sharing_a_match_still_count_on_their_own() -> None:
    """Equal matches are checked once per request; each rule keeps its own phase, scope,
    switch and counters."""
    engine = engine_for(
        "{name: a, match: {method: PUT, path: '*/sessions/*'}, when: {nth: 2}, "
        "fault: {status: 503}}",
        "{name: b, match: {method: PUT, path: '*/sessions/*'}, per: session, "
        "when: {nth: 1}, fault: {status: 404}}",
        "{name: c, match: {method: PUT, path: '*/sessions/*'}, phase: response, "
        "fault: {status: 409}}",
        "{name: d, match: {method: PUT, path: '*/sessions/*'}, per: client, "
        "when: {nth: 3}, fault: {status: 429}}",
    )
    assert len(engine._matches) == 1
    assert engine.phases == {Phase.REQUEST, Phase.RESPONSE}
    seq = [view("PUT", client="x"), view("PUT", client="x"), view("GET"), view("PUT", HOPPER),
           view("PUT", client="x"), view("PUT", GAME, client="y")]
    fired = [engine.evaluate(v, now=1.0) for v in seq]
    assert [(f.rule.name, f.scope) if f else None for f in fired] == [
        ("b", resources.parse(LOBBY).key), ("a", ""), None, None, ("d", "x"),
        ("b", resources.parse(GAME).key)]
    stats = {s.name: (s.matches, s.fires) for s in engine.stats()}
    assert stats == {"a": (4, 1), "b": (4, 2), "c": (0, 0), "d": (4, 1)}
    engine.disable("b")
    assert engine.evaluate(view("PUT", "/serviceconfigs/x/sessiontemplates/t/sessions/new"),
                           now=1.0) is None
    assert engine.evaluate(view("PUT"), Phase.RESPONSE, now=1.0).rule.name == "c"


def test_match_compiles_to_the_same_checks_for_equal_matches() -> None:
    one = scenario.parse_match({"method": ["GET", "put"], "path": "*/sessions/*",
                                "headers": {"If-Match": "*"}})
    two = scenario.parse_match({"method": ["PUT", "get"], "path": "*/sessions/*",
                                "headers": {"if-match": "*"}})
    assert one.compiled() == two.compiled()
    assert one.compiled() != scenario.parse_match({"method": "GET"}).compiled()


def test_disabled_in_file_starts_off() -> None:
    engine = engine_for("{name: a, enabled: false, fault: {status: 503}}")
    assert engine.evaluate(view(), now=1.0) is None
    assert engine.stats()[0].enabled is False


def test_reset_moves_the_time_window() -> None:
    engine = engine_for("{name: a, when: {after: 10s, for: 5s}, fault: {status: 503}}")
    assert engine.evaluate(view(), now=12.0) is not None
    engine.reset(start=100.0)
    assert engine.evaluate(view(), now=105.0) is None
    assert engine.evaluate(view(), now=111.0) is not None


def test_nth_fires_exactly_once_under_50_concurrent_clients() -> None:
    engine = engine_for("{name: once, match: {method: PUT}, when: {nth: 25}, "
                        "fault: {status: 503}}")
    barrier = threading.Barrier(50)
    results: list[scenario.Firing | None] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        barrier.wait(timeout=10)
        for _ in range(20):
            f = engine.evaluate(view("PUT", client=f"c{i}"))
            with lock:
                results.append(f)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(results) == 1000
    assert sum(1 for f in results if f is not None) == 1
    assert engine.stats()[0].matches == 1000


class _PlainEngine:
    """The engine's contract written the plain way, to check Engine.evaluate against:
    every rule in file order, its Match.matches, Trigger.step before a winner and
    Trigger.count after one."""

    def __init__(self, parsed: scenario.Scenario, start: float) -> None:
        self.runtimes = [scenario._Runtime(rule, parsed.seed, start) for rule in parsed.rules]

    def evaluate(self, v: RequestView, phase: Phase, now: float) -> scenario.Firing | None:
        resource = v.resource if v.resource is not None else resources.parse(v.path)
        winner = None
        for rt in self.runtimes:
            rule = rt.rule
            if rule.phase is not phase or not rt.enabled:
                continue
            scope = {Per.GLOBAL: "", Per.CLIENT: v.client, Per.SESSION: resource.key}[rule.per]
            if scope is None or not rule.match.matches(v.method, v.host, v.path, v.headers,
                                                       resource):
                continue
            if winner is not None:
                rt.trigger.count(now, scope)
                continue
            counters = rt.trigger.step(now, scope)
            if counters is None:
                continue
            decision = rt.throttle.allow(now, v.user or v.client) if rt.throttle else None
            if decision is not None and decision.ok:
                continue
            rt.trigger.record_fire(counters)
            winner = scenario.Firing(rule, scope, rule.fault.delay_seconds(rt.delay_rng),
                                     decision)
        return winner


PLAIN_MATCHES = [
    {}, {"method": "GET"}, {"method": ["GET", "PUT"], "resource": "session"},
    {"resource": ["member", "session"], "path": "*/sessions/*"},
    {"path": "*/lobby-*", "host": "*.xboxlive.com"}, {"headers": {"If-Match": "*"}},
    {"method": "PUT", "headers": {"If-Match": '"0x1*', "If-None-Match": False}},
    {"resource": "hopper"},
]
PLAIN_WHENS = [
    {}, {"nth": 1}, {"nth": 3}, {"first": 2}, {"every": 2}, {"every": 3, "times": 1},
    {"probability": 0.5}, {"first": 3, "probability": 0.7}, {"after": "2s"},
    {"after": "1s", "for": "3s", "from": "first-match"}, {"after": "0s", "for": "2s", "nth": 2},
    {"every": 1, "times": 2, "probability": 0.9},
]
PLAIN_FAULTS = [
    {"status": 503}, {"delay": {"uniform": ["10ms", "50ms"]}},
    {"throttle": {"burst": 2, "sustained": 3}, "status": 429},
]
PLAIN_RULES = st.fixed_dictionaries(
    {"match": st.sampled_from(PLAIN_MATCHES), "when": st.sampled_from(PLAIN_WHENS),
     "fault": st.sampled_from(PLAIN_FAULTS), "per": st.sampled_from(list(Per)),
     "phase": st.sampled_from(list(Phase)), "enabled": st.booleans()})
PLAIN_REQUESTS = st.tuples(
    st.sampled_from(["GET", "PUT", "get", "DELETE"]),
    st.sampled_from([LOBBY, GAME, HOPPER, LOBBY + "/members/me", "/handles", "/x?y=1"]),
    st.sampled_from(["sessiondirectory.xboxlive.com", "example.org", ""]),
    st.sampled_from([(), (("If-Match", "*"),), (("if-match", '"0x1A"'),),
                     (("If-Match", '"0x2"'), ("If-None-Match", "*"))]),
    st.sampled_from(["", "c1", "c2"]), st.sampled_from(list(Phase)),
    st.floats(min_value=0, max_value=2))
PLAIN_ACTIONS = st.one_of(
    PLAIN_REQUESTS, st.tuples(st.just("toggle"), st.integers(0, 7)), st.just(("reset",)))


def _named(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, rule in enumerate(rules):
        rule = {"name": f"r{i}", **rule}
        if rule["fault"].get("throttle") and rule["phase"] is Phase.RESPONSE:
            rule["phase"] = Phase.REQUEST  # throttling answers before the service
        if rule["match"].get("resource") == "hopper" and rule["per"] is Per.SESSION:
            rule["per"] = Per.CLIENT  # a hopper is no session
        out.append({k: str(v) if isinstance(v, Per | Phase) else v for k, v in rule.items()})
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=st.lists(PLAIN_RULES, min_size=1, max_size=8),
       actions=st.lists(PLAIN_ACTIONS, min_size=10, max_size=60), seed=st.integers(0, 3),
       limit=st.sampled_from([1, 2, scenario.MAX_SETTLED]))
def test_engine_decides_as_the_plain_reading_of_the_rules(
        rules: list[dict[str, Any]], actions: list[tuple[Any, ...]], seed: int,
        limit: int) -> None:
    """Same winners, scopes, delays, throttle numbers and stats as rule-by-rule checking,
    through switches, resets and remembered match verdicts being forgotten."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scenario, "MAX_SETTLED", limit)
        _check_against_plain(rules, actions, seed)


def _check_against_plain(rules: list[dict[str, Any]], actions: list[tuple[Any, ...]],
                         seed: int) -> None:
    parsed = scenario.parse_scenario(json.dumps({"seed": seed, "rules": _named(rules)}))
    engine, plain = Engine(parsed, start=0.0), _PlainEngine(parsed, start=0.0)
    now = 0.0
    for action in actions:
        if action[0] == "reset":
            engine.reset()
            for rt in plain.runtimes:
                rt.reset(None)
            continue
        if action[0] == "toggle":
            index = action[1] % len(parsed.rules)
            enabled = not plain.runtimes[index].enabled
            engine.set_enabled(enabled, f"r{index}")
            plain.runtimes[index].enabled = enabled
            continue
        method, path, host, headers, client, phase, step = action
        now += step
        v = view(method, path, host=host, headers=headers, client=client, user=client)
        assert engine.evaluate(v, phase, now) == plain.evaluate(v, phase, now)
        assert engine.stats() == [
            scenario.RuleStats(rt.rule.name, rt.rule.phase, rt.enabled, rt.trigger.match_count,
                               rt.trigger.fire_count) for rt in plain.runtimes]


@pytest.mark.parametrize("when", [
    When(), When(nth=3), When(first=2), When(every=3), When(nth=4, first=2),
    When(first=5, every=2, times=1, probability=0.5), When(every=0, nth=2),
])
def test_eligible_bounds_never_hide_a_count_that_could_fire(when: When) -> None:
    """Outside the bounds `_allows` is False and draws nothing, so skipping it is exact."""
    lowest, highest = scenario._eligible_bounds(when)
    for n in range(1, 12):
        if lowest <= n <= highest:
            continue
        rng = random.Random(0)
        trigger = Trigger(when, rng, start=0.0)
        before = rng.getstate()
        assert not trigger._allows(scenario._Counters(eligible=n))
        assert rng.getstate() == before


def test_remembered_verdicts_tell_apart_method_kind_path_host_and_headers() -> None:
    engine = engine_for(
        "{name: a, match: {method: PUT, resource: session, path: '*/lobby-*', "
        "host: '*.xboxlive.com', headers: {If-Match: '*'}}, fault: {status: 412}}")
    host = "sessiondirectory.xboxlive.com"
    hit = view("PUT", LOBBY, host=host, headers=[("If-Match", "*")])
    misses = [view("GET", LOBBY, host=host, headers=[("If-Match", "*")]),
              view("PUT", LOBBY, host="example.org", headers=[("If-Match", "*")]),
              view("PUT", LOBBY, host=host), view("PUT", LOBBY.replace("lobby", "game"), host=host),
              view("PUT", LOBBY, host=host, headers=[("If-Match", "*")],
                   resource=resources.parse(HOPPER))]
    for v in [hit, *misses, hit]:
        assert (engine.evaluate(v, now=1.0) is not None) is (v is hit)
    assert engine.stats()[0].matches == 2
