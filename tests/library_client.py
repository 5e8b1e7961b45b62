"""A scripted title that calls the session directory the way the client library does.

Each rule is written down from the library's source (public repository
microsoft/xbox-live-api and its libHttpClient), so the end-to-end verdict tests
judge behaviour the library really has, and the broken variants break exactly
one rule:

1. Retried statuses are 408, 429, 500, 502, 503 and 504 (libHttpClient
   Source/HTTP/httpcall.cpp, `ShouldRetry`), and only when the call allows
   retries, the default.
2. Session writes never retry: `SetRetryAllowed(false)` on PUT session
   (Source/Services/Multiplayer/multiplayer_service.cpp,
   `WriteSessionUsingSubpath`). Reads, queries and handle POSTs do.
3. Retry n (n = attempts already sent) waits lerp(d^n, d^(n+1), jitter) seconds,
   d = 2, capped at 60 (httpcall.cpp, the retry delay): 2-4 s, then 4-8 s. With
   a Retry-After the wait is max(that, Retry-After x 1.0-1.2); a 500 waits at
   least 10 s. Here the jitter is 0: the shortest wait the library can make.
4. A retry is abandoned when the 20 s window from the first attempt has 5 s or
   less left, or less than the wait plus 5 s (httpcall.cpp, `ShouldRetry`).
5. After an answer above 400 with a Retry-After, later calls to the same API
   (retryAfterCacheId, one per xbox_live_api enum: method and resource
   template here) before that time fail fast, without the network
   (httpcall.cpp, `ShouldFailFast`). Other APIs go on.
6. A 412 with a body on a session write is no error: the session is rebuilt
   from the body and its ETag (multiplayer_session.cpp ~L1241) and
   MultiplayerManager adopts it (multiplayer_session_writer.cpp ~L378); the
   next write sends that ETag.

`blind_resend` breaks rule 6 (the next write resends the ETag the 412 refused);
`early_retry` breaks rules 3 and 5 (retries the same API 100 ms later).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import httpx

from mpsdproxy import resources

RETRIED = frozenset({408, 429, 500, 502, 503, 504})
DELAY_BASE_S = 2.0
WINDOW_S = 20.0
CONTRACT = ("x-xbl-contract-version", "107")
AGENT = ("User-Agent", "XboxServicesAPI/2021.10.20211005.0 c")


def api_of(method: str, path: str) -> str:
    """The API a call belongs to, as the library's per-API Retry-After cache keys it."""
    resource = resources.parse(path)
    return f"{method} {resource.kind.value} {resource.template or ''}".lower()


@dataclass
class LibraryClient:
    base: str
    user: str = "2533274800000001"
    blind_resend: bool = False
    early_retry: bool = False
    etags: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # path -> ETag a 412 refused
    retry_after_until: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.base, timeout=20)

    def close(self) -> None:
        self.http.close()

    def _headers(self, extra: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
        return [CONTRACT, AGENT, ("Authorization", f"XBL3.0 x={self.user};token-{self.user}"),
                ("Content-Type", "application/json; charset=utf-8"), *extra]

    def send_once(self, method: str, path: str, body: Any,
              extra: tuple[tuple[str, str], ...]) -> httpx.Response | None:
        content = json.dumps(body).encode() if body is not None else None
        try:
            return self.http.request(method, path, content=content,
                                     headers=self._headers(extra))
        except httpx.TransportError:
            return None

    def call(self, method: str, path: str, body: Any = None,
             extra: tuple[tuple[str, str], ...] = (), *,
             retry_allowed: bool = True) -> httpx.Response | None:
        """One library call: its attempts, as rules 1-5 say. None when it failed fast or
        the connection ended without an answer."""
        api = api_of(method, path)
        if not self.early_retry and time.monotonic() < self.retry_after_until.get(api, 0):
            return None  # rule 5: fails fast, no network
        first = time.monotonic()
        attempt = 0
        while True:
            answer = self.send_once(method, path, body, extra)
            attempt += 1
            status = answer.status_code if answer is not None else None
            retry_after = _retry_after(answer)
            if status is not None and status > 400 and retry_after is not None:
                self.retry_after_until[api] = time.monotonic() + retry_after
            if not retry_allowed or (status is not None and status not in RETRIED):
                return answer
            wait = DELAY_BASE_S ** attempt  # rule 3, jitter 0
            if retry_after is not None:
                wait = max(wait, float(retry_after))
            if status == 500:
                wait = max(wait, 10.0)
            if self.early_retry:
                wait = 0.1
            left = WINDOW_S - (time.monotonic() - first)
            if left <= 5 or left < wait + 5:  # rule 4
                return answer
            time.sleep(wait)

    # -- the multiplayer service's calls ------------------------------------------------------

    def read_session(self, path: str) -> httpx.Response | None:
        answer = self.call("GET", path)
        if answer is not None and answer.status_code == 200 and "etag" in answer.headers:
            self.etags[path] = answer.headers["etag"]
        return answer

    def write_session(self, path: str, body: Any) -> httpx.Response | None:
        """PUT session, never retried (rule 2); If-Match with the session's ETag once it
        has one. A 412 with a body is adopted (rule 6)."""
        etag = self.etags.get(path)
        if self.blind_resend and path in self.refused:
            etag = self.refused[path]
        extra = (("If-Match", etag),) if etag else ()
        answer = self.call("PUT", path, body, extra, retry_allowed=False)
        if answer is None:
            return None
        if answer.status_code in (200, 201) or (answer.status_code == 412 and answer.content):
            if answer.status_code == 412 and etag:
                self.refused[path] = etag
            if "etag" in answer.headers:
                self.etags[path] = answer.headers["etag"]
        return answer

    def create_handle(self, scid: str, template: str, name: str) -> httpx.Response | None:
        return self.call("POST", "/handles", {"version": 1, "type": "activity", "sessionRef": {
            "scid": scid, "templateName": template, "name": name}})


def _retry_after(answer: httpx.Response | None) -> int | None:
    """Whole seconds only: the library parses Retry-After as an integer (httpcall.cpp
    `GetRetryAfterHeaderTime`)."""
    if answer is None:
        return None
    value = answer.headers.get("retry-after", "").strip()
    return int(value) if value.isdigit() else None


# -- a title under a fault sweep (added for tests/test_e2e_sweep.py) --------------------------


def _failed(answer: httpx.Response | None) -> bool:
    """A call the title must recover from: no answer, or one that is neither a success
    nor a 412 with the session (adopted, rule 6)."""
    if answer is None:
        return True
    return answer.status_code >= 300 and not (answer.status_code == 412 and answer.content)


def sweep_turn(client: LibraryClient, path: str, turn: int) -> None:
    """One turn of a lobby under a fault sweep: write the lobby (as its member), read it.

    A failed write is followed by a read and one more write, as MultiplayerManager
    re-reads and retries its pending change after a failure
    (Manager/multiplayer_session_writer.cpp, HandleEvents after a failed write); a read
    that finds no session (204) forgets its ETag, so the next write creates it again.
    With `blind_resend` the write after a 412 resends the refused ETag (rule 6 broken).
    """
    xuid = client.user
    body = {**_member(xuid), "properties": {"custom": {"turn": turn}}}
    if _failed(client.write_session(path, body)):
        _reread(client, path)
        client.write_session(path, body)
    if _failed(_reread(client, path)):
        _reread(client, path)


def _member(xuid: str) -> dict[str, Any]:
    return {"members": {"me": {"constants": {"system": {"xuid": xuid, "initialize": True}},
                               "properties": {"system": {"active": True}}}}}


def _reread(client: LibraryClient, path: str) -> httpx.Response | None:
    answer = client.read_session(path)
    if answer is not None and answer.status_code == 204:
        client.etags.pop(path, None)
    return answer
