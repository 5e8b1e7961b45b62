"""RTA messages through the interchange formats: the public capture's taps on import, SAZ
frames and HAR `_webSocketMessages` (as Chromium writes them) both ways."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from mpsdproxy import interchange
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import rta
from mpsdproxy.addons import flowfile
from mpsdproxy.interchange import wsframes
from mpsdproxy.recording import messages as ws

CAPTURE = Path(__file__).resolve().parent.parent.parent / "shared" / "captures" / \
    "x49_mp_cs21.saz"
RTA_URL = "https://rta.xboxlive.com/connect"
MPSD = "https://sessiondirectory.xboxlive.com"
SCID = "00000000-0000-4000-8000-00000000abcd"
LOBBY_PATH = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
LOBBY = f"{SCID}~lobbysession~lobby-1"
T0 = 1_800_000_000.0


def needs_capture() -> None:
    if not CAPTURE.exists():
        pytest.skip(f"{CAPTURE} is not beside the clone")


def messages_of(path: Path) -> list[dict[str, Any]]:
    return [r for r in recording.read(path, strict=True, messages=True) if ws.is_message(r)]


# --- the public capture ---------------------------------------------------------------------

def test_the_capture_imports_as_decoded_taps_with_their_change_numbers(tmp_path: Path) -> None:
    needs_capture()
    out = tmp_path / "capture.jsonl"
    interchange.import_file(str(CAPTURE), str(out))
    taps = [(t.session.split("~")[1], t.change_number)
            for r in messages_of(out) if (m := ws.rta_of(r)) is not None for t in m.taps]
    assert taps == [("lobbysession", 2), ("lobbysession", 4), ("gamesession", 3),
                    ("gamesession", None)]  # the last tap of the capture names none
    events = [r for r in messages_of(out) if r.get("rta", {}).get("type") == "event"]
    assert len(events) == 3 and all(r["direction"] == "server" for r in events)
    lobby = {t["session"] for r in events for t in r["rta"]["taps"]
             if "~lobbysession~" in t["session"]}
    assert len(lobby) == 1 and lobby == {s.lower() for s in lobby}
    subscribes = [r["rta"] for r in messages_of(out)
                  if r.get("rta", {}).get("type") == "subscribe" and r["direction"] == "client"]
    assert subscribes[0] == {"type": "subscribe", "sequence": 1, "uri": rta.CONNECTIONS_URI}
    assert len(subscribes) == 5  # the privacy subscriptions too, despite their NUL padding
    results = [r["rta"] for r in messages_of(out)
               if r.get("rta", {}).get("type") == "subscribe" and r["direction"] == "server"]
    assert [r["status"] for r in results] == [0] * 5
    assert "connection_id" in results[0]


def test_the_capture_puts_the_tap_between_the_handle_write_and_the_412(tmp_path: Path) -> None:
    needs_capture()
    out = tmp_path / "capture.jsonl"
    interchange.import_file(str(CAPTURE), str(out))
    order = []
    for r in recording.read(out, strict=True, messages=True):
        if ws.is_message(r):
            taps = r.get("rta", {}).get("taps") or []
            order += [f"tap {t['changeNumber']}" for t in taps]
        else:
            kind = r["resource"]["kind"]
            order.append(f"{r['request']['method']} {kind} {r['response']['status']}")
    first = order.index("tap 2")
    assert order[first - 1] == "POST handle 201"  # the write that bumped the changeNumber
    assert order[first + 1] == "PUT session 412"  # answered after the tap came
    seqs = [r["seq"] for r in recording.read(out, messages=True)]
    assert seqs == sorted(seqs)


def test_the_capture_exports_its_frames_back_to_their_sessions(tmp_path: Path) -> None:
    needs_capture()
    out, again = tmp_path / "capture.jsonl", tmp_path / "again.saz"
    interchange.import_file(str(CAPTURE), str(out), redactor=recording.Redactor(enabled=False))
    result = interchange.export_file(str(out), str(again), "saz",
                                     redactor=recording.Redactor(enabled=False))
    assert result.skipped == []

    def frames(path: Path) -> list[list[tuple[str, str, bytes]]]:
        with zipfile.ZipFile(path) as z:
            names = sorted(n for n in z.namelist() if n.endswith("_w.txt"))
            return [[(f.direction, f.opcode, f.payload)
                     for f in wsframes.read_frames(z.read(n))] for n in names]

    assert frames(again) == frames(CAPTURE)


def test_the_capture_round_trips_its_taps_through_har(tmp_path: Path) -> None:
    needs_capture()
    out, har, back = tmp_path / "capture.jsonl", tmp_path / "c.har", tmp_path / "back.jsonl"
    interchange.import_file(str(CAPTURE), str(out))
    interchange.export_file(str(out), str(har), "har")
    interchange.import_file(str(har), str(back))
    keys = ("direction", "opcode", "payload", "start", "rta")
    assert [{k: r.get(k) for k in keys} for r in messages_of(back)] == [
        {k: r.get(k) for k in keys} for r in messages_of(out)]


# --- a live-like recording: frames interleaved with the exchanges -----------------------------

def handshake(at: float, client: str) -> model.Exchange:
    request = model.Request("GET", RTA_URL, model.Headers([
        ("Host", "rta.xboxlive.com"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Protocol", rta.SUBPROTOCOL)]))
    reply = model.Response(101, "Switching Protocols", model.Headers([
        ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Protocol", rta.SUBPROTOCOL)]))
    return model.Exchange(request, reply, start=T0 + at, end=T0 + at + 0.01, client=client,
                          provenance={"source": "forwarded"})


def put(at: float, status: int, client: str = "10.0.0.5:50001") -> model.Exchange:
    request = model.Request("PUT", MPSD + LOBBY_PATH,
                            model.Headers([("Content-Type", "application/json")]), b"{}")
    reply = model.Response(status, "", model.Headers([("Content-Type", "application/json")]),
                           b"{}")
    return model.Exchange(request, reply, start=T0 + at, end=T0 + at + 0.05, client=client,
                          provenance={"source": "forwarded"})


def frame(at: float, direction: str, text: str | bytes, client: str,
          opcode: str = "text") -> ws.WebsocketMessage:
    payload = text.encode() if isinstance(text, str) else text
    return ws.WebsocketMessage(RTA_URL, direction, opcode, payload, start=T0 + at,
                               client=client)


def live_recording(path: Path) -> Path:
    """Two consoles' RTA websockets and a lobby's writes, in the order a proxy records them."""
    one, two = "10.0.0.5:50100", "10.0.0.6:50200"
    tap = rta.Tap(LOBBY, 2, "branch-1", "sub-1")
    items: list[model.Exchange | ws.WebsocketMessage] = [
        handshake(0, one),
        frame(0.1, "client", rta.subscribe_message(1), one),
        handshake(0.2, two),
        frame(0.25, "client", rta.subscribe_message(1), two),
        frame(0.3, "server", rta.subscribe_result_message(1, 0, 0, {"ConnectionId": "c1"}),
              one),
        put(1, 201),
        frame(1.2, "server", rta.tap_message(0, [tap], "n1"), one),
        frame(1.21, "server", rta.tap_message(0, [tap], "n2"), two),
        put(1.3, 412),
        frame(2, "server", b"\x01\x02\xff", one, opcode="binary"),
        frame(3, "client", b"\x03\xe8", two, opcode="close"),
        frame(3.01, "server", b"\x03\xe8", two, opcode="close"),
        put(4, 200),
    ]
    redactor = recording.Redactor()
    with recording.Writer(path) as w:
        for item in items:
            w.write(ws.to_record(item, redactor) if isinstance(item, ws.WebsocketMessage)
                    else recording.to_record(item, redactor))
    return path


def kinds(path: Path) -> list[str]:
    return [f"{r['direction']} {r['opcode']}" if ws.is_message(r)
            else str(r["response"]["status"]) for r in recording.read(path, messages=True)]


def test_har_holds_each_socket_s_messages_in_its_entry_as_chromium_writes_them(
        tmp_path: Path) -> None:
    rec = live_recording(tmp_path / "live.jsonl")
    har = tmp_path / "live.har"
    assert interchange.export_file(str(rec), str(har), "har").skipped == []
    entries = json.loads(har.read_text())["log"]["entries"]
    assert [e["response"]["status"] for e in entries] == [101, 101, 201, 412, 200]
    first = entries[0]["_webSocketMessages"]
    assert [(m["type"], m["opcode"]) for m in first] == [
        ("send", 1), ("receive", 1), ("receive", 1), ("receive", 2)]
    assert first[0] == {"type": "send", "time": T0 + 0.1, "opcode": 1,
                        "data": rta.subscribe_message(1)}
    assert base64.b64decode(first[3]["data"]) == b"\x01\x02\xff"
    assert [m["opcode"] for m in entries[1]["_webSocketMessages"]] == [1, 1, 8, 8]


def test_har_and_saz_round_trips_keep_the_messages_and_the_order(tmp_path: Path) -> None:
    rec = live_recording(tmp_path / "live.jsonl")
    keys = ("direction", "opcode", "payload", "start", "client", "rta")
    for fmt in ("har", "saz"):
        exported, back = tmp_path / f"live.{fmt}", tmp_path / f"back-{fmt}.jsonl"
        assert interchange.export_file(str(rec), str(exported), fmt).skipped == []
        interchange.import_file(str(exported), str(back))
        assert kinds(back) == kinds(rec), fmt
        assert [{k: r.get(k) for k in keys} for r in messages_of(back)] == [
            {k: r.get(k) for k in keys} for r in messages_of(rec)], fmt


def test_a_chromium_har_reads_binary_frames_as_base64_and_names_errors() -> None:
    entry = {
        "startedDateTime": "2027-01-15T08:00:00.000Z", "time": 5,
        "request": {"method": "GET", "url": RTA_URL, "headers": [
            {"name": "Upgrade", "value": "websocket"}]},
        "response": {"status": 101, "statusText": "Switching Protocols", "headers": [],
                     "content": {"size": 0, "mimeType": ""}},
        "_webSocketMessages": [
            {"type": "send", "time": T0 + 1.5, "opcode": 1, "data": rta.subscribe_message(1)},
            {"type": "receive", "time": T0 + 1.75, "opcode": 2,
             "data": base64.b64encode(b"\x00\xffraw").decode()},
            {"type": "error", "time": T0 + 2, "opcode": -1, "data": "net::ERR_FAILED"},
        ],
    }
    skipped: list[str] = []
    items = list(interchange.read_har(io.BytesIO(json.dumps(
        {"log": {"version": "1.2", "entries": [entry]}}).encode()), {}, skipped))
    assert isinstance(items[0], model.Exchange)
    first, second = items[1:]
    assert isinstance(first, ws.WebsocketMessage) and isinstance(second, ws.WebsocketMessage)
    assert (first.direction, first.opcode, first.payload, first.start) == (
        "client", "text", rta.subscribe_message(1).encode(), T0 + 1.5)
    assert (second.direction, second.opcode, second.payload) == ("server", "binary",
                                                                 b"\x00\xffraw")
    assert len(skipped) == 1 and "entry 1" in skipped[0] and "error" in skipped[0]


def test_saz_writes_interleaved_frames_to_their_own_socket(tmp_path: Path) -> None:
    rec = live_recording(tmp_path / "live.jsonl")
    saz = tmp_path / "live.saz"
    assert interchange.export_file(str(rec), str(saz), "saz").skipped == []
    with zipfile.ZipFile(saz) as z:
        one = list(wsframes.read_frames(z.read("raw/001_w.txt")))
        two = list(wsframes.read_frames(z.read("raw/002_w.txt")))
        assert not any(n.startswith(("raw/003_w", "raw/004_w", "raw/005_w"))
                       for n in z.namelist())
    assert [f.opcode for f in one] == ["text", "text", "text", "binary"]
    assert [(f.direction, f.opcode) for f in two] == [
        ("client", "text"), ("server", "text"), ("client", "close"), ("server", "close")]


def test_a_message_without_its_handshake_is_named_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "orphan.jsonl"
    with recording.Writer(path) as w:
        w.write(recording.to_record(put(0, 200), recording.Redactor()))
        w.write(ws.to_record(frame(1, "server", rta.resync_message(), "10.0.0.5:1")))
    for fmt in ("har", "saz", "mitm"):
        result = interchange.export_file(str(path), str(tmp_path / f"o.{fmt}"), fmt,
                                         flowfile.FORMATS)
        assert [s.split(":")[0] for s in result.skipped] == ["record 2"], fmt


def test_a_frame_a_fault_dropped_is_never_exported_as_one_the_title_got(
        tmp_path: Path) -> None:
    rec = live_recording(tmp_path / "live.jsonl")
    delivered = kinds(rec)
    one = "10.0.0.5:50100"
    dropped = dataclasses.replace(
        frame(1.5, "server", rta.tap_message(0, [rta.Tap(LOBBY, 3, "branch-1", "sub-1")], "n3"),
              one), dropped=True)
    with recording.Writer(rec) as w:  # a writer appends
        w.write(ws.to_record(dropped, recording.Redactor()))
    for fmt in ("har", "saz", "mitm"):
        exported = tmp_path / f"live.{fmt}"
        result = interchange.export_file(str(rec), str(exported), fmt, flowfile.FORMATS)
        assert any("a frame a fault kept from the title" in s for s in result.skipped), fmt
        back = tmp_path / f"back-{fmt}.jsonl"
        interchange.import_file(str(exported), str(back), formats=flowfile.FORMATS)
        assert kinds(back) == [k for k in delivered
                               if fmt != "mitm" or k != ANSWERING_CLOSE], fmt


# --- mitmproxy flow files: a websocket's messages on its handshake's flow -----------------------

#: What a flow file has no place for in `live_recording`: the server's answer to the
#: client's close (mitmproxy keeps one close: who closed, the code, the reason).
ANSWERING_CLOSE = "server close"


def test_a_flow_file_holds_each_socket_s_messages_and_close_as_mitmproxy_reads_them(
        tmp_path: Path) -> None:
    from mitmproxy import io as mio

    rec = live_recording(tmp_path / "live.jsonl")
    flows_file = tmp_path / "live.mitm"
    result = interchange.export_file(str(rec), str(flows_file), "mitm", flowfile.FORMATS)
    assert [s.split(":")[0] for s in result.skipped] == ["record 12"]  # the answering close
    with flows_file.open("rb") as f:
        read = list(mio.FlowReader(f).stream())
    assert [f.response.status_code for f in read] == [101, 101, 201, 412, 200]
    one, two = (f.websocket for f in read[:2])
    assert [(m.from_client, m.is_text, m.content) for m in one.messages] == [
        (True, True, rta.subscribe_message(1).encode()),
        (False, True, rta.subscribe_result_message(1, 0, 0, {"ConnectionId": "c1"}).encode()),
        (False, True, rta.tap_message(0, [rta.Tap(LOBBY, 2, "branch-1", "sub-1")],
                                      "n1").encode()),
        (False, False, b"\x01\x02\xff")]
    assert one.messages[0].timestamp == T0 + 0.1 and one.close_code is None
    assert (two.close_code, two.closed_by_client, two.timestamp_end) == (1000, True, T0 + 3)


def test_flow_files_round_trip_the_messages_in_order(tmp_path: Path) -> None:
    rec = live_recording(tmp_path / "live.jsonl")
    exported, back = tmp_path / "live.mitm", tmp_path / "back.jsonl"
    interchange.export_file(str(rec), str(exported), "mitm", flowfile.FORMATS)
    result = interchange.import_file(str(exported), str(back), formats=flowfile.FORMATS)
    assert result.messages == 7
    assert kinds(back) == [k for k in kinds(rec) if k != ANSWERING_CLOSE]
    keys = ("direction", "opcode", "payload", "start", "client", "rta")
    assert [{k: r.get(k) for k in keys} for r in messages_of(back)] == [
        {k: r.get(k) for k in keys} for r in messages_of(rec)
        if f"{r['direction']} {r['opcode']}" != ANSWERING_CLOSE]


@pytest.mark.parametrize("fmt", ["har", "saz", "mitm"])
def test_a_run_in_front_of_the_stand_in_comes_back_whole_from_its_export(
        tmp_path: Path, fmt: str) -> None:
    """The stand-in serves MPSD and the RTA's `/connect` on 127.0.0.1: the import's default
    scope keeps both, as the recorder did (before, every handshake and so every message
    was dropped as another host's)."""
    rec = live_recording(tmp_path / "live.jsonl")
    local = "http://127.0.0.1:5123"
    text = rec.read_text().replace('["Host","rta.xboxlive.com"]', '["Host","127.0.0.1:5123"]')
    assert '"127.0.0.1:5123"' in text
    rec.write_text(text.replace("https://rta.xboxlive.com", local)
                   .replace("https://sessiondirectory.xboxlive.com", local))
    exported, back = tmp_path / f"live.{fmt}", tmp_path / f"back-{fmt}.jsonl"
    interchange.export_file(str(rec), str(exported), fmt, flowfile.FORMATS)
    result = interchange.import_file(str(exported), str(back), formats=flowfile.FORMATS)
    assert result.dropped_by_host == {}
    expected = [k for k in kinds(rec) if fmt != "mitm" or k != ANSWERING_CLOSE]
    assert kinds(back) == expected
