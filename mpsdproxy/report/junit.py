"""The report as JUnit XML, for the test views of CI servers.

Stable names. CI servers follow a test between builds by classname and name, so
neither holds anything that changes from one run of the same title to the next
(no record number, no count, no session name). One testcase per rule, client and
operation: classname `mpsdproxy.verdicts.<rule id>`, name `<rule id>: <client>:
<operation>`, where the client is the redacted user (or the address without its
port) and the operation is the method and the shape of the resource, its names
replaced (`PUT sessions/{name}`). Verdicts of a rule about the whole recording
(budgets, patterns) are `<rule id>: any client: whole recording`. When several
verdicts share a name they are one testcase: the worst status decides, and the
body lists every verdict with its records.

Statuses. A fail is a `<failure>`. A warn is `<skipped message="warning: ...">`:
the documented choice (rather than properties) because every CI test view shows a
skipped test apart from the green ones, so a warning is seen without failing the
build. Not-applicable is `<skipped message="not applicable: ...">` (there was
nothing to judge). A pass is a bare testcase with the verdicts in `<system-out>`.
Verdicts beyond the kept ones get one testcase per rule and status, `<rule id>:
<status> verdicts not listed`, failing if they are failures; the count is in the
message, never in the name.

Anomalies. With `fail_on="anomaly"` (`report --fail-on anomaly`) each anomaly code
is a failing testcase (classname `mpsdproxy.anomalies`, name the code), and a
pass without anomalies has one passing testcase `mpsdproxy.anomalies` /
`no anomalies`, so the XML fails exactly when the exit code does. Without it,
anomalies are only counted in the suite's properties. A recording without
session-directory traffic gets one failing testcase `mpsdproxy.scope` saying "no
session-directory traffic", so a CI view never shows a green run in which nothing
was judged.

Times. A testcase's `time` is the span, in seconds, from the first to the last
record its verdicts name (their times from the report's evidence), 0 when not
known; the suite's `time` is the recording's span and its `timestamp` the
recording's first record (UTC, ISO 8601 without zone, as the JUnit schema wants; the
time of rendering when no record said when it happened).

Every text put in the XML goes through `_text`: bytes that were not UTF-8 show
as `\\xNN` (`model.printable`), and so do the control characters XML 1.0 cannot
carry, so any recording gives a document every parser reads.
"""

from __future__ import annotations

import datetime
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mpsdproxy import model
from mpsdproxy import verdicts
from mpsdproxy.report.data import Report
from mpsdproxy.report.data import no_mpsd_sentence
from mpsdproxy.verdicts import Status
from mpsdproxy.verdicts import Verdict

__all__ = ["render_junit", "case_name", "operation_of"]

_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
#: Worst first: the status a testcase of several verdicts takes.
_SEVERITY = (Status.FAIL, Status.WARN, Status.PASS, Status.NOT_APPLICABLE)
#: Path words after which a segment is a name that changes between runs.
_NAMED = {"sessions": "{name}", "handles": "{id}", "tickets": "{id}", "members": "{member}",
          "servers": "{server}"}
#: Element names that are fixed words, kept as they are.
_FIXED = {"me", "session", "query", "stats", "properties", "batch"}
ANY_CLIENT = "any client"
WHOLE = "whole recording"


def _text(value: Any) -> str:
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group(0)):02x}", model.printable(str(value)))


def element(parent: ET.Element, tag: str, text: str | None = None, **attrs: Any) -> ET.Element:
    """A child element whose text and attributes hold any text XML 1.0 can carry
    (`_text`): the one way the JUnit writers (report and sweep matrix) add one."""
    child = ET.SubElement(parent, tag, {k: _text(v) for k, v in attrs.items()})
    if text is not None:
        child.text = _text(text)
    return child


# --------------------------------------------------------------------------- names


def _shape(resource: str) -> str:
    """The resource with its run-specific names replaced: `sessions/x/members/3` ->
    `sessions/{name}/members/{member}`; hopper and template names are configuration
    and stay."""
    parts = resource.split("?", 1)[0].strip("/").split("/")
    out: list[str] = []
    for n, part in enumerate(parts):
        before = parts[n - 1].lower() if n else ""
        if before in _NAMED and part.lower() not in _FIXED and part:
            out.append(_NAMED[before])
        else:
            out.append(part)
    return "/".join(out)


def operation_of(v: Verdict, report: Report) -> str:
    """`METHOD shape` of the verdict's trigger record; the shape alone when the method is
    not known; `whole recording` for a verdict about no one resource."""
    if not v.resource:
        return WHOLE
    summary = report.evidence.get(v.records[0]) if v.records else None
    shape = _shape(v.resource)
    return f"{summary.method.upper()} {shape}" if summary is not None else shape


def case_name(v: Verdict, report: Report) -> str:
    """`<rule id>: <client>: <operation>`: the same in every run of the same title."""
    return f"{v.rule}: {v.client or ANY_CLIENT}: {operation_of(v, report)}"


# --------------------------------------------------------------------------- cases


@dataclass
class _Tally:
    tests: int = 0
    failures: int = 0
    skipped: int = 0


@dataclass
class _Group:
    """The verdicts that share one testcase name."""

    rule: str
    name: str
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def status(self) -> Status:
        return min((v.status for v in self.verdicts), key=_SEVERITY.index)


def _groups(report: Report) -> list[_Group]:
    by_name: dict[str, _Group] = {}
    for v in report.verdicts:
        name = case_name(v, report)
        by_name.setdefault(name, _Group(v.rule, name)).verdicts.append(v)
    return sorted(by_name.values(), key=lambda g: (g.rule, g.name))


def _span(report: Report, seqs: Iterable[int]) -> float:
    """Seconds from the first to the last of these records, 0 when fewer than two are known."""
    times = [s.time for seq in seqs if (s := report.evidence.get(seq)) is not None
             and s.time is not None]
    return max(times) - min(times) if times else 0.0


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}"


def _body(group: _Group) -> str:
    return "\n".join(str(v) for v in group.verdicts)


def _group_case(suite: ET.Element, report: Report, group: _Group, tally: _Tally) -> None:
    seqs = [seq for v in group.verdicts for seq in v.records]
    case = element(suite, "testcase", classname=f"mpsdproxy.verdicts.{group.rule}",
                   name=group.name, time=_seconds(_span(report, seqs)))
    tally.tests += 1
    worst = [v for v in group.verdicts if v.status is group.status]
    message = worst[0].reason + (f" (and {len(worst) - 1} more)" if len(worst) > 1 else "")
    if group.status is Status.FAIL:
        tally.failures += 1
        element(case, "failure", _body(group), message=message, type="fail")
    elif group.status is Status.WARN:
        tally.skipped += 1
        element(case, "skipped", message=f"warning: {message}")
        element(case, "system-out", _body(group))
    elif group.status is Status.NOT_APPLICABLE:
        tally.skipped += 1
        element(case, "skipped", message=f"not applicable: {message}")
    else:
        element(case, "system-out", _body(group))


def _omitted_cases(suite: ET.Element, report: Report, tally: _Tally) -> None:
    for rule_id, per_status in sorted(report.omitted.items()):
        rule = verdicts.RULES_BY_ID.get(rule_id)
        title = rule.title if rule is not None else rule_id
        for status, n in sorted(per_status.items()):
            case = element(suite, "testcase", classname=f"mpsdproxy.verdicts.{rule_id}",
                           name=f"{rule_id}: {status} verdicts not listed", time=_seconds(0))
            tally.tests += 1
            text = f"{title}: {n} more {status} verdicts (not listed)"
            if status == Status.FAIL.value:
                tally.failures += 1
                element(case, "failure", text, message=f"{n} more failures", type="fail")
            elif status in (Status.WARN.value, Status.NOT_APPLICABLE.value):
                tally.skipped += 1
                element(case, "skipped", message=text)
            else:
                element(case, "system-out", text)


def _scope_case(suite: ET.Element, report: Report, tally: _Tally) -> None:
    """The failing testcase of a recording in which there was nothing to judge."""
    if not report.no_mpsd:
        return
    case = element(suite, "testcase", classname="mpsdproxy.scope",
                   name="session-directory traffic", time=_seconds(0))
    tally.tests += 1
    tally.failures += 1
    sentence = no_mpsd_sentence(report)
    element(case, "failure", sentence, message=sentence, type="no-traffic")


def _anomaly_cases(suite: ET.Element, report: Report, tally: _Tally) -> None:
    """Under `--fail-on anomaly`: one failing testcase per anomaly code, or one passing."""
    if not report.anomalies:
        element(suite, "testcase", classname="mpsdproxy.anomalies", name="no anomalies",
                time=_seconds(0))
        tally.tests += 1
        return
    for a in sorted(report.anomalies, key=lambda a: a.code):
        case = element(suite, "testcase", classname="mpsdproxy.anomalies", name=a.code,
                       time=_seconds(_span(report, a.records)))
        tally.tests += 1
        tally.failures += 1
        records = ", ".join(map(str, a.records))
        element(case, "failure", f"{a.count} responses: {a.message}\nrecords: {records}",
                message=f"{a.count} x {a.message}", type="anomaly")


# --------------------------------------------------------------------------- the document


def _timestamp(epoch: float | None) -> str:
    """The recording's start; now when it is not known (an empty recording)."""
    when = datetime.datetime.now(datetime.UTC) if epoch is None \
        else datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return when.replace(tzinfo=None, microsecond=0).isoformat()


def _properties(suite: ET.Element, report: Report, fail_on: str | None) -> None:
    props = element(suite, "properties")
    for name, value in (("source", report.source), ("limits", report.limits),
                        ("exchanges", report.exchanges),
                        ("mpsd_exchanges", report.mpsd_exchanges),
                        ("other_exchanges", report.other_exchanges),
                        ("anomalies", report.anomaly_total),
                        ("skipped_lines", report.skipped_total),
                        ("fail_on", fail_on or "none")):
        element(props, "property", name=name, value=value)


def render_junit(report: Report, fail_on: str | None = None) -> str:
    """The JUnit document; `fail_on` is the report's `--fail-on` gate (anomalies become
    failing testcases under "anomaly")."""
    duration = (report.end - report.start) if report.start is not None \
        and report.end is not None else 0.0
    suite = ET.Element("testsuite", name="mpsdproxy.verdicts")
    _properties(suite, report, fail_on)
    tally = _Tally()
    _scope_case(suite, report, tally)
    for group in _groups(report):
        _group_case(suite, report, group, tally)
    _omitted_cases(suite, report, tally)
    if fail_on == "anomaly" and not report.no_mpsd:
        _anomaly_cases(suite, report, tally)
    if report.skipped_total:  # the lines no verdict saw, where CI shows a suite's output
        element(suite, "system-err", f"{report.skipped_total} unreadable line(s) skipped:\n"
                + "\n".join(report.skipped_lines()))
    for name, value in (("tests", tally.tests), ("failures", tally.failures), ("errors", 0),
                        ("skipped", tally.skipped), ("time", _seconds(duration)),
                        ("timestamp", _timestamp(report.start))):
        suite.set(name, str(value))
    root = ET.Element("testsuites", name="mpsdproxy report", tests=str(tally.tests),
                      failures=str(tally.failures), errors="0", skipped=str(tally.skipped),
                      time=_seconds(duration))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") \
        + "\n"
