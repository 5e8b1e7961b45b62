"""The report as plain text for people, and what the text and html forms share.

Text read from a recording (paths, header values in anomaly messages) may hold
bytes that were not UTF-8; the whole text goes through `model.printable`, so it
prints anywhere and writes to any UTF-8 file.
"""

from __future__ import annotations

from collections.abc import Mapping

from mpsdproxy import catalog
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import verdicts
from mpsdproxy.report.data import STATUS_ORDER
from mpsdproxy.report.data import Report
from mpsdproxy.report.data import entry_order
from mpsdproxy.report.data import entry_row
from mpsdproxy.report.data import no_mpsd_sentence
from mpsdproxy.report.data import scope_note
from mpsdproxy.verdicts import Status

__all__ = ["SOURCE_NAMES", "render_text", "rta_lines", "change", "when", "num"]

SOURCE_NAMES = {"forwarded": "organic (forwarded)", "injected": "injected by a scenario",
                "replayed": "replayed from a recording"}


def when(epoch: float | None) -> str:
    """A time for people: `2026-11-25 09:37:44.123Z`, or ? when unknown."""
    stamp = recording.timestamp(epoch)
    return "?" if stamp is None else stamp.replace("T", " ")[:23] + "Z"


def num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _headline(report: Report) -> str:
    if report.no_mpsd:
        return f"NOT JUDGED: {no_mpsd_sentence(report)}"
    fail, warn = report.total(Status.FAIL), report.total(Status.WARN)
    if fail:
        return f"FAILED: {fail} title-behaviour verdict(s) failed, {warn} warning(s)"
    if warn:
        return f"PASSED with {warn} warning(s)"
    return "PASSED"


def _counts_line(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{counts.get(s.value, 0)} {s.value}" for s in STATUS_ORDER)


def _head(report: Report) -> list[str]:
    lines = [f"mpsdproxy report: {report.source or '(records)'}"]
    span = "" if report.start is None else \
        f" from {when(report.start)} to {when(report.end)} " \
        f"({(report.end or report.start) - report.start:.1f} s)"
    scope = f" ({scope_note(report)})" if report.other_hosts else ""
    lines.append(f"{report.exchanges} exchanges{span}{scope}; limits: {report.limits}")
    if report.skipped_total:
        lines.append(f"{report.skipped_total} line(s) skipped: " +
                     "; ".join(report.skipped_lines(3)))
    return [*lines, "", _headline(report), ""]


def _verdicts(report: Report) -> list[str]:
    lines = [f"VERDICTS  ({_counts_line({s.value: report.total(s) for s in Status})})"]
    width = max(len(r.title) for r in verdicts.RULES)
    for rule in verdicts.RULES:
        counts = report.verdict_counts.get(rule.id, {})
        cells = "  ".join(f"{counts.get(s.value, 0):>4} {s.value}" for s in STATUS_ORDER)
        lines.append(f"  {rule.title:<{width}}  {cells}")
    lines += [f"  - {v}" for v in report.verdicts if v.status in (Status.FAIL, Status.WARN)]
    looked = [(rule.title, report.looked_text(rule.id)) for rule in verdicts.RULES]
    if any(text for _, text in looked):
        lines.append("  Requests each rule looked at:")
        lines += [f"    {title:<{width}}  {text}" for title, text in looked if text]
    if report.omitted_total:
        lines.append(f"  ({report.omitted_total} more verdicts counted above, not listed)")
    return [*lines, ""]


def _totals(report: Report) -> list[str]:
    lines = ["EXCHANGES BY STATUS (catalog meaning)"]
    for entry_id, count in entry_order(report.by_entry):
        label = entry_id or "unlisted"
        lines.append(f"  {count:>7}  {label:<26} {entry_row(entry_id, count)['meaning']}")
    lines += ["", "BY SOURCE"]
    for source, count in sorted(report.by_source.items()):
        lines.append(f"  {count:>7}  {SOURCE_NAMES.get(source, source)}")
    for rule, count in sorted(report.injected_rules.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {count:>7}    rule {rule}")
    lines += ["", "BY RESOURCE KIND"]
    for kind, count in sorted(report.by_kind.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {count:>7}  {kind}")
    lines += ["", "OPERATIONS (latency in ms; histogram estimates)"]
    for op in report.operations:
        classes = " ".join(f"{k} {n}" for k, n in sorted(op.status_classes.items()))
        lat = op.latency
        lines.append(f"  {op.count:>7}  {op.method} {op.kind:<16} {classes:<24} "
                     f"p50 {num(lat['p50'])}  p90 {num(lat['p90'])}  p99 {num(lat['p99'])}  "
                     f"max {num(lat['max'])}")
    return [*lines, ""]


def _anomalies_and_coverage(report: Report) -> list[str]:
    lines = [f"ANOMALIES ({report.anomaly_total})"]
    for a in report.anomalies:
        records = ", ".join(map(str, a.records))
        lines.append(f"  {a.count:>7}  {a.code}: {a.message} (records {records})")
    exercised = report.exercised
    lines += ["", f"COVERAGE  {len(exercised)} of {len(catalog.ENTRIES)} rows of the status "
              "table exercised"]
    lines += [f"  yes {report.by_entry[e.id]:>7}  {e.id}" for e in exercised]
    lines += [f"  NO        -  {e.id}: {e.meaning}" for e in report.never_reached]
    return lines


def _other_hosts(report: Report) -> list[str]:
    """The hosts that are not MPSD's: recorded, listed apart, never judged by the table."""
    if not report.other_hosts:
        return []
    lines = [f"OTHER HOSTS ({report.other_exchanges} exchanges, not session-directory "
             "traffic: not judged by the status table)"]
    lines += [f"  {count:>7}  {host}" for host, count in report.other_hosts_order()]
    return [*lines, ""]


def change(number: int | None) -> str:
    return "?" if number is None else str(number)


def rta_lines(report: Report) -> list[str]:
    """The RTA section: connections, subscriptions, taps by session, 412s and their taps."""
    section = report.rta
    if section.empty:
        return []
    lines = [f"RTA SHOULDER TAPS  ({section.connections_total} connection(s), "
             f"{section.subscriptions_total} subscription request(s), {section.taps} tap(s), "
             f"{section.resyncs} resync(s), {section.messages} message(s))"]
    for c in section.connections:
        ident = f" id {c.connection_id}" if c.connection_id else ""
        lines.append(f"  connection {c.client or '?'} from #{c.first_seq}{ident}: "
                     f"{c.messages} message(s), {c.taps} tap(s)"
                     f"{', closed' if c.closed else ''}")
    for s in section.subscriptions:
        verb = "unsubscribe" if s.unsubscribe else "subscribe"
        what = model.clipped(s.uri) if s.uri else (f"subscription {s.subscription_id}"
                         if s.subscription_id is not None else "?")
        answer = "no answer" if s.status is None else (
            f"{s.status_name} (#{s.result_seq}), subscription {s.subscription_id}")
        lines.append(f"  {verb} #{s.seq if s.seq is not None else '?'} [{s.sequence}] "
                     f"{what} -> {answer}")
    for session in section.sessions:
        numbers = ", ".join(f"{change(t.change_number)} (#{t.seq})" for t in session.taps)
        more = f" and {session.total - len(session.taps)} more" \
            if session.total > len(session.taps) else ""
        lines.append(f"  taps for {model.clipped(session.session)}: changeNumber {numbers}{more}")
    if section.links:
        lines.append("  412s and the tap before them:")
        lines += [f"    {link.sentence()}" for link in section.links]
    return [*lines, ""]


def render_text(report: Report) -> str:
    """The report for people; without session-directory traffic, only what there was."""
    if report.no_mpsd:
        lines = [*_head(report), *rta_lines(report), *_other_hosts(report)]
    else:
        lines = [*_head(report), *_verdicts(report), *rta_lines(report), *_totals(report),
                 *_other_hosts(report), *_anomalies_and_coverage(report)]
    return model.terminal_safe("\n".join(lines) + "\n", lines=True)
