"""The report's RTA section: connections, subscriptions, taps per session, each 412 linked to
the tap before it, in text, JSON and HTML; and every message fed to the verdict engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mpsdproxy import classify
from mpsdproxy import faults
from mpsdproxy import interchange
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import report
from mpsdproxy import rta
from mpsdproxy import verdicts
from mpsdproxy.recording import messages as ws

CAPTURE = Path(__file__).resolve().parent.parent.parent / "shared" / "captures" / \
    "x49_mp_cs21.saz"
T0 = 1_800_000_000.0
MPSD = "https://sessiondirectory.xboxlive.com"
RTA_URL = "https://rta.xboxlive.com/connect"
SCID = "00000000-0000-4000-8000-00000000abcd"
PATH = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
LOBBY = f"{SCID}~lobbysession~lobby-1"
OTHER = f"{SCID}~lobbysession~lobby-2"
SESSION = {"constants": {}, "properties": {}, "members": {}, "changeNumber": 3}
CONSOLE = "10.0.0.5"


def exchange(at: float, method: str, status: int, *, took: float = 0.2,
             client: str = f"{CONSOLE}:50001", url: str = MPSD + PATH) -> dict[str, Any]:
    reply = faults.build({200: "200.ok", 201: "201.created", 412: "412.if-match-session"}
                         .get(status, "200.ok"), session=SESSION, etag='"e3"')
    ex = model.Exchange(model.Request(method, url), reply, start=T0 + at, end=T0 + at + took,
                        client=client, provenance={"source": "forwarded"})
    return recording.to_record(ex, recording.Redactor(), classify.classify(ex))


def handshake(at: float, client: str) -> dict[str, Any]:
    ex = model.Exchange(model.Request("GET", RTA_URL, model.Headers([("Upgrade", "websocket")])),
                        model.Response(101, "Switching Protocols"), start=T0 + at,
                        end=T0 + at, client=client, provenance={"source": "forwarded"})
    return recording.to_record(ex, recording.Redactor(), classify.classify(ex))


def message(at: float, direction: str, text: str, client: str,
            opcode: str = "text") -> dict[str, Any]:
    return ws.to_record(ws.WebsocketMessage(RTA_URL, direction, opcode, text.encode(),
                                            start=T0 + at, client=client))


def taps(at: float, client: str, *numbers: tuple[str, int]) -> dict[str, Any]:
    listed = [rta.Tap(session, number, "branch-1") for session, number in numbers]
    return message(at, "server", rta.tap_message(0, listed, f"ncid-{at}"), client)


def numbered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r, seq=n) for n, r in enumerate(records, start=1)]


def lobby_pass() -> list[dict[str, Any]]:
    """One console: subscribe, write, a tap for 2, a 412 answered after it, a resync, a tap
    for 4 after the 412's answer (not its cause), and another console's tap."""
    ws_client, other = f"{CONSOLE}:50100", "10.0.0.9:50300"
    return numbered([
        handshake(0, ws_client),                                                  # 1
        message(0.1, "client", rta.subscribe_message(1), ws_client),              # 2
        message(0.2, "server", rta.subscribe_result_message(
            1, 0, 0, {"ConnectionId": "conn-1"}), ws_client),                     # 3
        exchange(1, "PUT", 201),                                                  # 4
        taps(1.5, ws_client, (LOBBY, 2), (OTHER, 7)),                             # 5
        handshake(1.55, other),                                                   # 6
        taps(1.6, other, (LOBBY, 3)),                                             # 7
        exchange(1.45, "PUT", 412),                                               # 8
        taps(1.9, ws_client, (LOBBY, 4)),                                         # 9
        exchange(1.8, "PUT", 412, took=0.05),                                     # 10
        message(3, "server", rta.resync_message(), ws_client),                    # 11
        message(4, "client", rta.subscribe_message(2, "https://example.test/x"),
                ws_client),                                                       # 12
        message(4.1, "server", rta.subscribe_result_message(2, 1001, 5), ws_client),  # 13
        exchange(5, "PUT", 412, url=MPSD + PATH.replace("lobby-1", "lobby-3")),  # 14
    ])


def test_each_412_is_linked_to_the_tap_before_it_for_its_session() -> None:
    section = report.report_records(lobby_pass()).rta
    links = {link.seq: link for link in section.links}
    assert set(links) == {8, 10, 14}
    assert links[8].tap is not None
    assert (links[8].tap.seq, links[8].tap.change_number) == (5, 2)  # not the other console's 3
    # the tap for 4 stands before record 10 but came after its answer: the 2 is what it had
    assert links[10].tap is not None and links[10].tap.change_number == 2
    assert links[14].tap is None and "no tap" in links[14].sentence()
    assert "changeNumber 2 (#5" in links[8].sentence()


def test_connections_subscriptions_and_taps_per_session_are_counted() -> None:
    section = report.report_records(lobby_pass()).rta
    assert (section.messages, section.taps, section.resyncs) == (8, 4, 1)
    assert section.connections_total == 2
    first = section.connections[0]
    assert (first.connection_id, first.taps, first.resyncs, first.first_seq) == (
        "conn-1", 3, 1, 2)
    subs = [(s.seq, s.uri, s.status_name, s.subscription_id, s.result_seq)
            for s in section.subscriptions]
    assert subs == [(2, rta.CONNECTIONS_URI, "success", 0, 3),
                    (12, "https://example.test/x", "throttled", 5, 13)]
    by_session = {s.session: [(t.seq, t.change_number) for t in s.taps]
                  for s in section.sessions}
    assert by_session == {LOBBY: [(5, 2), (7, 3), (9, 4)], OTHER: [(5, 7)]}


def test_every_form_shows_the_section() -> None:
    built = report.report_records(lobby_pass())
    doc = json.loads(report.render(built, "json"))["rta"]
    assert [link["tap"] and link["tap"]["changeNumber"] for link in doc["precondition_links"]] \
        == [2, 2, None]
    assert doc["sessions"][0] == {"session": LOBBY, "taps_total": 3, "taps": [
        {"seq": 5, "time": recording.timestamp(T0 + 1.5), "changeNumber": 2,
         "branch": "branch-1"},
        {"seq": 7, "time": recording.timestamp(T0 + 1.6), "changeNumber": 3,
         "branch": "branch-1"},
        {"seq": 9, "time": recording.timestamp(T0 + 1.9), "changeNumber": 4,
         "branch": "branch-1"}]}
    text = report.render(built, "text")
    assert "RTA SHOULDER TAPS" in text and "#8 412 on sessions/lobby-1: after the tap for " \
        "changeNumber 2 (#5" in text
    page = report.render(built, "html")
    assert 'id="rta"' in page and page.count('class="rta-link"') == 3
    assert LOBBY in page


def test_a_report_without_websocket_messages_has_an_empty_section() -> None:
    built = report.report_records([dict(exchange(0, "GET", 200), seq=1)])
    assert built.rta.empty
    assert "RTA SHOULDER TAPS" not in report.render(built, "text")
    assert 'id="rta"' not in report.render(built, "html")


def test_every_message_goes_to_the_verdict_engine_in_order(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    fed: list[Any] = []
    feed = verdicts.Engine.feed

    def feed_exchange(self: verdicts.Engine, ex: model.Exchange) -> list[verdicts.Verdict]:
        fed.append(("exchange", ex.seq))
        return feed(self, ex)

    def feed_message(self: verdicts.Engine, m: ws.WebsocketMessage) -> list[verdicts.Verdict]:
        fed.append(("message", m.seq))
        return []

    monkeypatch.setattr(verdicts.Engine, "feed", feed_exchange)
    monkeypatch.setattr(verdicts.Engine, "feed_message", feed_message, raising=False)
    records = lobby_pass()
    report.report_records(records)
    assert fed == [("message" if ws.is_message(r) else "exchange", r["seq"]) for r in records]


def test_the_capture_links_its_412_to_the_tap_for_change_number_2(tmp_path: Path) -> None:
    if not CAPTURE.exists():
        pytest.skip(f"{CAPTURE} is not beside the clone")
    out = tmp_path / "capture.jsonl"
    interchange.import_file(str(CAPTURE), str(out))
    built = report.build_report(out)
    links = built.rta.links
    assert len(links) == 2  # the capture's two 412s
    lobby, game = links
    assert lobby.tap is not None and lobby.tap.change_number == 2
    assert "~lobbysession~" in lobby.session
    assert lobby.tap.seq is not None and lobby.seq is not None and lobby.tap.seq < lobby.seq
    assert game.tap is None  # the game session's first tap came after its 412
    assert built.rta.taps == 4 and built.rta.connections_total == 3
    assert [s.session.split("~")[1] for s in built.rta.sessions] == ["lobbysession",
                                                                     "gamesession"]
    assert "after the tap for changeNumber 2" in report.render(built, "text")
    assert "after the tap for changeNumber 2" in report.render(built, "html")
    assert json.loads(report.render(built, "json"))["rta"]["precondition_links"][0]["tap"][
        "changeNumber"] == 2


def test_a_huge_session_name_is_clipped_in_the_text() -> None:
    """A tap and a 412 on a session with a 50,000-character name: the text shows the
    name clipped, as every line for people does."""
    ws_client, name = f"{CONSOLE}:50100", "L" * 50_000
    records = numbered([
        handshake(0, ws_client),
        taps(1.5, ws_client, (f"{SCID}~lobbysession~{name.lower()}", 2)),
        exchange(1.45, "PUT", 412, url=MPSD + PATH.replace("lobby-1", name)),
    ])
    text = report.render(report.report_records(records), "text")
    assert "taps for" in text and "412 on" in text
    assert max(len(line) for line in text.splitlines()) < 1000
