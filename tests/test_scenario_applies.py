"""Only faults the service can give: a rule fires only on a request the catalog says its
answer fits, counts the others apart, `force: true` overrides, and `check` warns about (or,
with `strict: true`, refuses) a rule that never could fire."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpsdproxy import catalog
from mpsdproxy import model
from mpsdproxy import scenario
from mpsdproxy.cli import cli
from mpsdproxy.scenario import Engine
from mpsdproxy.scenario import Phase

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "mpsdproxy" / "scenarios").glob("*.yaml"))
LOBBY = "/serviceconfigs/scid/sessiontemplates/LobbySession/sessions/lobby-1"
ETAG = {"If-Match": '"e1"'}
STAR = {"If-Match": "*"}


def request(method: str = "PUT", path: str = LOBBY,
            headers: dict[str, str] | None = None) -> model.Request:
    return model.Request(method, f"https://sessiondirectory.xboxlive.com{path}",
                         list((headers or {}).items()))


def engine_for(text: str) -> Engine:
    return Engine(scenario.parse_scenario(text), start=0.0)


STALE = """
rules:
  - name: stale
    match: {method: PUT, resource: session}
    when: {nth: 1}
    fault: {status: 412}
"""


# --- the engine -------------------------------------------------------------------------


def test_a_rule_skips_requests_its_answer_cannot_fit_and_counts_them_apart() -> None:
    engine = engine_for(STALE)
    seq = [(request(headers=STAR), True), (request(), True), (request(headers=ETAG), None),
           (request(headers=ETAG), True), (request(headers=ETAG), True)]
    fired = [engine.evaluate(r, now=1.0, exists=e) is not None for r, e in seq]
    # nth: 1 is the first request the rule can apply to: the 4th here
    assert fired == [False, False, False, True, False]
    (stats,) = engine.stats()
    assert (stats.matches, stats.fires, stats.inapplicable) == (2, 1, 3)
    assert stats.last_reason is not None and "has not seen this session" in stats.last_reason
    (line,) = engine.stats_lines()
    assert line == (f"stale: 2 matched, 1 fired, 3 not applicable ({stats.last_reason})")


def test_stats_lines_say_nothing_of_applicability_when_every_request_fitted() -> None:
    engine = engine_for(STALE)
    engine.evaluate(request(headers=ETAG), now=1.0, exists=True)
    assert list(engine.stats_lines()) == ["stale: 1 matched, 1 fired"]


def test_an_inapplicable_rule_lets_the_next_rule_answer() -> None:
    engine = engine_for(STALE + """
  - name: busy
    match: {method: PUT}
    fault: {status: 503, retry_after: 1}
""")
    fired = engine.evaluate(request(headers=STAR), now=1.0, exists=True)
    assert fired is not None and fired.rule.name == "busy"


def test_force_answers_where_the_service_could_not() -> None:
    engine = engine_for(STALE.replace("status: 412}", "status: 412, force: true}"))
    fired = engine.evaluate(request(headers=STAR), now=1.0, exists=True)
    assert fired is not None and fired.rule.fault.force
    assert engine.stats()[0].inapplicable == 0


def test_reset_forgets_the_inapplicable_count() -> None:
    engine = engine_for(STALE)
    engine.evaluate(request(headers=STAR), now=1.0, exists=True)
    engine.reset()
    assert (engine.stats()[0].inapplicable, engine.stats()[0].last_reason) == (0, None)


MIXED = """
rules:
  - {name: stale, match: {method: [PUT, GET]}, fault: {status: 412}}
  - {name: gone, match: {resource: session}, fault: {status: 404}}
  - {name: busy, match: {method: PUT}, fault: {status: 503, retry_after: 1}}
  - {name: made, match: {}, fault: {status: 201}, per: session}
  - {name: forced, match: {}, fault: {status: 412, force: true}}
"""
MIXED_REQUESTS = [
    (method, headers, exists)
    for method in ("PUT", "GET", "get", "DELETE")
    for headers in ({}, STAR, ETAG, {"If-None-Match": "*"}, {**ETAG, "If-None-Match": "*"})
    for exists in (True, False, None)
]


def test_each_rule_is_judged_by_its_own_fault_in_every_situation() -> None:
    """Rules that share a phase are judged together, once per kind of request: each
    still counts as its own fault's `why_not` says, request by request."""
    engine = engine_for(MIXED + "\n".join(
        f"  - {{name: r{i}, match: {{}}, when: {{nth: 1000}}, fault: {{status: {s}}}}}"
        for i, s in enumerate((409, 412, 400))) + "\n")
    rules = engine.scenario.rules
    expected = {r.name: [0, None] for r in rules}
    for method, headers, exists in MIXED_REQUESTS * 2:
        sent = request(method, headers=headers)
        engine.evaluate(sent, now=1.0, exists=exists)
        situation = catalog.Situation.of(sent, exists)
        for rule in rules:
            if scenario.matches(rule.match, sent):
                reason = rule.fault.why_not(situation)
                if reason is not None:
                    expected[rule.name] = [expected[rule.name][0] + 1, reason]
    assert {s.name: [s.inapplicable, s.last_reason] for s in engine.stats()} == expected
    assert any(count for count, _ in expected.values())


@pytest.mark.parametrize(("method", "headers", "exists"), MIXED_REQUESTS)
def test_a_situations_shape_is_the_same_worked_out_without_building_it(
        method: str, headers: dict[str, str], exists: bool | None) -> None:
    sent = request(method, headers=headers)
    assert (catalog.Situation.shape_of(sent, exists)
            == catalog.Situation.of(sent, exists).shape)


@pytest.mark.parametrize("fault", [
    "{drop: true}", "{reset: true}", "{hang: true}", "{delay: 1s}",
    "{throttle: {burst: 1, sustained: 1}}",
])
def test_faults_without_a_status_of_their_own_always_apply(fault: str) -> None:
    engine = engine_for(f"rules:\n  - {{name: r, match: {{method: PUT}}, fault: {fault}}}\n")
    engine.evaluate(request(headers=STAR), now=1.0, exists=None)
    assert engine.stats()[0].inapplicable == 0


def test_response_edits_without_a_status_always_apply() -> None:
    engine = engine_for(
        "rules:\n  - {name: r, phase: response, fault: {headers: {X-A: b}, truncate: true}}\n")
    assert engine.evaluate(request("GET"), Phase.RESPONSE, now=1.0, exists=False) is not None


# --- the row a status answers with --------------------------------------------------------


@pytest.mark.parametrize("headers, exists, row", [
    (ETAG, True, "412.if-match-session"),
    (ETAG, None, "412.if-match-session"),  # waits for the session, never answers bodiless
    (ETAG, False, "412.precondition-failed"),  # the ETag names a session that is gone
    ({"If-None-Match": "*"}, True, "412.precondition-failed"),
    (STAR, False, "412.precondition-failed"),
])
def test_a_status_answers_with_the_row_the_service_would_give(
        headers: dict[str, str], exists: bool | None, row: str) -> None:
    fault = scenario.parse_fault({"status": 412})
    assert fault.row(request(headers=headers), exists) == catalog.get(row)


def test_a_row_the_service_cannot_give_falls_back_as_before_and_says_why() -> None:
    fault = scenario.parse_fault({"status": 412})
    where = catalog.Situation.of(request(headers=STAR), True)
    assert fault.row_at(where) == catalog.get("412.if-match-session")
    assert fault.why_not(where) == ("412.if-match-session needs If-Match with an ETag on an "
                                    "existing session; this request sent If-Match: *")


# --- check, lint and strict ---------------------------------------------------------------


NEVER = """rules:
  - name: ok
    fault: {status: 503, retry_after: 1}
  - name: update-405
    match: {method: PUT, resource: session}
    fault: {status: 405}
  - name: forced-405
    match: {method: PUT, resource: session}
    fault: {status: 405, force: true}
  - name: star-412
    match: {method: PUT, resource: session, headers: {If-Match: "[*]"}}
    fault: {entry: 412.if-match-session}
  - name: any-if-match-412
    match: {method: PUT, resource: session, headers: {If-Match: "*"}}
    fault: {status: 412}
"""


def test_lint_warns_about_each_rule_that_never_fires_as_the_service_would(
        tmp_path: Path) -> None:
    path = tmp_path / "never.yaml"
    path.write_text(NEVER)
    assert scenario.check([path]) == []
    found = scenario.lint([path])
    assert [f.refused for f in found] == [False, False]
    lines = [str(f) for f in found]
    assert lines[0].startswith(f"{path}:6:21: rules[1].fault.status: rule 'update-405' never "
                               f"fires as the service would answer: 405.method-not-allowed")
    assert lines[1].startswith(f"{path}:12:20: rules[3].fault.entry: rule 'star-412' ")
    assert "this request sent If-Match: *" in lines[1] and "force: true" in lines[1]


def test_strict_refuses_what_lint_warns_about(tmp_path: Path) -> None:
    path = tmp_path / "never.yaml"
    path.write_text("strict: true\n" + NEVER)
    with pytest.raises(scenario.ScenarioError) as raised:
        scenario.load(path)
    assert [p.key_path for p in raised.value.problems] == [
        "rules[1].fault.status", "rules[3].fault.entry"]
    assert [str(f) for f in scenario.lint([path])] == scenario.check([path])
    assert all(f.refused for f in scenario.lint([path]))


def test_lint_leaves_files_with_other_problems_to_check(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(NEVER.replace("retry_after: 1", "retry_after: -1"))
    assert scenario.check([path]) and scenario.lint([path]) == []


def test_strict_scenario_whose_rules_can_all_fire_loads(tmp_path: Path) -> None:
    path = tmp_path / "fine.yaml"
    path.write_text("strict: true\n" + STALE)
    assert scenario.load(path).strict


def test_cli_check_warns_and_passes(tmp_path: Path) -> None:
    path = tmp_path / "never.yaml"
    path.write_text(NEVER)
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and f"warning: {path}:6:21: rules[1].fault.status: " in warnings[0]
    assert "1 scenario file valid, 2 warnings" in result.output


def test_cli_check_refuses_a_strict_scenario_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "never.yaml"
    path.write_text("strict: true\n" + NEVER)
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    assert all(re.match(rf"{re.escape(str(path))}:\d+:\d+: rules\[\d\]\.fault\.", line)
               for line in lines)


# --- the shipped scenarios ------------------------------------------------------------------


def test_every_shipped_scenario_injects_only_where_the_service_can_give_it() -> None:
    assert SHIPPED and scenario.lint(SHIPPED) == []
    result = CliRunner().invoke(cli, ["check", *map(str, SHIPPED)])
    assert result.exit_code == 0 and "warning" not in result.output, result.output


def test_no_shipped_rule_forces_an_answer() -> None:
    assert not any(rule.fault.force for path in SHIPPED for rule in scenario.load(path).rules)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_rule_with_a_status_can_fire_somewhere(path: Path) -> None:
    for rule in scenario.load(path).rules:
        assert any(rule.fault.why_not(s) is None for s in scenario.situations(rule.match)), (
            rule.name)
