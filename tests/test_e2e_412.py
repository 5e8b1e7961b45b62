"""End to end: a forced 412 is a session someone else changed, in both ways the proxy makes it so.

Real proxy, real sockets. In front of the stand-in (`mpsdproxy emulate`) the
change is made real there; in front of a server that is no stand-in (here a
service double: the stand-in's session logic behind a plain HTTP server with
no control switches, as the real service has none) the proxy keeps the newer
session consistent itself and maps its ETag on the way out. Either way:

- the 412's ETag differs from the If-Match sent and its changeNumber is higher
  than any the title has seen;
- the retry with the 412's ETag gets 200;
- a resend of the stale ETag gets 412 again, as the service would answer it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from conftest import Launcher
from conftest import http_server
from conftest import read_records
from scenario_kit import SHIPPED
from scenario_kit import Title
from scenario_kit import lobby
from scenario_kit import me

from mpsdproxy import model
from mpsdproxy.emulator import Emulator

#: The first write with an ETag to each lobby gets a forced 412.
FORCED_412 = SHIPPED / "stale-etag-on-join.yaml"


class ServiceDouble:
    """The stand-in's session logic behind a plain HTTP server without `/_emulator/`
    switches, remembering every If-Match it received."""

    def __init__(self) -> None:
        self.emulator = Emulator()
        self.if_match: list[str | None] = []
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.path.startswith("/_emulator"):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                request = model.Request(self.command, f"http://127.0.0.1{self.path}",
                                        list(self.headers.items()), body)
                with double.lock:
                    double.if_match.append(self.headers.get("If-Match"))
                    response = double.emulator.handle(request)
                self.send_response(response.status)
                for name, value in response.headers:
                    if name.lower() not in ("content-length", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def double() -> Iterator[tuple[ServiceDouble, int]]:
    service = ServiceDouble()
    with http_server(service.handler()) as port:
        yield service, port


def _through_the_proxy_to(launch: Launcher, upstream: str,
                          name: str) -> tuple[dict[str, object], list[dict[str, Any]]]:
    """A forced 412's walk through a proxy in front of `upstream`: the answers by step (as
    `_check` reads them) and the recording."""
    proxy = launch.proxy("--mode", f"reverse:{upstream}", "--quiet",
                         "--scenario", str(FORCED_412))
    t = Title(proxy.url)
    steps = _walk_through_a_forced_412(t, name)
    t.close()
    _check(steps)
    return steps, read_records(proxy.record)  # type: ignore[arg-type]


def _walk_through_a_forced_412(t: Title, name: str) -> dict[str, object]:
    """Create, write with the current ETag (forced 412), resend that stale ETag, then
    retry with the 412's; the answers, by step."""
    path = lobby(name)
    created = t.send("PUT", path, body=me("2533274800000001"))
    assert created is not None and created.status_code == 201
    read = t.send("GET", path)
    assert read is not None and read.status_code == 200
    stale = read.headers["etag"]
    seen = max(created.json()["changeNumber"], read.json()["changeNumber"])
    refused = t.send("PUT", path, body={"properties": {"custom": {"map": "dunes"}}},
                     headers=(("If-Match", stale),))
    assert refused is not None and refused.status_code == 412
    resent = t.send("PUT", path, body={"properties": {"custom": {"map": "dunes"}}},
                    headers=(("If-Match", stale),))
    retried = t.send("PUT", path, body={"properties": {"custom": {"map": "dunes"}}},
                     headers=(("If-Match", refused.headers["etag"]),))
    return {"stale": stale, "seen": seen, "refused": refused, "retried": retried,
            "resent": resent}


def _check(steps: dict[str, object]) -> None:
    refused, retried, resent = steps["refused"], steps["retried"], steps["resent"]
    assert refused.headers["etag"] != steps["stale"]  # type: ignore[attr-defined]
    assert refused.json()["changeNumber"] > steps["seen"]  # type: ignore[attr-defined,operator]
    assert retried is not None and retried.status_code == 200  # type: ignore[attr-defined]
    assert resent is not None and resent.status_code == 412  # type: ignore[attr-defined]
    assert resent.headers["etag"] == refused.headers["etag"]  # type: ignore[attr-defined]


def test_in_front_of_the_standin_the_change_is_made_real_there(
        launch: Launcher) -> None:
    _, records = _through_the_proxy_to(launch, launch.standin().url, "real-change")
    forced = [r for r in records if r["provenance"].get("rule") == "stale-etag-on-join"]
    assert [r["provenance"].get("changed_on") for r in forced] == ["stand-in"]
    # The resend of the stale ETag drew the stand-in's own 412: the change is real there.
    resend = records[-2]
    assert resend["provenance"]["source"] == "forwarded"
    assert resend["classification"]["id"] == "412.if-match-session"


def test_in_front_of_the_service_the_proxy_maps_the_newer_etag(
        launch: Launcher, double: tuple[ServiceDouble, int]) -> None:
    service, port = double
    steps, records = _through_the_proxy_to(launch, f"http://127.0.0.1:{port}", "mapped")
    # The service saw the retry with the ETag it knows (the title's was the proxy's), and
    # never saw the resend of the stale one: the proxy answered it as the service would.
    assert service.if_match[-1] == steps["stale"]
    assert steps["refused"].headers["etag"] not in service.if_match  # type: ignore[attr-defined]
    resend = records[-2]
    assert resend["provenance"]["source"] == "injected"
    assert resend["classification"]["id"] == "412.if-match-session"
    assert records[-1]["provenance"].get("etag_mapped") == "stale-etag-on-join"
