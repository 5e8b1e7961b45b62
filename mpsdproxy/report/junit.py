"""The report as JUnit XML, for the test views of CI servers.

One testsuite `mpsdproxy.verdicts`, one testcase per kept verdict (classname
`mpsdproxy.verdicts.<rule id>`). A fail is a <failure>; a warn is a passing
testcase whose <system-out> starts with "WARNING:" (CI servers show it without
failing the build, and a warning is not "skipped": it was judged);
not-applicable is <skipped> (there was nothing to judge). Verdicts beyond the
kept ones get one testcase per rule and status saying how many, failing if
they are failures. A recording without session-directory traffic gets one
failing testcase `mpsdproxy.scope` saying "no session-directory traffic", so
a CI test view never shows a green run in which nothing was judged.

Every text put in the XML goes through `_text`: bytes that were not UTF-8 show
as `\\xNN` (`model.printable`), and so do the control characters XML 1.0 cannot
carry, so any recording gives a document every parser reads.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mpsdproxy import model
from mpsdproxy import verdicts
from mpsdproxy.report.data import Report
from mpsdproxy.report.data import no_mpsd_sentence
from mpsdproxy.verdicts import Status
from mpsdproxy.verdicts import Verdict

__all__ = ["render_junit"]

_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: Any) -> str:
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group(0)):02x}", model.printable(str(value)))


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: Any) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: _text(v) for k, v in attrs.items()})
    if text is not None:
        element.text = _text(text)
    return element


@dataclass
class _Tally:
    tests: int = 0
    failures: int = 0
    skipped: int = 0


def _verdict_case(suite: ET.Element, v: Verdict, number: int, tally: _Tally) -> None:
    evidence = f" (records {', '.join(map(str, v.records))})" if v.records else ""
    case = _sub(suite, "testcase", classname=f"mpsdproxy.verdicts.{v.rule}",
                name=f"{v.title} #{number}{evidence}", time="0")
    tally.tests += 1
    if v.status is Status.FAIL:
        tally.failures += 1
        _sub(case, "failure", str(v), message=v.reason, type="fail")
    elif v.status is Status.WARN:
        _sub(case, "system-out", f"WARNING: {v.summary}")
    elif v.status is Status.NOT_APPLICABLE:
        tally.skipped += 1
        _sub(case, "skipped", message=v.reason)
    else:
        _sub(case, "system-out", str(v))


def _omitted_cases(suite: ET.Element, report: Report, tally: _Tally) -> None:
    for rule_id, per_status in sorted(report.omitted.items()):
        rule = verdicts.RULES_BY_ID.get(rule_id)
        title = rule.title if rule is not None else rule_id
        for status, n in sorted(per_status.items()):
            case = _sub(suite, "testcase", classname=f"mpsdproxy.verdicts.{rule_id}",
                        name=f"{title}: {n} more {status} verdicts (not listed)", time="0")
            tally.tests += 1
            if status == Status.FAIL.value:
                tally.failures += 1
                _sub(case, "failure", message=f"{n} more failures", type="fail")


def _scope_case(suite: ET.Element, report: Report, tally: _Tally) -> None:
    """The failing testcase of a recording in which there was nothing to judge."""
    if not report.no_mpsd:
        return
    case = _sub(suite, "testcase", classname="mpsdproxy.scope",
                name="session-directory traffic", time="0")
    tally.tests += 1
    tally.failures += 1
    sentence = no_mpsd_sentence(report)
    _sub(case, "failure", sentence, message=sentence, type="no-traffic")


def render_junit(report: Report) -> str:
    suite = ET.Element("testsuite", name="mpsdproxy.verdicts")
    props = _sub(suite, "properties")
    for name, value in (("source", report.source), ("limits", report.limits),
                        ("exchanges", report.exchanges),
                        ("mpsd_exchanges", report.mpsd_exchanges),
                        ("other_exchanges", report.other_exchanges),
                        ("anomalies", report.anomaly_total)):
        _sub(props, "property", name=name, value=value)
    tally = _Tally()
    _scope_case(suite, report, tally)
    numbers: Counter[str] = Counter()
    for v in report.verdicts:
        numbers[v.rule] += 1
        _verdict_case(suite, v, numbers[v.rule], tally)
    _omitted_cases(suite, report, tally)
    for name, value in (("tests", tally.tests), ("failures", tally.failures), ("errors", 0),
                        ("skipped", tally.skipped), ("time", "0")):
        suite.set(name, str(value))
    root = ET.Element("testsuites", name="mpsdproxy report", tests=str(tally.tests),
                      failures=str(tally.failures), errors="0", skipped=str(tally.skipped))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") \
        + "\n"
