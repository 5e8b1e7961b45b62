"""Comparing one pair of exchanges: which fields changed, volatile ones left out.

The rules (dotted paths, ignore globs, ISO 8601 times) are in the package
docstring.
"""

from __future__ import annotations

import collections
import fnmatch
import itertools
import re
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mpsdproxy import classify
from mpsdproxy.diff.side import MISSING
from mpsdproxy.diff.side import Side

__all__ = ["DEFAULT_IGNORES", "FieldChange", "PairDiff", "compare", "ignored"]

#: Fields that differ on every run of the same flow, ignored unless asked.
DEFAULT_IGNORES: tuple[str, ...] = (
    # session documents (protocol notes §3.1): per-run GUIDs and times
    "correlationId",
    "branch",
    "startTime",
    "joinTime",
    "nextTimer",
    "createTime",
    "stageStartTime",
    "timestamp",
    # per console and per RTA connection: another devkit, or a resend, gets its own
    "deviceToken",
    "system.connection",
    # response headers that are per response, or follow from the body
    "header:date",
    "header:etag",
    "header:x-xblcorrelationid",
    "header:x-xbl-debug",
    "header:content-length",
    "header:transfer-encoding",
    "header:connection",
    "header:keep-alive",
    "header:server",
    "header:sec-websocket-accept",  # follows from the handshake's random key
    # Fiddler's own counters on a websocket session it saved (SAZ), never the service's
    "header:endtime",
    "header:receivedbytes",
    "header:sentbytes",
)


_ISO_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$"
)


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any = MISSING
    new: Any = MISSING

    @property
    def change(self) -> str:
        if self.old is MISSING:
            return "added"
        if self.new is MISSING:
            return "removed"
        return "changed"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "change": self.change}
        if self.old is not MISSING:
            out["old"] = self.old
        if self.new is not MISSING:
            out["new"] = self.new
        return out


@dataclass(frozen=True)
class PairDiff:
    old: Side
    new: Side
    fields: tuple[FieldChange, ...] = ()
    new_anomalies: tuple[classify.Anomaly, ...] = ()

    @property
    def status_changed(self) -> bool:
        return self.old.status != self.new.status

    @property
    def classification_changed(self) -> bool:
        return self.old.classification != self.new.classification

    @property
    def changed(self) -> bool:
        return (self.status_changed or self.classification_changed
                or bool(self.new_anomalies) or bool(self.fields))

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_seq": self.old.seq,
            "new_seq": self.new.seq,
            "method": self.new.method,
            "url": self.new.url,
            "resource": self.new.label,
            "status": ({"old": self.old.status, "new": self.new.status}
                       if self.status_changed else None),
            "classification": (
                {"old": self.old.classification, "new": self.new.classification}
                if self.classification_changed else None),
            "new_anomalies": [a.to_dict() for a in self.new_anomalies],
            "fields": [f.to_dict() for f in self.fields],
        }


# --- comparing ------------------------------------------------------------------------------

def ignored(path: str, patterns: Iterable[str]) -> bool:
    """Whether an ignore pattern covers `path` (see the module docstring)."""
    bare = path.removeprefix("request:")
    parts = bare.split(".")
    runs = [path]
    runs += [".".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(run, p) for p in patterns for run in runs)


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    if prefix.endswith(":"):
        return prefix + key
    return f"{prefix}.{key}"


def _walk(old: Any, new: Any, path: str) -> Iterator[FieldChange]:
    """Every leaf that differs between two JSON values, as dotted paths."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            yield from _walk(old.get(k, MISSING), new.get(k, MISSING), _join(path, str(k)))
        return
    if isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            a = old[i] if i < len(old) else MISSING
            b = new[i] if i < len(new) else MISSING
            yield from _walk(a, b, _join(path, str(i)))
        return
    if old is MISSING and new is MISSING:
        return
    if type(old) is not type(new) or old != new:
        yield FieldChange(path, old, new)


def _root(prefix: str) -> str:
    return prefix + "(body)" if prefix else "(body)"


def _body_changes(old: Any, new: Any, prefix: str) -> Iterator[FieldChange]:
    if isinstance(old, dict | list) and isinstance(new, dict | list) \
            and type(old) is type(new):
        yield from _walk(old, new, prefix)
    elif type(old) is not type(new) or old != new:
        yield FieldChange(_root(prefix), old, new)


def _volatile_time(change: FieldChange) -> bool:
    return all(isinstance(v, str) and _ISO_TIME.match(v) for v in (change.old, change.new))


def _new_anomalies(old: Side, new: Side) -> tuple[classify.Anomaly, ...]:
    before = collections.Counter(a.code for a in old.anomalies)
    fresh: list[classify.Anomaly] = []
    for anomaly in new.anomalies:
        if before[anomaly.code]:
            before[anomaly.code] -= 1
        else:
            fresh.append(anomaly)
    return tuple(fresh)


def compare(old: Side, new: Side, ignore: Sequence[str],
            ignore_timestamps: bool = True) -> PairDiff:
    """How a paired exchange changed, volatile fields left out."""
    changes = itertools.chain(
        _body_changes(old.response_body, new.response_body, ""),
        _walk(old.response_headers, new.response_headers, "header:"),
        _body_changes(old.request_body, new.request_body, "request:"),
    )
    kept = tuple(
        c for c in changes
        if not ignored(c.path, ignore) and not (ignore_timestamps and _volatile_time(c))
    )
    return PairDiff(old, new, kept, _new_anomalies(old, new))
