"""Scenario `tap:` and `rta:` faults: the file format, `check`'s errors, and the engine's
channels (an HTTP request never counts toward a tap rule, nor a tap toward an HTTP rule)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpsdproxy import model
from mpsdproxy import rta
from mpsdproxy import scenario
from mpsdproxy.scenario import Channel
from mpsdproxy.scenario import RtaAction
from mpsdproxy.scenario import TapAction

ROOT = Path(__file__).resolve().parent.parent
TAP_URL = ("https://sessiondirectory.xboxlive.com/serviceconfigs/scid-1/sessiontemplates/"
           "LobbySession/sessions/lobby-1")


def one_rule(body: str) -> scenario.Rule:
    return scenario.parse_scenario(f"rules:\n  - name: r\n    {body}\n").rules[0]


@pytest.mark.parametrize(("body", "channel", "tap", "rta_fault"), [
    ("fault: {tap: drop}", Channel.TAP, TapAction.DROP, None),
    ("fault: {tap: duplicate}", Channel.TAP, TapAction.DUPLICATE, None),
    ("fault: {tap: reorder}", Channel.TAP, TapAction.REORDER, None),
    ("fault: {tap: stale}", Channel.TAP, TapAction.STALE, None),
    ("fault: {tap: {delay: 5s}}", Channel.TAP, TapAction.DELAY, None),
    ("fault: {rta: close}", Channel.RTA, None, RtaAction.CLOSE),
    ("fault: {rta: resync}", Channel.RTA, None, RtaAction.RESYNC),
    ("fault: {rta: {subscribe_status: 1002}}", Channel.SUBSCRIBE, None,
     RtaAction.SUBSCRIBE_STATUS),
    ("fault: {status: 503}", Channel.HTTP, None, None),
])
def test_each_fault_key_parses(body: str, channel: Channel, tap: TapAction | None,
                               rta_fault: RtaAction | None) -> None:
    rule = one_rule(body)
    assert rule.channel is channel
    assert (rule.fault.tap.action if rule.fault.tap else None) is tap
    assert (rule.fault.rta.action if rule.fault.rta else None) is rta_fault


def test_a_tap_delay_is_drawn_like_any_delay() -> None:
    rule = one_rule("fault: {tap: {delay: {uniform: [1s, 2s]}}}")
    engine = scenario.Engine(scenario.Scenario("s", "", 0, (rule,)), start=0.0)
    firing = engine.evaluate(model.Request("GET", TAP_URL), now=1.0, channel=Channel.TAP)
    assert firing is not None and 1.0 <= firing.delay <= 2.0


@pytest.mark.parametrize(("body", "where", "problem"), [
    ("fault: {tap: dorp}", "3:18: rules[0].fault.tap", "'dorp' is not a valid tap"),
    ("fault: {tap: delay}", "3:18: rules[0].fault.tap", "'delay' is not a valid tap"),
    ("fault: {tap: {delay: 0s}}", "3:26: rules[0].fault.tap.delay", "changes nothing"),
    ("fault: {tap: drop, status: 503}", "3:32: rules[0].fault.status",
     "cannot be combined with status"),
    ("fault: {tap: drop, delay: 1s}", "3:31: rules[0].fault.delay",
     "write tap: {delay: 5s}"),
    ("fault: {rta: close, tap: drop}", "3:18: rules[0].fault.rta", "write two rules"),
    ("fault: {rta: shut}", "3:18: rules[0].fault.rta", "'shut' is not a valid rta"),
    ("fault: {rta: {subscribe_status: 0}}", "3:37: rules[0].fault.rta.subscribe_status",
     "valid values are: 1, 2, 3, 1001, 1002"),
    ("match: {method: PUT}\n    fault: {tap: drop}", "3:21: rules[0].match.method",
     "no method"),
    ("match: {headers: {X-A: b}}\n    fault: {rta: close}", "3:22: rules[0].match.headers",
     "no headers"),
    ("phase: response\n    fault: {tap: drop}", "3:12: rules[0].phase", "no response phase"),
    ("match: {resource: handle}\n    fault: {tap: stale}", "3:23: rules[0].match.resource",
     "never matches one"),
    ("match: {resource: session}\n    fault: {rta: {subscribe_status: 1}}",
     "3:23: rules[0].match.resource", "names no session"),
    ("per: session\n    fault: {rta: {subscribe_status: 1}}", "3:10: rules[0].per",
     "a subscribe names none"),
])
def test_check_places_every_problem(tmp_path: Path, body: str, where: str,
                                    problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"rules:\n  - name: r\n    {body}\n", encoding="utf-8")
    lines = scenario.check([path])
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}:{where}: "), lines[0]
    assert problem in lines[0]


def test_the_schema_lists_every_subscribe_error_of_rta_status() -> None:
    listed = scenario.schema()["$defs"]["fault"]["properties"]["rta"]["anyOf"][1]
    statuses = listed["properties"]["subscribe_status"]["enum"]
    assert statuses == [int(s) for s in rta.Status if s is not rta.Status.SUCCESS]


def test_channels_keep_http_and_taps_apart() -> None:
    s = scenario.parse_scenario("""
rules:
  - name: missed-tap
    when: {nth: 1}
    fault: {tap: drop}
  - name: outage
    when: {nth: 1}
    fault: {status: 503}
""")
    engine = scenario.Engine(s, start=0.0)
    assert engine.phases == {scenario.Phase.REQUEST}
    assert engine.channels == {Channel.TAP, Channel.HTTP}
    session = model.Request("GET", TAP_URL)
    first = engine.evaluate(session, now=1.0)
    assert first is not None and first.rule.name == "outage"  # the tap rule is not asked
    tapped = engine.evaluate(session, now=1.0, channel=Channel.TAP)
    assert tapped is not None and tapped.rule.name == "missed-tap"  # still its first tap
    assert list(engine.stats_lines()) == ["missed-tap: 1 taps matched, 1 fired",
                                          "outage: 1 matched, 1 fired"]


def test_the_shipped_missed_tap_scenario_is_valid() -> None:
    loaded = scenario.load(ROOT / "mpsdproxy" / "scenarios" / "missed-tap.yaml")
    assert {r.channel for r in loaded.rules} == {Channel.TAP, Channel.RTA}
    assert scenario.check([ROOT / "mpsdproxy" / "scenarios" / "missed-tap.yaml"]) == []
