"""The report as one self-contained HTML page, rendered by Jinja2 templates.

The templates (`templates/report.html` and what it includes) hold the markup;
this module works out what they show: the banner, the timeline's coordinates,
the rows in order. Autoescape is on, and every value the templates print goes
through `model.printable` (Jinja2's finalize hook), so a recording whose URL
or headers hold bytes that were not UTF-8 still gives a valid UTF-8 page.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jinja2

from mpsdproxy import catalog
from mpsdproxy import model
from mpsdproxy import verdicts
from mpsdproxy.report.data import NO_RESPONSE
from mpsdproxy.report.data import STATUS_ORDER
from mpsdproxy.report.data import Operation
from mpsdproxy.report.data import RecordSummary
from mpsdproxy.report.data import Report
from mpsdproxy.report.data import entry_order
from mpsdproxy.report.data import entry_row
from mpsdproxy.report.data import no_mpsd_sentence
from mpsdproxy.report.data import scope_note
from mpsdproxy.report.text import SOURCE_NAMES
from mpsdproxy.report.text import change
from mpsdproxy.report.text import num
from mpsdproxy.report.text import when
from mpsdproxy.verdicts import Status
from mpsdproxy.verdicts import Verdict

__all__ = ["COLOURS", "render_html", "timeline"]

COLOURS = {"1xx": "#757575", "2xx": "#2e7d32", "3xx": "#1565c0", "4xx": "#ef6c00",
           "5xx": "#c62828", NO_RESPONSE: "#424242"}

#: Timeline geometry, in SVG pixels.
WIDTH, LEFT, RIGHT, TOP, LANE_H = 1140, 200, 40, 16, 20


def _printable(value: Any) -> Any:
    return model.printable(value) if isinstance(value, str) else value


@functools.cache
def _environment() -> jinja2.Environment:
    """The template environment, built once: the templates ship with the package."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mpsdproxy.report", "templates"),
        autoescape=True,
        finalize=_printable,
        trim_blocks=True,
        keep_trailing_newline=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _banner(report: Report) -> tuple[str, str]:
    """(level, sentence) of the outcome banner."""
    if report.no_mpsd:
        sentence = no_mpsd_sentence(report)
        return "none", sentence[0].upper() + sentence[1:]
    fail, warn = report.total(Status.FAIL), report.total(Status.WARN)
    if fail:
        failed_rules = sum(1 for r in verdicts.RULES
                           if report.verdict_counts.get(r.id, {}).get(Status.FAIL.value))
        return "fail", (f"The title failed {failed_rules} of {len(verdicts.RULES)} behaviour "
                        f"checks ({_plural(fail, 'failed verdict')}, {_plural(warn, 'warning')})")
    if warn:
        return "warn", f"The title passed every behaviour check, with {_plural(warn, 'warning')}"
    return "pass", "The title passed every behaviour check"


def timeline(report: Report) -> dict[str, Any] | None:
    """What the timeline SVG draws, in pixels; None when there is nothing to draw."""
    if report.start is None or not report.lanes:
        return None
    height = TOP + LANE_H * len(report.lanes) + 40
    t0, t1 = report.start, max(report.end or report.start, report.start + 1e-3)
    span = t1 - t0

    def x(t: float) -> float:
        return round(LEFT + (t - t0) / span * (WIDTH - LEFT - RIGHT), 1)

    def y(lane: int) -> float:
        return TOP + lane * LANE_H + LANE_H / 2

    def dot(seq: int, time: float, lane: int, status_class: str) -> dict[str, Any]:
        return {"seq": seq, "x": x(time), "y": y(lane), "status_class": status_class,
                "fill": COLOURS.get(status_class, "#000")}

    failing = sorted({s for v in report.verdicts if v.status is Status.FAIL for s in v.records
                      if s in report.evidence and report.evidence[s].time is not None})
    return {
        "width": WIDTH, "height": height, "lane_h": LANE_H,
        "axis_y": TOP + LANE_H * len(report.lanes) + 14,
        "lanes": [{"top": TOP + lane * LANE_H, "y": y(lane), "name": name[:30],
                   "shade": "#f7f7f7" if lane % 2 else "#ffffff"}
                  for lane, name in enumerate(report.lanes)],
        "ticks": [{"x": x(t), "label": f"{t - t0:.1f}"}
                  for t in (t0 + span * i / 5 for i in range(6))],
        "points": [dot(p.seq, p.time, p.lane, p.status_class) for p in report.points],
        "marked": [dot(p.seq, p.time, p.lane, p.status_class) for p in report.marked],
        "failing": [dot(s, report.evidence[s].time or t0, report.evidence[s].lane, "")
                    for s in failing],
        "legend": [(k, c) for k, c in COLOURS.items() if k != "1xx"],
        "sampled_every": report.sampled_every,
        "drawn": len(report.points),
        "exchanges": report.exchanges,
    }


def _gaps(v: Verdict) -> str:
    return ", ".join(f"{g:.0f} ms" for g in v.gaps_ms)


def _classes(op: Operation) -> str:
    return " ".join(f"{k}: {n}" for k, n in sorted(op.status_classes.items()))


def _who(summary: RecordSummary) -> str:
    who = SOURCE_NAMES.get(summary.source, summary.source)
    return who + (f" (rule {summary.rule})" if summary.rule else "")


def _context(report: Report) -> dict[str, Any]:
    level, banner = _banner(report)
    span = "" if report.start is None else (
        f" \N{MIDDLE DOT} {when(report.start)} to {when(report.end)}, "
        f"{(report.end or report.start) - report.start:.1f} s")
    skipped = f", {report.skipped_total} unreadable line(s) skipped: " \
        f"{'; '.join(report.skipped_lines(3))}" if report.skipped_total else ""
    return {
        "r": report,
        "title": os.path.basename(report.source) or "records",
        "span": span,
        "skipped": skipped,
        "scope": f" ({scope_note(report)})" if report.other_hosts else "",
        "other_hosts": report.other_hosts_order(),
        "level": level,
        "banner": banner,
        "rules": verdicts.RULES,
        "status_order": STATUS_ORDER,
        "t": timeline(report),
        "entries": [entry_row(i, n) for i, n in entry_order(report.by_entry)],
        "sources": sorted(report.by_source.items()),
        "injected": sorted(report.injected_rules.items(), key=lambda kv: -kv[1]),
        "kinds": sorted(report.by_kind.items(), key=lambda kv: -kv[1]),
        "source_names": SOURCE_NAMES,
        "catalog_entries": catalog.ENTRIES,
        "entries_total": len(catalog.ENTRIES),
        "evidence": [s for _, s in sorted(report.evidence.items())],
        "gaps": _gaps,
        "classes": _classes,
        "num": num,
        "when": when,
        "who": _who,
        "change": change,
    }


def render_html(report: Report) -> str:
    """One self-contained page: inline CSS and SVG, no script, nothing fetched."""
    return _environment().get_template("report.html").render(_context(report))
