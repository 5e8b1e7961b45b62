"""A diff as text for people: each changed pair, what only one side has, unreadable lines.

Values from the recordings (URLs, header values) may hold bytes that were not
UTF-8: the text goes through `model.printable`, so it prints anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any

from mpsdproxy import model
from mpsdproxy.diff.side import MISSING

if TYPE_CHECKING:
    from mpsdproxy.diff.compare import PairDiff
    from mpsdproxy.diff.result import DiffResult

__all__ = ["render_text"]


def _show(value: Any, limit: int = 80) -> str:
    if value is MISSING:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pair_lines(change: PairDiff) -> Iterator[str]:
    yield f"#{change.old.seq} -> #{change.new.seq}  {change.new.method} {change.new.label}"
    if change.status_changed:
        yield f"  status: {change.old.status} -> {change.new.status}"
    if change.classification_changed:
        yield f"  classification: {change.old.classification} -> {change.new.classification}"
    for anomaly in change.new_anomalies:
        yield f"  new anomaly {anomaly.code}: {anomaly.message}"
    for f in change.fields:
        yield f"  {f.change} {f.path}: {_show(f.old)} -> {_show(f.new)}"


def _lines(result: DiffResult) -> Iterator[str]:
    yield f"diff {result.old_path} -> {result.new_path}"
    for change in result.changes:
        yield ""
        yield from _pair_lines(change)
    for side, rest in (("old", result.unpaired_old), ("new", result.unpaired_new)):
        if rest:
            yield ""
            yield f"only in {side} ({len(rest)}):"
            for e in rest:
                yield f"  #{e.seq} {e.method} {e.label} -> {e.status}"
    if result.issues:
        yield ""
        yield f"unreadable lines ({len(result.issues)}):"
        for issue in result.issues:
            yield f"  {issue}"
    yield ""
    verdict = "REGRESSED" if result.regressed else "no regressions"
    yield (f"{result.pairs} pairs, {len(result.changes)} changed, "
           f"{len(result.unpaired_old)} only in old, {len(result.unpaired_new)} only in new: "
           f"{verdict}")


def render_text(result: DiffResult) -> str:
    return model.terminal_safe("\n".join(_lines(result)) + "\n", lines=True)
