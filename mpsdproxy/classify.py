"""(request, response) -> the catalog entry that explains it, plus anomalies.

Pure and total: no I/O, and it never raises, whatever the method, path,
headers, status or body. A response the table does not explain still gets a
Classification (id None, an `unlisted-status` anomaly), so the recorder and the
report never have to special-case it.

Only MPSD traffic is judged by the table (`is_mpsd`): an exchange with any
other host (a sign-in, telemetry, a search engine, the RTA websocket) gets
`NOT_MPSD`, which has no row and no anomaly, so a whole-machine capture does
not fill a report with departures from a table that was never about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mpsdproxy import catalog
from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy import resources
from mpsdproxy.catalog import BodyKind
from mpsdproxy.catalog import Target

__all__ = ["Anomaly", "Classification", "classify", "is_mpsd", "NO_RESPONSE", "NOT_MPSD"]


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A way the response departs from the table. `code` is stable, `message` is for people."""

    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Classification:
    id: str | None
    meaning: str
    anomalies: tuple[Anomaly, ...] = ()

    @property
    def conformant(self) -> bool:
        return self.id is not None and not self.anomalies

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "meaning": self.meaning,
            "anomalies": [a.to_dict() for a in self.anomalies],
        }


NO_RESPONSE = Classification(
    None, "Upstream failure: no complete answer (connection refused, reset, timed out or "
    "not HTTP).",
    (Anomaly("no-response", "the exchange ended without a response"),),
)


NOT_MPSD = Classification(
    None, "Not session-directory traffic: not judged by the status table.")


def is_mpsd(exchange: model.Exchange) -> bool:
    """Whether the status table (and MPSD's budgets) apply to this exchange.

    Yes for a session-directory or matchmaking host. Yes too for any other host
    whose path names an MPSD resource: the stand-in on 127.0.0.1 and recordings
    made in reverse mode carry MPSD paths under a local host, and those are the
    session directory's traffic. A path MPSD does not name (`POST /` to a search
    engine, the RTA websocket's `/connect`) on a host that is not MPSD's is not.
    """
    request = exchange.request
    return (resources.is_mpsd_host(request.host)
            or request.resource.kind is not resources.Kind.UNKNOWN)


def _media_type(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def _score(entry: catalog.Entry, method: str, target: Target, media: str | None,
           body: bytes, req: model.Headers) -> int:
    """How well a sub-row's situation fits the exchange; the best fit explains it."""
    score = 0
    if method in entry.methods:
        score += 4
    if entry.target is Target.ANY or entry.target is target:
        score += 2 if entry.target is target else 1
    if entry.content_type is not None and media == entry.content_type:
        score += 8
    if entry.body is BodyKind.SESSION and body:
        score += 2
    if entry.body is BodyKind.NONE and not body:
        score += 1
    if entry.preconditions and any(p in req for p in entry.preconditions):
        score += 1
    return score


def _anomalies(entry: catalog.Entry, resource: resources.Resource, response: model.Response,
               media: str | None, req: model.Headers) -> list[Anomaly]:
    """How the response departs from its row. Headers are asked by name (`first`: the
    first field of a name counts), each message's index built once for every reader."""
    body = response.body
    found: list[Anomaly] = []
    for name in entry.required_headers:
        value = response.headers.first(name)
        if value is None:
            found.append(Anomaly("missing-header", f"{entry.status} must carry {name}"))
        elif name == "Retry-After" and not _whole_seconds(value):
            found.append(Anomaly(
                "bad-retry-after",
                f"Retry-After should be whole seconds (all the client parses), not {value!r}",
            ))
    if entry.preconditions and not any(p in req for p in entry.preconditions):
        wanted = " or ".join(entry.preconditions)
        found.append(Anomaly(
            "missing-precondition", f"{entry.status} answers a request without {wanted}"))
    if entry.body is BodyKind.NONE:
        if body:
            found.append(Anomaly("unexpected-body", f"the table lists no body for {entry.id}"))
    elif entry.content_type is not None and media != entry.content_type:
        found.append(Anomaly(
            "content-type",
            f"{entry.id} should be {entry.content_type}, not {media or 'missing'}",
        ))
    if entry.content_type == catalog.JSON and body and media == catalog.JSON:
        document = response.json
        if document is jsonbody.INVALID:
            found.append(Anomaly("bad-json", "the body is not valid JSON"))
        elif (entry.returns_session and entry.status >= 400
              and resource.is_session_or_element and not _whole_session(document)):
            found.append(Anomaly(
                "partial-session",
                f"a {entry.status} that returns the session must return the whole session",
            ))
    return found


def _whole_seconds(value: str) -> bool:
    """ASCII digits only: the client parses an integer (protocol notes §5.3), and
    `str.isdigit` alone would also accept digits such as '²' or Arabic-Indic ones."""
    text = value.strip()
    return text.isascii() and text.isdigit()


def _whole_session(document: Any) -> bool:
    return isinstance(document, dict) and catalog.SESSION_DOCUMENT_KEYS <= document.keys()


def classify(exchange: model.Exchange) -> Classification:
    """The table row that explains this exchange, and how the response departs from it.

    An exchange that is not MPSD traffic (`is_mpsd`) gets NOT_MPSD, whatever
    its status; an MPSD exchange without a response gets NO_RESPONSE. Never raises.
    """
    if not is_mpsd(exchange):
        return NOT_MPSD
    if exchange.response is None:
        return NO_RESPONSE
    try:
        return _classify(exchange.request, exchange.response)
    except Exception as e:  # noqa: BLE001 - a classifier bug must not break the proxy
        return Classification(None, "Could not classify this exchange.",
                              (Anomaly("classifier-error", repr(e)),))


def _classify(request: model.Request, response: model.Response) -> Classification:
    status, body = response.status, response.body
    candidates = catalog.for_status(status)
    if not candidates:
        return Classification(None, f"Status {status} is not in the MPSD status table.",
                              (Anomaly("unlisted-status", f"the table does not list {status}"),))
    method = request.method.upper()
    resource = request.resource
    req = request.headers
    media = _media_type(response.headers.first("content-type"))
    if len(candidates) == 1:
        entry = candidates[0]
    else:
        target = catalog.target_of(resource)
        entry = max(candidates, key=lambda e: _score(e, method, target, media, body, req))
    anomalies = _anomalies(entry, resource, response, media, req)
    if not anomalies:
        return _CONFORMANT[entry.id]
    return Classification(entry.id, entry.meaning, tuple(anomalies))


#: The anomaly-free classification of each table row, built once (it is immutable).
_CONFORMANT: dict[str, Classification] = {
    entry.id: Classification(entry.id, entry.meaning) for entry in catalog.ENTRIES}
