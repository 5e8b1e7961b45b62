"""End to end: two consoles' RTA websockets through `mpsdproxy run` in front of the stand-in.

Each console subscribes to the session directory's connections resource, writes the
ConnectionId it got into its member (as MultiplayerManager does: the library's
multiplayer_subscription.cpp reads `ConnectionId` from the subscribe result, and the
member write carries `properties.system.connection`), and a write by one gives the
other a shoulder tap with the session's new changeNumber. The recording then holds
the HTTP exchanges and every RTA message, in the order they passed the proxy, and the
live log shows the tap. Real sockets on loopback, bounded waits, our own ids.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from conftest import Launcher
from rta_kit import WAIT
from rta_kit import Console
from rta_kit import lobby_key
from rta_kit import two_join
from websockets.sync.client import connect

from mpsdproxy import recording
from mpsdproxy import rta
from mpsdproxy.recording import messages
from mpsdproxy.recording import messages as ws

NAME = "party-rta"
KEY = lobby_key(NAME)



@pytest.fixture
def consoles(launch: Launcher) -> Iterator[tuple[Console, Console, Any]]:
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}")
    with ExitStack() as stack:
        first = Console(proxy.port, "console-a", "2533274800000001", stack, NAME)
        second = Console(proxy.port, "console-b", "2533274800000002", stack, NAME)
        yield first, second, proxy


def _rta(record: dict[str, Any]) -> rta.Message | None:
    message = messages.from_record(record)
    return rta.decode(message.payload, from_client=message.direction == "client")


def test_a_write_by_one_console_taps_the_other(consoles) -> None:
    first, second, proxy = consoles
    first.subscribe()
    second.subscribe()
    assert first.connection_id != second.connection_id
    first.join()
    joined = second.join()
    assert first.tap_for(joined).change_number == joined  # first learns second joined
    written = first.write({"properties": {"custom": {"map": "harbor"}}})
    assert written > joined
    tap = second.tap_for(written)
    assert tap.change_number == written
    first.ws.close()
    second.ws.close()

    deadline = time.monotonic() + WAIT  # the live log line follows the answer
    while f"RTA tap {NAME} changeNumber {written} -> client 127.0.0.1" not in proxy.output():
        assert time.monotonic() < deadline, proxy.output()
        time.sleep(0.05)
    records = list(recording.read(proxy.record, strict=True, messages=True))
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    kinds = ["ws" if messages.is_message(r) else r["request"]["method"] for r in records]
    assert kinds.count("GET") == 2 and kinds.count("PUT") == 3  # two handshakes, three writes
    puts = [i for i, r in enumerate(records) if not messages.is_message(r)
            and r["request"]["method"] == "PUT"]
    subscribes = [i for i, r in enumerate(records) if messages.is_message(r)
                  and r["direction"] == "client" and (_rta(r) or rta.Message(rta.Type.RESYNC)
                                                      ).type is rta.Type.SUBSCRIBE]
    assert len(subscribes) == 2 and max(subscribes) < puts[0]
    taps = [(i, t) for i, r in enumerate(records) if messages.is_message(r)
            for t in ((_rta(r) or rta.Message(rta.Type.RESYNC)).taps)]
    seen_by_second = [i for i, t in taps if t.change_number == written]
    assert seen_by_second and min(seen_by_second) > puts[1]  # after second's join answer
    assert all(t.session == KEY for _, t in taps)
    assert any(r.get("rta", {}).get("type") == "event" for r in records), \
        "the records carry the decoded RTA message"
    closes = [r for r in records if messages.is_message(r) and r["opcode"] == "close"]
    assert len(closes) == 2
    raw = proxy.record.read_text()
    assert "token-of-console-a" not in raw


def test_regular_mode_decrypts_the_rta_host(launch: Launcher, confdir: Path) -> None:
    """wss://rta.xboxlive.com/connect through the proxy (CONNECT, its CA), sent to the
    stand-in with --upstream: the default intercept list holds the RTA host."""
    standin = launch.standin()
    proxy = launch.proxy("--upstream", standin.url)
    verify = ssl.create_default_context(cafile=str(confdir / "mitmproxy-ca-cert.pem"))
    with connect("wss://rta.xboxlive.com/connect", subprotocols=[rta.SUBPROTOCOL],
                 proxy=proxy.url, ssl=verify, compression=None, open_timeout=WAIT,
                 close_timeout=2) as ws:
        ws.send(rta.subscribe_message(1))
        answer = rta.decode(ws.recv(timeout=WAIT), from_client=False)
    assert answer is not None and answer.connection_id
    deadline = time.monotonic() + WAIT
    while "RTA closed by client" not in proxy.output():
        assert time.monotonic() < deadline, proxy.output()
        time.sleep(0.05)
    records = list(recording.read(proxy.record, strict=True, messages=True))
    assert records[0]["request"]["url"] == "https://rta.xboxlive.com/connect"
    assert [messages.is_message(r) for r in records] == [False, True, True, True]
    assert [r.get("rta", {}).get("type") for r in records[1:3]] == ["subscribe", "subscribe"]


def test_a_lone_surrogate_in_a_message_is_shown_escaped_live_and_in_every_report(
        launch: Launcher, tmp_path: Path) -> None:
    """JSON may escape a lone surrogate (`"\\ud800"`), which no UTF-8 can hold once decoded:
    the live log printed no line for it (an addon error instead), and `report` crashed."""
    from click.testing import CliRunner

    from mpsdproxy.cli import cli

    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}")
    with ExitStack() as stack:
        console = Console(proxy.port, "console-a", "2533274800000001", stack, NAME)
        console.ws.send('[1, 2, "\\ud800"]')  # a subscribe to a resource no one has
        answer = console.next_message(lambda m: m.type is rta.Type.SUBSCRIBE)
        assert answer.status is not rta.Status.SUCCESS
    assert proxy.stop() == 0
    assert "Addon error" not in proxy.output(), proxy.output()
    assert "\\ud800" in proxy.output()
    assert proxy.record is not None
    for fmt in ("text", "json", "html", "junit"):
        out = tmp_path / f"report.{fmt}"
        result = CliRunner().invoke(cli, ["report", str(proxy.record), "--format", fmt,
                                          "-o", str(out)])
        assert result.exit_code in (0, 1), result.output
        assert "\\ud800" in out.read_text(encoding="utf-8") or fmt == "junit"


def test_a_plain_mitmdump_capture_imports_with_its_rta_messages(
        launch: Launcher, tmp_path: Path) -> None:
    """A studio's own `mitmdump -w` capture of two consoles: the websocket flows' messages
    (subscribes, results, the tap) and closes come in as records."""
    import subprocess
    import sys

    from click.testing import CliRunner
    from conftest import free_port
    from conftest import wait_for_port

    from mpsdproxy.cli import cli

    standin = launch.standin()
    port, capture, log = free_port(), tmp_path / "capture.mitm", tmp_path / "mitmdump.log"
    mitmdump = Path(sys.executable).parent / "mitmdump"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(mitmdump), "-p", str(port), "--mode", f"reverse:{standin.url}",
             "-w", str(capture), "--set", f"confdir={tmp_path}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # its log line as it happens
    try:
        wait_for_port(port, proc, log)
        with ExitStack() as stack:
            _, _, joined = two_join(port, stack, NAME)
        _wait_for_ended_websockets(log, 2)  # mitmdump writes a websocket flow at its end
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    out = tmp_path / "capture.jsonl"
    result = CliRunner().invoke(cli, ["import", str(capture), "-o", str(out)])  # the default
    assert "dropped 0" in result.output  # the stand-in's host: its /connect is the RTA's
    assert result.exit_code == 0, result.output
    records = list(recording.read(out, strict=True, messages=True))
    found = [(r["direction"], r["rta"]["type"]) for r in records if "rta" in r]
    assert found.count(("client", "subscribe")) == 2
    assert found.count(("server", "subscribe")) == 2
    assert ("server", "event") in found  # the tap
    closes = [r for r in records if r.get("opcode") == "close"]
    assert len(closes) == 2 and all(r["direction"] == "client" for r in closes)
    tapped = [t for r in records if r.get("rta", {}).get("type") == "event"
              for t in r["rta"]["taps"]]
    assert joined in [t["changeNumber"] for t in tapped]


def test_resend_opens_the_websockets_again_and_hears_the_target(launch: Launcher,
                                                                 tmp_path: Path) -> None:
    """Two consoles' run re-sent to a fresh stand-in: each websocket is opened again (101,
    not the 400 a plain GET got), the subscribes go on it in their places, and the
    target's own answers and taps are recorded; `diff` pairs the handshakes."""
    from click.testing import CliRunner

    from mpsdproxy.cli import cli

    proxy = launch.proxy("--mode", f"reverse:{launch.standin().url}")
    with ExitStack() as stack:
        two_join(proxy.port, stack, NAME)
    assert proxy.stop() == 0 and proxy.record is not None
    target, again = launch.standin(), tmp_path / "again.jsonl"
    result = CliRunner().invoke(cli, ["resend", str(proxy.record), "--to", target.url,
                                      "--record", str(again)])
    assert result.exit_code == 0, result.output
    records = list(recording.read(again, strict=True, messages=True))
    exchanges = [r for r in records if not ws.is_message(r)]
    assert [r["response"]["status"] for r in exchanges] == [101, 101, 201, 200]
    assert all(r["provenance"]["source"] == "resent" for r in records)
    said = [(r["direction"], r.get("rta", {}).get("type"), r["opcode"])
            for r in records if ws.is_message(r)]
    assert said.count(("client", "subscribe", "text")) == 2
    assert said.count(("server", "subscribe", "text")) == 2  # the target's own answers
    assert ("server", "event", "text") in said  # the tap of the second join, heard
    assert said.count(("client", None, "close")) == 2
    results = [r["rta"] for r in records if r.get("rta", {}).get("type") == "subscribe"
               and r["direction"] == "server"]
    assert all(r["status"] == 0 for r in results)
    handshake_seqs = {r["seq"] for r in exchanges if r["response"]["status"] == 101}
    for r in records:  # each message after its handshake, on its socket
        if ws.is_message(r):
            assert r["seq"] > min(handshake_seqs)
    assert f", {len(said)} websocket message(s); recorded to" in result.stdout
    diffed = CliRunner().invoke(cli, ["diff", str(proxy.record), str(again)])
    assert diffed.exit_code == 0, diffed.output
    assert "4 pairs, 0 changed, 0 only in old, 0 only in new" in diffed.output
    # Over TLS: mitmproxy's reverse mode takes TLS on the same port, with its own CA.
    front, tls = launch.proxy("--mode", f"reverse:{target.url}", record=False), \
        tmp_path / "tls.jsonl"
    result = CliRunner().invoke(cli, ["resend", str(proxy.record), "--to",
                                      f"https://127.0.0.1:{front.port}", "--insecure",
                                      "--rename", "--record", str(tls)])
    assert result.exit_code == 0, result.output
    records = list(recording.read(tls, strict=True, messages=True))
    assert [r["response"]["status"] for r in records if not ws.is_message(r)] == [
        101, 101, 201, 200]
    assert ("server", "event") in [(r["direction"], r.get("rta", {}).get("type"))
                                   for r in records if ws.is_message(r)]


def test_a_megabyte_uri_is_shown_clipped_live_and_in_the_report(
        launch: Launcher, tmp_path: Path) -> None:
    """What a title sends may be huge: a line for people shows the start and the length
    (`model.clipped`), the recording and the JSON report keep it whole."""
    from click.testing import CliRunner

    from mpsdproxy.cli import cli

    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}")
    uri = "https://sessiondirectory.xboxlive.com/" + "a" * 1_000_000
    with ExitStack() as stack:
        console = Console(proxy.port, "console-a", "2533274800000001", stack, NAME)
        console.ws.send(rta.subscribe_message(2, uri))
        console.next_message(lambda m: m.type is rta.Type.SUBSCRIBE)
    assert proxy.stop() == 0 and proxy.record is not None
    shown = f"... ({len(uri):,} characters)"
    assert shown in proxy.output()
    assert max(len(line) for line in proxy.output().splitlines()) < 1000
    text = CliRunner().invoke(cli, ["report", str(proxy.record)])
    assert shown in text.stdout and max(len(line) for line in text.stdout.splitlines()) < 1000
    out = tmp_path / "report.json"
    CliRunner().invoke(cli, ["report", str(proxy.record), "--format", "json", "-o", str(out)])
    assert uri in out.read_text()



def _wait_for_ended_websockets(log: Path, count: int) -> None:
    """Until mitmdump has said `count` websockets ended (bounded): its `save` addon writes
    such a flow at that moment, and the file is whole once it exits."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if log.read_text(errors="replace").count("WebSocket connection closed by") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"mitmdump did not end {count} websockets in {WAIT} s: "
                         f"{log.read_text(errors='replace')[-2000:]}")
