"""A scripted title: a session lifecycle that produces every row of the status table.

The script is data (a list of Steps, each naming the catalog entry it expects
the stand-in to answer with), so the demo and the end-to-end tests drive the
same lifecycle through different HTTP clients. `{etag}` in a header value is
the session's current ETag, `{stale}` the one before it (what a title that
missed an update still holds).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

__all__ = ["SCID", "Step", "Result", "lifecycle", "run", "HttpClientSender", "Sender"]

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
CONTRACT = ("x-xbl-contract-version", "107")


def session_path(name: str, template: str = "LobbySession", scid: str = SCID) -> str:
    return f"/serviceconfigs/{scid}/sessiontemplates/{template}/sessions/{name}"


def _me(xuid: str) -> dict[str, Any]:
    return {"members": {"me": {
        "constants": {"system": {"xuid": xuid, "initialize": True}},
        "properties": {"system": {"active": True}},
    }}}


@dataclass(frozen=True)
class Step:
    """One request of the script and the row of the table it should produce."""

    says: str  # what the title is doing, for people
    method: str
    path: str
    expect: str  # catalog entry id
    user: str | None = "alice"  # the caller's user hash; None sends no Authorization
    body: Any = None  # JSON-able, or bytes sent as they are
    headers: tuple[tuple[str, str], ...] = ()
    admin: bool = False  # a switch on the stand-in itself, not title traffic


@dataclass
class Result:
    step: Step
    status: int
    headers: dict[str, str]
    body: bytes
    etag: str | None = field(default=None)


#: send(method, path, headers, body, admin) -> (status, lower-cased headers, body)
Sender = Callable[[str, str, list[tuple[str, str]], bytes, bool], tuple[int, dict[str, str], bytes]]


def lifecycle(name: str = "demo-lobby") -> list[Step]:
    """Create, join, read, conditional read, stale write, throttling, outage, leave."""
    lobby = session_path(name)
    throttled = session_path(f"{name}-busy", "ThrottledSession")
    hopper = f"/serviceconfigs/{SCID}/hoppers/QuickMatch"
    return [
        Step("creates the lobby", "PUT", lobby, "201.created", body=_me("1001")),
        Step("reads the lobby", "GET", lobby, "200.ok"),
        Step("re-reads with its ETag", "GET", lobby, "304.not-modified",
             headers=(("If-None-Match", "{etag}"),)),
        Step("bob joins", "PUT", lobby, "200.ok", user="bob", body=_me("1002")),
        Step("writes with a stale ETag", "PUT", lobby, "412.if-match-session",
             body={"properties": {"custom": {"mode": "ctf"}}}, headers=(("If-Match", "{stale}"),)),
        Step("creates-only on an existing lobby", "PUT", lobby, "412.precondition-failed",
             body=_me("1001"), headers=(("If-None-Match", "*"),)),
        Step("reads a missing member", "GET", f"{lobby}/members/7", "204.get-element"),
        Step("reads a session that is gone", "GET", session_path(f"{name}-gone"),
             "204.get-session"),
        Step("sends broken JSON", "PUT", lobby, "400.bad-request", body=b'{"members": '),
        Step("forgets its token", "GET", lobby, "403.forbidden", user=None),
        Step("a spectator tries to write", "PUT", lobby, "403.read-only", user="spectator",
             body={"properties": {"custom": {"mode": "tdm"}}}),
        Step("asks for an unknown template", "GET", session_path(name, "NoSuchTemplate"),
             "404.not-found"),
        Step("uses the wrong verb", "POST", lobby, "405.method-not-allowed", body={}),
        Step("changes a constant", "PUT", lobby, "409.conflict",
             body={"constants": {"system": {"maxMembersCount": 99}}}),
        Step("creates a busy session", "PUT", throttled, "201.created", user="carol",
             body=_me("1003")),
        Step("polls it", "GET", throttled, "200.ok", user="carol"),
        Step("polls it again, too fast", "GET", throttled, "429.too-many-requests", user="carol"),
        Step("(the service goes down)", "POST", "/_emulator/overload", "",
             body={"retry_after": 2, "requests": 1}, admin=True),
        Step("reads during the outage", "GET", lobby, "503.service-unavailable"),
        Step("starts matchmaking", "POST", hopper, "200.ok",
             body={"giveUpDuration": 60, "preserveSession": "always",
                   "ticketSessionRef": {"scid": SCID, "templateName": "LobbySession",
                                        "name": name}}),
        Step("cancels its ticket", "DELETE", f"{hopper}/tickets/{{ticket}}", "202.accepted"),
        Step("bob leaves", "DELETE", f"{lobby}/members/me", "204.element-gone", user="bob"),
        Step("the host leaves, ending the lobby", "PUT", lobby, "204.put-session-deleted",
             body={"members": {"me": None}}),
    ]


def _headers(step: Step, etags: list[str]) -> list[tuple[str, str]]:
    values = {"etag": etags[-1] if etags else "", "stale": etags[-2] if len(etags) > 1 else '"0"'}
    headers = [CONTRACT, ("Content-Type", "application/json; charset=utf-8")]
    if step.user is not None:
        headers.append(("Authorization", f"XBL3.0 x={step.user};token-of-{step.user}"))
    headers += [(k, v.format(**values)) for k, v in step.headers]
    return headers


def _body(step: Step) -> bytes:
    if step.body is None:
        return b""
    if isinstance(step.body, bytes):
        return step.body
    return json.dumps(step.body).encode()


def run(steps: Iterable[Step], send: Sender) -> list[Result]:
    """Play the steps in order, tracking ETags per session and the ticket id."""
    etags: dict[str, list[str]] = {}
    ticket = ""
    results: list[Result] = []
    for step in steps:
        path = step.path.replace("{ticket}", ticket)
        key = path.lower().split("/members/")[0]
        history = etags.setdefault(key, [])
        status, headers, body = send(step.method, path, _headers(step, history), _body(step),
                                     step.admin)
        etag = headers.get("etag")
        if etag and (not history or history[-1] != etag):
            history.append(etag)
        if "ticketid" in body.decode("utf-8", "replace").lower():
            ticket = json.loads(body).get("ticketId", ticket)
        results.append(Result(step, status, headers, body, etag))
    return results


def _call(send: Sender, says: str, method: str, path: str, user: str, body: Any = None,
          headers: tuple[tuple[str, str], ...] = (), expect: str = "") -> Result:
    step = Step(says, method, path, expect, user=user, body=body, headers=headers)
    status, got, data = send(method, path, _headers(step, []), _body(step), False)
    return Result(step, status, got, data, got.get("etag"))


def _play_pass(send: Sender, name: str, user: str, honours: bool,
               sleep: Callable[[float], None]) -> list[Result]:
    """Create a lobby, read it through an outage, lose a race to a friend's join,
    and recover from the 412, either as the service asks (`honours`) or not."""
    lobby = session_path(name)
    friend = f"{user}-friend"
    done = [_call(send, "creates the lobby", "PUT", lobby, user, _me("2001"))]
    read = _call(send, "reads the lobby", "GET", lobby, user)
    done.append(read)
    if read.status == 503:
        if honours:
            sleep(float(read.headers.get("retry-after", "1")))
        read = _call(send, "reads it again", "GET", lobby, user)
        done.append(read)
    seen = read.etag or done[0].etag or ""
    done.append(_call(send, "a friend joins", "PUT", lobby, friend, _me("2002")))
    change = {"properties": {"custom": {"map": "harbour"}}}
    stale = _call(send, "writes with the ETag it read", "PUT", lobby, user, change,
                  (("If-Match", seen),))
    done.append(stale)
    if stale.status == 412:
        retry_etag = (stale.etag or seen) if honours else seen
        done.append(_call(send, "retries the write", "PUT", lobby, user, change,
                          (("If-Match", retry_etag),)))
    done.append(_call(send, "the friend leaves", "DELETE", f"{lobby}/members/me", friend))
    done.append(_call(send, "leaves", "PUT", lobby, user, {"members": {"me": None}}))
    return done


def well_behaved(send: Sender, name: str = "good-lobby", user: str = "good",
                 sleep: Callable[[float], None] | None = None) -> list[Result]:
    """A title that waits out Retry-After and retries a 412 with the ETag it returned."""
    import time

    return _play_pass(send, name, user, True, sleep or time.sleep)


def misbehaving(send: Sender, name: str = "bad-lobby", user: str = "bad") -> list[Result]:
    """A title that retries at once after a 503 and resends its stale ETag after a 412."""
    return _play_pass(send, name, user, False, lambda _: None)


class HttpClientSender:
    """A Sender on the standard library's http.client (one keep-alive connection)."""

    def __init__(self, host: str, port: int, admin_port: int | None = None) -> None:
        self.host = host
        self.admin_port = admin_port or port
        self.conn = http.client.HTTPConnection(host, port, timeout=10)

    def __call__(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes,
                 admin: bool) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.admin_port, timeout=10) if admin \
            else self.conn
        try:
            conn.request(method, path, body=body or None, headers=dict(headers))
            response = conn.getresponse()
            data = response.read()
        finally:
            if admin:
                conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def close(self) -> None:
        self.conn.close()
