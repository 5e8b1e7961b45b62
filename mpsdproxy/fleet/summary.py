"""The fleet summary: per run, across runs, and what changed between groups of runs.

Every number is a query over the documented views (`engine.VIEWS`); only the
comparison of consecutive groups, over a handful of aggregated rows, is Python.
Groups are runs that share a tag value (`--group-by build`, the default when any
run has a build tag; else `date`); a run without the tag is a group of its own,
named by its file. Groups are ordered by their first exchange: a trend is a story
in time, whatever the build numbers look like.

A change between consecutive groups is counted per run, so groups of different
sizes compare: a verdict regressed when a larger share of runs failed it, or each
run failed it more often; a status row changed when its count per run moved by
at least half an exchange and a quarter of what it was; an operation's p99
latency changed when it grew by half and at least `LATENCY_FLOOR_MS`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mpsdproxy import catalog
from mpsdproxy.fleet.engine import Fleet
from mpsdproxy.fleet.engine import sql_text

__all__ = ["SUMMARY_VERSION", "summarize", "default_group", "LATENCY_FLOOR_MS"]

SUMMARY_VERSION = 1
LATENCY_FLOOR_MS = 20.0
STATUSES = ("fail", "warn", "pass", "not-applicable")


def default_group(fleet: Fleet, table: str = "runs") -> str:
    row = fleet.rows(f"SELECT count(*) FILTER (WHERE build IS NOT NULL) AS n FROM {table}")
    return "build" if row and row[0]["n"] else "date"


def _group_expr(key: str) -> str:
    if key in ("build", "date", "console"):
        return f"coalesce({key}, file)"
    return f"coalesce(tags[{sql_text(key)}], file)"


def summarize(fleet: Fleet, group_by: str | None = None, top: int = 5) -> dict[str, Any]:
    """The whole summary as plain data (the JSON format prints it as is)."""
    # `runs` aggregates every line; the summary asks it five times, so it is taken once.
    fleet.con.execute("CREATE OR REPLACE TEMP TABLE _runs AS SELECT * FROM runs")
    key = group_by or default_group(fleet, "_runs")
    fleet.con.execute("CREATE OR REPLACE TEMP TABLE _grouped AS SELECT run, "
                      f"{_group_expr(key)} AS grp FROM _runs")
    trend = _trend(fleet)
    order = [t["group"] for t in trend]
    verdict_changes = _verdict_changes(fleet, order)
    return {
        "summary": "mpsdproxy-fleet",
        "version": SUMMARY_VERSION,
        "group_by": key,
        "runs": _runs(fleet),
        "trend": trend,
        "regressions": [c for c in verdict_changes if c["regressed"]],
        "changes": {"verdicts": verdict_changes, "rows": _row_changes(fleet, order),
                    "latency": _latency_changes(fleet, order)},
        "worst_consoles": _worst_consoles(fleet, top),
        "without_verdicts": [r["run"] for r in fleet.rows(
            "SELECT run FROM _runs WHERE NOT verdicts_stored ORDER BY run")],
    }


def _catalog_ids() -> str:
    return "[" + ", ".join(sql_text(e.id) for e in catalog.ENTRIES) + "]"


def _runs(fleet: Fleet) -> list[dict[str, Any]]:
    runs = fleet.rows(f"""
        WITH reached AS (SELECT run, count(DISTINCT "row") AS n FROM exchanges
                         WHERE list_contains({_catalog_ids()}, "row") GROUP BY run)
        SELECT r.run, r.file, g.grp AS "group", r.tags, r.exchanges, r.messages, r.anomalies,
               r.verdicts_stored, strftime(r.started, '%Y-%m-%dT%H:%M:%SZ') AS started,
               coalesce(reached.n, 0) AS rows_reached
        FROM _runs r JOIN _grouped g USING (run) LEFT JOIN reached USING (run)
        ORDER BY r.started NULLS LAST, r.run""")
    outcomes = _by_run(fleet.rows(
        "SELECT run, status, count(*) AS n FROM verdicts GROUP BY ALL"), "status")
    rows = _by_run(fleet.rows(
        'SELECT run, "row", count(*) AS n FROM exchanges WHERE "row" IS NOT NULL GROUP BY ALL '
        'ORDER BY run, "row"'), "row")  # ordered: the same input prints the same summary
    operations: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for op in fleet.rows("""
            SELECT run, operation, count(*) AS count,
                   round(quantile_cont(duration_ms, 0.5), 1) AS p50_ms,
                   round(quantile_cont(duration_ms, 0.99), 1) AS p99_ms
            FROM exchanges WHERE mpsd GROUP BY ALL ORDER BY run, count DESC, operation"""):
        operations[op.pop("run")].append(op)
    for run in runs:
        name = run["run"]
        run["tags"] = dict(run["tags"] or {})
        run["verdicts"] = {s: outcomes.get(name, {}).get(s, 0) for s in STATUSES}
        run["rows"] = rows.get(name, {})
        run["coverage"] = {"reached": run.pop("rows_reached"), "of": len(catalog.ENTRIES)}
        run["operations"] = operations.get(name, [])
    return runs


def _by_run(found: list[dict[str, Any]], column: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for row in found:
        out[row["run"]][row[column]] = row["n"]
    return out


def _trend(fleet: Fleet) -> list[dict[str, Any]]:
    return fleet.rows(f"""
        WITH v AS (SELECT g.grp, count(*) FILTER (WHERE status = 'fail') AS fail,
                          count(*) FILTER (WHERE status = 'warn') AS warn,
                          count(*) FILTER (WHERE status = 'pass') AS pass
                   FROM verdicts JOIN _grouped g USING (run) GROUP BY ALL),
             e AS (SELECT g.grp, count(*) AS exchanges,
                          count(*) FILTER (WHERE mpsd AND (status >= 500 OR status IS NULL))
                              AS errors,
                          round(quantile_cont(duration_ms, 0.5) FILTER (WHERE mpsd), 1)
                              AS p50_ms,
                          round(quantile_cont(duration_ms, 0.99) FILTER (WHERE mpsd), 1)
                              AS p99_ms,
                          count(DISTINCT "row") FILTER (
                              WHERE list_contains({_catalog_ids()}, "row")) AS rows_reached
                   FROM exchanges JOIN _grouped g USING (run) GROUP BY ALL),
             r AS (SELECT g.grp, count(*) AS runs, sum(anomalies)::BIGINT AS anomalies,
                          min(started) AS first
                   FROM _runs JOIN _grouped g USING (run) GROUP BY ALL)
        SELECT r.grp AS "group", r.runs, coalesce(e.exchanges, 0) AS exchanges,
               r.anomalies, coalesce(e.errors, 0) AS errors, coalesce(v.fail, 0) AS fail,
               coalesce(v.warn, 0) AS warn, coalesce(v.pass, 0) AS pass,
               round(coalesce(v.fail, 0) / r.runs, 2) AS fails_per_run,
               e.p50_ms, e.p99_ms, coalesce(e.rows_reached, 0) AS rows_reached,
               strftime(r.first, '%Y-%m-%dT%H:%M:%SZ') AS first
        FROM r LEFT JOIN e USING (grp) LEFT JOIN v USING (grp)
        ORDER BY r.first NULLS LAST, r.grp""")


def _pairs(order: list[str]) -> list[tuple[str, str]]:
    return list(zip(order, order[1:], strict=False))


def _verdict_changes(fleet: Fleet, order: list[str]) -> list[dict[str, Any]]:
    """Per rule, consecutive groups whose failing changed (fails and failing runs per run)."""
    sizes = {r["grp"]: r["n"] for r in fleet.rows(
        "SELECT grp, count(*) AS n FROM _grouped GROUP BY grp")}
    found = {(r["grp"], r["rule"]): r for r in fleet.rows("""
        SELECT g.grp, v.rule, any_value(v.title) AS title, count(*) AS fails,
               count(DISTINCT v.run) AS runs_failing, mode(e.operation) AS operation
        FROM verdicts v JOIN _grouped g USING (run)
        LEFT JOIN exchanges e ON e.run = v.run AND e.seq = v.trigger
        WHERE v.status = 'fail' GROUP BY ALL""")}
    titles = {r["rule"]: r["title"] for r in fleet.rows(
        "SELECT rule, any_value(title) AS title FROM verdicts GROUP BY rule")}
    changes = []
    for before, after in _pairs(order):
        for rule, title in sorted(titles.items()):
            old, new = found.get((before, rule)), found.get((after, rule))
            if old is None and new is None:
                continue
            was = _share(old, sizes[before])
            now = _share(new, sizes[after])
            if was == now:
                continue
            regressed = now[0] > was[0] or (now[1] - was[1] >= 0.5 and now[1] > 1.25 * was[1])
            changes.append({
                "group": after, "previous": before, "rule": rule, "title": title,
                "operation": (new or old or {}).get("operation"),
                "runs_failing": new["runs_failing"] if new else 0, "runs": sizes[after],
                "was_runs_failing": old["runs_failing"] if old else 0,
                "was_runs": sizes[before], "fails_per_run": now[1], "was_fails_per_run": was[1],
                "regressed": regressed})
    return changes


def _share(found: dict[str, Any] | None, runs: int) -> tuple[float, float]:
    """(share of runs failing, fails per run), rounded so noise does not count."""
    if not found or not runs:
        return 0.0, 0.0
    return round(found["runs_failing"] / runs, 3), round(found["fails"] / runs, 2)


def _row_changes(fleet: Fleet, order: list[str]) -> list[dict[str, Any]]:
    rates = {(r["grp"], r["operation"], r["row"]): r["per_run"] for r in fleet.rows("""
        SELECT g.grp, e.operation, e."row", count(*) / any_value(s.n) AS per_run
        FROM exchanges e JOIN _grouped g USING (run)
        JOIN (SELECT grp, count(*) AS n FROM _grouped GROUP BY grp) s USING (grp)
        WHERE e."row" IS NOT NULL GROUP BY ALL""")}
    keys = sorted({(op, row) for _, op, row in rates})
    changes = []
    for before, after in _pairs(order):
        for op, row in keys:
            was, now = rates.get((before, op, row), 0.0), rates.get((after, op, row), 0.0)
            if abs(now - was) >= 0.5 and abs(now - was) >= 0.25 * was:
                changes.append({"group": after, "previous": before, "operation": op,
                                "row": row, "per_run": round(now, 2),
                                "was_per_run": round(was, 2)})
    return sorted(changes, key=lambda c: -abs(c["per_run"] - c["was_per_run"]))


def _latency_changes(fleet: Fleet, order: list[str]) -> list[dict[str, Any]]:
    p99 = {(r["grp"], r["operation"]): r["p99_ms"] for r in fleet.rows("""
        SELECT g.grp, e.operation, quantile_cont(e.duration_ms, 0.99) AS p99_ms
        FROM exchanges e JOIN _grouped g USING (run)
        WHERE e.mpsd AND e.duration_ms IS NOT NULL GROUP BY ALL""")}
    changes = []
    for before, after in _pairs(order):
        for (grp, op), now in sorted(p99.items()):
            was = p99.get((before, op))
            if grp != after or was is None or now is None:
                continue
            if now - was >= LATENCY_FLOOR_MS and now >= 1.5 * was:
                changes.append({"group": after, "previous": before, "operation": op,
                                "p99_ms": round(now, 1), "was_p99_ms": round(was, 1)})
    return changes


def _worst_consoles(fleet: Fleet, top: int) -> list[dict[str, Any]]:
    return fleet.rows("""
        WITH v AS (SELECT run, count(*) FILTER (WHERE status = 'fail') AS fails
                   FROM verdicts GROUP BY run),
             e AS (SELECT run, count(*) FILTER (WHERE status >= 500 OR status IS NULL)
                          AS errors FROM exchanges WHERE mpsd GROUP BY run)
        SELECT r.console, count(*) AS runs, coalesce(sum(v.fails), 0)::BIGINT AS fails,
               sum(r.anomalies)::BIGINT AS anomalies,
               coalesce(sum(e.errors), 0)::BIGINT AS errors, sum(r.exchanges)::BIGINT
               AS exchanges
        FROM _runs r LEFT JOIN v USING (run) LEFT JOIN e USING (run)
        GROUP BY r.console HAVING coalesce(sum(v.fails), 0) + sum(r.anomalies)
                                  + coalesce(sum(e.errors), 0) > 0
        ORDER BY fails DESC, anomalies DESC, errors DESC, r.console LIMIT ?""", top)
