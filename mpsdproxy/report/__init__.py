"""Reports over a recording: what happened, what the title did about it, what was never tried.

`build_report(path, limits=None)` streams a recording once: every record becomes
a `model.Exchange`, goes through the verdict engine (mpsdproxy.verdicts) and
into bounded aggregates, so a recording of any length reports in flat memory
(`build`). `render(report, fmt)` turns the result into text (`text`), json,
junit (`junit`) or html (`html`, Jinja2 templates in `templates/`);
`exit_code(report, fail_on)` is the CI gate (`--fail-on fail`: 1 when any
verdict failed; `--fail-on anomaly`: also 1 when any response departed from
the status table; either: 1 when the recording held no session-directory
traffic, since there was nothing to judge). Every form is valid UTF-8 whatever
bytes the recording held: such text is shown through `model.printable`.

Only MPSD traffic (`classify.is_mpsd`: a session-directory or matchmaking
host, or an MPSD path on a local stand-in) is judged: the rows by status and
entry, the anomalies, coverage, operations and verdicts count it alone.
Exchanges with other hosts are listed apart ("other hosts", host -> count), and
every form says plainly "no session-directory traffic" when there was none.

The JSON form (`render(report, "json")`) is the contract CI parses. Keys are
only ever added, never renamed or removed, within a version::

    {"report": "mpsdproxy", "version": 1,
     "source": "<recording path>", "limits": "<limits file or built-in defaults>",
     "exchanges": 412, "skipped_lines": 0,
     "skipped": [{"line": 7, "problem": "..."}],              # the first 20
     "start": "2026-...Z" | null, "end": "2026-...Z" | null, "duration_s": 12.3 | null,
     "outcome": {"failed": true, "anomalies": 3,
                 "verdicts": {"pass": 5, "warn": 1, "fail": 2, "not-applicable": 4},
                 "no_session_directory_traffic": false,
                 "scope": "400 session-directory, 12 with 2 other hosts, not judged"},
     "by_status": [{"status": 200 | null, "count": 120}],     # null: no response
     "by_entry": [{"id": "200.ok" | null, "status": 200 | null, "meaning": "...",
                   "count": 120}],                            # id null: not in the table
     "by_kind": [{"kind": "session", "count": 300}],
     "by_source": {"forwarded": 400, "injected": 12, "replayed": 0},
     "injected_rules": [{"rule": "outage", "count": 12}],
     "operations": [{"method": "GET", "kind": "session", "count": 120,
                     "status_classes": {"2xx": 100, "4xx": 20},
                     "latency_ms": {"count": 120, "mean": 8.1, "p50": 7.3, "p90": 12.0,
                                    "p99": 30.2, "max": 41.0}}],
     "anomalies": [{"code": "missing-header", "count": 2, "message": "...",
                    "records": [17, 40]}],
     "verdicts": {"rules": [{"rule": "retry-after", "title": "Retry-After honoured",
                             "group": "fault-handling", "checks": "...",
                             "counts": {"pass": 1, "warn": 0, "fail": 1, "not-applicable": 0},
                             "omitted": 0,
                             "looked_at": {"requests": 9, "ranges": [[3, 11]],
                                           "unlisted": 0,
                                           "text": "looked at 9 requests: records 3..11"}}],
                  "items": [<Verdict.to_dict(): rule, title, status, reason, records,
                             gaps_ms, client, resource, time>]},
     "coverage": {"entries": 18, "exercised": 9,
                  "rows": [{"id": "200.ok", "status": 200, "meaning": "...",
                            "count": 120, "exercised": true}]},
     "evidence": [{"seq": 17, "time": "...", "method": "GET", "resource": "sessions/x",
                   "status": 503 | null, "entry": "503.service-unavailable" | null,
                   "source": "injected", "rule": "outage" | null}],
     "timeline": {"lanes": ["sessions/x", ...], "points": 400, "sampled_every": 1,
                  "marked": 12},
     "mpsd_exchanges": 400,                        # judged; the rest are in other_hosts
     "other_hosts": {"login.live.com": 8, "www.bing.com": 4},      # most first
     "rta": {"messages": 19, "taps": 4, "resyncs": 0,             # the RTA websocket
             "connections_total": 1,
             "connections": [{"url": "...", "client": "...", "opened": "...",
                              "first_seq": 3, "connection_id": "..." | null,
                              "messages": 6, "taps": 4, "resyncs": 0, "closed": false}],
             "subscriptions_total": 1,
             "subscriptions": [{"seq": 4, "client": "...", "type": "subscribe",
                                "uri": "https://sessiondirectory.xboxlive.com/connections/",
                                "sequence": 1, "status": 0, "status_name": "success",
                                "subscription_id": 0, "connection_id": "...",
                                "result_seq": 5}],
             "sessions": [{"session": "<scid>~<template>~<name>", "taps_total": 2,
                           "taps": [{"seq": 8, "time": "...", "changeNumber": 2,
                                     "branch": "..."}]}],
             "precondition_links": [{"seq": 9, "time": "...", "session": "...",
                                     "resource": "sessions/x",
                                     "tap": {"seq": 8, ...} | null, "text": "..."}]}}

"rta.precondition_links" has one item per 412 on a session: the latest tap for
that session before it in the recording that came before its response (and,
when both addresses are known, over a websocket from the same client host),
or null when there was none.

Without session-directory traffic, "outcome.scope" starts "no session-directory
traffic: " and says why nothing was judged.

"source" names where a response came from as recordings do: forwarded
(organic: the real service or the stand-in answered), injected (a scenario
rule answered), replayed (a recording answered). A "skipped" line is one the
reader could not parse, or a record no wire could carry (status 99999, CR/LF
in a header); its "line" is its line in the recording.
"""

from __future__ import annotations

from mpsdproxy.report.bounded import LatencyHistogram
from mpsdproxy.report.build import ReportBuilder
from mpsdproxy.report.build import build_report
from mpsdproxy.report.build import exit_code
from mpsdproxy.report.build import report_records
from mpsdproxy.report.data import FAIL_ON
from mpsdproxy.report.data import NO_MPSD
from mpsdproxy.report.data import REPORT_VERSION
from mpsdproxy.report.data import Report
from mpsdproxy.report.data import render_json
from mpsdproxy.report.html import render_html
from mpsdproxy.report.junit import render_junit
from mpsdproxy.report.text import render_text

__all__ = [
    "FORMATS",
    "FAIL_ON",
    "NO_MPSD",
    "REPORT_VERSION",
    "LatencyHistogram",
    "Report",
    "ReportBuilder",
    "build_report",
    "report_records",
    "render",
    "render_text",
    "render_json",
    "render_junit",
    "render_html",
    "exit_code",
]

FORMATS = ("text", "json", "html", "junit")


def render(report: Report, fmt: str, fail_on: str | None = None) -> str:
    """The report as text, json, junit (XML) or html (one self-contained page). JUnit
    also takes `fail_on`, so the XML fails exactly when the exit code does (anomalies
    become failing cases under `--fail-on anomaly`)."""
    if fmt == "junit":
        return render_junit(report, fail_on)
    renderers = {"text": render_text, "json": render_json, "html": render_html}
    if fmt not in renderers:
        raise ValueError(f"format should be one of {', '.join(FORMATS)}, not {fmt!r}")
    return renderers[fmt](report)
