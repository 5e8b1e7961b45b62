"""The fast report: DuckDB aggregates a recording, the verdicts come from its sidecar.

Why: `report` over 1,000,000 exchanges spent most of its time parsing every
line in Python and judging every exchange again (the verdict engine costs
about 146 µs an exchange). When the recording's verdicts are already stored
beside it, complete (`fleet.stored.complete_trailer`: the sidecar ends with a
trailer saying which bytes of the recording, which rules and which limits it
judged, and that no line was skipped), nothing needs judging again, and all
that is left is aggregation, which DuckDB's JSON reader does over explicit
columns (bodies and headers are never parsed) in one scan.

What stays in Python, and why:

- the resource of each *distinct* URL (kind, label, session key, MPSD or not)
  comes from `resources.parse`, the same code the proxy uses, so the rows, lanes
  and operations match the Python pass (a few thousand URLs, not a million);
- the verdicts: read from the sidecar in the order they were decided; the first
  `keep_verdicts` of each rule and status are kept, the rest counted (as
  `report.build.ReportBuilder._keep` does);
- the RTA section, which needs order: only the websocket message lines and the
  412s are parsed, in file order (`report.rta.RtaAcc`), and only when the scan
  found any.

It gives the report the Python pass gives (`report.build.build_report`), with these
documented differences: "first" (the first anomaly records, the order of ties,
lanes, timeline samples) means the lowest `seq` (the recorder writes seqs in
file order, so the same thing for its recordings); evidence rows are every
record a kept verdict names (the Python pass can only name those still in its
ring of the last 4096); latency sums add up in another order (means may differ
in the last digit). Anything the columns cannot read as the Python pass does
(a record without classification, a seq missing or repeated, a time not in the
recorder's form) raises `Unsupported`, and the caller falls back to the Python
pass (`fleet.stored.report_storing`).
"""

from __future__ import annotations

import heapq
import json
import mmap
import os
import tempfile
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import duckdb

from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import resources
from mpsdproxy import verdicts
from mpsdproxy.recording import messages as ws
from mpsdproxy.recording import verdictfile
from mpsdproxy.report.bounded import MAX_KEYS
from mpsdproxy.report.bounded import OTHER
from mpsdproxy.report.bounded import LatencyHistogram
from mpsdproxy.report.data import STATUS_ORDER
from mpsdproxy.report.data import AnomalyCount
from mpsdproxy.report.data import Operation
from mpsdproxy.report.data import Point
from mpsdproxy.report.data import RecordSummary
from mpsdproxy.report.data import Report
from mpsdproxy.report.data import status_class
from mpsdproxy.report.rta import RtaAcc
from mpsdproxy.verdicts import Status
from mpsdproxy.verdicts import Verdict

__all__ = ["Unsupported", "build_report_db", "capped_counts", "MEMORY_LIMIT"]

#: DuckDB's memory cap for one report (it spills to a temporary folder beyond it): with
#: Python's own ~70 MB, 1,000,000 exchanges report in about 270 MB. Insertion order is
#: kept: without it the same scan under this cap ran 17 times slower here.
MEMORY_LIMIT = "128MB"
NO_HOST = "(no host)"
#: Threads for the scan at most (each adds its own read buffers to the peak).
MAX_THREADS = 4
#: A longer line (a huge body) makes the scan fail, and the Python pass reads it.
_MAX_LINE_BYTES = 16 * 1024 * 1024
_TIME_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"
_COLUMNS = {
    "format": "VARCHAR", "kind": "VARCHAR", "seq": "BIGINT", "start": "VARCHAR",
    "end": "VARCHAR", "client": "VARCHAR", "request": "STRUCT(method VARCHAR, url VARCHAR)",
    "response": "STRUCT(status INTEGER)",
    "classification": "STRUCT(id VARCHAR, anomalies STRUCT(code VARCHAR, message VARCHAR)[])",
    "provenance": "STRUCT(source VARCHAR, rule VARCHAR)",
}


class Unsupported(Exception):
    """The recording holds something only the Python pass reads the same way."""


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _reader(path: str) -> str:
    cols = "{" + ", ".join(f"{_lit(k)}: {_lit(v)}" for k, v in _COLUMNS.items()) + "}"
    return (f"read_json({_lit(path)}, format='newline_delimited', columns={cols}, "
            f"maximum_object_size={_MAX_LINE_BYTES})")


class _Scan:
    """One DuckDB scan of the recording into a compact table `x`, then queries over it."""

    def __init__(self, path: str, memory_limit: str, threads: int | None) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="mpsdproxy-report-")
        config: dict[str, Any] = {"memory_limit": memory_limit,
                                  "temp_directory": os.path.join(self.folder.name, "spill")}
        if threads:
            config["threads"] = threads
        self.con = duckdb.connect(":memory:", config=config)
        fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
        self.con.execute(f"""CREATE TABLE lines AS SELECT
            CASE WHEN format IS NOT NULL THEN 'h' WHEN kind = 'websocket' THEN 'm'
                 ELSE 'x' END AS t,
            seq, strptime("start", '{fmt}') AS st, strptime("end", '{fmt}') AS en,
            ("start" IS NOT NULL AND NOT regexp_matches("start", '{_TIME_RE}'))
              OR ("end" IS NOT NULL AND NOT regexp_matches("end", '{_TIME_RE}')) AS bad_time,
            request.method AS method, request.url AS url, response.status AS status,
            CASE WHEN response.status = 412 THEN client END AS client,
            classification IS NULL AS no_cls, classification.id AS entry,
            classification.anomalies AS anomalies,
            coalesce(nullif(provenance.source, ''), 'forwarded') AS source, provenance.rule AS prule
            FROM {_reader(path)}""")

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, list(params)).fetchall()

    def one(self, sql: str, *params: Any) -> tuple[Any, ...]:
        found = self.con.execute(sql, list(params)).fetchone()
        assert found is not None
        return found

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            self.folder.cleanup()


# --------------------------------------------------------------------------- urls


def _url_facts(url: str) -> tuple[str, str, str, bool]:
    """(host, kind, where, is MPSD) for a URL, as the Python pass works them out
    (`model.Request.host`/`path`/`resource`, `classify.is_mpsd`, `build._where`),
    without building a Request: the scan already knows every record was valid."""
    split = urlsplit(url)
    host = (split.hostname or "").lower()
    resource = resources.parse(split.path)
    kind = resource.kind
    where = ((split.path or "/").lower() if kind is resources.Kind.UNKNOWN
             else resource.short)
    mpsd = resources.is_mpsd_host(host) or kind is not resources.Kind.UNKNOWN
    return host, kind.value, where, mpsd


def _load_urls(scan: _Scan) -> None:
    """Table `u`: each distinct URL's facts, written as JSON Lines and read back (no
    per-row inserts)."""
    urls = [u for (u,) in scan.rows("SELECT DISTINCT url FROM lines WHERE t = 'x'")]
    target = os.path.join(scan.folder.name, "urls.jsonl")
    with open(target, "w", encoding="utf-8", errors="surrogateescape") as f:
        for url in urls:
            if url is None:
                raise Unsupported("an exchange without a URL")
            try:
                host, kind, where, mpsd = _url_facts(url)
            except ValueError:
                raise Unsupported(f"URL {url[:60]!r}") from None
            f.write(json.dumps({"url": url, "host": host or NO_HOST, "kind": kind,
                                "where_": where, "mpsd": mpsd}) + "\n")
    columns = "{'url': 'VARCHAR', 'host': 'VARCHAR', 'kind': 'VARCHAR', " \
              "'where_': 'VARCHAR', 'mpsd': 'BOOLEAN'}"
    scan.con.execute("CREATE TABLE u (url VARCHAR, host VARCHAR, kind VARCHAR, "
                     "where_ VARCHAR, mpsd BOOLEAN)")
    if urls:
        scan.con.execute(f"INSERT INTO u SELECT * FROM read_json({_lit(target)}, "
                         f"format='newline_delimited', columns={columns})")
    scan.con.execute("""CREATE VIEW e AS SELECT l.*, u.host, u.kind, u.where_, u.mpsd,
        coalesce(l.st, l.en) AS t0, greatest(coalesce(l.en, l.st), coalesce(l.st, l.en)) AS t1,
        CASE WHEN l.st IS NULL OR l.en IS NULL THEN 0.0
             ELSE round((epoch(l.en) - epoch(l.st)) * 1000, 3) END AS ms
        FROM lines l JOIN u USING (url) WHERE l.t = 'x'""")


# --------------------------------------------------------------------------- aggregates


def capped_counts(rows: Iterable[tuple[Any, int]]) -> dict[Any, int]:
    """(key, count) in first-appearance order -> a `bounded.Capped` as the Python pass
    fills it: the first MAX_KEYS keys keep their counts, later ones count as OTHER."""
    out: dict[Any, int] = {}
    for key, n in rows:
        if key not in out and len(out) >= MAX_KEYS:
            key = OTHER
        out[key] = out.get(key, 0) + n
    return out


def _counter(scan: _Scan, expr: str, where: str = "mpsd") -> dict[Any, int]:
    return capped_counts((k, n) for k, n, _ in scan.rows(
        f"SELECT {expr} AS k, count(*), min(seq) AS s FROM e WHERE {where} "
        "GROUP BY k ORDER BY s"))


_BUCKET = (f"CASE WHEN ms < {LatencyHistogram.MIN_MS} THEN 0 ELSE least("
           f"{LatencyHistogram.SIZE - 1}, floor(log2(ms / {LatencyHistogram.MIN_MS}) * "
           f"{LatencyHistogram.STEPS})::BIGINT + 1) END")


def _operations(scan: _Scan) -> tuple[Operation, ...]:
    op = "coalesce(nullif(upper(method), ''), '?')"
    keys = scan.rows(f"SELECT {op} AS m, kind, count(*) AS n, min(seq) AS s FROM e "
                     "WHERE mpsd GROUP BY m, kind ORDER BY s")
    capped: dict[tuple[str, str], tuple[str, str]] = {}
    for n, (method, kind, _, _) in enumerate(keys):
        capped[(method, kind)] = (method, kind) if n < MAX_KEYS else (OTHER, OTHER)
    counts: dict[tuple[str, str], int] = {}
    first: dict[tuple[str, str], int] = {}
    for method, kind, count, seq in keys:
        key = capped[(method, kind)]
        counts[key] = counts.get(key, 0) + count
        first.setdefault(key, seq)
    classes: dict[tuple[str, str], dict[str, int]] = {k: {} for k in counts}
    status = "CASE WHEN status IS NULL THEN 'no response' ELSE (status // 100) || 'xx' END"
    for method, kind, cls, n, _ in scan.rows(
            f"SELECT {op} AS m, kind, {status} AS c, count(*), min(seq) AS s FROM e "
            "WHERE mpsd GROUP BY m, kind, c ORDER BY s"):
        per = classes[capped[(method, kind)]]
        per[cls] = per.get(cls, 0) + n
    hists = {k: LatencyHistogram() for k in counts}
    for method, kind, bucket, n, total, low, high in scan.rows(
            f"SELECT {op} AS m, kind, {_BUCKET} AS b, count(*), sum(ms), min(ms), max(ms) "
            "FROM e WHERE mpsd AND ms >= 0 AND isfinite(ms) GROUP BY m, kind, b"):
        hist = hists[capped[(method, kind)]]
        hist.buckets[int(bucket)] += n
        hist.count += n
        hist.total += total
        hist.low = min(hist.low, low)
        hist.high = max(hist.high, high)
    order = sorted(counts, key=lambda k: (-counts[k], first[k]))
    return tuple(Operation(m, k, counts[(m, k)], classes[(m, k)], hists[(m, k)].to_dict())
                 for m, k in order)


def _anomalies(scan: _Scan) -> tuple[AnomalyCount, ...]:
    rows = scan.rows("""
        WITH a AS (SELECT seq, unnest(anomalies) AS a FROM e WHERE mpsd AND anomalies IS NOT NULL)
        SELECT coalesce(nullif(a.code, ''), 'unknown') AS code, count(*) AS n,
               arg_min(coalesce(a.message, ''), seq) AS message,
               list(seq ORDER BY seq)[1:10] AS records, min(seq) AS s
        FROM a WHERE a IS NOT NULL GROUP BY code ORDER BY s""")
    out: dict[str, list[Any]] = {}
    for code, n, message, records, _ in rows:
        if code not in out and len(out) >= MAX_KEYS:
            code = OTHER
        acc = out.setdefault(code, [0, message, []])
        acc[0] += n
        acc[2] = (acc[2] + list(records))[:10]
    ranked = sorted(out.items(), key=lambda kv: -kv[1][0])  # stable: ties first-seen
    return tuple(AnomalyCount(code, n, msg, tuple(recs)) for code, (n, msg, recs) in ranked)


def _lanes(scan: _Scan, max_lanes: int) -> tuple[dict[str, int], tuple[str, ...]]:
    names = [w for w, _ in scan.rows("SELECT where_, min(seq) AS s FROM e WHERE mpsd "
                                     f"GROUP BY where_ ORDER BY s LIMIT {max_lanes + 1}")]
    lanes = {w: n for n, w in enumerate(names[:max_lanes])}
    shown = list(names[:max_lanes])
    if len(names) > max_lanes:
        shown.append(f"({OTHER} resources)")
    return lanes, tuple(shown)


def _epoch(ts: Any) -> float | None:
    """A DuckDB TIMESTAMP (naive, UTC) as epoch seconds, as `recording.parse_timestamp`."""
    if ts is None:
        return None
    return recording.parse_timestamp(ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def _timeline(scan: _Scan, lanes: dict[str, int], max_points: int, max_marked: int,
              ) -> tuple[tuple[Point, ...], tuple[Point, ...], int]:
    """Points sampled as `ReportBuilder._remember` samples them: every stride-th exchange
    with a time, the stride doubling whenever the list reaches twice `max_points`."""
    (ticks,) = scan.one("SELECT count(*) FROM e WHERE mpsd AND t0 IS NOT NULL")
    stride = 1
    while ticks >= (2 * max_points - 1) * stride + 1:
        stride *= 2
    other = len(lanes)

    def point(row: tuple[Any, ...]) -> Point:
        t0, where, status, source, seq = row
        return Point(_epoch(t0) or 0.0, lanes.get(where, other), status_class(status),
                     source == "injected", seq)

    sampled = scan.rows(f"""SELECT t0, where_, status, source, seq FROM (
        SELECT *, row_number() OVER (ORDER BY seq) AS tick FROM e
        WHERE mpsd AND t0 IS NOT NULL) WHERE (tick - 1) % {stride} = 0 ORDER BY seq""")
    marked = scan.rows("SELECT t0, where_, status, source, seq FROM e WHERE mpsd AND "
                       f"t0 IS NOT NULL AND source = 'injected' ORDER BY seq LIMIT {max_marked}")
    return tuple(map(point, sampled)), tuple(map(point, marked)), stride


def _evidence(scan: _Scan, seqs: list[int], lanes: dict[str, int]
              ) -> dict[int, RecordSummary]:
    if not seqs:
        return {}
    rows = scan.rows("""SELECT seq, t0, coalesce(nullif(upper(method), ''), '?'), where_,
        status, entry, source, prule FROM e WHERE mpsd AND list_contains(?, seq)""", seqs)
    found = {}
    for seq, t0, method, where, status, entry, source, rule in rows:
        found[seq] = RecordSummary(seq, _epoch(t0), method, where, status, entry, source,
                                   rule if source == "injected" else None,
                                   lanes.get(where, len(lanes)))
    return {s: found[s] for s in seqs if s in found}


# --------------------------------------------------------------------------- verdicts


class _Verdicts:
    """The stored verdicts, kept and counted as `ReportBuilder._keep` keeps them."""

    def __init__(self, keep: int, max_evidence: int) -> None:
        self.keep, self.max_evidence = keep, max_evidence
        self.kept: dict[tuple[str, Status], list[Verdict]] = {}
        self.omitted: dict[str, dict[str, int]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.evidence: dict[int, None] = {}

    def add(self, item: Mapping[str, Any]) -> None:
        rule, status = str(item["rule"]), Status(item["status"])
        per = self.counts.setdefault(rule, {})
        per[status.value] = per.get(status.value, 0) + 1
        kept = self.kept.setdefault((rule, status), [])
        if len(kept) >= self.keep:
            omitted = self.omitted.setdefault(rule, {})
            omitted[status.value] = omitted.get(status.value, 0) + 1
            return
        verdict = Verdict.from_dict(item)
        kept.append(verdict)
        for seq in verdict.records:
            if len(self.evidence) < self.max_evidence:
                self.evidence.setdefault(seq, None)

    def ordered(self) -> tuple[Verdict, ...]:
        order = {s: n for n, s in enumerate(STATUS_ORDER)}
        rules = {r.id: n for n, r in enumerate(verdicts.RULES)}
        return tuple(sorted((v for vs in self.kept.values() for v in vs),
                            key=lambda v: (order[v.status], rules.get(v.rule, 99),
                                           v.time or 0)))


# --------------------------------------------------------------------------- rta


def _message_records(path: str) -> Iterator[dict[str, Any]]:
    """The websocket message records, in file order. Found by searching the bytes for
    `"websocket"` (memory-mapped, no line is parsed unless it holds that word)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            at = data.find(b'"websocket"')
            while at >= 0:
                begin = data.rfind(b"\n", 0, at) + 1
                end = data.find(b"\n", at)
                end = len(data) if end < 0 else end
                try:
                    item = json.loads(data[begin:end].decode("utf-8", "surrogateescape"))
                except ValueError:
                    item = None
                if isinstance(item, dict) and ws.is_message(item):
                    yield item
                at = data.find(b'"websocket"', end)


def _preconditions(scan: _Scan) -> Iterator[tuple[int, model.Exchange]]:
    """The 412s, in seq order, as exchanges holding what `RtaAcc.exchange` reads."""
    for seq, method, url, st, en, client in scan.rows(
            "SELECT seq, method, url, st, en, client FROM lines WHERE t = 'x' AND "
            "status = 412 ORDER BY seq"):
        request = model.Request(method, url, model.Headers(()), b"")
        yield seq, model.Exchange(request=request, response=model.Response(412),
                                  start=_epoch(st), end=_epoch(en), client=client, seq=seq)


def _rta(scan: _Scan, path: str, messages: int, preconditions: int) -> RtaAcc:
    """The RTA section: message records and 412s fed in seq order (`RtaAcc`)."""
    acc = RtaAcc()
    found: Iterable[dict[str, Any]] = _message_records(path) if messages else ()
    tagged = ((r.get("seq") if isinstance(r.get("seq"), int) else 0, 0, r) for r in found)
    links = ((seq, 1, e) for seq, e in (_preconditions(scan) if preconditions else ()))
    for _, which, item in heapq.merge(tagged, links, key=lambda t: (t[0], t[1])):
        if which == 0:
            acc.message(item)  # type: ignore[arg-type]
        else:
            acc.exchange(item, _where(item))  # type: ignore[arg-type]
    return acc


def _where(exchange: model.Exchange) -> str:
    resource = exchange.resource
    if resource.kind is resources.Kind.UNKNOWN:
        return exchange.request.path.split("?", 1)[0].lower()
    return resource.short


# --------------------------------------------------------------------------- the report


def build_report_db(path: str | os.PathLike[str], trailer: Mapping[str, Any], *,
                   memory_limit: str = MEMORY_LIMIT, threads: int | None = None,
                   keep_verdicts: int = 50, max_evidence: int = 2000, max_points: int = 1500,
                   max_marked: int = 400, max_lanes: int = 24) -> Report:
    """The report of a recording whose complete sidecar's trailer is `trailer` (see the
    module docstring); `Unsupported` when the Python pass must make it instead."""
    path = os.fspath(path)
    # The JSON reader holds two line buffers per thread: more threads, more memory.
    threads = threads or min(os.cpu_count() or 1, MAX_THREADS)
    try:
        scan = _Scan(path, memory_limit, threads)
    except duckdb.Error as e:
        raise Unsupported(str(e).splitlines()[0]) from None
    try:
        return _report(scan, path, trailer, keep_verdicts, max_evidence, max_points,
                       max_marked, max_lanes)
    except duckdb.Error as e:
        raise Unsupported(str(e).splitlines()[0]) from None
    finally:
        scan.close()


def _report(scan: _Scan, path: str, trailer: Mapping[str, Any], keep_verdicts: int,
            max_evidence: int, max_points: int, max_marked: int, max_lanes: int) -> Report:
    exchanges, messages, unique, no_seq, no_cls, bad_time, n412 = scan.one("""
        SELECT count(*) FILTER (t = 'x'), count(*) FILTER (t = 'm'),
               count(DISTINCT seq) FILTER (t = 'x'), count(*) FILTER (t = 'x' AND seq IS NULL),
               count(*) FILTER (t = 'x' AND no_cls), count(*) FILTER (t = 'x' AND bad_time),
               count(*) FILTER (t = 'x' AND status = 412) FROM lines""")
    if no_seq or unique != exchanges or no_cls or bad_time:
        raise Unsupported("seq missing or repeated, a record without classification, "
                          "or a time not in the recorder's form")
    _load_urls(scan)
    mpsd, start, end = scan.one("SELECT count(*) FILTER (mpsd), min(t0), max(t1) FROM e")
    lanes, lane_names = _lanes(scan, max_lanes)
    points, marked, stride = _timeline(scan, lanes, max_points, max_marked)
    stored = _Verdicts(keep_verdicts, max_evidence)
    for item in verdictfile.read_verdicts(path):
        stored.add(item)
    return Report(
        source=path, limits=str(trailer.get("limits")), exchanges=exchanges,
        start=_epoch(start), end=_epoch(end), skipped=(), skipped_total=0,
        by_status=_counter(scan, "status"), by_entry=_counter(scan, "entry"),
        by_kind=_counter(scan, "kind"), by_source=_counter(scan, "source"),
        injected_rules=_counter(scan, "prule", "mpsd AND source = 'injected' AND "
                                               "prule IS NOT NULL"),
        operations=_operations(scan), anomalies=_anomalies(scan),
        verdict_counts=stored.counts, looked_at=dict(trailer.get("looked_at") or {}),
        verdicts=stored.ordered(), omitted=stored.omitted,
        evidence=_evidence(scan, list(stored.evidence), lanes),
        lanes=lane_names, points=points, marked=marked, sampled_every=stride,
        mpsd_exchanges=mpsd, other_hosts=_counter(scan, "host", "NOT mpsd"),
        rta=_rta(scan, path, messages, n412).finish(),
    )

