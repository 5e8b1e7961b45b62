"""Re-issue a recording's requests against a stand-in or test service, and record the answers.

The real service rejects re-sent requests (they are signed with a timestamp,
protocol notes §2.3), so `resend` targets the local stand-in or any test
service that accepts them. Its output is an ordinary recording, ready for
`diff` against the original.

What is sent, request by request, in recorded order:

- the recorded method, path and query, appended to the target URL's path;
- the recorded headers, except hop-by-hop ones and Content-Length (recomputed);
  Host names the target (so TLS front ends route it) unless `keep_host`;
- a redacted `Authorization` (`redacted:<hash>`) cannot be re-sent: a stand-in
  token `XBL3.0 x=<hash>;resent` goes instead, so distinct users stay distinct
  users to the stand-in (the new recording keeps the redacted value, so a
  user keeps one identity however often a recording is re-sent). Other
  redacted headers (Signature, Cookie) are left out: their values are gone
  and a stand-in value could not be valid anyway;
- the recorded body, re-encoded with its Content-Encoding if it had one.

Some values in a recording belong to the run that made it, and are carried
over as the target hands out its own:

- ETags: `If-Match`/`If-None-Match` values the original run got from the
  service are replaced by the ETag the target gave for the same answer, so a
  conditional write means the same thing and no 412 appears that the original
  never had (`*` is kept);
- handle and ticket ids: the id in a POST /handles (or hopper POST) answer of
  the original is mapped to the id the target returned, in later paths and in
  JSON bodies.

With `rename`, each distinct session name (compared case-insensitively, as the
service does) gets one fresh unique name, used consistently in paths and in
every `*sessionRef.name` of JSON bodies, so runs do not collide on a shared
service. A GUID name gets a fresh GUID; any other name gets an 8-hex suffix.

Each answer is written (redacted, classified) with provenance
`{"source": "resent", "record": <original seq>}`. Requests go one at a time
over one kept-alive connection; a send that fails on a reused connection
(the server closed it while idle) is retried once on a fresh one.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import ssl
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from urllib.parse import quote
from urllib.parse import unquote
from urllib.parse import urlsplit

from mitmproxy.net import encoding

from mpsdproxy import classify
from mpsdproxy import recording
from mpsdproxy import resources
from mpsdproxy.interchange import wire_body
from mpsdproxy.resources import Kind

__all__ = [
    "Target",
    "parse_target",
    "stand_in_authorization",
    "Renamer",
    "ResentExchange",
    "ResendResult",
    "resend",
    "HOP_BY_HOP",
]

logger = logging.getLogger(__name__)

#: Headers that describe one connection, not the request: never copied.
HOP_BY_HOP: frozenset[str] = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "content-length", "host",
})

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


@dataclass(frozen=True)
class Target:
    """Where requests go: `http(s)://host[:port][/base-path]`."""

    scheme: str
    host: str
    port: int
    base_path: str = ""

    @property
    def netloc(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.netloc}{self.base_path}{path}"


def parse_target(url: str) -> Target:
    """`http://127.0.0.1:8081` -> Target; ValueError when it is not an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected http(s)://host[:port][/path], not {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"the target takes no query or fragment: {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise ValueError(f"bad port in {url!r}: {e}") from None
    return Target(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def stand_in_authorization(value: str) -> str | None:
    """The token sent for a redacted Authorization value (None when not redacted).

    `redacted:ab12...` -> `XBL3.0 x=ab12...;resent`: the hash stands for the
    user, so two users of the original run are two users of the resend.
    """
    if not value.startswith(recording.REDACTED_PREFIX):
        return None
    return f"XBL3.0 x={value[len(recording.REDACTED_PREFIX):]};resent"


def _fresh_name(original: str) -> str:
    if _GUID.match(original):
        fresh = str(uuid.uuid4())
        return fresh.upper() if original.upper() == original else fresh
    return f"{original}-{uuid.uuid4().hex[:8]}"


class Renamer:
    """One fresh name per distinct session name, case-insensitively; inert when disabled."""

    def __init__(self, enabled: bool, fresh: Callable[[str], str] = _fresh_name) -> None:
        self.enabled = enabled
        self._fresh = fresh
        self.names: dict[str, str] = {}  # lower-case original -> fresh name

    def __call__(self, name: str) -> str:
        if not self.enabled:
            return name
        low = name.lower()
        if low not in self.names:
            self.names[low] = self._fresh(name)
        return self.names[low]


# --- rewriting requests ---------------------------------------------------------------------

class _Carry:
    """Values of the original run mapped to the target's: ETags, handle and ticket ids."""

    def __init__(self, renamer: Renamer) -> None:
        self.rename = renamer
        self.etags: dict[str, str] = {}
        self.ids: dict[str, str] = {}  # handle and ticket ids, lower-case original -> new

    def path(self, path: str) -> str:
        """The request path with session name, handle and ticket ids carried over."""
        raw_path, sep, query = path.partition("?")
        resource = resources.parse(raw_path)
        segs = raw_path.split("/")
        # segs[0] is "" (the path starts with "/"); indexes follow the URI grammar.
        low = [s.lower() for s in segs]
        if resource.is_session_or_element and low[5:6] == ["sessions"]:
            segs[6] = quote(self.rename(unquote(segs[6])), safe="")
        elif resource.kind in (Kind.HANDLE, Kind.HANDLE_SESSION) and resource.element \
                and low[1:2] == ["handles"]:
            segs[2] = quote(self._id(unquote(segs[2])), safe="")
        elif resource.kind is Kind.TICKET and resource.element and low[5:6] == ["tickets"]:
            segs[6] = quote(self._id(unquote(segs[6])), safe="")
        return "/".join(segs) + sep + query

    def _id(self, value: str) -> str:
        return self.ids.get(value.lower(), value)

    def body(self, value: Any) -> Any:
        """A JSON body with session refs renamed and carried-over ids replaced."""
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k.lower().endswith("sessionref") and isinstance(v, dict) \
                        and isinstance(v.get("name"), str):
                    v = {**v, "name": self.rename(v["name"])}
                out[k] = self.body(v)
            return out
        if isinstance(value, list):
            return [self.body(v) for v in value]
        if isinstance(value, str):
            return self._id(value)
        return value

    def condition(self, value: str) -> str:
        """An If-Match/If-None-Match value, ETag by ETag."""
        tags = [t.strip() for t in value.split(",")]
        return ", ".join(self.etags.get(t, t) for t in tags)

    def learn(self, method: str, path: str, original: dict[str, Any] | None,
              status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Pair what the original run got with what the target just answered."""
        if not original:
            return
        old_etag = _header(original.get("headers") or (), "etag")
        new_etag = _header(headers, "etag")
        if old_etag and new_etag:
            self.etags[old_etag] = new_etag
        if method != "POST" or status >= 300 or original.get("status", 0) >= 300:
            return
        kind = resources.parse(path.partition("?")[0]).kind
        key = {Kind.HANDLE: "id", Kind.HOPPER: "ticketId"}.get(kind)
        if key is None:
            return
        old_id = _json_field(recording.decode_body(original.get("body")), key)
        new_id = _json_field(body, key)
        if old_id and new_id:
            self.ids[old_id.lower()] = new_id


def _header(pairs: Iterable[Any], name: str) -> str | None:
    return recording.header(pairs, name)


def _json_field(raw: bytes, key: str) -> str | None:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


def _request_body(record_request: dict[str, Any], carry: _Carry) -> bytes:
    """The body to send: recorded bytes, re-encoded only when something was carried over."""
    body = record_request.get("body")
    raw = recording.decode_body(body)
    if not body or "json" not in body:
        return raw
    value = carry.body(body["json"])
    if value == body["json"]:
        return raw
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _request_headers(pairs: Iterable[Any], carry: _Carry, host: str | None
                     ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(headers to send, headers to record).

    They differ only where a stand-in token replaced a redacted Authorization:
    the record keeps the redacted value, so a user keeps one identity however
    many times a recording is re-sent.
    """
    send: list[tuple[str, str]] = []
    record: list[tuple[str, str]] = []
    for pair in pairs:
        name, value = str(pair[0]), str(pair[1])
        low = name.lower()
        if low in HOP_BY_HOP:
            if low == "host" and host is None:
                send.append((name, value))
                record.append((name, value))
            continue
        if low == "authorization" and stand_in_authorization(value):
            send.append((name, stand_in_authorization(value) or value))
            record.append((name, value))
            continue
        if value.startswith(recording.REDACTED_PREFIX):
            continue
        if low in ("if-match", "if-none-match"):
            value = carry.condition(value)
        send.append((name, value))
        record.append((name, value))
    if host is not None:
        send.insert(0, ("Host", host))
        record.insert(0, ("Host", host))
    return send, record


def _encode(body: bytes, headers: list[tuple[str, str]]) -> bytes:
    return wire_body(body, _header(headers, "content-encoding"))


def _decode(body: bytes, headers: list[tuple[str, str]]) -> bytes:
    """The body as the recorder keeps it: Content-Encoding undone, header kept."""
    ce = _header(headers, "content-encoding")
    if not body or not ce:
        return body
    try:
        decoded = encoding.decode(body, ce)
    except ValueError:
        return body
    return decoded if isinstance(decoded, bytes) else body


# --- sending --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class _Client:
    """One kept-alive connection to the target, reopened when it breaks."""

    def __init__(self, target: Target, timeout: float, verify: bool) -> None:
        self.target = target
        self.timeout = timeout
        self.verify = verify
        self.conn: http.client.HTTPConnection | None = None
        self.used = False

    def _open(self) -> http.client.HTTPConnection:
        if self.target.scheme == "https":
            context = ssl.create_default_context()
            if not self.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(
                self.target.host, self.target.port, timeout=self.timeout, context=context)
        return http.client.HTTPConnection(self.target.host, self.target.port,
                                          timeout=self.timeout)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            self.used = False

    @property
    def local(self) -> str | None:
        sock = self.conn.sock if self.conn is not None else None
        if sock is None:
            return None
        host, port = sock.getsockname()[:2]
        return f"{host}:{port}"

    def send(self, method: str, path: str, headers: list[tuple[str, str]],
             body: bytes) -> _Answer:
        reused = self.conn is not None and self.used
        try:
            return self._send_once(method, path, headers, body)
        except TimeoutError:
            self.close()
            raise  # the target may have acted on it: never send it twice
        except (OSError, http.client.HTTPException):
            self.close()
            if not reused:
                raise
        return self._send_once(method, path, headers, body)

    def _send_once(self, method: str, path: str, headers: list[tuple[str, str]],
                   body: bytes) -> _Answer:
        if self.conn is None:
            self.conn = self._open()
        conn = self.conn
        conn.putrequest(method, self.target.base_path + path, skip_host=True,
                        skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        data = response.read()
        self.used = True
        if response.will_close:
            self.close()
        return _Answer(response.status, response.reason, list(response.getheaders()), data)


# --- results --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResentExchange:
    """One re-sent request: the record it came from and what came back."""

    record: int
    method: str
    url: str
    status: int | None
    error: str | None = None
    seq: int | None = None  # in the new recording, when one is written


@dataclass
class ResendResult:
    sent: int = 0
    answered: int = 0
    failed: int = 0
    record_path: str | None = None
    renames: dict[str, str] = field(default_factory=dict)
    issues: list[recording.ReadIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.issues


def _resend_one(record: dict[str, Any], target: Target, client: _Client, carry: _Carry,
                keep_host: bool) -> tuple[dict[str, Any], _Answer | None, str | None]:
    """Send one recorded request; the request as sent, the answer or the error."""
    original = record["request"]
    split = urlsplit(original["url"])
    path = carry.path((split.path or "/") + (f"?{split.query}" if split.query else ""))
    headers, recorded = _request_headers(original.get("headers") or (), carry,
                                         None if keep_host else target.netloc)
    plain = _request_body(original, carry)
    method = original["method"].upper()
    sent = {"method": method, "url": target.url(path), "path": path, "headers": headers,
            "recorded_headers": recorded, "body": plain}
    try:
        answer = client.send(method, path, headers, _encode(plain, headers))
    except (OSError, http.client.HTTPException) as e:
        return sent, None, f"{type(e).__name__}: {e}"
    answer = _Answer(answer.status, answer.reason, answer.headers,
                     _decode(answer.body, answer.headers))
    carry.learn(method, path, record.get("response"), answer.status, answer.headers,
                answer.body)
    return sent, answer, None


def _new_record(record: dict[str, Any], sent: dict[str, Any], answer: _Answer | None,
                error: str | None, start: float, end: float, client: str | None,
                redactor: recording.Redactor) -> dict[str, Any]:
    resource = resources.parse(sent["path"])
    if answer is None:
        classification = classify.NO_RESPONSE
    else:
        classification = classify.classify(sent["method"], sent["path"], sent["headers"],
                                           answer.status, answer.headers, answer.body)
    out: dict[str, Any] = {
        "start": recording.timestamp(start),
        "end": recording.timestamp(end),
        "duration_ms": round((end - start) * 1000, 3),
        "client": client,
        "request": {
            "method": sent["method"],
            "url": sent["url"],
            "headers": redactor.headers(sent["recorded_headers"]),
            "body": recording.encode_body(sent["body"]),
        },
        "response": None,
        "error": error,
        "resource": resource.to_dict(),
        "classification": classification.to_dict(),
        "provenance": {"source": "resent", "record": record["seq"]},
    }
    if answer is not None:
        out["response"] = {
            "status": answer.status,
            "reason": answer.reason,
            "headers": redactor.headers(answer.headers),
            "body": recording.encode_body(answer.body),
        }
    return out


def resend_records(
    records: Iterable[dict[str, Any]],
    to_url: str,
    *,
    rename: bool = False,
    keep_host: bool = False,
    timeout: float = 10.0,
    verify: bool = True,
    redactor: recording.Redactor | None = None,
    writer: recording.Writer | None = None,
    renamer: Renamer | None = None,
) -> Iterator[ResentExchange]:
    """Re-send records one by one, yielding each outcome as it comes back."""
    target = parse_target(to_url)
    redactor = redactor or recording.Redactor()
    carry = _Carry(renamer or Renamer(rename))
    client = _Client(target, timeout, verify)
    try:
        for record in records:
            start = time.time()
            sent, answer, error = _resend_one(record, target, client, carry, keep_host)
            end = time.time()
            seq = None
            if writer is not None:
                seq = writer.write(_new_record(record, sent, answer, error, start, end,
                                               client.local, redactor))
            if error:
                logger.warning(f"resend of record {record['seq']} to {sent['url']} failed: "
                               f"{error}")
            yield ResentExchange(record["seq"], sent["method"], sent["url"],
                                 answer.status if answer else None, error, seq)
    finally:
        client.close()


def resend(
    path: str,
    to_url: str,
    record_path: str | None = None,
    rename: bool = False,
    *,
    keep_host: bool = False,
    timeout: float = 10.0,
    verify: bool = True,
    redactor: recording.Redactor | None = None,
    on_exchange: Callable[[ResentExchange], None] | None = None,
) -> ResendResult:
    """Re-issue the requests of the recording at `path`, in order, against `to_url`.

    Answers are appended to `record_path` (a recording; nothing is written
    when it is None). Raises ValueError for a bad `to_url`; unreadable lines of
    the recording are skipped and listed in `issues`. `on_exchange` sees each
    outcome as it happens (the CLI prints progress with it).
    """
    parse_target(to_url)  # fail before opening anything
    result = ResendResult(record_path=record_path)
    renamer = Renamer(rename)
    writer = recording.Writer(record_path) if record_path else None
    try:
        records = recording.read(path, issues=result.issues)
        for outcome in resend_records(records, to_url, keep_host=keep_host, timeout=timeout,
                                      verify=verify, redactor=redactor, writer=writer,
                                      renamer=renamer):
            result.sent += 1
            if outcome.status is None:
                result.failed += 1
            else:
                result.answered += 1
            if on_exchange is not None:
                on_exchange(outcome)
    finally:
        if writer is not None:
            writer.close()
    result.renames = dict(renamer.names)
    return result
