"""The fleet's engine: DuckDB over many recordings, read in place, queried by views.

Recordings are read once by DuckDB's JSON reader with explicit columns (no
sampling, no type guessing, bodies never parsed into columns), into a database
file in a temporary folder: every summary query then runs over columns, and a
memory limit lets DuckDB spill to disk instead of growing with the number of
files. Verdicts come from each recording's sidecar (`recording.verdictfile`),
never judged here. A Parquet export (`fleet.parquet`) given alone is read in place (views
with the tables' names over its columns: no copy); beside recordings it loads into the
same tables.

The documented views (`--sql` queries them; columns in `VIEWS`):

- `exchanges`: one row per HTTP exchange of every recording;
- `rta`: one row per websocket message (the RTA shoulder taps);
- `verdicts`: one row per stored verdict;
- `runs`: one row per recording, with its tags (`run --tag`).

`run` (the recording's path as given) joins them; `verdicts.trigger` is the seq
of the exchange that triggered a verdict (`exchanges.seq` in the same run).
Their columns (added to, never changed, within `summary.SUMMARY_VERSION`):

- exchanges: run, file, seq, start (TIMESTAMP, UTC), duration_ms, client, method,
  url, host, status, reason, error, row (the status table row, e.g.
  `412.if-match-session`), anomalies (VARCHAR[] of codes), resource_kind, template,
  session_name, operation (`PUT session`), source (forwarded, injected, ...),
  fault_rule, mpsd (session-directory traffic, as `classify.is_mpsd` says: the summary's
  errors, latencies and operations count only these, as `report` does);
- rta: run, file, seq, time, client, url, direction, opcode, rta_type, taps, source;
- verdicts: run, file, rule, title, status (pass, warn, fail, not-applicable),
  reason, records (BIGINT[]), trigger, resource, client, time;
- runs: run, file, tags (MAP), build, console (tag, else the file), date (tag, else
  the first exchange's UTC day), exchanges, messages, started, ended, anomalies,
  verdicts, verdicts_stored.

A line DuckDB cannot read as a record (a cut last line) is skipped, as `report`
skips it; `report` is the command that names such lines.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import duckdb

from mpsdproxy import resources
from mpsdproxy import safefiles
from mpsdproxy.fleet.sources import FleetError
from mpsdproxy.fleet.sources import Sources
from mpsdproxy.recording import verdictfile

__all__ = ["Fleet", "VIEWS", "RECORD_COLUMNS", "VERDICT_COLUMNS", "SCHEMA", "SCHEMA_VERSION",
           "check_schema", "sql_text", "read_only_query"]

#: What a Parquet export (`fleet.parquet`) says it is, in its key-value metadata, and the
#: newest version of its columns this engine reads (a version only adds columns).
SCHEMA = "mpsdproxy-fleet"
SCHEMA_VERSION = 1

#: The recording fields read, with their types: everything else on a line (bodies,
#: headers) is skipped by the reader. Header and websocket lines share the columns.
RECORD_COLUMNS: dict[str, str] = {
    "format": "VARCHAR",
    "tags": "MAP(VARCHAR, VARCHAR)",
    "seq": "BIGINT",
    "kind": "VARCHAR",
    "start": "VARCHAR",
    "duration_ms": "JSON",  # read as it is written: a JSON true is no duration
    "client": "VARCHAR",
    "request": "STRUCT(method VARCHAR, url VARCHAR)",
    "response": "STRUCT(status INTEGER, reason VARCHAR)",
    "error": "VARCHAR",
    "resource": "STRUCT(kind VARCHAR, template VARCHAR, name VARCHAR)",
    "classification": "STRUCT(id VARCHAR, anomalies STRUCT(code VARCHAR)[])",
    "provenance": "STRUCT(source VARCHAR, rule VARCHAR)",
    "url": "VARCHAR",
    "direction": "VARCHAR",
    "opcode": "VARCHAR",
    "rta": "STRUCT(type VARCHAR, taps STRUCT(session VARCHAR)[])",
}
VERDICT_COLUMNS: dict[str, str] = {
    "rule": "VARCHAR",
    "title": "VARCHAR",
    "status": "VARCHAR",
    "reason": "VARCHAR",
    "records": "BIGINT[]",
    "resource": "VARCHAR",
    "client": "VARCHAR",
    "time": "VARCHAR",
}
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
#: One record line may hold a large body, so DuckDB's default cap (16 MB) is doubled; no
#: more: the reader allocates two buffers of this size per thread whatever the file's size,
#: so 160 MB failed a 1,000,000-exchange recording under the 1 GB limit.
MAX_LINE_BYTES = 32 * 1024 * 1024

#: The table every record line goes to (header, exchange and message lines alike). A
#: duration that is not a finite JSON number of at least 0 is unknown, as
#: `codec.duration_of` says (a DOUBLE column would have read a JSON true as 1).
LINES_SELECT = f"""
    CASE WHEN format IS NOT NULL THEN 'header' WHEN kind = 'websocket' THEN 'message'
         WHEN seq IS NOT NULL THEN 'exchange' ELSE 'other' END AS record_type,
    CASE WHEN format IS NOT NULL THEN tags END AS tags,
    seq,
    try_strptime(start, '{TIME_FORMAT}') AS start,
    CASE WHEN json_type(duration_ms) IN ('DOUBLE', 'BIGINT', 'UBIGINT')
         AND isfinite(duration_ms::DOUBLE) AND duration_ms::DOUBLE >= 0
         THEN duration_ms::DOUBLE END AS duration_ms,
    client,
    request.method AS method,
    coalesce(request.url, url) AS url,
    response.status AS status, response.reason AS reason, error,
    resource.kind AS resource_kind, resource.template AS template,
    resource.name AS session_name,
    classification.id AS row_id,
    list_transform(classification.anomalies, lambda a: a.code) AS anomalies,
    provenance.source AS source, provenance.rule AS fault_rule,
    direction, opcode, rta.type AS rta_type, len(rta.taps) AS taps
"""
LINE_COLUMNS = ("run", "record_type", "tags", "seq", "start", "duration_ms", "client",
                "method", "url", "status", "reason", "error", "resource_kind", "template",
                "session_name", "row_id", "anomalies", "source", "fault_rule", "direction",
                "opcode", "rta_type", "taps")
VERDICT_TABLE_COLUMNS = ("run", "rule", "title", "status", "reason", "records", "resource",
                         "client", "time")
#: Verdict columns a Parquet export keeps under the exchanges' names (the rest: verdict_*).
_PARQUET_VERDICT = {"run": "run", "client": "client", "time": "start"}

#: The session directory's hosts, as a SQL list: with an MPSD path on any host, what
#: `classify.is_mpsd` calls MPSD traffic (the `mpsd` column of `exchanges`).
_MPSD_HOSTS = "[" + ", ".join(f"'{host}'" for host in resources.MPSD_HOSTS) + "]"

VIEWS: dict[str, str] = {
    "exchanges": f"""
        SELECT run, regexp_extract(run, '[^/\\\\]+$') AS file, seq, start, duration_ms,
               client, method, url, regexp_extract(url, '^[a-zA-Z]+://([^/:?]+)', 1) AS host,
               status, reason, error, row_id AS "row", coalesce(anomalies, []) AS anomalies,
               resource_kind, template, session_name,
               coalesce(method, '?') || ' ' || coalesce(resource_kind, 'unknown') AS operation,
               coalesce(source, 'forwarded') AS source, fault_rule,
               (list_contains({_MPSD_HOSTS}, lower(host))
                OR coalesce(resource_kind, 'unknown') <> 'unknown') AS mpsd
        FROM _lines WHERE record_type = 'exchange'""",
    "rta": """
        SELECT run, regexp_extract(run, '[^/\\\\]+$') AS file, seq, start AS time, client,
               url, direction, opcode, rta_type, coalesce(taps, 0) AS taps,
               coalesce(source, 'forwarded') AS source
        FROM _lines WHERE record_type = 'message'""",
    "verdicts": """
        SELECT run, regexp_extract(run, '[^/\\\\]+$') AS file, rule, title, status, reason,
               records, records[1] AS trigger, resource, client, time
        FROM _verdicts""",
    "runs": """
        WITH t AS (SELECT run, any_value(tags) AS tags FROM _lines
                   WHERE record_type = 'header' GROUP BY run),
             x AS (SELECT run, count(*) FILTER (WHERE record_type = 'exchange') AS exchanges,
                          count(*) FILTER (WHERE record_type = 'message') AS messages,
                          min(start) AS started, max(start) AS ended,
                          sum(len(coalesce(anomalies, []))) AS anomalies
                   FROM _lines GROUP BY run),
             v AS (SELECT run, count(*) AS verdicts FROM _verdicts GROUP BY run)
        SELECT x.run, regexp_extract(x.run, '[^/\\\\]+$') AS file,
               coalesce(t.tags, MAP {}::MAP(VARCHAR, VARCHAR)) AS tags,
               t.tags['build'] AS build,
               coalesce(t.tags['console'], regexp_extract(x.run, '[^/\\\\]+$')) AS console,
               coalesce(t.tags['date'], strftime(x.started, '%Y-%m-%d')) AS date,
               x.exchanges, x.messages, x.started, x.ended,
               coalesce(x.anomalies, 0)::BIGINT AS anomalies,
               coalesce(v.verdicts, 0) AS verdicts, v.verdicts IS NOT NULL AS verdicts_stored
        FROM x LEFT JOIN t USING (run) LEFT JOIN v USING (run)""",
}


def sql_text(value: str) -> str:
    """A string as a SQL literal."""
    return "'" + value.replace("'", "''") + "'"


def _list(paths: Sequence[str]) -> str:
    return "[" + ", ".join(sql_text(p) for p in paths) + "]"


def _struct(columns: dict[str, str]) -> str:
    return "{" + ", ".join(f"{sql_text(k)}: {sql_text(v)}" for k, v in columns.items()) + "}"


class Fleet:
    """Recordings (and Parquet exports) loaded into DuckDB, with the documented views.

    `memory_limit` bounds DuckDB's memory (it spills to the temporary folder beyond
    it); `threads` defaults to DuckDB's (the machine's cores).
    """

    def __init__(self, sources: Sources, *, memory_limit: str = "1GB",
                 threads: int | None = None) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="mpsdproxy-fleet-")
        config: dict[str, Any] = {"memory_limit": memory_limit,
                                  "temp_directory": os.path.join(self._folder.name, "spill"),
                                  "preserve_insertion_order": False}
        if threads:
            config["threads"] = threads
        self.con = duckdb.connect(os.path.join(self._folder.name, "fleet.duckdb"),
                                  config=config)
        self.sources = sources
        try:
            if sources.parquet and not sources.recordings:
                self._view_parquet(sources.parquet)
            else:
                self._create_tables()
            if sources.recordings:
                self._load_recordings(sources.recordings, sources.sidecars)
                self._refuse_unreadable(sources.recordings)
                if sources.parquet:
                    self._load_parquet(sources.parquet, sources.recordings)
            for name, body in VIEWS.items():
                self.con.execute(f"CREATE VIEW {name} AS {body}")
        except duckdb.Error as e:
            self.close()
            raise FleetError(_one_line(e)) from None
        except FleetError:
            self.close()
            raise

    def _create_tables(self) -> None:
        self.con.execute(f"""CREATE TABLE _lines AS SELECT NULL::VARCHAR AS run, {LINES_SELECT}
            FROM (SELECT NULL::VARCHAR AS format, NULL::VARCHAR AS kind, NULL::VARCHAR AS url,
                  {', '.join(f'NULL::{t} AS {c}' for c, t in RECORD_COLUMNS.items()
                             if c not in ('format', 'kind', 'url'))}) WHERE false""")
        self.con.execute("""CREATE TABLE _verdicts (run VARCHAR, rule VARCHAR, title VARCHAR,
            status VARCHAR, reason VARCHAR, records BIGINT[], resource VARCHAR,
            client VARCHAR, time TIMESTAMP)""")

    def _load_recordings(self, recordings: Sequence[str], sidecars: Sequence[str]) -> None:
        reader = (f"read_json({_list(recordings)}, format='newline_delimited', "
                  f"columns={_struct(RECORD_COLUMNS)}, filename=true, ignore_errors=true, "
                  f"maximum_object_size={MAX_LINE_BYTES})")
        self.con.execute(f"INSERT INTO _lines SELECT filename AS run, {LINES_SELECT} "
                         f"FROM {reader}")
        # Every recording is a run, even one with no line yet (a proxy that saw nothing).
        self.con.executemany("INSERT INTO _lines (run, record_type) VALUES (?, 'file')",
                             [(path,) for path in recordings])
        if not sidecars:
            return
        cut = len(verdictfile.SUFFIX)
        reader = (f"read_json({_list(sidecars)}, format='newline_delimited', "
                  f"columns={_struct(VERDICT_COLUMNS)}, filename=true, ignore_errors=true)")
        self.con.execute(f"""INSERT INTO _verdicts
            SELECT left(filename, length(filename) - {cut}), rule, title, status, reason,
                   records, resource, client, try_strptime(time, '{TIME_FORMAT}')
            FROM {reader} WHERE rule IS NOT NULL AND status IS NOT NULL""")

    def _refuse_unreadable(self, recordings: Sequence[str]) -> None:
        """A recording with no readable line, or over 10 % unreadable ones, is bad input
        here as in every command (`safefiles.refuse_unreadable`). DuckDB reads a line it
        cannot use as a row of nulls (record type 'other'); a last line cut short by a
        stopped writer is allowed, as the recording reader allows it."""
        counts = self.con.execute("""SELECT run,
                count(*) FILTER (WHERE record_type IN ('exchange', 'message')),
                count(*) FILTER (WHERE record_type = 'other')
            FROM _lines GROUP BY run HAVING count(*) FILTER (WHERE record_type = 'other') > 0
            """).fetchall()
        for run, records, unreadable in counts:
            unreadable -= _ends_cut(run)
            try:
                safefiles.refuse_unreadable(run, records, unreadable)
            except safefiles.BadFile as e:
                raise FleetError(str(e)) from None

    def _load_parquet(self, files: Sequence[str], recordings: Sequence[str]) -> None:
        """Parquet beside recordings: a run read from its recording is not read again from
        an export of it (an archive kept in the recordings' folder), so it counts once."""
        check_schema(self.con, files)
        reader = f"read_parquet({_list(files)}, union_by_name=true)"
        fresh = f"NOT list_contains({_list(recordings)}, run)"
        self.con.execute(f"""INSERT INTO _lines SELECT {', '.join(LINE_COLUMNS)}
            FROM {reader} WHERE record_type IN ('file', 'header', 'exchange', 'message')
            AND {fresh}""")
        columns = ", ".join(_PARQUET_VERDICT.get(c, f"verdict_{c}")
                            for c in VERDICT_TABLE_COLUMNS)
        self.con.execute(f"INSERT INTO _verdicts SELECT {columns} FROM {reader} "
                         f"WHERE record_type = 'verdict' AND {fresh}")

    def _view_parquet(self, files: Sequence[str]) -> None:
        """Parquet alone is read in place, not copied: its columns are already the tables'
        (a copy cost most of the time of a summary over 10,000,000 exchanges)."""
        check_schema(self.con, files)
        reader = f"read_parquet({_list(files)}, union_by_name=true)"
        self.con.execute(f"""CREATE VIEW _lines AS SELECT {', '.join(LINE_COLUMNS)}
            FROM {reader} WHERE record_type IN ('file', 'header', 'exchange', 'message')""")
        columns = ", ".join(f"{_PARQUET_VERDICT.get(c, 'verdict_' + c)} AS {c}"
                            for c in VERDICT_TABLE_COLUMNS)
        self.con.execute(f"CREATE VIEW _verdicts AS SELECT {columns} FROM {reader} "
                         "WHERE record_type = 'verdict'")

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of one query over the views; FleetError (one line) for a
        query DuckDB refuses, or for SQL that is not one query (`read_only_query`)."""
        try:
            cursor = self.con.execute(read_only_query(self.con, sql))
            names = [d[0] for d in cursor.description or ()]
            return names, cursor.fetchall()
        except duckdb.Error as e:
            raise FleetError(f"--sql: {_one_line(e)}") from None

    def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """A query's rows as dicts (for the summary's own queries)."""
        cursor = self.con.execute(sql, list(params))
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            self._folder.cleanup()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_cut(path: str) -> bool:
    """Whether the file's last line has no line break (a writer stopped mid-record)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


#: What `--sql` runs: a query (SELECT, WITH, FROM, VALUES, DESCRIBE, SUMMARIZE) or its
#: plan. COPY, EXPORT and ATTACH would write files, even over the recordings read.
QUERY_TYPES = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})


def read_only_query(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Statement:
    """`sql` as one statement that only reads; FleetError (one line) for anything else:
    a command never writes over its own input, and `--sql` promises an answer, not an
    export (that is `--to-parquet`, or `-o` for the answer itself)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise FleetError(f"--sql: {_one_line(e)}") from None
    if len(statements) != 1:
        raise FleetError(f"--sql: expected one query, found {len(statements)} statements")
    (statement,) = statements
    if statement.type not in QUERY_TYPES:
        raise FleetError(f"--sql: only a query is answered (SELECT, WITH, EXPLAIN...), "
                         f"not {statement.type.name}: write the answer with -o, the runs "
                         "with --to-parquet")
    return statement


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines[:3]) or type(error).__name__


def check_schema(con: duckdb.DuckDBPyConnection, files: Sequence[str]) -> None:
    """Refuse a Parquet file that is not this export, or from a newer schema version."""
    try:
        found = con.execute(
            "SELECT file_name, decode(key), decode(value) "
            f"FROM parquet_kv_metadata({_list(files)}) "
            "WHERE decode(key) LIKE 'mpsdproxy.%'").fetchall()
    except duckdb.Error as e:
        raise FleetError(f"{files[0]}: not a Parquet file: {str(e).splitlines()[0]}") from None
    schema = {(name, key): value for name, key, value in found}
    for path in files:
        if schema.get((path, "mpsdproxy.schema")) != SCHEMA:
            raise FleetError(f"{path}: not an mpsdproxy fleet export (no mpsdproxy.schema "
                             "metadata)")
        version = schema.get((path, "mpsdproxy.schema_version"), "")
        if not version.isdigit() or int(version) > SCHEMA_VERSION:
            raise FleetError(f"{path}: fleet schema version {version!r}: this mpsdproxy "
                             f"reads versions up to {SCHEMA_VERSION}")
