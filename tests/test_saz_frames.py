"""SAZ websocket frames as records of their own, byte-exact SAZ round trips of the public
capture, and bounded reading of hostile archives."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest

from mpsdproxy import interchange
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy.interchange import wsframes
from mpsdproxy.recording import messages as ws

RTA = "https://rta.xboxlive.com/connect"
CAPTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "captures"
CAPTURE = CAPTURES / "x49_mp_cs21.saz"


def frame_block(kind: str, number: int, wire: bytes) -> bytes:
    return (f"\r\n{kind}-Length: {len(wire)}\r\nID: {number}\r\nBitFlags: 0\r\n"
            "DoneRead: 2016-09-20T13:49:59.8175331-07:00\r\nBeginSend: x\r\nDoneSend: x\r\n"
            "\r\n").encode() + wire


def masked(opcode: int, payload: bytes, key: bytes = b"\x25\x0c\xa0\xb3") -> bytes:
    data = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + data


def websocket_saz(path: Path) -> str:
    frames = (frame_block("Request", 1, masked(1, b'[1,1,"sub"]'))
              + frame_block("Response", 2, b"\x81\x05hello")
              + frame_block("Response", 3, b"\x8a\x00")
              + frame_block("Request", 4, masked(8, b"\x03\xe8")) + b"\r\n")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("raw/01_c.txt", f"GET {RTA} HTTP/1.1\r\nHost: rta.xboxlive.com\r\n"
                   "Upgrade: websocket\r\n\r\n")
        z.writestr("raw/01_s.txt", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "\r\n")
        z.writestr("raw/01_w.txt", frames)
        z.writestr("raw/02_c.txt", "GET https://sessiondirectory.xboxlive.com/handles "
                   "HTTP/1.1\r\n\r\n")
        z.writestr("raw/02_s.txt", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    return str(path)


def test_frames_become_message_records_after_their_handshake(tmp_path: Path) -> None:
    out = tmp_path / "ws.jsonl"
    result = interchange.import_file(websocket_saz(tmp_path / "ws.saz"), str(out))
    assert (result.count, result.messages) == (2, 4)
    records = list(recording.read(out, strict=True, messages=True))
    assert [r.get("kind", "http") for r in records] == ["http", *["websocket"] * 4, "http"]
    assert records[0]["response"]["status"] == 101
    first = records[1]
    assert (first["direction"], first["opcode"], first["payload"], first["url"]) == (
        "client", "text", {"text": '[1,1,"sub"]'}, RTA)
    assert first["start"] == "2016-09-20T20:49:59.817533Z"
    assert [(r["direction"], r["opcode"]) for r in records[2:5]] == [
        ("server", "text"), ("server", "pong"), ("client", "close")]
    assert records[4]["payload"] == {"base64": "A+g="}
    assert [r["seq"] for r in recording.read(out)] == [1, 6]  # HTTP records only by default


def test_saz_and_har_round_trips_keep_the_frames(tmp_path: Path) -> None:
    out = tmp_path / "ws.jsonl"
    interchange.import_file(websocket_saz(tmp_path / "ws.saz"), str(out))
    original = [r for r in recording.read(out, messages=True) if ws.is_message(r)]
    for fmt in ("saz", "har"):
        exported = tmp_path / f"again.{fmt}"
        assert interchange.export_file(str(out), str(exported), fmt).skipped == []
        back = tmp_path / f"back-{fmt}.jsonl"
        interchange.import_file(str(exported), str(back))
        again = [r for r in recording.read(back, messages=True) if ws.is_message(r)]
        keys = ("direction", "opcode", "payload", "url", "start")
        assert [{k: r[k] for k in keys} for r in again] == [
            {k: r[k] for k in keys} for r in original], fmt


def test_formats_without_a_place_for_frames_name_them(tmp_path: Path) -> None:
    out = tmp_path / "ws.jsonl"
    interchange.import_file(websocket_saz(tmp_path / "ws.saz"), str(out))
    result = interchange.export_file(str(out), str(tmp_path / "x.csv"), "csv")
    named = [s for s in result.skipped if "websocket message" in s]
    assert [s.split(":")[0] for s in named] == ["record 2", "record 3", "record 4", "record 5"]


def test_message_records_round_trip_and_are_checked() -> None:
    message = ws.WebsocketMessage(RTA, "server", "binary", b"\x00\xff", start=1.5,
                                  client="10.0.0.5:50999", fin=False)
    record = {"seq": 3, **ws.to_record(message)}
    assert record["payload"] == {"base64": "AP8="} and record["fin"] is False
    assert ws.from_record(json.loads(json.dumps(record))) == ws.WebsocketMessage(
        RTA, "server", "binary", b"\x00\xff", start=1.5, client="10.0.0.5:50999",
        fin=False, seq=3)
    assert recording.check_outline(record, messages=True) is None
    assert "websocket" in recording.check_outline(record)
    assert "opcode" in recording.check_outline({**record, "opcode": "shout"}, messages=True)


@pytest.mark.parametrize("field, value, problem", [
    ("opcode", ["text"], "'opcode' should be one of"),
    ("direction", {"to": "server"}, "'direction' should be client or server"),
    ("provenance", True, "'provenance' should be an object or null, not a boolean"),
    ("rta", [1, 2], "'rta' should be an object or null, not an array"),
])
def test_a_message_field_of_another_type_is_named(field: str, value: object,
                                                  problem: str) -> None:
    record = {"seq": 3, **ws.to_record(ws.WebsocketMessage(RTA, "server", "text", b"[3,1]"))}
    assert problem in recording.check_outline({**record, field: value}, messages=True)


def test_frames_are_written_as_fiddler_lays_them_out() -> None:
    frames = [wsframes.Frame("client", "text", b"x" * 300, 0.0),
              wsframes.Frame("server", "binary", b"\x01" * 70000, None)]
    assert list(wsframes.read_frames(wsframes.write_frames(frames))) == frames
    with pytest.raises(ValueError, match="frame 1"):
        list(wsframes.read_frames(b"\r\nResponse-Length: 9\r\n\r\n\x81\x7f" + struct.pack("!Q", 9)))


def test_an_oversized_member_is_truncated_and_named(tmp_path: Path) -> None:
    path = tmp_path / "big.saz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("raw/01_c.txt", f"GET {RTA} HTTP/1.1\r\n\r\n")
        z.writestr("raw/01_s.txt", b"HTTP/1.1 200 OK\r\n\r\n" + b"abc" * 300_000)
    out = tmp_path / "o.jsonl"
    result = interchange.import_file(str(path), str(out), max_body=1000 - 256 * 1024)
    assert result.count == 1
    assert any("01_s.txt is over the" in s and "truncated" in s for s in result.skipped)
    [rec] = recording.read(out)
    assert len(recording.decode_body(rec["response"]["body"])) < 1000


def test_a_zip_bomb_is_refused_by_ratio(tmp_path: Path) -> None:
    path = tmp_path / "bomb.saz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("raw/01_c.txt", f"GET {RTA} HTTP/1.1\r\n\r\n")
        z.writestr("raw/01_s.txt", b"HTTP/1.1 200 OK\r\n\r\n" + b"\x00" * (8 << 20))
    skipped: list[str] = []
    assert list(interchange.read_saz(str(path), {}, skipped)) == []
    assert len(skipped) == 1 and "zip bomb" in skipped[0] and skipped[0].startswith("session 1")


# --- the public capture, read in place ------------------------------------------------------

def needs_capture() -> None:
    if not CAPTURE.exists():
        pytest.skip(f"{CAPTURE} is not beside the clone")


def wire_sessions(path: Path) -> list[tuple[bytes, bytes]]:
    """(request, response) raw bytes of each session that is not a CONNECT tunnel."""
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.endswith("_c.txt"))
        pairs = [(z.read(n), z.read(n[:-6] + "_s.txt")) for n in names]
    return [(c, s) for c, s in pairs if not c.startswith(b"CONNECT")]


def body_and_length(message: bytes) -> tuple[bytes, str | None]:
    head, _, body = message.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = value.strip().decode()
    return body, length


def test_the_capture_round_trips_byte_identical_bodies_and_lengths(tmp_path: Path) -> None:
    needs_capture()
    rec, again = tmp_path / "all.jsonl", tmp_path / "again.saz"
    interchange.import_file(str(CAPTURE), str(rec), all_hosts=True,
                            redactor=recording.Redactor(enabled=False))
    interchange.export_file(str(rec), str(again), "saz",
                            redactor=recording.Redactor(enabled=False))
    before, after = wire_sessions(CAPTURE), wire_sessions(again)
    assert len(before) == len(after) == 66
    for number, (old, new) in enumerate(zip(before, after, strict=True), start=1):
        for part in (0, 1):
            if old[part]:
                assert body_and_length(new[part]) == body_and_length(old[part]), number
    with zipfile.ZipFile(again) as z:
        assert len([n for n in z.namelist() if n.endswith("_w.txt")]) == 3


def test_the_capture_keeps_its_rta_frames(tmp_path: Path) -> None:
    needs_capture()
    rec = tmp_path / "rta.jsonl"
    result = interchange.import_file(str(CAPTURE), str(rec))
    assert result.kept_by_host == {"sessiondirectory.xboxlive.com": 10, "rta.xboxlive.com": 3}
    assert result.messages == 19
    texts = [r["payload"].get("text", "") for r in recording.read(rec, messages=True)
             if ws.is_message(r)]
    assert sum("shoulderTaps" in t for t in texts) >= 3
    assert all(model.printable(t) == t for t in texts)
