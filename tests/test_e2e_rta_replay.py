"""End to end: a recorded two-console RTA session replayed to fresh consoles.

First `mpsdproxy run` records two consoles in front of `mpsdproxy emulate`: each
opens the RTA websocket, subscribes, joins the lobby with its ConnectionId, and
one writes; the stand-in taps both. Then the stand-in is stopped and
`mpsdproxy run --replay REC --unmatched error` answers two fresh consoles that
repeat the same requests: each gets, over its own websocket, the ConnectionId and
the taps (changeNumbers) it got when recorded, in the same order. Real sockets on
loopback, bounded waits, our own ids.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

from conftest import Launcher
from rta_kit import WAIT
from rta_kit import Console
from rta_kit import lobby_key
from rta_kit import two_join
from websockets.exceptions import ConnectionClosed

from mpsdproxy import recording
from mpsdproxy.recording import messages

NAME = "party-rta-replay"
KEY = lobby_key(NAME)



def _play(port: int) -> tuple[Console, Console, int]:
    """The title's part, as each console plays it: subscribe, join, one write; the
    consoles and the last changeNumber."""
    with ExitStack() as stack:
        first, second, joined = two_join(port, stack, NAME)
        written = first.write({"properties": {"custom": {"map": "harbor"}}})
        first.taps_until(written)
        second.taps_until(written)
        _drain(first)
        _drain(second)
    return first, second, written


def _drain(console: Console) -> None:
    """Read what else arrives within a short while (a stray extra tap would show)."""
    try:
        while True:
            console.read(console.ws.recv(timeout=0.3))
    except (TimeoutError, ConnectionClosed):
        return


def _recorded_taps(path: Path) -> list[list[int]]:
    """Per websocket (in handshake order), the lobby's changeNumbers tapped on it."""
    order: list[str] = []
    taps: dict[str, list[int]] = {}
    for record in recording.read(path, strict=True, messages=True):
        if not messages.is_message(record):
            if record["response"] and record["response"]["status"] == 101:
                order.append(record["client"])
            continue
        message = messages.rta_of(record)
        if message is not None and record["direction"] == "server":
            taps.setdefault(record["client"], []).extend(
                t.change_number for t in message.taps if t.session == KEY)
    return [taps.get(client, []) for client in order]


def _taps_follow_their_writes(path: Path) -> None:
    """In the replay's own recording every tap comes after the answer that brought the
    lobby to its changeNumber (the replay releases a tap only once that was served)."""
    answered: set[int] = set()
    taps = 0
    for record in recording.read(path, strict=True, messages=True):
        if not messages.is_message(record):
            body = (record["response"] or {}).get("body") or {}
            if isinstance(body.get("json"), dict) and "changeNumber" in body["json"]:
                answered.add(body["json"]["changeNumber"])
            continue
        message = messages.rta_of(record)
        for tap in message.taps if message is not None else ():
            assert tap.change_number in answered, (record["seq"], tap, answered)
            taps += 1
    assert taps >= 4


def test_a_replay_gives_fresh_consoles_the_recorded_taps_in_order(launch: Launcher) -> None:
    standin = launch.standin()
    recorder = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet")
    first, second, written = _play(recorder.port)
    recorded = _recorded_taps(recorder.record)
    assert recorded == [first.taps, second.taps]
    assert written in first.taps and written in second.taps
    standin.stop()  # the replay answers everything itself: nothing to forward to
    recorder.stop()

    replayer = launch.proxy("--mode", f"reverse:{standin.url}", "--replay",
                            str(recorder.record), "--unmatched", "error")
    again_first, again_second, again_written = _play(replayer.port)
    assert again_written == written
    assert again_first.connection_id == first.connection_id  # the recorded subscribe result
    assert again_second.connection_id == second.connection_id
    assert (again_first.taps, again_second.taps) == (first.taps, second.taps)

    deadline = time.monotonic() + WAIT  # the replay's own recording holds the taps too
    while _recorded_taps(replayer.record) != recorded:
        assert time.monotonic() < deadline, (_recorded_taps(replayer.record), recorded)
        time.sleep(0.05)
    _taps_follow_their_writes(replayer.record)
    handshakes = [r for r in recording.read(replayer.record, strict=True)
                  if r["response"] and r["response"]["status"] == 101]
    assert [h["request"]["url"] for h in handshakes] == [f"{standin.url}/connect"] * 2
    assert all(h["provenance"]["source"] == "replayed" for h in handshakes)
    assert "token-of-console-a" not in replayer.record.read_text()
