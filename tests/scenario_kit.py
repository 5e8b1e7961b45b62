"""What the end-to-end scenario tests share: a title's client through the proxy, what a fresh
engine predicts for the same requests, and the checks on injected answers."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import NamedTuple

import httpx
from conftest import Launcher
from conftest import Process

from mpsdproxy import catalog
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import scenario
from mpsdproxy import title
from mpsdproxy.catalog import BodyKind
from mpsdproxy.scenario import Phase

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "mpsdproxy" / "scenarios"
SCID = title.SCID
HOPPER = f"/serviceconfigs/{SCID}/hoppers/QuickMatch"


def lobby(name: str, template: str = "LobbySession") -> str:
    return title.session_path(name, template)


def auth(user: str) -> str:
    return f"XBL3.0 x={user};token-of-{user}"


def me(xuid: str) -> dict[str, Any]:
    return {"members": {"me": {"constants": {"system": {"xuid": xuid, "initialize": True}},
                               "properties": {"system": {"active": True}}}}}


def activity_handle(name: str, template: str = "LobbySession") -> dict[str, Any]:
    """The body of a POST /handles that makes an activity handle for a session."""
    return {"version": 1, "type": "activity",
            "sessionRef": {"scid": SCID, "templateName": template, "name": name}}


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]

    def request(self) -> model.Request:
        return model.Request(self.method, f"http://127.0.0.1{self.path}", self.headers)

    @property
    def user(self) -> str:
        """Who the proxy counts the request for: the user of its Authorization, as the
        injector keys it (`recording.user_of`)."""
        return recording.user_of(dict(self.headers)["Authorization"])


class Title:
    """A title's HTTP client through the proxy; remembers what it sent, in order."""

    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=20)
        self.sent: list[Sent] = []

    def send(self, method: str, path: str, user: str = "qa", body: Any = None,
             headers: tuple[tuple[str, str], ...] = ()) -> httpx.Response | None:
        """The answer, or None when the connection ended without one."""
        fields = (title.CONTRACT, ("Authorization", auth(user)), *headers)
        self.sent.append(Sent(method, path, fields))
        content = json.dumps(body).encode() if body is not None else None
        if content is not None:
            fields = (*fields, ("Content-Type", "application/json; charset=utf-8"))
        try:
            return self.client.request(method, path, content=content, headers=list(fields))
        except httpx.TransportError:
            return None

    def close(self) -> None:
        self.client.close()


def direct(standin: Process, method: str, path: str, user: str = "qa",
           body: Any = None) -> httpx.Response:
    """A request straight to the stand-in, around the proxy."""
    headers = [title.CONTRACT, ("Authorization", auth(user))]
    content = json.dumps(body).encode() if body is not None else None
    return httpx.request(method, standin.url + path, content=content, headers=headers,
                         timeout=10)


class Count(NamedTuple):
    """One rule's counts: requests it matched and could apply to, times it fired, and
    requests it matched but could not apply to as the service would."""

    matched: int
    fired: int
    inapplicable: int = 0


def _replay(path: Path, sent: list[Sent],
            exists: Sequence[bool | None] | None) -> tuple[list[str | None], scenario.Engine]:
    """The requests through a fresh engine, both phases as the proxy asks; the rule that
    fired on each, and the engine with its counts."""
    engine = scenario.Engine(scenario.load(path), start=0.0)
    known = list(exists) if exists is not None else [None] * len(sent)
    out: list[str | None] = []
    for request, before in zip(sent, known, strict=True):
        view, user = request.request(), request.user
        fired = engine.evaluate(view, Phase.REQUEST, client=user, user=user, now=1.0,
                                exists=before)
        fault = fired.rule.fault if fired else None
        if fault is None or (not fault.answers and not fault.connection):
            later = engine.evaluate(view, Phase.RESPONSE, client=user, user=user, now=1.0,
                                    exists=before)
            fired = later or fired
        out.append(fired.rule.name if fired else None)
    return out, engine


def predict(path: Path, sent: list[Sent],
            exists: Sequence[bool | None] | None = None) -> list[str | None]:
    """The rule a fresh engine fires on each request, through both phases as the proxy asks
    (all within the first seconds, so no time window of the shipped files opens).

    `exists[i]` is whether request i's session existed before it as the proxy knew it
    (None: not seen yet; the default for every request), which decides whether a rule's
    answer is one the service could give there."""
    return _replay(path, sent, exists)[0]


def predict_counts(path: Path, sent: list[Sent],
                   exists: Sequence[bool | None] | None = None) -> dict[str, Count]:
    """What a fresh engine counts per rule for the same requests (see `predict`): what the
    proxy should print at shutdown."""
    engine = _replay(path, sent, exists)[1]
    return {s.name: Count(s.matches, s.fires, s.inapplicable) for s in engine.stats()}


def rules_of(records: list[dict[str, Any]]) -> list[str | None]:
    return [r["provenance"]["rule"] if r["provenance"]["source"] == "injected" else None
            for r in records]


_COUNT = re.compile(r"^\s+(?P<scenario>\S+): (?P<rule>.+?): (?P<matched>\d+) matched, "
                    r"(?P<fired>\d+) fired(?:, (?P<inapplicable>\d+) not applicable "
                    r"\((?P<reason>.*?)\))?(?: \(off\))?$", re.MULTILINE)


def shutdown_counts(proxy: Process) -> dict[str, Count]:
    """Stop the proxy and read the rule counts it prints."""
    assert proxy.stop() == 0, proxy.output()
    return {m["rule"]: Count(int(m["matched"]), int(m["fired"]), int(m["inapplicable"] or 0))
            for m in _COUNT.finditer(proxy.output())}


def not_applicable_reasons(proxy: Process) -> dict[str, str]:
    """For a stopped proxy, why each rule that skipped requests could not apply (the last
    reason, as printed at shutdown)."""
    return {m["rule"]: m["reason"] for m in _COUNT.finditer(proxy.output()) if m["reason"]}


def check_row(response: httpx.Response, entry_id: str) -> None:
    """The answer carries the row's content type, body kind and required headers."""
    entry = catalog.get(entry_id)
    assert response.status_code == entry.status
    content_type = response.headers.get("content-type")
    assert (content_type.split(";")[0] if content_type else None) == entry.content_type
    if entry.body is BodyKind.SESSION:
        assert catalog.SESSION_DOCUMENT_KEYS <= response.json().keys()
    elif entry.body in (BodyKind.MESSAGE, BodyKind.FGRL):
        assert response.content
    else:
        assert response.content == b""
    for name in entry.required_headers:
        assert name.lower() in response.headers
    if "Retry-After" in entry.required_headers:
        assert response.headers["retry-after"].isdigit()


def check_forced_412(refused: httpx.Response | None, sent_etag: str, seen: int,
                     held: httpx.Response) -> None:
    """A forced 412 is a newer session someone else wrote, made real on the stand-in: what
    it holds now (`held`: document and ETag), one change above the newest seen (`seen`),
    with an ETag other than the If-Match sent."""
    assert refused is not None
    check_row(refused, "412.if-match-session")
    assert refused.headers["etag"] != sent_etag
    assert refused.headers["etag"] == held.headers["etag"]
    assert refused.json() == held.json()
    assert refused.json()["changeNumber"] == seen + 1


def check_conformant(records: list[dict[str, Any]]) -> None:
    """Every injected answer classifies as its row, with no anomaly."""
    for record in records:
        if record["provenance"]["source"] == "injected" and record["response"]:
            assert record["classification"]["anomalies"] == [], record


def raw_get(port: int, path: str, user: str) -> socket.socket:
    """A GET written on a raw socket, for faults that act on the connection itself."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-xbl-contract-version: 107\r\n"
                 f"Authorization: {auth(user)}\r\n\r\n".encode())
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes the connection."""
    data = b""
    for _ in range(1000):
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the connection never closed")


def start(launch: Launcher, *scenarios: Path | str) -> tuple[Process, Process]:
    standin = launch.standin()
    args = [arg for path in scenarios for arg in ("--scenario", str(path))]
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet", *args)
    return standin, proxy
