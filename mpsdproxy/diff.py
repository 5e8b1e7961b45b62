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
import fnmatch
import itertools
import json
import re
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mpsdproxy import classify
from mpsdproxy import recording
from mpsdproxy import resources
from mpsdproxy.resources import Kind

__all__ = [
    "DEFAULT_IGNORES",
    "MISSING",
    "FieldChange",
    "Exchange",
    "PairDiff",
    "DiffResult",
    "diff",
    "diff_records",
    "compare",
    "exit_code",
    "ignored",
]

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
)


class _Missing:
    """A field one side has and the other has not."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

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
class Exchange:
    """What the diff needs of one record, with identities already normalised."""

    seq: int
    method: str
    url: str
    label: str
    key: tuple[str, ...]
    status: int | None
    classification: str | None
    anomalies: tuple[classify.Anomaly, ...]
    request_body: Any
    response_body: Any
    response_headers: dict[str, str]

    def summary(self, side: str) -> dict[str, Any]:
        return {"side": side, "seq": self.seq, "method": self.method, "url": self.url,
                "resource": self.label, "status": self.status}


@dataclass(frozen=True)
class PairDiff:
    old: Exchange
    new: Exchange
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


@dataclass(frozen=True)
class DiffResult:
    old_path: str
    new_path: str
    ignore: tuple[str, ...]
    ignore_timestamps: bool
    pairs: int
    changes: tuple[PairDiff, ...]
    unpaired_old: tuple[Exchange, ...]
    unpaired_new: tuple[Exchange, ...]
    issues: tuple[recording.ReadIssue, ...] = field(default=())

    @property
    def regressed(self) -> bool:
        return bool(self.changes or self.unpaired_old or self.unpaired_new)

    def to_dict(self) -> dict[str, Any]:
        unpaired = [e.summary("old") for e in self.unpaired_old]
        unpaired += [e.summary("new") for e in self.unpaired_new]
        return {
            "version": 1,
            "old": self.old_path,
            "new": self.new_path,
            "regressed": self.regressed,
            "ignore": list(self.ignore),
            "ignore_timestamps": self.ignore_timestamps,
            "summary": {
                "pairs": self.pairs,
                "changed": len(self.changes),
                "unpaired_old": len(self.unpaired_old),
                "unpaired_new": len(self.unpaired_new),
            },
            "changes": [c.to_dict() for c in self.changes],
            "unpaired": unpaired,
            "issues": [{"file": i.path, "line": i.line, "problem": i.problem}
                       for i in self.issues],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def to_text(self) -> str:
        return "\n".join(_text_lines(self)) + "\n"


def exit_code(result: DiffResult) -> int:
    """The CLI's exit status: 0 when nothing regressed, 1 otherwise (CI gates on it)."""
    return 1 if result.regressed else 0


# --- identities: session names, handle ids, ticket ids -----------------------------------

class _Identities:
    """Per recording: the order in which it first named each session, handle and ticket.

    Placeholders make two runs comparable although the service (or `resend
    --rename`) gave their sessions and handles different names.
    """

    def __init__(self) -> None:
        self._known: dict[str, dict[str, str]] = {"session": {}, "handle": {}, "ticket": {}}
        self._pattern: re.Pattern[str] | None = None
        self._replacement: dict[str, str] = {}

    def add(self, kind: str, value: Any) -> None:
        if not isinstance(value, str) or not value.strip():
            return
        table = self._known[kind]
        low = value.lower()
        if low not in table:
            table[low] = f"<{kind}:{len(table) + 1}>"
            self._pattern = None

    def placeholder(self, kind: str, value: str | None) -> str:
        if not value:
            return ""
        return self._known[kind].get(value.lower(), value)

    def normalise(self, value: Any) -> Any:
        """`value` with every known identity replaced by its placeholder."""
        if isinstance(value, str):
            return self._normalise_text(value)
        if isinstance(value, dict):
            return {k: self.normalise(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.normalise(v) for v in value]
        return value

    def _normalise_text(self, text: str) -> str:
        if self._pattern is None:
            self._compile()
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self._replacement[m.group(0).lower()], text)

    def _compile(self) -> None:
        self._replacement = {}
        for table in self._known.values():
            self._replacement.update(table)
        if not self._replacement:
            return
        names = sorted(self._replacement, key=len, reverse=True)
        alternatives = "|".join(re.escape(n) for n in names)
        self._pattern = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)


def _session_refs(value: Any) -> Iterator[str]:
    """Session names in `*sessionRef` objects of a JSON body (handles, tickets)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k.lower().endswith("sessionref") and isinstance(v, dict):
                name = v.get("name")
                if isinstance(name, str):
                    yield name
            yield from _session_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _session_refs(v)


def _observe(ids: _Identities, method: str, resource: resources.Resource,
             request_body: Any, response_body: Any) -> None:
    """Learn the identities a record names, in the order a reader meets them."""
    if resource.is_session_or_element:
        ids.add("session", resource.name)
    elif resource.kind in (Kind.HANDLE, Kind.HANDLE_SESSION):
        ids.add("handle", resource.element)
    elif resource.kind is Kind.TICKET:
        ids.add("ticket", resource.element)
    for name in _session_refs(request_body):
        ids.add("session", name)
    if isinstance(response_body, dict):
        if resource.kind is Kind.HANDLE and method == "POST":
            ids.add("handle", response_body.get("id"))
        if resource.kind is Kind.HOPPER and method == "POST":
            ids.add("ticket", response_body.get("ticketId"))


def _key(ids: _Identities, method: str, resource: resources.Resource) -> tuple[str, ...]:
    element = resource.element or ""
    if resource.kind in (Kind.HANDLE, Kind.HANDLE_SESSION):
        element = ids.placeholder("handle", element)
    elif resource.kind is Kind.TICKET:
        element = ids.placeholder("ticket", element)
    else:
        element = element.lower()
    session = ids.placeholder("session", resource.name) if resource.is_session_or_element else ""
    hopper = (resource.name or "").lower() if resource.kind in (Kind.HOPPER, Kind.TICKET) else ""
    return (method, resource.kind.value, (resource.template or "").lower(), session or hopper,
            element)


# --- records -> exchanges -------------------------------------------------------------------

_NO_BODY: Any = MISSING


def _body_value(body: dict[str, Any] | None) -> Any:
    """A recorded body as a comparable value: JSON as JSON, else its text."""
    if not body:
        return _NO_BODY
    if "json" in body:
        return body["json"]
    if "text" in body:
        text = str(body["text"])
        if text.lstrip()[:1] in ("{", "["):
            try:
                return json.loads(text)
            except ValueError:
                pass
        return text
    return "base64:" + str(body.get("base64"))


def _headers(pairs: Iterable[Sequence[str]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or ():
        try:
            name, value = pair
        except (TypeError, ValueError):
            continue
        low = str(name).lower()
        out[low] = f"{out[low]}, {value}" if low in out else str(value)
    return out


def _classification(record: dict[str, Any]) -> tuple[str | None, tuple[classify.Anomaly, ...]]:
    known = record.get("classification")
    if isinstance(known, dict) and "id" in known:
        anomalies = tuple(
            classify.Anomaly(str(a.get("code")), str(a.get("message", "")))
            for a in known.get("anomalies") or () if isinstance(a, dict)
        )
        return known.get("id"), anomalies
    request = record["request"]
    response = record.get("response")
    result = classify.classify(
        request["method"], request["url"], request.get("headers"),
        response["status"] if response else None,
        response.get("headers") if response else None,
        recording.decode_body(response.get("body")) if response else None,
    )
    return result.id, result.anomalies


def _exchange(ids: _Identities, record: dict[str, Any]) -> Exchange:
    request = record["request"]
    response = record.get("response") or None
    method = request["method"].upper()
    url = request["url"]
    resource = resources.parse(url)
    request_body = _body_value(request.get("body"))
    response_body = _body_value(response.get("body")) if response else _NO_BODY
    _observe(ids, method, resource, request_body, response_body)
    cls_id, anomalies = _classification(record)
    headers = _headers(response.get("headers")) if response else {}
    return Exchange(
        seq=record["seq"],
        method=method,
        url=url,
        label=resource.short if resource.kind is not Kind.UNKNOWN else url,
        key=_key(ids, method, resource),
        status=response["status"] if response else None,
        classification=cls_id,
        anomalies=anomalies,
        request_body=ids.normalise(request_body),
        response_body=ids.normalise(response_body),
        response_headers={k: ids.normalise(v) for k, v in headers.items()},
    )


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


def _new_anomalies(old: Exchange, new: Exchange) -> tuple[classify.Anomaly, ...]:
    before = collections.Counter(a.code for a in old.anomalies)
    fresh: list[classify.Anomaly] = []
    for anomaly in new.anomalies:
        if before[anomaly.code]:
            before[anomaly.code] -= 1
        else:
            fresh.append(anomaly)
    return tuple(fresh)


def compare(old: Exchange, new: Exchange, ignore: Sequence[str],
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


# --- pairing --------------------------------------------------------------------------------

class _Pairing:
    """FIFO queues of exchanges waiting for a partner, per pairing key and side."""

    def __init__(self) -> None:
        self.waiting: dict[str, dict[tuple[str, ...], collections.deque[Exchange]]] = {
            "old": collections.defaultdict(collections.deque),
            "new": collections.defaultdict(collections.deque),
        }

    def offer(self, side: str, exchange: Exchange) -> tuple[Exchange, Exchange] | None:
        other = "new" if side == "old" else "old"
        queue = self.waiting[other].get(exchange.key)
        if queue:
            partner = queue.popleft()
            if not queue:
                del self.waiting[other][exchange.key]
            return (exchange, partner) if side == "old" else (partner, exchange)
        self.waiting[side][exchange.key].append(exchange)
        return None

    def leftover(self, side: str) -> tuple[Exchange, ...]:
        rest = [e for queue in self.waiting[side].values() for e in queue]
        return tuple(sorted(rest, key=lambda e: e.seq))


def diff_records(
    old: Iterable[dict[str, Any]],
    new: Iterable[dict[str, Any]],
    ignore: Sequence[str] = DEFAULT_IGNORES,
    *,
    ignore_timestamps: bool = True,
    old_name: str = "old",
    new_name: str = "new",
    issues: Sequence[recording.ReadIssue] = (),
) -> DiffResult:
    """Diff two streams of records (see the module docstring for the rules)."""
    ignore = tuple(ignore)
    ids = {"old": _Identities(), "new": _Identities()}
    pairing = _Pairing()
    pairs = 0
    changes: list[PairDiff] = []
    streams = (zip(itertools.repeat("old"), old), zip(itertools.repeat("new"), new))
    for step in itertools.zip_longest(*streams):
        for item in step:
            if item is None:
                continue
            side, record = item
            matched = pairing.offer(side, _exchange(ids[side], record))
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
        issues=tuple(issues),
    )


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
    result = diff_records(
        recording.read(old_path, issues=issues),
        recording.read(new_path, issues=issues),
        ignore,
        ignore_timestamps=ignore_timestamps,
        old_name=str(old_path),
        new_name=str(new_path),
    )
    return dataclasses.replace(result, issues=tuple(issues))


# --- text rendering -------------------------------------------------------------------------

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


def _text_lines(result: DiffResult) -> Iterator[str]:
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
