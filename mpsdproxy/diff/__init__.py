"""Compare two recordings exchange by exchange: what answers differently now?

Regression capture (issue 4): the same title flow recorded against build N and
build N+1, or a recording and its `resend` against the stand-in, paired up
and compared so CI can gate on the difference.

Pairing
-------
Both recordings are streamed side by side. Every exchange gets a pairing key::

    (METHOD, resource kind, template, session ordinal, element)

where the *session ordinal* is the position of the session name in the order
that recording first mentioned it (so `lobby-1` in one run pairs with
`3F2A...` in the other when both were the first session), and the element is
the session element (`members/me`, `servers/host`, `properties`), or the
ordinal of a handle or ticket id (the service hands out fresh ids every run).
Within one key, exchanges pair by position: the n-th `PUT sessions/<1st>` of
the old recording with the n-th one of the new. What is left over on either
side is *unpaired*. Memory holds only exchanges still waiting for a partner.

Session names, handle ids and ticket ids are also replaced by placeholders
(`<session:1>`, `<handle:2>`, `<ticket:1>`) inside every compared value, so a
renamed session or a fresh handle id is not a change.

Comparing a pair
----------------
- status (None when there was no response),
- classification id (the recorded one; computed when a record has none),
- new anomalies: anomaly codes the new exchange has and the old one had not,
- changed fields: the response body as a dotted JSON path
  (`members.0.properties.system.active`), the response headers as
  `header:<lower-case name>`, and the request body as `request:<path>`. A
  body that is not JSON compares whole, as `(body)` / `request:(body)`.

Volatile fields are ignored: DEFAULT_IGNORES, plus any two values that are
both ISO 8601 date-times (session start, join, timer and create times change
every run) unless `ignore_timestamps` is off. `changeNumber` *is* compared: it
counts the writes a session saw, so an extra or missing write shows up there;
ignore it with `--ignore changeNumber` when comparing runs that legitimately
differ in writes.

An ignore pattern is an `fnmatch` glob (case-sensitive, `*` also crosses dots).
It matches a path when it matches the whole path or any run of whole segments
in it: `correlationId` ignores that key at any depth and everything under it,
`members.*.joinTime` every member's join time, `header:*` all headers,
`request:*` all request fields.

`regressed` is true when any pair changed status, classification, gained an
anomaly or a field, or when any exchange is unpaired. Lines of either file
that cannot be read are reported in `issues` (they do not by themselves make
a regression; the exchange they held shows up as unpaired on the other side).

JSON output (`DiffResult.to_dict`, stable; fields may be added)::

    {"version": 1, "old": "OLD.jsonl", "new": "NEW.jsonl", "regressed": true,
     "ignore": ["correlationId", ...], "ignore_timestamps": true,
     "summary": {"pairs": 12, "changed": 1, "unpaired_old": 0, "unpaired_new": 1},
     "changes": [{"old_seq": 3, "new_seq": 3, "method": "PUT",
                  "url": "https://...", "resource": "sessions/lobby-1",
                  "status": {"old": 200, "new": 412} | null,
                  "classification": {"old": "200.ok", "new": "412.if-match-session"} | null,
                  "new_anomalies": [{"code": "...", "message": "..."}],
                  "fields": [{"path": "members.0.properties.system.active",
                              "change": "changed" | "added" | "removed",
                              "old": true, "new": false}]}],
     "unpaired": [{"side": "old" | "new", "seq": 9, "method": "DELETE",
                   "url": "https://...", "resource": "sessions/lobby-1/members/me",
                   "status": 204}],
     "issues": [{"file": "NEW.jsonl", "line": 14, "problem": "..."}]}

A removed field has no "new" key, an added one no "old" key. Values are shown
as compared: session names, handle and ticket ids replaced by placeholders.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from mpsdproxy import recording
from mpsdproxy.diff.compare import DEFAULT_IGNORES
from mpsdproxy.diff.compare import FieldChange
from mpsdproxy.diff.compare import PairDiff
from mpsdproxy.diff.compare import compare
from mpsdproxy.diff.compare import ignored
from mpsdproxy.diff.result import DiffResult
from mpsdproxy.diff.result import exit_code
from mpsdproxy.diff.side import MISSING
from mpsdproxy.diff.side import Identities
from mpsdproxy.diff.side import Side
from mpsdproxy.diff.side import side_of
from mpsdproxy.diff.text import render_text

__all__ = [
    "render_text",
    "DEFAULT_IGNORES",
    "MISSING",
    "FieldChange",
    "Side",
    "PairDiff",
    "DiffResult",
    "diff",
    "diff_records",
    "compare",
    "exit_code",
    "ignored",
]


class _Pairing:
    """FIFO queues of exchanges waiting for a partner, per pairing key and side."""

    def __init__(self) -> None:
        self.waiting: dict[str, dict[tuple[str, ...], collections.deque[Side]]] = {
            "old": collections.defaultdict(collections.deque),
            "new": collections.defaultdict(collections.deque),
        }

    def offer(self, side: str, exchange: Side) -> tuple[Side, Side] | None:
        other = "new" if side == "old" else "old"
        queue = self.waiting[other].get(exchange.key)
        if queue:
            partner = queue.popleft()
            if not queue:
                del self.waiting[other][exchange.key]
            return (exchange, partner) if side == "old" else (partner, exchange)
        self.waiting[side][exchange.key].append(exchange)
        return None

    def leftover(self, side: str) -> tuple[Side, ...]:
        rest = [e for queue in self.waiting[side].values() for e in queue]
        return tuple(sorted(rest, key=lambda e: e.seq))


def diff_records(
    old: Iterable[Mapping[str, Any]],
    new: Iterable[Mapping[str, Any]],
    ignore: Sequence[str] = DEFAULT_IGNORES,
    *,
    ignore_timestamps: bool = True,
    old_name: str = "old",
    new_name: str = "new",
    issues: Sequence[recording.ReadIssue] = (),
) -> DiffResult:
    """Diff two streams of records (see the module docstring for the rules). A record
    that cannot be used is an issue named by its position in its stream."""
    found = list(issues)
    result = _diff(enumerate(old, start=1), enumerate(new, start=1), tuple(ignore),
                   ignore_timestamps, old_name, new_name, found)
    return dataclasses.replace(result, issues=tuple(found))


def diff(
    old_path: str,
    new_path: str,
    ignore: Sequence[str] = DEFAULT_IGNORES,
    *,
    ignore_timestamps: bool = True,
) -> DiffResult:
    """Diff two recording files, streaming both; unreadable lines land in `issues`.

    `ignore` replaces the default ignore list; pass
    `(*DEFAULT_IGNORES, *extra)` to add to it (as the CLI's `--ignore` does).
    """
    issues: list[recording.ReadIssue] = []
    result = _diff(_records(old_path, issues), _records(new_path, issues), tuple(ignore),
                   ignore_timestamps, str(old_path), str(new_path), issues)
    return dataclasses.replace(result, issues=tuple(issues))


def _records(path: str | os.PathLike[str], issues: list[recording.ReadIssue]
             ) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(line, record) of a recording; unreadable lines go to `issues`."""
    for line, item in recording.numbered(path):
        if isinstance(item, recording.ReadIssue):
            issues.append(item)
        else:
            yield line, item


def _diff(old: Iterable[tuple[int, Mapping[str, Any]]],
          new: Iterable[tuple[int, Mapping[str, Any]]], ignore: tuple[str, ...],
          ignore_timestamps: bool, old_name: str, new_name: str,
          issues: list[recording.ReadIssue]) -> DiffResult:
    """Pair and compare two streams of (line, record); a record no wire could carry
    is added to `issues` with its file and line."""
    ids = {"old": Identities(), "new": Identities()}
    names = {"old": old_name, "new": new_name}
    pairing = _Pairing()
    pairs = 0
    changes: list[PairDiff] = []
    streams = (zip(itertools.repeat("old"), old), zip(itertools.repeat("new"), new))
    for step in itertools.zip_longest(*streams):
        for item in step:
            if item is None:
                continue
            side, (line, record) = item
            problem = recording.check_outline(dict(record))
            if problem is None:
                try:
                    exchange = side_of(ids[side], record)
                except ValueError as e:  # model.ModelError is a ValueError
                    problem = f"record {record.get('seq')}: {e}"
            if problem is not None:
                issues.append(recording.ReadIssue(names[side], line, problem))
                continue
            matched = pairing.offer(side, exchange)
            if matched is None:
                continue
            pairs += 1
            result = compare(*matched, ignore, ignore_timestamps)
            if result.changed:
                changes.append(result)
    changes.sort(key=lambda c: (c.old.seq, c.new.seq))
    return DiffResult(
        old_path=old_name, new_path=new_name, ignore=ignore,
        ignore_timestamps=ignore_timestamps, pairs=pairs, changes=tuple(changes),
        unpaired_old=pairing.leftover("old"), unpaired_new=pairing.leftover("new"),
    )
