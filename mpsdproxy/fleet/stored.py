"""`report` stores the verdicts it decides for a recording that has none stored.

A recording the proxy made has its verdicts in its sidecar already (the proxy
wrote them as it judged). An imported one, or one recorded with `--no-verdicts`,
has none: the first `report` on it judges it anyway, so it writes what it
decided beside it, and the fleet reads that instead of judging again.

The report keeps only the first verdicts of each rule for its pages; the sidecar
gets all of them, taken as the engine decides them (`ReportBuilder._keep` is
where every decided verdict passes). The sidecar is written to a temporary
file and renamed at the end, so a report that fails leaves none half-written.
A folder that cannot be written to costs the sidecar, never the report.

A sidecar `report` writes ends with a trailer (`trailer_for`), the line that
makes it *complete*: which bytes of the recording were judged (its size), under
which limits and rule set, that no line was skipped, and what each rule looked
at. A later `report` on the same, unchanged recording then takes its verdicts
from the sidecar and its aggregates from DuckDB (`fleet.reportdb`) instead of
judging every exchange again; anything else (no trailer, a recording that grew,
other limits, another rule set) takes the Python pass. A recording under
`ENGINE_MIN_BYTES` takes the Python pass too: starting DuckDB costs more than
reading a few thousand lines. `MPSDPROXY_REPORT_ENGINE=python` always takes the
Python pass (the benchmark's "today" column), `=duckdb` takes the engine whenever
the sidecar allows it, whatever the size. The fleet and `read_verdicts` skip
the trailer: it has no `rule`. A sidecar `report` wrote that no longer fits (the
recording grew, the rules changed) is written again by the next Python pass; the
proxy's sidecar is never rewritten.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from mpsdproxy import verdicts
from mpsdproxy.recording import verdictfile
from mpsdproxy.recording.writer import being_written
from mpsdproxy.report import build
from mpsdproxy.report.data import Report

__all__ = ["report_storing", "StoringBuilder", "Pending", "trailer", "trailer_for",
           "complete_trailer", "trailer_fits", "ENGINE_ENV", "ENGINE_MIN_BYTES"]

#: Set to `python` to make `report` take the Python pass even over a complete sidecar.
ENGINE_ENV = "MPSDPROXY_REPORT_ENGINE"
#: Below this size a recording is read faster by the Python pass than by DuckDB.
ENGINE_MIN_BYTES = 8 * 1024 * 1024
#: How far from the end of a sidecar its trailer is looked for.
TRAILER_BYTES = 1 << 20


class StoringBuilder(build.ReportBuilder):
    """A ReportBuilder that also hands every verdict it is given to a sidecar."""

    def __init__(self, sink: verdictfile.VerdictFile | None, *args: object,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sink = sink

    def _keep(self, decided: Iterable[verdicts.Verdict]) -> None:
        decided = list(decided)
        if self.sink is not None:
            try:
                for verdict in decided:
                    self.sink.write(verdict.to_dict())
            except OSError:  # an unwritable folder costs the sidecar, not the report
                self.sink.close()
                with contextlib.suppress(OSError):
                    os.unlink(self.sink.path)
                self.sink = None
        super()._keep(decided)


def report_storing(path: str, limits: verdicts.Limits | None = None,
                   progress: Callable[[int], None] | None = None) -> tuple[Report, Pending]:
    """`build.build_report`, collecting the verdicts when the recording has none stored and
    the limits are the defaults (verdicts under other limits answer another question).
    Returns the report and the pending sidecar: `publish()` it once the report is known
    to be of a recording (the caller's checks), `discard()` it otherwise."""
    fast = _fast_report(path, limits)
    if fast is not None:
        return fast, Pending(StoringBuilder(None), path, "")
    sink = None
    part = verdictfile.sidecar_of(path) + ".part"
    # A recording a proxy is still writing gets its sidecar from that proxy: one written
    # now would judge part of the run, and the proxy's verdicts would be appended to it.
    if limits is None and not being_written(path) \
            and (not verdictfile.has_sidecar(path) or _stale_own(path)):
        sink = verdictfile.VerdictFile(path, "report", part)
    builder = StoringBuilder(sink, limits, source=os.fspath(path))
    pending = Pending(builder, path, part, _size(path))
    try:
        built = build.read_into(builder, path, progress)
    except BaseException:
        pending.discard()
        raise
    if not built.exchanges:
        pending.discard()  # nothing was judged: no sidecar to say so
    return built, pending


def _stale_own(path: str) -> bool:
    """Whether the sidecar is one `report` wrote (never the proxy's) and it no longer
    fits the recording (it grew, the rules changed, or it predates trailers): then the
    Python pass writes it again, and the fleet reads verdicts of the recording as it is."""
    try:
        with open(verdictfile.sidecar_of(path), "rb") as f:
            header = json.loads(f.readline())
    except (OSError, ValueError):
        return False
    if not isinstance(header, dict) or header.get("source") != "report":
        return False
    found = _last_line(path)
    if found is None:
        return True
    size = _size(path)
    # skipped lines make a sidecar incomplete for the engine, not stale: same file, same verdicts
    return size is None or not trailer_fits(dict(found, skipped_lines=0), size)


def _size(path: str | os.PathLike[str]) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _fast_report(path: str, limits: verdicts.Limits | None) -> Report | None:
    """The report from the complete sidecar and DuckDB, or None for the Python pass."""
    choice = os.environ.get(ENGINE_ENV, "").lower()
    if limits is not None or choice == "python":
        return None
    if choice != "duckdb" and (_size(path) or 0) < ENGINE_MIN_BYTES:
        return None
    trailer = complete_trailer(path)
    if trailer is None:
        return None
    from mpsdproxy.fleet import reportdb

    try:
        return reportdb.build_report_db(path, trailer)
    except reportdb.Unsupported:
        return None


def trailer_for(builder: build.ReportBuilder, recording_bytes: int) -> dict[str, Any]:
    """The line that ends a complete sidecar (see the module docstring)."""
    return trailer(builder.engine, builder.limits, recording_bytes=recording_bytes,
                   exchanges=builder.exchanges, skipped_lines=builder.skipped_total)


def trailer(engine: verdicts.Engine, limits: verdicts.Limits, *, recording_bytes: int,
            exchanges: int, skipped_lines: int = 0) -> dict[str, Any]:
    """The trailer for any writer of a sidecar that judged the whole recording with
    `engine` (a proxy at shutdown, once its recording is closed, could end its sidecar
    with it too): what each rule looked at, under which limits and rules, over which
    bytes of the recording."""
    return {"format": verdictfile.FORMAT, "complete": True,
            "recording_bytes": recording_bytes, "exchanges": exchanges,
            "skipped_lines": skipped_lines, "limits": limits.source,
            "rules": [r.id for r in verdicts.RULES],
            "looked_at": {r.id: engine.looked_at(r.id).to_dict()
                          for r in verdicts.RULES if r.id in engine.looked}}


def complete_trailer(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The trailer of the recording's sidecar when it says the sidecar is complete for
    the recording as it is now (same size, no skipped line, default limits, the rules
    of this version); None otherwise."""
    found = _last_line(path)
    size = _size(path)
    if found is None or size is None or not trailer_fits(found, size):
        return None
    return found


def _last_line(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last line of the recording's sidecar as a dict, None without one."""
    try:
        with open(verdictfile.sidecar_of(path), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TRAILER_BYTES))
            last = json.loads(f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1])
    except (OSError, ValueError):
        return None
    return last if isinstance(last, dict) else None


def trailer_fits(trailer: Mapping[str, Any], size: int) -> bool:
    return (trailer.get("format") == verdictfile.FORMAT and trailer.get("complete") is True
            and trailer.get("recording_bytes") == size and trailer.get("skipped_lines") == 0
            and trailer.get("limits") == verdicts.default_limits().source
            and trailer.get("rules") == [r.id for r in verdicts.RULES]
            and isinstance(trailer.get("looked_at"), dict))


class Pending:
    """A sidecar written to `<sidecar>.part`, renamed into place only by `publish`."""

    def __init__(self, builder: StoringBuilder, path: str, part: str,
                 size: int | None = None) -> None:
        self.builder, self.path, self.part = builder, path, part
        self.size = size  # the recording's size when the pass began

    def publish(self) -> str | None:
        """The sidecar's path once in place; None when there was none to write, or it
        could not be written (that costs the sidecar, never the report)."""
        sink = self.builder.sink
        if sink is None:
            return None
        try:
            if self.size is not None and self.size == _size(self.path):
                sink.write(trailer_for(self.builder, self.size))  # complete: it is all
            sink.close()
            if sink.count:
                os.replace(self.part, verdictfile.sidecar_of(self.path))
                self.builder.sink = None
                return verdictfile.sidecar_of(self.path)
        except OSError:
            pass
        self.discard()
        return None

    def discard(self) -> None:
        sink = self.builder.sink
        if sink is not None:
            sink.close()
            with contextlib.suppress(OSError):
                os.unlink(self.part)
            self.builder.sink = None
