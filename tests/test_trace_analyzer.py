"""The Trace Analyzer's call-pattern rules, as it runs them (microsoft/xbox-live-trace-analyzer,
Source/Rules and Source/RulesEngine): the public capture's findings worked out by hand from
its sources, and each rule's edge cases (ties, short traces, the user-agent filter,
per-service limits)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_verdicts import ex
from test_verdicts import rec

from mpsdproxy import interchange
from mpsdproxy import report
from mpsdproxy import verdicts
from mpsdproxy.verdicts import Engine
from mpsdproxy.verdicts import Status
from mpsdproxy.verdicts import Verdict
from mpsdproxy.verdicts.analyzer import analyzer_stats
from mpsdproxy.verdicts.analyzer import burst_size
from mpsdproxy.verdicts.analyzer import excess_windows

CAPTURE = Path(__file__).resolve().parents[2] / "shared" / "captures" / "x49_mp_cs21.saz"
LIBRARY = ("User-Agent", "XboxServicesAPI/2017.01.20170131.001")
SESSION = "/serviceconfigs/00000000-0000-0000-0000-00000000beef/sessiontemplates/lobby" \
          "/sessions/s1"


def call(seq: int, at: float, *, agent: tuple[str, str] | None = LIBRARY, path: str = SESSION,
         method: str = "PUT", body: Any = None, client: str = "127.0.0.1:50000",
         headers: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """A record of the client library's call (or another agent's), `at` seconds after T0."""
    sent = ((agent,) if agent else ()) + headers
    return rec(seq, at, method, path, 200, headers=sent, body=body or {"n": 1}, client=client)


def run(records: list[dict[str, Any]], **settings: Any) -> list[Verdict]:
    engine = Engine(settings=verdicts.RuleSettings(**settings) if settings else None)
    out: list[Verdict] = []
    for r in records:
        out.extend(engine.feed(ex(r)))
    return out + engine.finish()


def warns(found: list[Verdict], rule: str) -> list[Verdict]:
    return [v for v in found if v.rule == rule and v.status is Status.WARN]


# ---------------------------------------------------------------- the public capture


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> report.Report:
    if not CAPTURE.exists():
        pytest.skip(f"{CAPTURE} is not here")
    out = tmp_path_factory.mktemp("x49") / "x49.jsonl"
    interchange.import_file(str(CAPTURE), str(out))
    return report.build_report(out)


def test_the_capture_gets_the_analyzers_burst_and_repeated_calls(capture: report.Report) -> None:
    """Worked out by hand from the analyzer's sources.

    The analyzer keeps the calls Utils.IsAnalyzedService passes (User-Agent
    XboxServicesAPI): on sessiondirectory.xboxlive.com, one console, records 1, 5, 6
    and 8..14 (the default import's numbering, RTA frames placed among them). Their
    start gaps in whole ms are 4345, 507, 109, 217, 157, 383, 30, 220, 127 and their
    elapsed times 130, 439, 288, 312, 219, 323, 208, 263, 201, 201 ms.

    ServiceCallStats.GatherStats, integer arithmetic, n counting calls:
      mean elapsed: 130, (130+439)//2=284, (2*284+288)//3=285, (3*285+312)//4=291,
                    (4*291+219)//5=276, (5*276+323)//6=283, (6*283+208)//7=272,
                    (7*272+263)//8=270, (8*270+201)//9=262, (9*262+201)//10=255
      mean gap: (0+4345)//2=2172, (2*2172+507)//3=1617, (3*1617+109)//4=1240,
                (4*1240+217)//5=1035, (5*1035+157)//6=888, (6*888+383)//7=815,
                (7*815+30)//8=716, (8*716+220)//9=660, (9*660+127)//10=606
      variance, around the mean *elapsed* (255), as GatherSecondOrderStats does:
                (4090^2)//2=8364050, (2*8364050+252^2)//3=5597201,
                (3*5597201+146^2)//4=4203229, (4*4203229+38^2)//5=3362872,
                (5*3362872+98^2)//6=2803994, (6*2803994+128^2)//7=2405764,
                (7*2405764+225^2)//8=2111371, (8*2111371+35^2)//9=1876910,
                (9*1876910+128^2)//10=1690857
    BurstDetectionRule: ceil(1000/606)=2 + ceil(2*1000/sqrt(1690857)=1.54)=2 -> 4 calls
    per 2000 ms. GetExcessCallsForTimeWindow: record 1 drops out of the window of
    record 5 (4345 ms > 2000); the nine calls from record 5 to 14 all fall within
    2000 ms of record 5
    (20:49:59.996688 to 20:50:01.751204: 1754 ms), 9 > 4 -> one run of 9 calls,
    9 >= BurstSizeToDetect 3 -> one warning.
    RepeatedCallsRule: records 12 and 14 are the same PUT with the same body, 14
    starting 348 ms after 12 (< 5000) -> one warning; no other URI and body repeats.
    """
    burst = [v for v in capture.verdicts if v.rule == "burst" and v.status is Status.WARN]
    assert len(burst) == 1
    assert burst[0].records == (5, 6, 8, 9, 10, 11, 12, 13, 14)
    assert burst[0].gaps_ms == (1754.0,)
    assert "burst of 9 calls to sessiondirectory.xboxlive.com within 1754 ms" \
        in burst[0].reason
    assert "ceil(1000 / 606 ms mean gap) + ceil(2 * 1000 / sqrt(1690857))" in burst[0].reason
    repeated = [v for v in capture.verdicts
                if v.rule == "repeated-calls" and v.status is Status.WARN]
    assert [v.records for v in repeated] == [(12, 14)]
    assert capture.verdict_counts["burst"] == {"warn": 1}
    assert capture.verdict_counts["repeated-calls"] == {"warn": 1}


def test_the_capture_report_says_which_requests_each_rule_looked_at(
        capture: report.Report) -> None:
    # The ten session-directory calls carry the library's user agent.
    assert capture.looked_at["burst"]["text"] == (
        "looked at 10 requests: records 1, 5..6, 8..14")
    assert capture.looked_at["repeated-calls"]["requests"] == 10
    text = report.render(capture, "text")
    assert "looked at 10 requests: records 1, 5..6, 8..14" in text
    doc = report.render(capture, "json")
    assert '"looked_at"' in doc
    assert "looked at 10 requests" in report.render(capture, "html")


# ---------------------------------------------------------------- the analyzer's arithmetic


def test_stats_follow_the_analyzers_integer_arithmetic() -> None:
    # Starts 0, 1000, 3000 ms; elapsed 100 ms each. Mean gap: (0+1000)//2=500, then
    # (2*500+2000)//3=1000. Variance around the mean elapsed 100: (900^2)//2=405000, then
    # (2*405000+1900^2)//3=1473333.
    calls = [(0, 100), (1_000_000, 100), (3_000_000, 100)]
    assert analyzer_stats(calls) == (1000, 1473333)
    assert burst_size(1000, 1473333) == 1 + 2  # ceil(1.0) + ceil(2000/1213.8=1.65)


def test_a_zero_mean_gap_or_variance_counts_as_zero_as_the_analyzer_casts_it() -> None:
    assert burst_size(0, 0) == 0
    assert burst_size(0, 1_000_000) == 2  # ceil(2 * 1000 / 1000)


def test_excess_windows_are_cut_where_a_call_leaves_the_window() -> None:
    ms = 1000
    starts = [0, 100 * ms, 200 * ms, 300 * ms, 5000 * ms, 5001 * ms]
    assert excess_windows(starts, 2000, 2) == [(0, 4)]
    assert excess_windows(starts, 2000, 4) == []
    assert excess_windows([0], 2000, 0) == []  # fewer than two calls: no run
    # A gap of exactly the window is inside it (delta <= window).
    assert excess_windows([0, 2000 * ms, 2000 * ms], 2000, 2) == [(0, 3)]


# ---------------------------------------------------------------- burst on any trace length


def test_a_short_burst_is_found_without_any_warm_up() -> None:
    # Four calls 10 ms apart, then one 60 s later: mean gap 60..., a short trace of 5.
    records = [call(n, n * 0.01, body={"n": n}) for n in range(1, 5)]
    records.append(call(5, 60.0, body={"n": 5}))
    found = warns(run(records), "burst")
    assert [v.records for v in found] == [(1, 2, 3, 4)]


def test_steady_calls_are_no_burst() -> None:
    records = [call(n, n * 3.0, body={"n": n}) for n in range(1, 30)]
    assert warns(run(records), "burst") == []


def test_burst_needs_the_configured_least_calls() -> None:
    records = [call(n, n * 0.01, body={"n": n}) for n in range(1, 4)]
    records.append(call(4, 60.0, body={"n": 4}))
    assert warns(run(records), "burst")[0].records == (1, 2, 3)
    assert warns(run(records, burst_min_calls=4), "burst") == []


def test_burst_is_judged_per_console() -> None:
    a = [call(n, n * 0.01, body={"n": n}) for n in range(1, 5)] + [call(5, 60, body={"n": 5})]
    b = [call(10 + n, n * 0.01, body={"n": n}, client="10.0.0.2:1") for n in range(1, 3)]
    found = warns(run(sorted(a + b, key=lambda r: r["start"])), "burst")
    assert [v.client for v in found] == ["127.0.0.1"]


# ---------------------------------------------------------------- which calls are analysed


def test_calls_without_the_library_agent_are_not_analysed() -> None:
    records = [call(n, n * 0.01, agent=("User-Agent", "HttpRequest")) for n in range(1, 6)]
    found = run(records)
    assert warns(found, "burst") == warns(found, "repeated-calls") == []
    assert [v.status for v in found if v.rule == "burst"] == [Status.NOT_APPLICABLE]


@pytest.mark.parametrize("headers", [
    (("x-xbl-api-build-version", "ADK"),), (("X-XBL-Build-Version", "1"),),
    (("X-AuthXToken", "t"),)])
def test_the_analyzers_other_markers_count_as_library_calls(
        headers: tuple[tuple[str, str], ...]) -> None:
    found = run([call(1, 0, agent=None, headers=headers), call(2, 1, agent=None, headers=headers)])
    assert [v.records for v in warns(found, "repeated-calls")] == [(1, 2)]


def test_a_client_name_header_or_a_websocket_upgrade_is_not_analysed() -> None:
    named = (("x-xbl-client-name", "other"),)
    upgrade = (("Upgrade", "websocket"), ("Connection", "Upgrade"))
    for headers in (named, upgrade):
        found = run([call(1, 0, headers=headers), call(2, 1, headers=headers)])
        assert warns(found, "repeated-calls") == []


def test_a_custom_user_agent_is_analysed_when_configured() -> None:
    agent = ("User-Agent", "MyTitle/1.0")
    records = [call(1, 0, agent=agent), call(2, 1, agent=agent)]
    assert warns(run(records), "repeated-calls") == []
    found = warns(run(records, custom_user_agent="MyTitle/1.0"), "repeated-calls")
    assert [v.records for v in found] == [(1, 2)]


# ---------------------------------------------------------------- repeated calls


def test_a_repeat_at_the_same_instant_is_not_later() -> None:
    assert warns(run([call(1, 0), call(2, 0)]), "repeated-calls") == []


def test_tied_calls_each_open_a_group_with_a_later_repeat() -> None:
    # Both calls at 0 are visited as openers; the call at 1 s is strictly later than each.
    found = warns(run([call(1, 0), call(2, 0), call(3, 1)]), "repeated-calls")
    assert [v.records for v in found] == [(1, 3), (2, 3)]


def test_repeats_are_grouped_from_the_first_call_not_chained() -> None:
    # 0, 3 and 6 s: the group of 0 holds 3 (6 is 6000 ms after it); 3 is then part of a
    # finding and opens nothing; 6 has nothing after it.
    found = warns(run([call(1, 0), call(2, 3), call(3, 6)]), "repeated-calls")
    assert [v.records for v in found] == [(1, 2)]
    # One group for every repeat within the interval of the first.
    found = warns(run([call(1, 0), call(2, 1), call(3, 4.9)]), "repeated-calls")
    assert [v.records for v in found] == [(1, 2, 3)]


def test_the_interval_is_whole_milliseconds_below_the_setting() -> None:
    assert warns(run([call(1, 0), call(2, 4.9999)]), "repeated-calls")  # 4999 ms < 5000
    assert warns(run([call(1, 0), call(2, 5.0)]), "repeated-calls") == []


def test_same_uri_other_method_is_a_repeat_other_body_is_not() -> None:
    found = warns(run([call(1, 0, method="PUT"), call(2, 1, method="POST")]), "repeated-calls")
    assert [v.records for v in found] == [(1, 2)]
    assert warns(run([call(1, 0), call(2, 1, body={"n": 2})]), "repeated-calls") == []


def test_social_manager_calls_open_no_group_but_join_one() -> None:
    social = ("User-Agent", "XboxServicesAPI/2017.01 SocialManager")
    assert warns(run([call(1, 0, agent=social), call(2, 1, agent=social)]),
                 "repeated-calls") == []
    found = warns(run([call(1, 0), call(2, 1, agent=social)]), "repeated-calls")
    assert [v.records for v in found] == [(1, 2)]


def test_a_late_recorded_call_is_taken_in_request_time_order() -> None:
    # Recorded out of order (by end time): the repeat is still found, in its place.
    found = warns(run([call(2, 1), call(1, 0)]), "repeated-calls")
    assert [v.records for v in found] == [(1, 2)]


# ---------------------------------------------------------------- per-service limits


def test_the_shipped_limits_are_the_analyzers_per_service_numbers() -> None:
    limits = verdicts.default_limits()
    mpsd = limits.service_for("sessiondirectory.xboxlive.com", "session", "/handles")
    assert (mpsd.name, mpsd.burst.calls, mpsd.sustained.calls) == ("sessiondirectory", 30, 300)
    query = limits.service_for("sessiondirectory.xboxlive.com", "handle-query",
                               "/handles/query?include=relatedInfo,roleInfo,customProperties")
    assert (query.name, query.burst.calls, query.sustained.calls) == (
        "sessiondirectory/handles-query", 1, 20)
    smart = limits.service_for("momatch.xboxlive.com", "hopper")
    assert (smart.burst.calls, smart.sustained.calls) == (10, 100)
    presence = limits.service_for("userpresence.xboxlive.com", "unknown",
                                  "/users/xuid(2533274800000001)/devices/current/titles/current")
    assert (presence.name, presence.burst.calls) == ("userpresence/write-presence", 3)
    general = limits.service_for("example.xboxlive.com", "unknown")
    assert (general.name, general.burst.calls, general.sustained.calls) == ("general", 10, 30)


def test_the_handles_query_budget_is_its_own(tmp_path: Path) -> None:
    query = "/handles/query?include=relatedInfo,roleInfo,customProperties"
    records = [rec(n, n * 1.0, "POST", query, 200, headers=[LIBRARY],
                   body={"owners": {"xuids": ["2533274800000001", "2533274800000002"]},
                         "n": n}) for n in (1, 2)]
    found = warns(run(records), "rate-budget")
    assert len(found) == 1
    assert found[0].resource == "sessiondirectory/handles-query"
    assert "(1 per 15 s)" in found[0].reason


def test_limits_file_overrides_a_sub_path_limit(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("version: 1\nservices:\n  sessiondirectory:\n    paths:\n"
                    "      handles-query:\n        burst: {calls: 5}\n")
    limits = verdicts.load_limits(str(path))
    assert limits.service("sessiondirectory/handles-query").burst.calls == 5


def test_an_old_warm_up_setting_is_accepted_and_noted(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("version: 1\nrules:\n  burst_warmup_calls: 20\n")
    limits = verdicts.load_limits(str(path))
    assert any("burst_warmup_calls is ignored" in note for note in limits.notes)
    path.write_text("version: 1\nrules:\n  burst_warmup: 20\n")
    with pytest.raises(verdicts.LimitsError, match="burst_warmup: unknown key"):
        verdicts.load_limits(str(path))

