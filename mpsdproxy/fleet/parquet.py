"""Parquet export: a studio's recordings as one table Spark, Trino or BigQuery can read.

One table, one row per record, `record_type` saying which: `file` (one per recording,
so an empty one is a run too), `header` (a recording's header, with its tags),
`exchange`, `message` (websocket) or `verdict` (a stored verdict). Every row carries
`schema_version` (`SCHEMA_VERSION`), its `run` (the recording's path when exported)
and the run's `tags`; the file's key-value metadata says
`mpsdproxy.schema = mpsdproxy-fleet` and `mpsdproxy.schema_version`.
Columns (a version only ever adds columns; a new meaning is a new version):

- run, record_type, tags (MAP<VARCHAR, VARCHAR>), seq, start (TIMESTAMP, UTC; a
  verdict's decision time), duration_ms, client, method, url, status, reason, error,
  resource_kind, template, session_name, row_id (the status table row), anomalies
  (LIST<VARCHAR>), source (forwarded, injected, ...), fault_rule, direction, opcode,
  rta_type, taps; operation (`PUT session`, exchange rows only, as the `exchanges`
  view names it);
- verdict_rule, verdict_title, verdict_status, verdict_reason, verdict_records
  (LIST<BIGINT>), verdict_resource: set on verdict rows only;
- build, date: the run's `build` tag ('untagged' without) and its `date` tag or first
  exchange's UTC day: partition columns with `--partition build,date` (a Hive
  folder `build=1234/date=2026-12-05/...parquet`), plain columns otherwise.

DuckDB writes it (`COPY ... (FORMAT PARQUET)`); `mpsdproxy fleet DIR` reads it
back into the same views.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence

import duckdb

from mpsdproxy import safefiles
from mpsdproxy.fleet.engine import LINE_COLUMNS
from mpsdproxy.fleet.engine import SCHEMA
from mpsdproxy.fleet.engine import SCHEMA_VERSION
from mpsdproxy.fleet.engine import Fleet
from mpsdproxy.fleet.engine import sql_text
from mpsdproxy.fleet.sources import FleetError
from mpsdproxy.recording import codec

__all__ = ["SCHEMA", "SCHEMA_VERSION", "export", "partition_keys"]

VERDICT_COLUMNS = ("verdict_rule", "verdict_title", "verdict_status", "verdict_reason",
                   "verdict_records", "verdict_resource")


def partition_keys(text: str) -> list[str]:
    """`build,date` -> ["build", "date"]; a key is `build`, `date` or any tag key."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    reserved = set(LINE_COLUMNS) | set(VERDICT_COLUMNS) | {"schema_version", "operation"}
    for key in keys:
        if not codec.TAG_KEY.fullmatch(key) or key in reserved:
            raise FleetError(f"--partition {text}: {key!r} is not a tag name (e.g. build,date)")
    if not keys:
        raise FleetError(f"--partition {text!r}: name at least one tag, e.g. build,date")
    return keys


def _tag_column(key: str) -> str:
    if key == "build":
        return "coalesce(r.build, 'untagged') AS build"
    if key == "date":
        return "coalesce(r.date, 'undated') AS date"
    return f"coalesce(r.tags[{sql_text(key)}], 'untagged') AS \"{key}\""


def _select(keys: Sequence[str]) -> str:
    extra = ", ".join(_tag_column(k) for k in dict.fromkeys(["build", "date", *keys]))
    lines = ", ".join(f"l.{c}" if c != "tags" else "r.tags" for c in LINE_COLUMNS)
    nulls = ", ".join(f"NULL AS {c}" for c in VERDICT_COLUMNS)
    operation = ("CASE WHEN l.record_type = 'exchange' THEN coalesce(l.method, '?') || ' ' || "
                 "coalesce(l.resource_kind, 'unknown') END AS operation")
    return f"""
        SELECT {SCHEMA_VERSION} AS schema_version, {lines}, {operation}, {nulls}, {extra}
        FROM _lines l JOIN runs r USING (run)
        UNION ALL BY NAME
        SELECT {SCHEMA_VERSION} AS schema_version, v.run, 'verdict' AS record_type,
               r.tags, v.time AS start, v.client, v.rule AS verdict_rule,
               v.title AS verdict_title, v.status AS verdict_status,
               v.reason AS verdict_reason, v.records AS verdict_records,
               v.resource AS verdict_resource, {extra}
        FROM _verdicts v JOIN runs r USING (run)"""


def _move_files(staging: str, output: str) -> None:
    """Each file DuckDB wrote under `staging` to the same place under `output`, one
    rename each: an archive only ever gains whole files, however an export ends (the
    half-written files of a stopped one stay in the hidden staging folder, which is
    removed, and which a fleet read skips)."""
    for root, _, files in os.walk(staging):
        target = os.path.join(output, os.path.relpath(root, staging))
        os.makedirs(target, exist_ok=True)
        for name in files:
            os.replace(os.path.join(root, name), os.path.join(target, name))


def _copy(fleet: Fleet, partition: Sequence[str], target: str, options: Sequence[str]) -> None:
    fleet.con.execute(f"COPY ({_select(partition)}) TO {sql_text(target)} "
                      f"({', '.join(options)})")


def _export_folder(fleet: Fleet, partition: Sequence[str], output: str,
                   options: Sequence[str]) -> None:
    """A partitioned COPY into a hidden staging folder inside `output`, then each whole
    file moved into place (`_move_files`): a stopped export leaves no half file."""
    os.makedirs(output, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".mpsdproxy-export-", dir=output)
    try:
        _copy(fleet, partition, temporary, options)
        _move_files(temporary, output)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def export(fleet: Fleet, output: str, partition: Sequence[str] = ()) -> int:
    """Write the fleet's records and verdicts to `output`: one Parquet file, or with
    `partition` a Hive-partitioned folder (added to: existing files are kept, new ones
    get fresh names, each whole or not at all). Returns the rows written."""
    metadata = (f"KV_METADATA {{'mpsdproxy.schema': {sql_text(SCHEMA)}, "
                f"'mpsdproxy.schema_version': '{SCHEMA_VERSION}'}}")
    options = ["FORMAT PARQUET", "COMPRESSION ZSTD", metadata]
    if partition:
        if os.path.isfile(output):
            raise FleetError(f"{output}: a file; --partition writes a folder")
        quoted = ", ".join(f'"{k}"' for k in partition)
        options += [f"PARTITION_BY ({quoted})", "APPEND",
                    "FILENAME_PATTERN 'part_{uuid}'"]
    elif os.path.isdir(output):
        raise FleetError(f"{output}: a folder; without --partition the export is one file")
    try:
        if partition:
            _export_folder(fleet, partition, output, options)
        else:  # whole or not at all, as every output (never renamed over a device)
            with safefiles.atomic_path(output) as temporary:
                _copy(fleet, partition, temporary, options)
    except duckdb.Error as e:
        raise FleetError(f"{output}: {str(e).splitlines()[0]}") from None
    except safefiles.BadFile as e:
        raise FleetError(str(e)) from None
    except OSError as e:
        raise FleetError(f"{output}: {e.strerror or e}") from None
    count = fleet.con.execute("SELECT (SELECT count(*) FROM _lines) + "
                              "(SELECT count(*) FROM _verdicts)").fetchone()
    return int(count[0]) if count else 0
