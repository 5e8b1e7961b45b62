"""Scenario files: value parsers, loading and validation, the schema, shipped scenarios.

Matching is tested in test_scenario_match.py, triggers and the engine in
test_scenario_engine.py, the broken-file corpus in test_scenario_corpus.py.
"""

from __future__ import annotations

import json
import re
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
from mpsdproxy import fgrl
from mpsdproxy import scenario
from mpsdproxy import yamlfile
from mpsdproxy.scenario import Per
from mpsdproxy.scenario import Phase
from mpsdproxy.scenario import When

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "mpsdproxy" / "scenarios").glob("*.yaml"))
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



def test_match_resource_names_are_the_schema_enum() -> None:
    assert scenario.schema()["$defs"]["resource"]["enum"] == list(scenario.RESOURCE_KINDS)


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
    assert isinstance(err, yamlfile.InputError) and isinstance(err, ValueError)
    assert str(err) == f"{p}\n{p}"


def test_throttle_is_an_fgrl_budget_answered_with_the_catalogs_rate_limit_row() -> None:
    throttle = "{name: t, fault: {throttle: {burst: 2, sustained: 9}}}"
    fault = scenario.parse_scenario(rules_yaml(throttle)).rules[0].fault
    assert fault.throttle == fgrl.Budget(burst=2, sustained=9)
    assert fault.answers and fault.status is None
    row = catalog.get(scenario.THROTTLE_ENTRY)
    assert row.body is catalog.BodyKind.FGRL
    (problem,) = problems_of(rules_yaml(
        "{name: t, fault: {throttle: {burst: 2, sustained: 9}, status: 503}}"))
    assert problem.message == f"throttle answers {row.status} by itself: remove the other status"


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


def test_the_packaged_schema_is_the_shipped_one() -> None:
    """The package carries a copy of scenarios/schema.json (for installs without the
    repository); the two must not drift."""
    shipped = json.loads((ROOT / "mpsdproxy" / "scenarios" / "schema.json").read_text())
    packaged = json.loads((ROOT / "mpsdproxy" / "data" / "scenario.schema.json").read_text())
    assert packaged == shipped == scenario.schema()


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


