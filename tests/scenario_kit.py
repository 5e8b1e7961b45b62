"""What the end-to-end scenario tests share: a title's client through the proxy, what a fresh
engine predicts for the same requests, and the checks on injected answers."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
SHIPPED = ROOT / "scenarios"
SCID = title.SCID
HOPPER = f"/serviceconfigs/{SCID}/hoppers/QuickMatch"


def lobby(name: str, template: str = "LobbySession") -> str:
    return title.session_path(name, template)


def auth(user: str) -> str:
    return f"XBL3.0 x={user};token-of-{user}"


def me(xuid: str) -> dict[str, Any]:
    return {"members": {"me": {"constants": {"system": {"xuid": xuid, "initialize": True}},
                               "properties": {"system": {"active": True}}}}}


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]

    def request(self) -> model.Request:
        return model.Request(self.method, f"http://127.0.0.1{self.path}", self.headers)

    @property
    def user(self) -> str:
        """Who the proxy counts the request for: the redacted Authorization."""
        return recording.redact_value(dict(self.headers)["Authorization"])


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


def predict(path: Path, sent: list[Sent]) -> list[str | None]:
    """The rule a fresh engine fires on each request, through both phases as the proxy asks
    (all within the first seconds, so no time window of the shipped files opens)."""
    engine = scenario.Engine(scenario.load(path), start=0.0)
    out: list[str | None] = []
    for request in sent:
        view, user = request.request(), request.user
        fired = engine.evaluate(view, Phase.REQUEST, client=user, user=user, now=1.0)
        fault = fired.rule.fault if fired else None
        if fault is None or (not fault.answers and not fault.connection):
            later = engine.evaluate(view, Phase.RESPONSE, client=user, user=user, now=1.0)
            fired = later or fired
        out.append(fired.rule.name if fired else None)
    return out


def rules_of(records: list[dict[str, Any]]) -> list[str | None]:
    return [r["provenance"]["rule"] if r["provenance"]["source"] == "injected" else None
            for r in records]


_COUNT = re.compile(r"^\s+(?P<scenario>\S+): (?P<rule>.+): (?P<matched>\d+) matched, "
                    r"(?P<fired>\d+) fired", re.MULTILINE)


def shutdown_counts(proxy: Process) -> dict[str, tuple[int, int]]:
    """Stop the proxy and read the rule counts it prints."""
    assert proxy.stop() == 0, proxy.output()
    return {m["rule"]: (int(m["matched"]), int(m["fired"]))
            for m in _COUNT.finditer(proxy.output())}


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


def check_conformant(records: list[dict[str, Any]]) -> None:
    """Every injected answer classifies as its row, with no anomaly."""
    for record in records:
        if record["provenance"]["source"] == "injected" and record["response"]:
            assert record["classification"]["anomalies"] == [], record


def start(launch: Launcher, *scenarios: Path | str) -> tuple[Process, Process]:
    standin = launch.standin()
    args = [arg for path in scenarios for arg in ("--scenario", str(path))]
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet", *args)
    return standin, proxy
