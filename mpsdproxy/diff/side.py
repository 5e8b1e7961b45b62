"""One side of a diff: a recorded exchange as the comparison sees it.

Each record becomes a `model.Exchange` (`recording.to_exchange`), then a
`Side`: its pairing key, status, classification, and its bodies and response
headers as comparable values with every session name, handle id and ticket id
replaced by the placeholder of the order its recording first named it in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mpsdproxy import classify
from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import resources
from mpsdproxy.resources import Kind

__all__ = ["MISSING", "Identities", "Side", "side_of"]

#: JSON deeper than this compares as its text: the walk is recursive.
MAX_DEPTH = 100


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



@dataclass(frozen=True)
class Side:
    """What the diff needs of one exchange, with identities already normalised."""

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


# --- identities: session names, handle ids, ticket ids -----------------------------------

#: A whole run of word characters and hyphens: what a session name, handle id or ticket
#: id is as the service writes them. An identity is replaced only where it stands whole
#: (no word character or hyphen on either side), so a run is looked up as one token.
_RUN = r"(?<![\w-])[\w-]+(?![\w-])"
_TOKENS = re.compile(_RUN)
_RUN_ONLY = re.compile(r"[\w-]+")
#: How the kinds' tables are asked: a string known as two kinds takes the later one.
_LOOKUP_ORDER = ("ticket", "handle", "session")


class Identities:
    """Per recording: the order in which it first named each session, handle and ticket.

    Placeholders make two runs comparable although the service (or `resend
    --rename`) gave their sessions and handles different names.

    Text is scanned once per string, each whole run of word characters looked up in
    the tables: the cost does not grow with how many identities are known (a regex of
    every name, rebuilt as names came, made a long recording's diff quadratic). An
    identity holding other characters too (rare) gets into the one regex itself,
    longest first, so it wins over a run inside it.
    """

    def __init__(self) -> None:
        self._known: dict[str, dict[str, str]] = {"session": {}, "handle": {}, "ticket": {}}
        self._others: set[str] = set()
        self._pattern: re.Pattern[str] = _TOKENS

    def add(self, kind: str, value: Any) -> None:
        if not isinstance(value, str) or not value.strip():
            return
        table = self._known[kind]
        low = value.lower()
        if low not in table:
            table[low] = f"<{kind}:{len(table) + 1}>"
            if not _RUN_ONLY.fullmatch(low) and low not in self._others:
                self._others.add(low)
                names = sorted(self._others, key=len, reverse=True)
                alternatives = "|".join(re.escape(n) for n in names)
                self._pattern = re.compile(
                    rf"(?<![\w-])(?:{alternatives}|[\w-]+)(?![\w-])", re.IGNORECASE)

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
        known = self._known
        if not (known["session"] or known["handle"] or known["ticket"]):
            return text
        return self._pattern.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        found = match.group(0)
        low = found.lower()
        for kind in _LOOKUP_ORDER:
            placeholder = self._known[kind].get(low)
            if placeholder is not None:
                return placeholder
        return found


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


def _observe(ids: Identities, method: str, resource: resources.Resource,
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


def _key(ids: Identities, method: str, resource: resources.Resource) -> tuple[str, ...]:
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


# --- exchanges -> sides -----------------------------------------------------------------


def _body_value(message: model.Request | model.Response | None) -> Any:
    """A body as a comparable value: JSON as JSON, else its text (base64 when not UTF-8)."""
    if message is None or not message.body:
        return MISSING
    value = message.json
    if value is not jsonbody.INVALID and jsonbody.nests_at_most(value, MAX_DEPTH):
        return value
    body = recording.encode_body(message.body) or {}
    if "text" in body:
        return str(body["text"])
    if "json" in body:  # too deep to walk: compared whole, as its text
        return model.from_bytes(message.body)
    return "base64:" + str(body.get("base64"))


def _headers(headers: model.Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        low = name.lower()
        out[low] = f"{out[low]}, {value}" if low in out else value
    return out


def _classification(record: Mapping[str, Any], exchange: model.Exchange
                    ) -> tuple[str | None, tuple[classify.Anomaly, ...]]:
    """The record's stored classification, or one made now for records written without."""
    known = record.get("classification")
    if isinstance(known, Mapping) and "id" in known:
        anomalies = tuple(
            classify.Anomaly(str(a.get("code")), str(a.get("message", "")))
            for a in known.get("anomalies") or () if isinstance(a, Mapping)
        )
        return known.get("id"), anomalies
    result = classify.classify(exchange)
    return result.id, result.anomalies


def side_of(ids: Identities, record: Mapping[str, Any]) -> Side:
    """The Side of one record. Raises ValueError (model.ModelError) for a record no
    wire could carry."""
    exchange = recording.to_exchange(record)
    request, response = exchange.request, exchange.response
    method = request.method.upper()
    resource = exchange.resource
    request_body = _body_value(request)
    response_body = _body_value(response)
    _observe(ids, method, resource, request_body, response_body)
    cls_id, anomalies = _classification(record, exchange)
    headers = _headers(response.headers) if response is not None else {}
    return Side(
        seq=exchange.seq or 0,
        method=method,
        url=request.url,
        label=resource.short if resource.kind is not Kind.UNKNOWN else request.url,
        key=_key(ids, method, resource),
        status=exchange.status,
        classification=cls_id,
        anomalies=anomalies,
        request_body=ids.normalise(request_body),
        response_body=ids.normalise(response_body),
        response_headers={k: ids.normalise(v) for k, v in headers.items()},
    )
