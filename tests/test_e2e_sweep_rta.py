"""End to end: the sweep's RTA faults (tap drop and delay, resync, close) on a host that
listens to its shoulder taps, judged from the recording alone.

A host console subscribes to session changes over the RTA websocket and joins a lobby
with its ConnectionId; a friend (HTTP only) changes the lobby turn after turn, so each
change taps the host. The well-behaved host reads the lobby on any tap newer than its
copy and on a resync, and on a lost websocket reconnects at once, subscribes again and
writes its new ConnectionId, as MultiplayerManager does. The one that misbehaves waits
for the exact next changeNumber, so a dropped tap leaves it stale. The stand-in serves
the websocket; the proxy sweeps only the RTA cells (`--sweep-only 'RTA */*'`). Real
sockets on loopback, bounded waits, our own ids.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from conftest import Launcher
from test_e2e_sweep import cells_by_name
from test_e2e_sweep import done_cells
from test_e2e_sweep import matrix_of
from test_e2e_sweep import standin_config  # noqa: F401 - a fixture: no rate limit to reach
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect

from mpsdproxy import recording
from mpsdproxy import rta
from mpsdproxy import sweep
from mpsdproxy import title

SCID = title.SCID
NAME = "rta-sweep-lobby"
LOBBY = f"/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/{NAME}"
WAIT = 10.0
#: The RTA operation, named after the tap's session as the service spells it (the stand-in
#: spells the template in lower case).
OPERATION = "RTA tap lobbysession"
#: How long the friend plays on after the last fault: past the limit a tap's read is
#: judged by (`rta_read_within_s`, limits.yaml), so the last taps are decided too.
TAIL_S = 6.0
CELLS = {sweep.cell_name(OPERATION, f) for f in sweep.faultlist.RTA_FAULTS}


def _headers(user: str) -> dict[str, str]:
    return {"x-xbl-contract-version": "107", "Authorization": f"XBL3.0 x={user};token-of-{user}",
            "Content-Type": "application/json; charset=utf-8"}


class Host:
    """The listening console: its websocket, its HTTP client and its copy's changeNumber."""

    def __init__(self, port: int, stack: ExitStack, exact: bool) -> None:
        self.port, self.exact = port, exact
        self.http = stack.enter_context(httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=WAIT, headers=_headers("host")))
        self.ws: ClientConnection | None = None
        self.known = 0

    def connect(self) -> None:
        """Open the websocket, subscribe, and (re)join with the new ConnectionId."""
        self.ws = connect(f"ws://127.0.0.1:{self.port}/connect", subprotocols=[rta.SUBPROTOCOL],
                          additional_headers={"Authorization": _headers("host")["Authorization"]},
                          proxy=None, compression=None, open_timeout=WAIT, close_timeout=2)
        self.ws.send(rta.subscribe_message(1))
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            answer = rta.decode(self.ws.recv(timeout=WAIT), from_client=False)
            if answer is not None and answer.type is rta.Type.SUBSCRIBE:
                break
        assert answer is not None and answer.connection_id, answer
        self.write(answer.connection_id)

    def write(self, connection: str) -> None:
        body = {"members": {"me": {
            "constants": {"system": {"xuid": "2533274800000171", "initialize": True}},
            "properties": {"system": {"active": True, "connection": connection,
                                      "subscription": {
                                          "id": "0f0e0d0c-0000-4000-8000-000000000171",
                                          "changeTypes": ["everything"]}}}}}}
        answer = self.http.put(LOBBY, json=body)
        assert answer.status_code in (200, 201), answer.text
        if not self.exact:  # the misbehaving host counts only what taps and reads say
            self.known = max(self.known, answer.json()["changeNumber"])

    def read(self) -> None:
        answer = self.http.get(LOBBY)
        if answer.status_code == 200:
            self.known = max(self.known, answer.json()["changeNumber"])

    def listen(self, seconds: float) -> None:
        """Take what the websocket brings for `seconds`: read on a tap newer than the copy
        (the misbehaving host: only on the exact next one) and on a resync; reconnect
        when the websocket is lost."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            assert self.ws is not None
            try:
                message = rta.decode(self.ws.recv(timeout=left), from_client=False)
            except TimeoutError:
                return
            except ConnectionClosed:
                self.ws.close()
                self.connect()  # at once, as the library's first reconnect goes
                continue
            if message is None:
                continue
            if message.type is rta.Type.RESYNC:
                self.read()
            for tap in message.taps:
                number = tap.change_number or 0
                if number == self.known + 1 or (number > self.known and not self.exact):
                    self.read()


def play(launch: Launcher, config: Path, exact: bool, state: Path,
         cells: set[str] = CELLS) -> Path:
    standin = launch.standin("--config", str(config))
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet", "--sweep",
                         "--sweep-state", str(state), "--sweep-gap", "200ms",
                         "--sweep-only", "RTA */" + ",".join(sweep.split_cell(c)[1]
                                                             for c in sorted(cells)))
    with ExitStack() as stack:
        friend = stack.enter_context(httpx.Client(
            base_url=proxy.url, timeout=WAIT, headers=_headers("friend")))
        host = Host(proxy.port, stack, exact)
        try:
            host.connect()
            joined = friend.put(LOBBY, json={"members": {"me": {"constants": {"system": {
                "xuid": "2533274800000172", "initialize": True}}}}})
            assert joined.status_code in (200, 201), joined.text
            started, after = time.monotonic(), None
            turn = 0
            while time.monotonic() - started < 90 and (after is None or time.monotonic() < after):
                changed = friend.put(LOBBY, json={"properties": {"custom": {"turn": turn}}})
                assert changed.status_code in (200, 201), changed.text
                host.listen(0.3)
                turn += 1
                if after is None and cells <= done_cells(state):
                    after = time.monotonic() + TAIL_S  # what the host did after the last fault
            host.listen(sweep.faultlist.TAP_DELAY_S + 0.5)
        finally:
            if host.ws is not None:
                host.ws.close()
    proxy.stop()
    standin.stop()
    assert proxy.record is not None
    return proxy.record


def notes(record: Path) -> list[dict[str, Any]]:
    """The records of frames a fault kept from the title."""
    issues: list[recording.ReadIssue] = []
    found = [r for r in recording.read(record, issues=issues, messages=True)
             if r.get("dropped") is True]
    assert not issues, [str(i) for i in issues]
    return found


def test_a_host_that_reads_on_any_newer_tap_recovers_from_every_rta_fault(
        launch: Launcher, standin_config: Path, tmp_path: Path) -> None:  # noqa: F811
    state = tmp_path / "state.json"
    record = play(launch, standin_config, exact=False, state=state)
    assert CELLS <= done_cells(state)
    dropped = notes(record)
    assert {r["provenance"]["rule"] for r in dropped} >= {
        sweep.cell_name(OPERATION, "tap:drop"), sweep.cell_name(OPERATION, "rta:close")}
    assert all(r["rta"]["type"] == "event" and r["provenance"]["scenario"] == "sweep"
               for r in dropped)
    code, text = matrix_of(record, fail_on=True)
    cells = cells_by_name(text)
    for name in CELLS:
        assert cells[name]["state"] == "recovered", cells[name]
    assert cells[sweep.cell_name(OPERATION, "rta:close")]["verdicts"][0]["rule"] == \
        "rta-reconnect"
    assert cells[sweep.cell_name(OPERATION, "rta:resync")]["verdicts"][0]["status"] == "pass"
    unreachable = cells[sweep.cell_name(OPERATION, "412.if-match-session")]
    assert unreachable["state"] == "not-reachable" and "shoulder tap" in unreachable["reason"]
    assert code == 0


def test_a_host_that_waits_for_the_exact_next_tap_does_not_recover_from_a_drop(
        launch: Launcher, standin_config: Path, tmp_path: Path) -> None:  # noqa: F811
    state, drop = tmp_path / "state.json", sweep.cell_name(OPERATION, "tap:drop")
    record = play(launch, standin_config, exact=True, state=state, cells={drop})
    code, text = matrix_of(record, fail_on=True)
    cell = cells_by_name(text)[drop]
    assert cell["state"] == "not-recovered", cell
    assert "tap-read" in cell["reason"] and cell["records"]
    assert code == 1
