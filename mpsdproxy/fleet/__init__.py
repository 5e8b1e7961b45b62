"""The fleet: many recordings, one query engine (DuckDB), read in place.

- `sources`: which files PATH arguments name (files, folders, globs; recordings,
  their verdict sidecars, Parquet exports);
- `engine`: DuckDB loaded with them, and the documented views (`exchanges`, `rta`,
  `verdicts`, `runs`) that `--sql` queries;
- `summary`: per run, across runs, and what changed between groups (builds, dates);
- `render`: text, JSON, and an HTML page with an SVG trend chart;
- `parquet`: the versioned Parquet export, one file or a Hive-partitioned folder;
- `stored`: `report` storing the verdicts of a recording that has none, with the trailer
  that makes them complete, and choosing the Python pass or `reportdb`;
- `reportdb`: one recording's report from DuckDB's aggregates and its complete stored
  verdicts (the fast `report`: the same report, without judging again).

DuckDB is imported only in this package.
"""

from mpsdproxy.fleet.sources import FleetError

__all__ = ["FleetError"]
