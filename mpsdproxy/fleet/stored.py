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
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from collections.abc import Iterable

from mpsdproxy import recording
from mpsdproxy import verdicts
from mpsdproxy.recording import verdictfile
from mpsdproxy.report import build
from mpsdproxy.report.data import Report

__all__ = ["report_storing", "StoringBuilder", "Pending"]


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
    sink = None
    part = verdictfile.sidecar_of(path) + ".part"
    if limits is None and not verdictfile.has_sidecar(path):
        sink = verdictfile.VerdictFile(path, "report", part)
    builder = StoringBuilder(sink, limits, source=os.fspath(path))
    pending = Pending(builder, path, part)
    try:
        for count, (line, item) in enumerate(recording.numbered(path, messages=True), 1):
            if isinstance(item, recording.ReadIssue):
                builder.skip(item.line, item.problem)
            else:
                builder.add(item, line)
            if progress is not None:
                progress(count)
        built = builder.finish()
    except BaseException:
        pending.discard()
        raise
    if not built.exchanges:
        pending.discard()  # nothing was judged: no sidecar to say so
    return built, pending


class Pending:
    """A sidecar written to `<sidecar>.part`, renamed into place only by `publish`."""

    def __init__(self, builder: StoringBuilder, path: str, part: str) -> None:
        self.builder, self.path, self.part = builder, path, part

    def publish(self) -> str | None:
        """The sidecar's path once in place; None when there was none to write, or it
        could not be written (that costs the sidecar, never the report)."""
        sink = self.builder.sink
        if sink is None:
            return None
        try:
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
