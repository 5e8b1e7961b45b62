"""The fleet summary for people (text, HTML with an SVG trend chart) and for CI (JSON).

The HTML page is one file: a Jinja2 template (`templates/fleet.html`), its style
inline, and the trend chart drawn here as SVG coordinates (no JavaScript, no
chart library), so it opens anywhere and can be attached to a CI run.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence
from typing import Any

import jinja2

from mpsdproxy import jsonbody
from mpsdproxy import model

__all__ = ["render", "render_rows", "chart"]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    return str(value)


def render(summary: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return jsonbody.document(summary, _json_default, ensure_ascii=True)
    if fmt == "html":
        return _template().render(s=summary, chart=chart(summary["trend"]),
                                  row_columns=row_columns(summary["runs"]))
    return model.terminal_safe(text(summary), lines=True)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[model.terminal_safe(_num(c)) for c in row] for row in rows]
    numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in rows)
               for i in range(len(header))]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    lines = [("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))).rstrip()]
    for row in cells:
        lines.append(("  " + "  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w)
                                       in enumerate(zip(row, widths, strict=True)))).rstrip())
    return lines


def regression_line(c: dict[str, Any], key: str) -> str:
    where = f", on {c['operation']}" if c.get("operation") else ""
    return (f"REGRESSED {key} {c['group']} (after {c['previous']}): {c['title']} "
            f"[{c['rule']}] failed in {c['runs_failing']}/{c['runs']} runs "
            f"(was {c['was_runs_failing']}/{c['was_runs']}), {c['fails_per_run']:.2f} a run "
            f"(was {c['was_fails_per_run']:.2f}){where}")


def text(s: dict[str, Any]) -> str:
    key, runs, trend = s["group_by"], s["runs"], s["trend"]
    stored = sum(1 for r in runs if r["verdicts_stored"])
    out = [f"Fleet: {len(runs)} runs in {len(trend)} groups by {key}, "
           f"{sum(r['exchanges'] for r in runs):,} exchanges; verdicts stored for "
           f"{stored}/{len(runs)} runs", "", f"Trend by {key}"]
    out += _table([key, "runs", "exchanges", "fail", "fails/run", "anomalies", "errors",
                   "p50 ms", "p99 ms", "rows"],
                  [(t["group"], t["runs"], t["exchanges"], t["fail"], t["fails_per_run"],
                    t["anomalies"], t["errors"], t["p50_ms"], t["p99_ms"], t["rows_reached"])
                   for t in trend])
    out += ["", "Regressions"]
    out += [f"  {regression_line(c, key)}" for c in s["regressions"]] or ["  none"]
    changes = s["changes"]
    fixed = [c for c in changes["verdicts"] if not c["regressed"]]
    if fixed:
        out += ["", "Verdicts that improved"]
        out += [f"  {key} {c['group']} (after {c['previous']}): {c['title']} [{c['rule']}] "
                f"failed in {c['runs_failing']}/{c['runs']} runs (was "
                f"{c['was_runs_failing']}/{c['was_runs']})" for c in fixed]
    if changes["rows"]:
        out += ["", "Status rows that changed (per run)"]
        out += [f"  {key} {c['group']} (after {c['previous']}): {c['operation']} {c['row']} "
                f"{c['per_run']:.2f} (was {c['was_per_run']:.2f})" for c in changes["rows"][:20]]
    if changes["latency"]:
        out += ["", "Latency that grew (p99)"]
        out += [f"  {key} {c['group']} (after {c['previous']}): {c['operation']} "
                f"{c['p99_ms']:.1f} ms (was {c['was_p99_ms']:.1f} ms)"
                for c in changes["latency"]]
    out += ["", "Worst consoles"]
    out += _table(["console", "runs", "fails", "anomalies", "errors", "exchanges"],
                  [(c["console"], c["runs"], c["fails"], c["anomalies"], c["errors"],
                    c["exchanges"]) for c in s["worst_consoles"]]) \
        if s["worst_consoles"] else ["  none: no failed verdict, anomaly or error"]
    out += ["", "Per run"]
    out += _table(["file", key, "exchanges", "anomalies", "fail", "warn", "pass", "rows",
                   "latency p50/p99 ms by operation"],
                  [(r["file"], r["group"], r["exchanges"], r["anomalies"],
                    r["verdicts"]["fail"], r["verdicts"]["warn"], r["verdicts"]["pass"],
                    f"{r['coverage']['reached']}/{r['coverage']['of']}", _ops(r["operations"]))
                   for r in runs])
    columns = row_columns(runs)
    if columns:
        out += ["", "Status rows per run (the most frequent rows)"]
        out += _table(["file", *columns],
                      [(r["file"], *(r["rows"].get(c, 0) for c in columns)) for r in runs])
    if s["without_verdicts"]:
        out += ["", f"No stored verdicts for {len(s['without_verdicts'])} runs (run "
                "`mpsdproxy report FILE` once on each to store them), e.g. "
                f"{s['without_verdicts'][0]}"]
    return "\n".join(out) + "\n"


def row_columns(runs: list[dict[str, Any]], most: int = 8) -> list[str]:
    """The status table rows the runs reached most, for a runs x rows table."""
    totals: dict[str, int] = {}
    for run in runs:
        for row, n in run["rows"].items():
            totals[row] = totals.get(row, 0) + n
    return sorted(totals, key=lambda row: (-totals[row], row))[:most]


def _ops(operations: list[dict[str, Any]], most: int = 4) -> str:
    shown = [f"{o['operation']} {_num(o['p50_ms'])}/{_num(o['p99_ms'])}"
             for o in operations[:most]]
    more = len(operations) - most
    return ", ".join(shown) + (f", +{more} more" if more > 0 else "")


def render_rows(names: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    """A `--sql` answer: an aligned table, or JSON objects."""
    if fmt == "json":
        items = [dict(zip(names, row, strict=True)) for row in rows]
        return jsonbody.document(items, _json_default, ensure_ascii=True)
    return "\n".join(line[2:] for line in _table(names, rows)) + f"\n({len(rows)} rows)\n"


WIDTH, HEIGHT, PAD = 720, 240, 44


def chart(trend: list[dict[str, Any]]) -> dict[str, Any]:
    """SVG coordinates for the trend: failed verdicts per run as bars (left axis) and
    p99 latency as a line (right axis), one slot per group."""
    n = max(len(trend), 1)
    slot = (WIDTH - 2 * PAD) / n
    top_fails = max([t["fails_per_run"] or 0 for t in trend] + [1.0])
    top_p99 = max([t["p99_ms"] or 0 for t in trend] + [1.0])
    inner = HEIGHT - 2 * PAD
    bars, points = [], []
    for i, t in enumerate(trend):
        x = PAD + i * slot
        h = inner * (t["fails_per_run"] or 0) / top_fails
        bars.append({"x": round(x + slot * 0.2, 1), "y": round(HEIGHT - PAD - h, 1),
                     "w": round(slot * 0.6, 1), "h": round(h, 1), "label": t["group"],
                     "value": t["fails_per_run"], "cx": round(x + slot / 2, 1)})
        p = t["p99_ms"] or 0
        points.append((round(x + slot / 2, 1), round(HEIGHT - PAD - inner * p / top_p99, 1), p))
    return {"width": WIDTH, "height": HEIGHT, "pad": PAD, "bars": bars,
            "line": " ".join(f"{x},{y}" for x, y, _ in points), "points": points,
            "top_fails": top_fails, "top_p99": top_p99, "base": HEIGHT - PAD}


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mpsdproxy.fleet", "templates"),
        autoescape=True, finalize=lambda v: model.printable(v) if isinstance(v, str) else v,
        trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.globals["regression_line"] = regression_line
    return env.get_template("fleet.html")
