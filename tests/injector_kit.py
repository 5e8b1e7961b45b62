"""What the injector tests share: flows as a title sends them, the service's answers, and a rig
of the router and the injector in one mitmproxy test context."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import ManualClock as Clock
from mitmproxy import http
from mitmproxy.proxy import mode_specs
from mitmproxy.test import taddons
from mitmproxy.test import tflow

from mpsdproxy import faults
from mpsdproxy.addons import common
from mpsdproxy.addons import injector
from mpsdproxy.addons import router

ROOT = Path(__file__).resolve().parent.parent
HOST = "https://sessiondirectory.xboxlive.com"
SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
KEY = f"{SCID}~lobbysession~lobby-1"
HOPPER = f"/serviceconfigs/{SCID}/hoppers/QuickMatch"
ETAG = '"etag-1"'


def doc(change: int = 1) -> dict[str, Any]:
    return {"constants": {"system": {"maxMembersCount": 8}, "custom": {}},
            "properties": {"system": {}, "custom": {}},
            "members": {"0": {"constants": {"system": {"xuid": "1001", "index": 0}}}},
            "changeNumber": change}


def auth(user: str = "alice") -> str:
    return f"XBL3.0 x={user};token-of-{user}"


def make_flow(method: str = "GET", path: str = LOBBY, body: Any = None,
              headers: list[tuple[str, str]] | None = None, user: str | None = "alice",
              url: str = HOST) -> http.HTTPFlow:
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None
                                                 else b"")
    fields = [("x-xbl-contract-version", "107"), *(headers or [])]
    if user is not None:
        fields.append(("Authorization", auth(user)))
    request = http.Request.make(method, url + path, raw,
                                [(k.encode(), v.encode()) for k, v in fields])
    f = tflow.tflow(req=request)
    f.request.timestamp_start = time.time()
    if url.startswith("http://127.0.0.1"):  # the proxy in front of a local server
        f.client_conn.proxy_mode = mode_specs.ProxyMode.parse(f"reverse:{url}")
    return f


def service_answer(status: int = 200, document: Any = None, etag: str | None = ETAG,
                   content_type: str = "application/json; charset=utf-8") -> http.Response:
    body = faults.encode_json(document) if document is not None else b""
    headers = [("Content-Type", content_type)] if document is not None else []
    if etag:
        headers.append(("ETag", etag))
    return http.Response.make(status, body, [(k.encode(), v.encode()) for k, v in headers])


def run(awaitable: Awaitable[None] | None) -> None:
    if awaitable is not None:
        async def wait() -> None:
            await awaitable
        asyncio.run(wait())




class Rig:
    """The router and the injector in one mitmproxy test context, with the service
    played by the test (`upstream`: what a forwarded request gets)."""

    def __init__(self, tctx: taddons.context, inj: injector.FaultInjector,
                 r: router.Router) -> None:
        self.tctx = tctx
        self.inj = inj
        self.router = r

    def request(self, f: http.HTTPFlow) -> http.HTTPFlow:
        self.router.request(f)
        run(self.inj.request(f))
        return f

    def exchange(self, f: http.HTTPFlow, upstream: http.Response | None = None) -> http.HTTPFlow:
        """The whole way through: request hook, the service if nothing answered, response hook."""
        self.request(f)
        if f.response is None and f.error is None:
            f.response = upstream if upstream is not None else service_answer(200, doc())
            run(self.inj.response(f))
        elif f.response is not None and f.error is None:
            run(self.inj.response(f))  # mitmproxy calls it for answers set in request too
        return f

    def rules(self) -> list[str]:
        return [r.name for item in self.inj.scenarios.loaded for r in item.scenario.rules]

    def stats(self) -> dict[str, tuple[int, int]]:
        return {s.name: (s.matches, s.fires) for item in self.inj.scenarios.loaded
                for s in item.engine.stats()}


def scenario_text(*rules: str, name: str = "test", seed: int = 1) -> str:
    return f"name: {name}\nseed: {seed}\nrules:\n" + "".join(rules)


def rule(name: str, fault: str, match: str | None = None, when: str | None = None,
         extra: str = "") -> str:
    text = f"  - name: {name}\n"
    if match:
        text += f"    match: {match}\n"
    if when:
        text += f"    when: {when}\n"
    return text + f"    fault: {fault}\n" + extra


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def bump(path: str) -> None:
    """Make an edit visible to the watcher even within one mtime tick."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@contextmanager
def rig(tmp_path: Path, *texts: str, clock: Clock | None = None,
        **options: Any) -> Iterator[Rig]:
    inj = injector.FaultInjector(clock=clock) if clock else injector.FaultInjector()
    r = router.Router()
    with taddons.context(r, inj) as tctx:
        paths = [write(tmp_path / f"scenario-{i}.yaml", t) for i, t in enumerate(texts)]
        tctx.configure(inj, mpsd_scenario=paths, **options)
        yield Rig(tctx, inj, r)


def seed_session(rg: Rig, change: int = 1, etag: str = ETAG) -> None:
    rg.inj.tracker.remember(KEY, LOBBY, faults.encode_json(doc(change)), etag)


def provenance(f: http.HTTPFlow) -> dict[str, Any]:
    return common.provenance(f)


def media(f: http.HTTPFlow) -> str | None:
    assert f.response is not None
    value = f.response.headers.get("content-type")
    return value.split(";")[0].strip() if value else None
