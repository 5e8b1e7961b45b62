"""`mpsdproxy fleet`: many recordings summarised, compared and queried with DuckDB; and the
Parquet export that `export --format parquet` and `fleet --to-parquet` share."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from mpsdproxy import safefiles
from mpsdproxy.cli.base import CONTEXT
from mpsdproxy.cli.base import BadInput
from mpsdproxy.cli.base import FormatChoice
from mpsdproxy.cli.base import about
from mpsdproxy.cli.base import cli
from mpsdproxy.cli.base import emit

__all__ = ["fleet", "ExportFormat", "export_parquet"]


class ExportFormat(FormatChoice):
    """The interchange formats, and parquet (the fleet's versioned table). The usage line
    lists the interchange table as `FormatChoice` does; the option's help names parquet
    (it is a table for engines, not a capture format another tool opens)."""

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return (*super().choices, "parquet")

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str | None:
        return FormatChoice().get_metavar(param, ctx)


def _partition(text: str | None) -> list[str]:
    from mpsdproxy.fleet import parquet

    return parquet.partition_keys(text) if text is not None else []


def export_parquet(paths: Sequence[str], output: str, partition: str | None,
                   memory_limit: str = "1GB") -> int:
    """Recordings (and their stored verdicts) to Parquet; BadInput (one line) on failure."""
    from mpsdproxy.fleet import FleetError
    from mpsdproxy.fleet import engine
    from mpsdproxy.fleet import parquet
    from mpsdproxy.fleet import sources

    try:
        keys = _partition(partition)
        safefiles.refuse_overwrite_of_inputs([output], list(paths))
        with engine.Fleet(sources.find(paths), memory_limit=memory_limit) as loaded:
            return parquet.export(loaded, output, keys)
    except FleetError as e:
        raise BadInput(str(e)) from None


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html"]), default="text",
              show_default=True, help="text for people, json for CI, html for one page with a "
                                      "trend chart.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of stdout (whole or not at all).")
@click.option("--group-by", metavar="TAG", default=None,
              help="Compare runs grouped by this tag (default: build when any run has one, "
                   "else date). A run without it is a group of its own, named by its file.")
@click.option("--sql", metavar="QUERY", default=None,
              help="Answer this one query (SELECT, WITH, EXPLAIN) over the views exchanges, "
                   "rta, verdicts and runs instead of the summary (see the README's fleet "
                   "section for their columns). Statements that write are refused.")
@click.option("--to-parquet", metavar="OUT", default=None,
              help="Also write the runs to Parquet: one file, or a folder with --partition.")
@click.option("--partition", metavar="TAGS", default=None,
              help="With --to-parquet: a Hive-partitioned folder by these tags, e.g. "
                   "build,date.")
@click.option("--judge", is_flag=True,
              help="First judge and store the verdicts of recordings that have none stored "
                   "(imported ones), as `mpsdproxy report` does: a Python pass over each.")
@click.option("--fail-on", type=click.Choice(["regression"]), default=None,
              help="Exit 1 when a verdict regressed between consecutive groups.")
@click.option("--memory-limit", default="1GB", show_default=True, metavar="SIZE",
              help="DuckDB's memory limit; beyond it, it spills to a temporary folder.")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many of the worst consoles to list.")
def fleet(paths: tuple[str, ...], fmt: str, output: str | None, group_by: str | None,
          sql: str | None, to_parquet: str | None, partition: str | None, judge: bool,
          fail_on: str | None, memory_limit: str, top: int) -> None:
    """Summarise many recordings at once (files, folders, globs; or a Parquet export):
    per run exchanges, status rows, anomalies, verdict outcomes, coverage, and p50/p99
    latency per operation; across runs the trend by build (a tag, `run --tag build=N`)
    or date, the verdicts and rows that changed, and the worst consoles. Verdicts are
    the ones stored beside each recording, never judged again.

    Exit 0, 1 with --fail-on regression when one regressed, 2 for a bad file, a bad
    query or a bad option (one line).

    \b
    Examples:
      mpsdproxy fleet nightly/ --format html -o nightly.html
      mpsdproxy fleet 'nightly/**/*.jsonl' --group-by build --fail-on regression
      mpsdproxy fleet nightly/ --sql "SELECT e.operation, v.rule, count(*) FROM verdicts v
          JOIN exchanges e ON e.run = v.run AND e.seq = v.trigger
          WHERE v.status = 'fail' GROUP BY ALL"
      mpsdproxy fleet nightly/ --to-parquet archive/ --partition build,date
    """
    from mpsdproxy.fleet import FleetError
    from mpsdproxy.fleet import engine
    from mpsdproxy.fleet import parquet
    from mpsdproxy.fleet import render
    from mpsdproxy.fleet import sources
    from mpsdproxy.fleet import summary

    if partition is not None and to_parquet is None:
        raise click.BadParameter("needs --to-parquet", param_hint="--partition")
    try:
        keys = _partition(partition)
        found_files = sources.find(paths)
        # A folder or glob stands for the files found in it: none of them is written over.
        safefiles.refuse_overwrite_of_inputs(
            [output, to_parquet], [*paths, *found_files.recordings, *found_files.sidecars,
                                   *found_files.parquet])
        if judge:
            found_files = _judge(found_files)
        with engine.Fleet(found_files, memory_limit=memory_limit) as loaded:
            if to_parquet:
                written = parquet.export(loaded, to_parquet, keys)
                click.echo(f"Wrote {written:,} rows to {to_parquet}", err=True)
            if sql is not None:
                text = render.render_rows(*loaded.query(sql), "json" if fmt == "json" else "text")
                found = None
            else:
                found = summary.summarize(loaded, group_by, top)
                text = render.render(found, fmt)
    except FleetError as e:
        raise BadInput(str(e)) from None
    emit(text, output, f"the {fmt} fleet summary")
    regressed = found is not None and bool(found["regressions"])
    sys.exit(1 if fail_on == "regression" and regressed else 0)


def _judge(found: Any) -> Any:
    """Store the verdicts of every recording without a sidecar; the sources, found anew."""
    from mpsdproxy.fleet import sources
    from mpsdproxy.fleet import stored
    from mpsdproxy.recording import verdictfile

    missing = [p for p in found.recordings if verdictfile.sidecar_of(p) not in found.sidecars]
    for path in missing:
        try:
            built, pending = stored.report_storing(path)
        except (OSError, ValueError) as e:
            raise BadInput(about(path, e)) from None
        if built.exchanges:
            pending.publish()
        else:
            pending.discard()
    return sources.find(found.recordings + found.parquet) if missing else found


