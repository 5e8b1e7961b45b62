"""Reports over recordings: totals, coverage, verdicts, and the text, json and junit forms."""

from __future__ import annotations

import copy
import gc
import json
import re
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from mpsdproxy import catalog
from mpsdproxy import classify
from mpsdproxy import faults
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import report
from mpsdproxy.verdicts import Status

T0 = 1_800_000_000.0
MPSD = "https://sessiondirectory.xboxlive.com"
SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
GONE = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/gone"
SESSION = {"constants": {}, "properties": {}, "members": {}, "changeNumber": 2}


#: The client library's user agent: the calls the Trace Analyzer's rules look at.
LIBRARY_AGENT = "XboxServicesAPI/2017.01.20170131.001"


def exchange(at: float, method: str, path: str, reply: model.Response | None, *,
             headers: Iterable[tuple[str, str]] = (), source: str = "forwarded",
             rule: str | None = None, took: float = 0.02, user: str = "alice") -> dict[str, Any]:
    """A record without its seq (the Writer stamps it), classified as the proxy would."""
    request = model.Request(method, MPSD + path,
                            model.Headers([("Authorization", f"XBL3.0 x={user};t"),
                                           ("User-Agent", LIBRARY_AGENT), *headers]))
    provenance: dict[str, Any] = {"source": source}
    if rule:
        provenance["rule"] = rule
    ex = model.Exchange(request, reply, error=None if reply else "connection refused",
                        start=T0 + at, end=T0 + at + took, client="127.0.0.1:50000",
                        provenance=provenance)
    return recording.to_record(ex, recording.Redactor(), classify.classify(ex))


def playtest() -> list[dict[str, Any]]:
    """A short pass: create, read, a stale write, an outage the title ignores, a lost reply."""
    ok = faults.build("200.ok", session=SESSION, etag='"e2"')
    return [
        exchange(0, "PUT", LOBBY, faults.build("201.created", session=SESSION, etag='"e1"')),
        exchange(1, "GET", LOBBY, ok),
        exchange(2, "PUT", LOBBY, faults.build("412.if-match-session", session=SESSION,
                                               etag='"e2"'),
                 headers=[("If-Match", '"e0"')], source="injected", rule="stale-write"),
        exchange(3, "PUT", LOBBY, ok, headers=[("If-Match", '"e2"')]),
        exchange(10, "GET", LOBBY, faults.build("503.service-unavailable", retry_after=5),
                 source="injected", rule="outage"),
        exchange(11, "GET", LOBBY, ok, source="replayed"),  # 1 s later: too early
        exchange(20, "GET", GONE, faults.build("204.get-session")),
        exchange(21, "GET", GONE, model.Response(204, "No Content", body=b"oops")),  # anomaly
        exchange(30, "DELETE", LOBBY + "/members/me", None),
    ]


def write(path: Path, records: Iterable[dict[str, Any]], *, tail: str = "") -> Path:
    with recording.Writer(path) as w:
        for r in records:
            w.write(r)
    if tail:
        with open(path, "a", encoding="utf-8") as f:
            f.write(tail)
    return path


@pytest.fixture
def built(tmp_path: Path) -> report.Report:
    path = write(tmp_path / "pass.jsonl", playtest(), tail='not json\n{"seq": 99, "requ')
    return report.build_report(path)


def test_totals_by_status_entry_kind_and_source(built: report.Report) -> None:
    assert built.exchanges == 9
    assert built.skipped_total == 2
    assert built.skipped[1][1] == "truncated last line (writer stopped mid-record)"
    assert built.by_status == {201: 1, 200: 3, 412: 1, 503: 1, 204: 2, None: 1}
    assert built.by_entry == {"201.created": 1, "200.ok": 3, "412.if-match-session": 1,
                              "503.service-unavailable": 1, "204.get-session": 2, None: 1}
    assert built.by_kind == {"session": 8, "member": 1}
    assert built.by_source == {"forwarded": 6, "injected": 2, "replayed": 1}
    assert built.injected_rules == {"stale-write": 1, "outage": 1}
    assert (built.start, built.end) == (T0, T0 + 30.02)


def test_operations_carry_status_classes_and_latency(built: report.Report) -> None:
    ops = {(op.method, op.kind): op for op in built.operations}
    get = ops[("GET", "session")]
    assert get.count == 5
    assert get.status_classes == {"2xx": 4, "5xx": 1}
    assert get.latency["count"] == 5
    assert get.latency["max"] == pytest.approx(20.0)
    assert 18 <= get.latency["p50"] <= 22
    assert ops[("DELETE", "member")].status_classes == {"no response": 1}


def test_anomalies_are_counted_with_their_records(built: report.Report) -> None:
    codes = {a.code: a for a in built.anomalies}
    assert codes["unexpected-body"].records == (8,)
    assert codes["no-response"].count == 1
    assert built.anomaly_total == sum(a.count for a in built.anomalies)


def test_coverage_names_the_rows_exercised_and_never_reached(built: report.Report) -> None:
    exercised = {"201.created", "200.ok", "412.if-match-session", "503.service-unavailable",
                 "204.get-session"}
    assert {e.id for e in built.exercised} == exercised
    assert [e.id for e in built.never_reached] == [
        e.id for e in catalog.ENTRIES if e.id not in exercised]


def test_verdicts_are_counted_and_kept_failures_first(built: report.Report) -> None:
    assert built.verdict_counts["retry-after"] == {"fail": 1}
    assert built.verdict_counts["412-handled"] == {"pass": 1}
    first = built.verdicts[0]
    assert (first.rule, first.status, first.records) == ("retry-after", Status.FAIL, (5, 6))
    assert set(built.evidence) >= {5, 6}
    assert built.evidence[5].rule == "outage"
    assert built.failed


def test_json_form_is_the_documented_contract(built: report.Report) -> None:
    doc = json.loads(report.render(built, "json"))
    assert list(doc) == ["report", "version", "source", "limits", "exchanges", "skipped_lines",
                         "skipped", "start", "end", "duration_s", "outcome", "by_status",
                         "by_entry", "by_kind", "by_source", "injected_rules", "operations",
                         "anomalies", "verdicts", "coverage", "evidence", "timeline",
                         "mpsd_exchanges", "other_hosts", "rta"]
    assert (doc["report"], doc["version"]) == ("mpsdproxy", 1)
    assert doc["outcome"] == {"failed": True, "anomalies": built.anomaly_total,
                              "verdicts": {"pass": 4, "warn": 4, "fail": 1,
                                           "not-applicable": 10},
                              "no_session_directory_traffic": False,
                              "scope": "9 session-directory exchanges, all judged"}
    assert doc["by_status"][-1] == {"status": None, "count": 1}
    assert doc["by_entry"][1] == {"id": "201.created", "status": 201,
                                  "meaning": catalog.get("201.created").meaning, "count": 1}
    assert [e["id"] for e in doc["by_entry"]] == [  # in the order of the table, unlisted last
        "200.ok", "201.created", "204.get-session", "412.if-match-session",
        "503.service-unavailable", None]
    assert list(doc["operations"][0]) == ["method", "kind", "count", "status_classes",
                                          "latency_ms"]
    assert list(doc["operations"][0]["latency_ms"]) == ["count", "mean", "p50", "p90", "p99",
                                                        "max"]
    assert [r["rule"] for r in doc["verdicts"]["rules"]][:2] == ["retry-after", "backoff"]
    assert list(doc["verdicts"]["rules"][0]) == ["rule", "title", "group", "checks", "counts",
                                                 "omitted", "looked_at"]
    burst = next(r for r in doc["verdicts"]["rules"] if r["rule"] == "burst")
    assert burst["looked_at"] == {"requests": 9, "ranges": [[1, 9]], "unlisted": 0,
                                  "text": "looked at 9 requests: records 1..9"}
    item = doc["verdicts"]["items"][0]
    assert list(item) == ["rule", "title", "status", "reason", "records", "gaps_ms", "client",
                          "resource", "time"]
    assert (item["status"], item["records"], item["gaps_ms"]) == ("fail", [5, 6], [980.0])
    assert doc["coverage"]["entries"] == len(catalog.ENTRIES)
    assert [r["id"] for r in doc["coverage"]["rows"]] == [e.id for e in catalog.ENTRIES]
    assert list(doc["evidence"][0]) == ["seq", "time", "method", "resource", "status", "entry",
                                        "source", "rule"]
    assert list(doc["timeline"]) == ["lanes", "points", "sampled_every", "marked"]


def test_junit_puts_each_rule_client_and_operation_in_a_testcase(
        built: report.Report) -> None:
    root = ET.fromstring(report.render(built, "junit"))
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "mpsdproxy.verdicts"
    cases = suite.findall("testcase")
    names = [(c.get("classname"), c.get("name")) for c in cases]
    assert len(set(names)) == len(cases) == int(suite.get("tests", "0"))
    # verdicts of one rule, client and operation share a testcase: the worst decides
    assert len(cases) < len(built.verdicts)
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == int(suite.get("failures", "0")) == 1
    assert failures[0].get("classname") == "mpsdproxy.verdicts.retry-after"
    assert failures[0].get("name") == "retry-after: x=redacted:2bd806c97f0e: GET sessions/{name}"
    assert "4020 ms too early" in (failures[0].find("failure").get("message") or "")
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert len(skipped) == int(suite.get("skipped", "0"))
    warns = [c for c in skipped if c.find("skipped").get("message", "").startswith("warning: ")]
    assert warns and all("WARN " in (c.findtext("system-out") or "") for c in warns)
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["exchanges"] == "9"


def test_junit_counts_failures_beyond_the_kept_ones() -> None:
    records = [exchange(2 * n, "GET", LOBBY, faults.build("503.service-unavailable",
                                                          retry_after=5))
               for n in range(8)]
    for n, r in enumerate(records, start=1):
        r["seq"] = n
    builder = report.ReportBuilder(keep_verdicts=2)
    for r in records:
        builder.add(r)
    rep = builder.finish()
    assert rep.verdict_counts["retry-after"]["fail"] == 7
    assert rep.omitted["retry-after"] == {"fail": 5}
    suite = ET.fromstring(report.render(rep, "junit")).find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    omitted = cases["retry-after: fail verdicts not listed"]  # no count in the name
    assert omitted.find("failure").get("message") == "5 more failures"
    assert suite.get("failures") == "2"  # the two kept share one testcase


def test_text_is_readable(built: report.Report) -> None:
    text = report.render(built, "text")
    assert text.startswith(f"mpsdproxy report: {built.source}\n9 exchanges from ")
    assert "FAILED: 1 title-behaviour verdict(s) failed, 4 warning(s)" in text
    assert re.search(r"Retry-After honoured +1 fail", text)
    assert "  - FAIL Retry-After honoured: GET sessions/lobby-1 (record 6)" in text
    assert "COVERAGE  5 of 18 rows of the status table exercised" in text
    assert f"  NO        -  202.accepted: {catalog.get('202.accepted').meaning}" in text
    assert "2 line(s) skipped" in text


@pytest.mark.parametrize("fail_on,expected", [(None, 0), ("fail", 1), ("anomaly", 1)])
def test_exit_code_on_a_failing_pass(built: report.Report, fail_on: str | None,
                                     expected: int) -> None:
    assert report.exit_code(built, fail_on) == expected


def test_exit_code_on_a_clean_pass() -> None:
    ok = faults.build("200.ok", session=SESSION, etag='"e1"')
    clean = report.report_records([dict(exchange(at, "GET", LOBBY, ok), seq=n)
                                   for n, at in enumerate((0, 30, 90), start=1)])
    assert not clean.failed and clean.anomaly_total == 0
    assert report.exit_code(clean, "fail") == report.exit_code(clean, "anomaly") == 0
    noisy = report.report_records([dict(exchange(0, "GET", GONE, model.Response(
        204, "No Content", body=b"body")), seq=1)])
    assert (report.exit_code(noisy, "fail"), report.exit_code(noisy, "anomaly")) == (0, 1)


def test_bad_format_and_gate_are_refused(built: report.Report) -> None:
    with pytest.raises(ValueError, match="format should be one of text, json, html, junit"):
        report.render(built, "pdf")
    with pytest.raises(ValueError, match="fail_on should be one of fail, anomaly"):
        report.exit_code(built, "warn")


def test_records_without_classification_are_classified() -> None:
    r = exchange(0, "GET", GONE, faults.build("204.get-session"))
    r.update(seq=1, classification=None)
    assert report.report_records([r]).by_entry == {"204.get-session": 1}


def test_latency_histogram_estimates_within_a_bucket() -> None:
    h = report.LatencyHistogram()
    assert h.percentile(50) is None and h.to_dict()["max"] is None
    for ms in range(1, 1001):
        h.add(float(ms))
    h.add(float("nan"))
    assert h.count == 1000  # the NaN is not counted
    assert h.percentile(50) == pytest.approx(500, rel=0.05)
    assert h.percentile(99) == pytest.approx(990, rel=0.05)
    assert h.percentile(100) == 1000.0
    assert h.to_dict()["mean"] == pytest.approx(500.5)
    assert len(h.buckets) == report.LatencyHistogram.SIZE


def test_timeline_is_downsampled_and_keeps_injected_faults() -> None:
    ok = faults.build("200.ok", session=SESSION, etag='"e1"')
    builder = report.ReportBuilder(max_points=50, max_marked=5)
    for n in range(1, 1001):
        injected = n % 100 == 0
        builder.add(dict(exchange(n * 7.0, "GET", LOBBY, ok,
                                  source="injected" if injected else "forwarded"), seq=n))
    rep = builder.finish()
    assert 50 <= len(rep.points) < 100
    assert rep.sampled_every == 16
    assert [p.seq for p in rep.marked] == [100, 200, 300, 400, 500]
    svg = report.render(rep, "html")
    assert svg.count("<circle") <= 100 + len(rep.evidence)


# ---------------------------------------------------------------- flat memory


def test_report_memory_stays_flat_while_streaming(tmp_path: Path) -> None:
    """Every aggregate is capped: once the caps fill, more records leave memory where it was.

    A recording is generated, then streamed from disk through the builder; only the tail is
    traced (tracing every allocation is slow) and the small caps fill during the head.
    """
    path = tmp_path / "long.jsonl"
    body = {"json": {"members": {"me": None}}}
    with open(path, "w", encoding="utf-8") as f:
        for n in range(1, 36_001):
            at = T0 + n * 0.25
            status = 503 if n % 97 == 0 else 204 if n % 5 == 0 else 200
            f.write(json.dumps({
                "seq": n, "start": recording.timestamp(at),
                "end": recording.timestamp(at + 0.001 * (n % 50)),
                "client": f"10.0.0.{n % 7}:4000",
                "request": {"method": "PUT" if n % 4 == 0 else "GET",
                            "url": f"{MPSD}/serviceconfigs/{SCID}/sessiontemplates/t/sessions/"
                                   f"s{n % 31}", "headers": [], "body": body if n % 4 == 0
                            else None},
                "response": {"status": status, "reason": "", "headers": [], "body": None},
                "resource": {"kind": "session", "scid": SCID, "template": "t",
                             "name": f"s{n % 31}", "element": None},
                "classification": {"id": None, "meaning": "",
                                   "anomalies": [{"code": f"c{n % 3}", "message": "m"}]},
                "provenance": {"source": "injected" if status == 503 else "forwarded",
                               "rule": f"rule-{n % 3}"},
            }) + "\n")
    builder = report.ReportBuilder(max_points=64, max_marked=16, keep_verdicts=3, ring=256,
                                   max_evidence=64, max_lanes=8)
    records = recording.read(path)
    for _ in range(30_000):
        builder.add(next(records))
    gc.collect()
    tracemalloc.start()
    try:
        samples = []
        for n in range(6_000):
            builder.add(next(records))
            if n >= 2_000 and n % 100 == 0:  # the first 2,000 turn the state over
                samples.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert next(records, None) is None
    half = len(samples) // 2
    earlier, later = sum(samples[:half]) / half, sum(samples[half:]) / half
    assert later - earlier < 48 * 1024, (earlier, later)
    rep = builder.finish()
    assert rep.exchanges == 36_000
    assert len(rep.evidence) <= 64 and len(rep.points) < 128 and len(rep.lanes) <= 9


def test_odd_records_are_counted_not_fatal() -> None:
    odd = [{"seq": 1, "request": ["not", "a", "request"], "provenance": "forwarded"},
           {"seq": 2, "request": {"method": "GET", "url": MPSD + LOBBY},
            "response": {"status": 799, "headers": []}, "start": "never"},
           {"seq": 3, "request": {"method": "GET", "url": MPSD + LOBBY}, "response": None,
            "start": "never", "provenance": {"source": "forwarded"}},
           {"seq": 4, "request": {"method": "GET", "url": MPSD + LOBBY}, "response": None,
            "provenance": "forwarded"}]
    rep = report.report_records(odd)
    assert rep.exchanges == 1
    assert rep.skipped_total == 3
    assert [line for line, _ in rep.skipped] == [1, 2, 4]
    assert "799" in rep.skipped[1][1]
    assert "'provenance' should be an object" in rep.skipped[2][1]
    assert rep.by_status == {None: 1}
    assert {a.code for a in rep.anomalies} == {"no-response"}
    assert report.render(rep, "html").startswith("<!DOCTYPE html>")


def test_records_no_wire_could_carry_are_skipped_with_their_line(tmp_path: Path) -> None:
    ok = faults.build("200.ok", session=SESSION, etag='"e1"')
    good = exchange(0, "GET", LOBBY, ok)
    crlf = copy.deepcopy(good)
    crlf["response"]["headers"].append(["Set-Cookie", "a=1\r\nX-Evil: 1"])
    huge = copy.deepcopy(good)
    huge["response"]["status"] = 99999
    path = write(tmp_path / "odd.jsonl", [good, crlf, huge, good], tail="\n")
    rep = report.build_report(path)
    assert rep.exchanges == 2
    assert [line for line, _ in rep.skipped] == [3, 4]  # line 1 is the header line
    assert "CR, LF or NUL" in rep.skipped[0][1] and "99999" in rep.skipped[1][1]
    assert f"{path}:3: " in report.render(rep, "text")
    assert json.loads(report.render(rep, "json"))["skipped"][1]["line"] == 4


# ---------------------------------------------------------------- bytes that are not UTF-8

CAFE = LOBBY + "-caf\udce9"  # the path byte 0xE9, as the recording codec keeps it


@pytest.fixture
def not_utf8(tmp_path: Path) -> Path:
    """A recording whose path holds byte 0xE9 and whose header values hold 0xFF."""
    session = faults.build("200.ok", session=SESSION, etag='"e1"')
    odd_type = session.headers.with_value("Content-Type", "application/json\udcff")
    records = [
        exchange(0, "GET", CAFE, model.Response(200, "OK", odd_type, session.body),
                 headers=[("X-Title", "Caf\udcff Racer")]),
        exchange(1, "GET", CAFE, faults.build("503.service-unavailable", retry_after=5),
                 source="injected", rule="outage"),
        exchange(2, "GET", CAFE, session),  # 1 s later: breaks the Retry-After of 5 s
    ]
    path = write(tmp_path / "caf\u00e9.jsonl", records)
    assert "\\udce9" in path.read_text(encoding="utf-8")
    return path


def strings(value: Any) -> Iterable[str]:
    """Every string in a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


@pytest.mark.parametrize("fmt", report.FORMATS)
def test_bytes_that_are_not_utf8_render_in_every_format(not_utf8: Path, fmt: str) -> None:
    rep = report.build_report(not_utf8)
    assert rep.exchanges == 3 and rep.skipped_total == 0
    out = report.render(rep, fmt)
    out.encode("utf-8")  # strict: no lone surrogate left
    shown = out
    if fmt == "json":
        doc = json.loads(out)
        shown = " ".join(strings(doc))
        assert doc["timeline"]["lanes"] == ["sessions/lobby-1-caf\\xe9"]
        assert doc["evidence"][0]["resource"] == "sessions/lobby-1-caf\\xe9"
    elif fmt == "junit":
        ET.fromstring(out)
    assert "lobby-1-caf\\xe9" in shown
    if fmt != "junit":  # anomalies are not verdicts: junit does not list them
        assert "application/json\\xff" in shown


@pytest.mark.parametrize("fmt", report.FORMATS)
def test_report_command_writes_bytes_that_are_not_utf8(not_utf8: Path, tmp_path: Path,
                                                      fmt: str) -> None:
    from click.testing import CliRunner

    from mpsdproxy.cli import cli

    shown = "lobby-1-caf\\\\xe9" if fmt == "json" else "lobby-1-caf\\xe9"  # JSON escapes \\
    out = tmp_path / f"report.{fmt}"
    done = CliRunner().invoke(cli, ["report", str(not_utf8), "--format", fmt, "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert shown in out.read_bytes().decode("utf-8")
    done = CliRunner().invoke(cli, ["report", str(not_utf8), "--format", fmt])
    assert done.exit_code == 0, done.output
    assert shown in done.output


# ---------------------------------------------------------------- only MPSD is judged


def elsewhere(seq: int, at: float, method: str, url: str, reply: model.Response | None,
              classification: dict[str, Any] | None = None) -> dict[str, Any]:
    """A record of an exchange with another host; `classification` stands for what an
    older version stored (the report must not trust it for a host that is not MPSD)."""
    ex = model.Exchange(model.Request(method, url), reply, start=T0 + at, end=T0 + at + 0.05,
                        client="127.0.0.1:50000", provenance={"source": "forwarded"}, seq=seq)
    record = recording.to_record(ex, recording.Redactor(), classify.classify(ex))
    if classification is not None:
        record["classification"] = classification
    return dict(record, seq=seq)


STALE_204 = {"id": "204.get-session", "meaning": "stale",
             "anomalies": [{"code": "unexpected-body", "message": "old"}]}
HANDSHAKE = model.Response(101, "Switching Protocols",
                           [("Upgrade", "websocket"), ("Connection", "Upgrade")])


def mixed_capture() -> list[dict[str, Any]]:
    ok = faults.build("200.ok", session=SESSION, etag='"e1"')
    return [
        dict(exchange(0, "GET", LOBBY, ok), seq=1),
        elsewhere(2, 1, "POST", "https://www.bing.com/", model.Response(204, "", [], b"x"),
                  STALE_204),
        elsewhere(3, 2, "GET", "https://rta.xboxlive.com/connect", HANDSHAKE),
        elsewhere(4, 3, "POST", "https://login.live.com/ppsecure/post.srf",
                  model.Response(200, "", [], b"")),
        elsewhere(5, 4, "POST", "https://login.live.com/ppsecure/post.srf", None),
        dict(exchange(60, "GET", LOBBY, ok), seq=6),
    ]


def test_other_hosts_are_listed_apart_and_judged_by_nothing() -> None:
    rep = report.report_records(mixed_capture())
    assert (rep.exchanges, rep.mpsd_exchanges) == (6, 2)
    assert rep.other_hosts == {"www.bing.com": 1, "rta.xboxlive.com": 1, "login.live.com": 2}
    assert rep.by_entry == {"200.ok": 2}
    assert rep.by_status == {200: 2}
    assert rep.by_kind == {"session": 2}
    assert [(op.method, op.kind, op.count) for op in rep.operations] == [("GET", "session", 2)]
    assert rep.anomalies == ()  # no unlisted 101, no stale 204 anomaly, no no-response
    assert [e.id for e in rep.exercised] == ["200.ok"]
    assert rep.lanes == ("sessions/lobby-1",)
    assert report.exit_code(rep, "anomaly") == 0


def test_other_hosts_in_every_form() -> None:
    rep = report.report_records(mixed_capture())
    doc = json.loads(report.render(rep, "json"))
    assert doc["mpsd_exchanges"] == 2
    assert doc["other_hosts"] == {"login.live.com": 2, "rta.xboxlive.com": 1,
                                  "www.bing.com": 1}
    assert doc["outcome"]["no_session_directory_traffic"] is False
    assert doc["coverage"]["exercised"] == 1
    text = report.render(rep, "text")
    assert "6 exchanges from " in text
    assert "(2 session-directory, 4 with 3 other hosts, not judged); limits" in text
    assert "OTHER HOSTS (4 exchanges, not session-directory traffic" in text
    assert re.search(r"\n +2  login\.live\.com\n +1  rta\.xboxlive\.com\n", text)
    assert "unlisted" not in text
    html = report.render(rep, "html")
    assert 'id="other-hosts"' in html and "<code>www.bing.com</code>" in html
    props = {p.get("name"): p.get("value")
             for p in ET.fromstring(report.render(rep, "junit")).iter("property")}
    assert (props["mpsd_exchanges"], props["other_exchanges"]) == ("2", "4")


def test_budgets_count_only_the_session_directory() -> None:
    """Forty calls to other hosts within a second next to two MPSD calls: within budget."""
    ok = faults.build("200.ok", session=SESSION, etag='"e1"')
    flood = [elsewhere(10 + n, 5 + n / 40, "POST", "https://vortex.data.microsoft.com/collect",
                       model.Response(200, "", [], b"")) for n in range(40)]
    records = [dict(exchange(0, "GET", LOBBY, ok), seq=1), *flood,
               dict(exchange(60, "GET", LOBBY, ok), seq=2)]
    rep = report.report_records(records)
    budget = [v for v in rep.verdicts if v.rule == "rate-budget"]
    assert [v.status for v in budget] == [Status.PASS]
    assert "peak 1/30 per 15 s" in budget[0].reason
    assert not rep.verdict_counts.get("repeated-calls", {}).get("warn")


def test_the_local_stand_in_is_session_directory_traffic() -> None:
    ok = faults.build("200.ok", session=SESSION, etag='"e1"')
    ex = model.Exchange(model.Request("GET", "http://127.0.0.1:8081" + LOBBY), ok,
                        start=T0, end=T0 + 0.01, seq=1)
    rep = report.report_records([recording.to_record(ex, recording.Redactor(),
                                                     classify.classify(ex)) | {"seq": 1}])
    assert (rep.mpsd_exchanges, rep.other_hosts, rep.by_entry) == (1, {}, {"200.ok": 1})


def no_mpsd() -> report.Report:
    return report.report_records([
        elsewhere(1, 0, "POST", "https://www.bing.com/", model.Response(204, "", [], b"")),
        elsewhere(2, 1, "GET", "https://userpresence.xboxlive.com/users/me",
                  model.Response(200, "", [], b"{}"))])


@pytest.mark.parametrize("rep", [no_mpsd(), report.report_records([])],
                         ids=["other-hosts-only", "empty"])
def test_no_session_directory_traffic_is_said_plainly(rep: report.Report) -> None:
    assert rep.no_mpsd and rep.mpsd_exchanges == 0
    text = report.render(rep, "text")
    assert "NOT JUDGED: no session-directory traffic" in text
    assert "PASSED" not in text and "COVERAGE" not in text
    doc = json.loads(report.render(rep, "json"))
    assert doc["outcome"]["no_session_directory_traffic"] is True
    assert doc["mpsd_exchanges"] == 0
    html = report.render(rep, "html")
    assert 'class="banner none"' in html and "o session-directory traffic" in html
    assert "passed every behaviour check" not in html
    suite = ET.fromstring(report.render(rep, "junit"))
    failures = [f.get("message") for f in suite.iter("failure")]
    assert len(failures) == 1 and failures[0].startswith("no session-directory traffic")
    assert suite.get("failures") == "1"


def test_no_session_directory_traffic_trips_every_gate() -> None:
    rep = no_mpsd()
    assert rep.other_hosts == {"www.bing.com": 1, "userpresence.xboxlive.com": 1}
    assert "none of the 2 exchanges" in report.render(rep, "text")
    assert report.exit_code(rep, None) == 0
    assert report.exit_code(rep, "fail") == report.exit_code(rep, "anomaly") == 1
    assert report.exit_code(report.report_records([]), "fail") == 1
