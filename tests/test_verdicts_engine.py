"""The verdict engine itself (feeding, time, finishing), the limits files, and memory that
stays flat however long the recording."""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_verdicts import BATCH
from test_verdicts import LOBBY
from test_verdicts import MPSD
from test_verdicts import OTHER
from test_verdicts import RA5
from test_verdicts import SCID
from test_verdicts import T0
from test_verdicts import ex
from test_verdicts import judge
from test_verdicts import only
from test_verdicts import rec

from mpsdproxy import model
from mpsdproxy import verdicts
from mpsdproxy.verdicts import Engine
from mpsdproxy.verdicts import Status

#: The client library's user agent: the calls the Trace Analyzer's rules look at.
LIBRARY = ("User-Agent", "XboxServicesAPI/2017.01.20170131.001")

# ---------------------------------------------------------------- the engine itself


def test_every_rule_reports_once_on_an_empty_recording() -> None:
    found = judge([])
    assert [v.rule for v in found] == [r.id for r in verdicts.RULES]
    assert {v.status for v in found} == {Status.NOT_APPLICABLE}


def test_feed_returns_what_each_record_decides() -> None:
    engine = Engine()
    assert engine.feed(ex(rec(1, 0, status=503, response_headers=RA5, headers=[LIBRARY]))) == []
    decided = engine.feed(ex(rec(2, 1, headers=[LIBRARY])))
    assert [(v.rule, v.status) for v in decided] == [("retry-after", Status.FAIL)]
    assert engine.counts[("retry-after", Status.FAIL)] == 1
    # Repeated calls are taken in request-time order: decided once the reorder grace passed.
    later = engine.advance(T0 + 1 + 10 + 5 + 1.5)
    assert [(v.rule, v.status, v.records) for v in later] == [
        ("repeated-calls", Status.WARN, (1, 2))]
    assert engine.looked_at("repeated-calls").text == "looked at 2 requests: records 1..2"
    engine.finish()
    assert engine.finish() == []
    with pytest.raises(RuntimeError, match="finished"):
        engine.feed(ex(rec(3, 2)))


def test_a_waiting_verdict_is_decided_after_the_reorder_grace() -> None:
    engine = Engine()
    engine.feed(ex(rec(1, 0, status=503, response_headers=RA5)))
    assert engine.advance(T0 + 6) == []  # deadline passed, grace not yet
    decided = engine.advance(T0 + 5.01 + 10.2)
    assert [(v.rule, v.status, v.records) for v in decided] == [
        ("retry-after", Status.PASS, (1,))]


def test_exchanges_without_times_or_answers_do_not_stop_the_engine() -> None:
    engine = Engine()
    engine.feed(model.Exchange(model.Request("GET", "not-a-url"), seq=1))
    engine.feed(model.Exchange(model.Request("GET", "http://[::1]/x"), error="reset", seq=2))
    engine.feed(model.Exchange(model.Request("POST", MPSD + BATCH, body=b"{not json"), seq=3))
    assert engine.fed == 3
    assert len(engine.finish()) == len(verdicts.RULES)


def mixed(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """Every kind of trigger, mixed at random: faults with and without Retry-After, 412s,
    409s, missing sessions, batches, SocialManager calls, errors; times out of order now
    and then."""
    rng = random.Random(seed)
    at = 0.0
    for seq in range(1, count + 1):
        at += rng.choice((0.0, 0.05, 0.3, 1.0, 2.5, 6.0, -0.2))
        method, path, body = rng.choice((
            ("GET", LOBBY, None), ("GET", OTHER, None), ("PUT", LOBBY, {"n": rng.randrange(3)}),
            ("POST", BATCH, {"xuids": ["1"] * rng.randrange(4)}),
            ("POST", "/handles/query", {"owners": {"xuids": ["1", "2"]}}), ("GET", "/x", None)))
        status = rng.choice((200, 200, 200, 204, 409, 412, 429, 503, None))
        response_headers = [("ETag", f'"e{rng.randrange(3)}"')]
        if status in (429, 503) and rng.random() < 0.5:
            response_headers.append(("Retry-After", rng.choice(("1", "3", " 2 "))))
        headers = [("If-Match", f'"e{rng.randrange(3)}"')] if method == "PUT" else []
        if rng.random() < 0.1:
            headers.append(("User-Agent", "XboxServicesAPI SocialManager"))
        yield rec(seq, at, method, path, status, user=rng.choice(("alice", "bob", None)),
                  headers=headers, response_headers=response_headers, body=body)


@pytest.mark.parametrize("seed", range(4))
def test_mixed_traffic_with_few_keys_is_judged_the_same_every_time(seed: int) -> None:
    """Every trigger mixed, out of order now and then, with state dropped to bound memory:
    two engines decide exactly the same, and every kind of verdict comes out."""
    first, second = Engine(max_keys=8), Engine(max_keys=8)
    for record in mixed(3000, seed):
        exchange = ex(record)
        assert first.feed(exchange) == second.feed(exchange)
    assert first.finish() == second.finish()
    assert first.counts == second.counts
    assert {s for (_, s) in first.counts} >= {Status.PASS, Status.WARN, Status.FAIL}
    assert first.total(Status.FAIL) == sum(n for (_, s), n in first.counts.items()
                                           if s is Status.FAIL)


def test_an_exchange_without_a_seq_is_numbered_by_its_place_in_the_feed() -> None:
    engine = Engine()
    first = rec(1, 0, status=503, response_headers=RA5)
    del first["seq"]
    engine.feed(ex(first))
    decided = engine.feed(ex(rec(42, 1)))
    assert only(decided, "retry-after").records == (1, 42)


# ---------------------------------------------------------------- limits files


def test_default_limits_are_the_documented_budgets() -> None:
    limits = verdicts.default_limits()
    mpsd = limits.service_for("sessiondirectory.xboxlive.com", "session")
    assert (mpsd.burst.calls, mpsd.burst.seconds) == (30, 15)
    assert (mpsd.sustained.calls, mpsd.sustained.seconds, mpsd.certification) == (300, 300, 3000)
    smart = limits.service_for("smartmatch.xboxlive.com", "hopper")
    assert (smart.name, smart.burst.calls, smart.sustained.calls) == ("matchmaking", 10, 100)
    assert limits.service_for("127.0.0.1", "ticket").name == "matchmaking"
    assert limits.service_for("127.0.0.1", "session").name == "sessiondirectory"


def test_a_limits_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("version: 1\nservices:\n  sessiondirectory:\n    burst: {calls: 20}\n"
                    "rules:\n  retry_after_scope: resource\n")
    limits = verdicts.load_limits(str(path))
    mpsd = limits.service("sessiondirectory")
    assert (mpsd.burst.calls, mpsd.burst.seconds, mpsd.sustained.calls) == (20, 15, 300)
    assert limits.rules.retry_after_scope == "resource"
    assert limits.rules.repeat_interval_ms == 5000


@pytest.mark.parametrize("text,message", [
    ("version: 2\n", r"limits.yaml:1:10: version: should be 1, not 2$"),
    ("services: {}\n", r"limits.yaml:1:1: \(document\): missing 'version: 1' at the top"),
    ("", r"limits.yaml:1:1: \(document\): the file is empty"),
    ("- 1\n", r"limits.yaml:1:1: \(document\): a limits file should be a mapping, not a list"),
    ("version: 1\nservices:\n  sessiondirectory:\n    burst: {calls: -3}\n",
     r"limits.yaml:4:20: services.sessiondirectory.burst.calls: should be at least 1, not -3"),
    ("version: 1\nrules:\n  retry_after_scope: host\n",
     r"limits.yaml:3:22: rules.retry_after_scope: should be one of client, resource, not 'host'"),
    ("version: 1\nrules:\n  polling_tolerence: 0.1\n",
     r"limits.yaml:3:3: rules.polling_tolerence: unknown key. Valid keys are: retry_after_scope"),
    ("version: 1\nservices:\n  x: {kinds: [lobby], burst: {calls: 1, seconds: 1}, "
     "sustained: {calls: 1, seconds: 1}}\n",
     r"limits.yaml:3:15: services.x.kinds\[0\]: 'lobby' is not a resource kind"),
    ("version: 1\nversion: 1\n", r"limits.yaml:2:1: version: duplicate key"),
    ("version: 1\nservices: [\n", r"limits.yaml:3:1: \(document\): invalid YAML"),
])
def test_bad_limits_files_name_file_line_column_and_key(tmp_path: Path, text: str,
                                                        message: str) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text(text)
    with pytest.raises(verdicts.LimitsError, match=message) as caught:
        verdicts.load_limits(str(path))
    assert isinstance(caught.value, ValueError)
    assert caught.value.problems[0].path == str(path)


def test_parse_limits_needs_both_windows() -> None:
    with pytest.raises(verdicts.LimitsError,
                       match="<limits>:1:1: services.x: should have sustained"):
        verdicts.parse_limits({"version": 1, "services": {"x": {"burst": {
            "calls": 1, "seconds": 1}}}})


# ---------------------------------------------------------------- bounded memory


def synthetic(count: int) -> Iterator[model.Exchange]:
    """Many users, sessions and calls, with every kind of trigger mixed in."""
    for seq in range(1, count + 1):
        at = T0 + seq * 0.25
        status = (503 if seq % 101 == 0 else 429 if seq % 103 == 0 else 412 if seq % 107 == 0
                  else 409 if seq % 109 == 0 else 204 if seq % 7 == 0 else 200)
        path = f"/serviceconfigs/{SCID}/sessiontemplates/t/sessions/s{seq % 997}"
        put = seq % 3 == 0
        request = model.Request(
            "PUT" if put else "GET", MPSD + path,
            [("Authorization", f"redacted:{seq % 53:012x}"), ("If-Match", f'"{seq % 5}"')],
            b'{"n": %d}' % (seq % 11) if put else b"")
        answer = [("Retry-After", "1")] if seq % 2 and status == 503 else [("ETag", f'"{seq}"')]
        yield model.Exchange(request, model.Response(status, "", answer), start=at,
                             end=at + 0.01, client="10.1.2.3:4000", seq=seq)


def test_memory_stays_flat_over_200000_records() -> None:
    """State is windows and capped per-key last state: after the windows fill, feeding more
    exchanges leaves the traced memory where it was. Only the tail is traced (tracing every
    allocation is slow); the untraced head fills every window and cap first."""
    engine = Engine(max_keys=500)
    records = synthetic(200_000)
    decided = 0
    for _ in range(192_000):
        decided += len(engine.feed(next(records)))
    gc.collect()
    tracemalloc.start()
    try:
        samples: list[int] = []
        for n in range(8_000):
            decided += len(engine.feed(next(records)))
            if n >= 2_000 and n % 200 == 0:  # the first 2,000 turn the state over
                samples.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert next(records, None) is None
    assert decided > 1000  # the records did trigger verdicts all along
    # Averages over 3,000 records each: heaps and dicts breathe, but they do not grow.
    half = len(samples) // 2
    earlier, later = sum(samples[:half]) / half, sum(samples[half:]) / half
    assert later - earlier < 32 * 1024, (earlier, later)


# ---------------------------------------------------------------- only MPSD is judged

BING = "https://www.bing.com"
PATTERN_RULES = ("rate-budget", "burst", "repeated-calls", "polling")


def test_other_hosts_count_against_no_budget() -> None:
    """A flood of identical, evenly spaced calls to another host: no rule sees them."""
    flood = [rec(n, 0.1 * n, "POST", path="/", status=204, host=BING) for n in range(1, 61)]
    engine = Engine()
    decided = [v for r in flood for v in engine.feed(ex(r))] + engine.finish()
    assert engine.fed == 60 and engine.other == 60 and engine.judged == 0
    for rule in PATTERN_RULES:
        v = only(decided, rule)
        assert v.status is Status.NOT_APPLICABLE, v
        assert "0 session-directory exchanges, 60 with other hosts not judged" in v.reason


def test_the_rate_budget_peak_counts_only_mpsd_calls() -> None:
    """Ten MPSD calls among twenty calls to other hosts in 15 s: the peak is ten."""
    mpsd = [rec(n, n, path=f"{LOBBY}-{n}") for n in range(1, 11)]
    others = [rec(100 + n, n + 0.5, path="/v1/collect", host="https://vortex.data.microsoft.com")
              for n in range(1, 11)]
    others += [rec(200 + n, n + 0.7, "GET", path="/connect", status=101,
                   host="https://rta.xboxlive.com") for n in range(1, 11)]
    mixed_in = sorted(mpsd + others, key=lambda r: r["start"])
    alone = only(judge(mpsd), "rate-budget")
    together = only(judge(mixed_in), "rate-budget")
    assert together.status is Status.PASS
    assert together.reason == alone.reason
    assert "sessiondirectory peak 10/30 per 15 s" in together.reason


def test_time_passes_on_other_hosts_for_waiting_verdicts() -> None:
    """A 503 with Retry-After waits; traffic to another host later decides it."""
    engine = Engine()
    engine.feed(ex(rec(1, 0, status=503, response_headers=RA5)))
    decided = engine.feed(ex(rec(2, 30, path="/", host=BING)))
    assert [(v.rule, v.status, v.records) for v in decided] == [
        ("retry-after", Status.PASS, (1,))]


def test_a_local_stand_in_is_still_judged() -> None:
    """127.0.0.1 with MPSD paths (the stand-in, reverse mode) is MPSD traffic."""
    calls = [rec(n, 0.1 * n, host="http://127.0.0.1:8081") for n in range(1, 41)]
    engine = Engine()
    decided = [v for r in calls for v in engine.feed(ex(r))] + engine.finish()
    assert engine.other == 0 and engine.judged == 40
    assert only(decided, "rate-budget").status is Status.WARN
