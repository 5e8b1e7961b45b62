"""Send the suite's calls to a target, in order, and judge each answer's shape.

The calls go one by one, in the order of `CALLS`, because later calls need what
earlier ones built (a session before its read, a handle id before its delete). A
call whose template names a value no earlier answer gave is reported "not tried",
never silently skipped. Every answer's ETag is kept as `{etag}` for the next call
(a synchronized write sends the ETag it just read).

The suite sends more calls than one caller's burst allows (30 per 15 s on the session
directory, fewer for search handles; protocol notes §5.1), as a title would not. A 429
is therefore no verdict: the runner waits its Retry-After (as the library's retry does,
at most `MAX_WAIT_S`) and sends the call once more, and notes the wait.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from urllib.parse import urlsplit

from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy.conformance.spec import Call
from mpsdproxy.conformance.spec import Missing
from mpsdproxy.conformance.spec import Setup
from mpsdproxy.conformance.spec import check_field
from mpsdproxy.conformance.spec import fill
from mpsdproxy.conformance.spec import lookup

AS_THE_SERVICE = "as the service"
DIFFERS = "differs"
NOT_TRIED = "not tried"
MAX_WAIT_S = 60.0
THROTTLED = 429


class ConformanceError(ValueError):
    """Bad input: a target that is not an http(s) URL, or one that does not answer."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)


# method, path (with query), headers, body -> the answer
Transport = Callable[[str, str, list[tuple[str, str]], bytes | None], Answer]


@dataclass
class CallResult:
    kind: str
    tests: tuple[str, ...]
    method: str
    path: str
    verdict: str
    status: int | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "tests": list(self.tests), "method": self.method,
                "path": self.path, "status": self.status, "verdict": self.verdict,
                "problems": self.problems, "notes": self.notes}


@dataclass
class Report:
    target: str
    results: list[CallResult]

    def count(self, verdict: str) -> int:
        return sum(1 for r in self.results if r.verdict == verdict)

    @property
    def tried(self) -> int:
        return len(self.results) - self.count(NOT_TRIED)

    @property
    def all_as_the_service(self) -> bool:
        return self.count(AS_THE_SERVICE) == len(self.results)

    def result(self, kind: str) -> CallResult:
        return next(r for r in self.results if r.kind == kind)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "calls": len(self.results), "tried": self.tried,
                "as_the_service": self.count(AS_THE_SERVICE),
                "differing": self.count(DIFFERS), "not_tried": self.count(NOT_TRIED),
                "results": [r.to_json() for r in self.results]}


def run_suite(transport: Transport, setup: Setup, calls: Sequence[Call],
              target: str = "", sleep: Callable[[float], None] | None = None) -> Report:
    """Every call in order; raises ConformanceError when the target does not answer.

    `sleep` waits out a 429's Retry-After (`time.sleep` unless given: tests pass one
    that advances a fake clock)."""
    values: dict[str, Any] = setup.values()
    wait = sleep or time.sleep
    return Report(target, [_run_one(call, transport, setup, values, wait) for call in calls])


def _run_one(call: Call, transport: Transport, setup: Setup,
             values: dict[str, Any], sleep: Callable[[float], None]) -> CallResult:
    try:
        path = fill(call.path, values)
        body = fill(call.body, values)
        extra = [(k, fill(v, values)) for k, v in call.headers]
        fields = [(p, fill(kind, values)) for p, kind in call.expect.fields]
    except Missing as e:
        return CallResult(call.kind, call.tests, call.method, call.path, NOT_TRIED,
                          problems=[f"needs {e.args[0]}, which no earlier answer gave"])
    payload = json.dumps(body).encode() if body is not None else None
    headers = _headers(call, setup, extra, payload)
    answer = transport(call.method, path, headers, payload)
    notes = []
    if answer.status == THROTTLED:
        wait = _retry_after(answer)
        notes.append(f"429: waited {wait:g} s (Retry-After) and sent it again")
        sleep(wait)
        answer = transport(call.method, path, headers, payload)
    result = CallResult(call.kind, call.tests, call.method, path, AS_THE_SERVICE, answer.status,
                        notes=notes)
    document = _json(answer.body)
    etag = answer.header("ETag")
    if etag:
        values["etag"] = etag
    _save(call, answer, document, values)
    result.problems = _judge(call, fields, answer, document)
    if result.problems:
        result.verdict = DIFFERS
    return result


def _headers(call: Call, setup: Setup, extra: list[tuple[str, str]],
             payload: bytes | None) -> list[tuple[str, str]]:
    """What the library sends on every call (http_call.cpp: auth, contract, signature)."""
    user = setup.user_hash(call.who)
    headers = [("Authorization", f"XBL3.0 x={user};conformance-{call.who}"),
               ("x-xbl-contract-version", call.contract),
               ("Signature", "AAAAAQHconformanceSignature"),
               ("Accept-Language", "en-US"),
               ("User-Agent", "mpsdproxy-conformance")]
    if payload is not None:
        headers.append(("Content-Type", "application/json; charset=utf-8"))
    return headers + extra


def _retry_after(answer: Answer) -> float:
    """The 429's Retry-After in seconds (one burst window, 15 s, when it gives none)."""
    try:
        wait = float(answer.header("Retry-After") or 15)
    except ValueError:
        wait = 15.0
    return min(max(wait, 0.0), MAX_WAIT_S)


def _json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _save(call: Call, answer: Answer, document: Any, values: dict[str, Any]) -> None:
    for name, source in call.saves:
        where, _, what = source.partition(":")
        if where == "header":
            value = answer.header(what)
        else:
            try:
                value = lookup(document, what)[0][1]
            except ValueError:
                value = None
            value = value if isinstance(value, str | int) else None
        if value is not None:
            values[name] = value


def _judge(call: Call, fields: list[tuple[str, str]], answer: Answer,
           document: Any) -> list[str]:
    expect = call.expect
    if answer.status not in expect.status:
        wanted = " or ".join(str(s) for s in expect.status)
        excerpt = answer.body[:160].decode("utf-8", "replace")
        return [f"status: expected {wanted}, got {answer.status}"
                + (f" ({excerpt})" if excerpt else "")]
    problems = [f"header {name}: missing" for name in expect.headers if not answer.header(name)]
    if fields and document is None:
        return problems + ["body: expected a JSON document, got none"]
    for path, kind in fields:
        problems.extend(check_field(document, path, kind, expect.may_be_empty))
    return problems


def http_transport(target: str, timeout: float = 10.0) -> Transport:
    """Send to `target` (http(s)://host[:port][/prefix]) over HTTP; ConformanceError when
    the URL is not one, or when nothing answers there."""
    split = urlsplit(target)
    if split.scheme not in ("http", "https") or not split.netloc:
        raise ConformanceError(f"{target}: not an http:// or https:// URL")
    base = target.rstrip("/")
    opener = urllib.request.build_opener(_NoRedirect())

    def send(method: str, path: str, headers: list[tuple[str, str]],
             body: bytes | None) -> Answer:
        request = urllib.request.Request(base + path, data=body, method=method,
                                         headers=dict(headers))
        try:
            with opener.open(request, timeout=timeout) as response:
                return Answer(response.status, tuple(response.headers.items()),
                              response.read(model.MAX_HELD_BODY))
        except urllib.error.HTTPError as e:
            return Answer(e.code, tuple(e.headers.items()), e.read(model.MAX_HELD_BODY))
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ConformanceError(f"{target}: no answer ({reason})") from None

    return send


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer to judge, not a place to go."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def render(report: Report, fmt: str = "text") -> str:
    """The report as text (one line per call, its differences under it) or JSON."""
    if fmt == "json":
        return jsonbody.document(report.to_json(), ensure_ascii=True).rstrip("\n")
    lines = [f"Conformance of {report.target or 'the target'} with the client library's "
             f"calls ({len(report.results)} call kinds):"]
    for r in report.results:
        status = "" if r.status is None else f" -> {r.status}"
        lines.append(f"  {r.verdict:<15} {r.kind:<30} {r.method} {r.path}{status}")
        lines.extend(f"      {problem}" for problem in r.problems)
        lines.extend(f"      ({note})" for note in r.notes)
    lines.append(f"{report.tried} tried: {report.count(AS_THE_SERVICE)} as the service, "
                 f"{report.count(DIFFERS)} differing, {report.count(NOT_TRIED)} not tried")
    return model.terminal_safe("\n".join(lines), lines=True)  # the target's own words
