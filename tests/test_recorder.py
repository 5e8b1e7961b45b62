"""Recorder: one redacted JSON line per session-directory exchange, never lost, never twice."""

from __future__ import annotations

import gc
import json
import os
import weakref
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from mpsdproxy import faults
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy.addons import classifier
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.addons import recorder
from mpsdproxy.addons import router

LOBBY = ("/serviceconfigs/6efc0200-fd0e-4f4b-8b5c-7e3d0f4a1b2c/sessionTemplates/LobbySession"
         "/sessions/Lobby-1")
TOKEN = "XBL3.0 x=2533274800000002;eyJlbmMiOiJBMTI4Q0JDK0hTMjU2In0"
SIGNATURE = "AAAAAQHS7hcmPq0WEhCbZ0M7aQ2W1b3i0F2oQdJ4CjW"
REQUEST_BODY = b'{"members":{"me":{"constants":{"system":{"initialize":true}}}}}'
WHOLE = {"constants": {}, "properties": {}, "members": {}, "changeNumber": 1}


def sd_flow(host: str = "sessiondirectory.xboxlive.com") -> http.HTTPFlow:
    headers = http.Headers(host=host, authorization=TOKEN, signature=SIGNATURE,
                           cookie="a=b", content_type="application/json; charset=utf-8")
    request = tutils.treq(host=host, port=443, scheme=b"https", method=b"PUT",
                          path=LOBBY.encode(), headers=headers, content=REQUEST_BODY)
    return tflow.tflow(req=request)


def created() -> http.Response:
    reply = faults.build("201.created", session=WHOLE, etag='"e1"',
                         extra_headers=[("X-Xbl-Debug", "node=7"), ("Set-Cookie", "s=1")])
    response = flows.to_mitmproxy(reply)
    response.timestamp_start, response.timestamp_end = 946684800.5, 946684800.75
    return response


class Chain:
    """Router, classifier and recorder in one context, as the proxy runs them."""

    def __init__(self, tctx: taddons.context, rec: recorder.Recorder) -> None:
        self.tctx = tctx
        self.router = router.Router()
        self.classifier = classifier.StatusClassifier()
        self.recorder = rec
        for addon in (self.router, self.classifier):
            tctx.master.addons.add(addon)

    def respond(self, flow: http.HTTPFlow, response: http.Response | None = None) -> None:
        self.router.request(flow)
        flow.response = response or created()
        self.classifier.response(flow)
        self.recorder.response(flow)

    def fail(self, flow: http.HTTPFlow, message: str = "connection refused") -> None:
        self.router.request(flow)
        flow.error = tflow.terr(message)
        self.classifier.error(flow)
        self.recorder.error(flow)


@pytest.fixture
def rec() -> Any:
    r = recorder.Recorder()
    yield r
    r.done()


def lines(path: Path) -> list[dict[str, Any]]:
    """The records of a recording, read line by line (the format's header line skipped)."""
    items = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    return [item for item in items if "seq" in item or "format" not in item]


def open_files(path: Path) -> int:
    """How many of this process's file descriptors are open on `path`."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path))


def test_one_redacted_line_per_exchange(tmp_path: Path, rec):
    path = tmp_path / "run.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path))
        chain = Chain(tctx, rec)
        f = sd_flow()
        chain.respond(f)
        # Flushed: readable while the recorder is still open.
        (line,) = lines(path)
    text = path.read_text()
    for secret in (TOKEN, SIGNATURE, "a=b", "s=1"):
        assert secret not in text
    assert line["seq"] == 1 == common.mark(f)["seq"]
    assert line["request"]["method"] == "PUT"
    assert line["request"]["url"] == f"https://sessiondirectory.xboxlive.com{LOBBY}"
    request_headers = dict(line["request"]["headers"])
    assert request_headers["authorization"] == recording.redact_value(TOKEN)
    assert request_headers["signature"] == recording.redact_value(SIGNATURE)
    assert request_headers["cookie"].startswith("redacted:")
    assert request_headers["content-type"] == "application/json; charset=utf-8"
    assert line["request"]["body"] == {"json": json.loads(REQUEST_BODY)}
    response = line["response"]
    assert (response["status"], response["reason"]) == (201, "Created")
    assert dict(response["headers"])["ETag"] == '"e1"'
    assert dict(response["headers"])["Set-Cookie"].startswith("redacted:")
    assert dict(response["headers"])["X-Xbl-Debug"] == "node=7"
    assert response["body"] == {"json": WHOLE}
    assert line["classification"]["id"] == "201.created"
    assert line["classification"]["anomalies"] == []
    assert line["provenance"] == {"source": "forwarded"}
    assert line["resource"]["kind"] == "session"
    assert line["error"] is None
    assert line["client"] == "127.0.0.1:22"
    assert line["start"] == recording.timestamp(f.request.timestamp_start)
    assert line["end"] == "2000-01-01T00:00:00.750000Z"
    assert line["duration_ms"] == pytest.approx((946684800.75 - 946681200) * 1000)
    assert next(recording.read(path, strict=True))["seq"] == 1


def test_error_flows_are_recorded(tmp_path: Path, rec):
    path = tmp_path / "run.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path))
        chain = Chain(tctx, rec)
        chain.fail(sd_flow(), "server disconnected")
    (line,) = lines(path)
    assert line["response"] is None
    assert line["error"] == "server disconnected"
    assert [a["code"] for a in line["classification"]["anomalies"]] == ["no-response"]
    assert line["end"] == recording.timestamp(946681207)


def test_unmarked_flows_are_not_recorded(tmp_path: Path, rec):
    path = tmp_path / "run.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path))
        chain = Chain(tctx, rec)
        chain.respond(sd_flow("example.com"))
        chain.fail(sd_flow("example.com"))
    assert lines(path) == []


def test_never_twice_for_one_flow(tmp_path: Path, rec):
    path = tmp_path / "run.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path))
        chain = Chain(tctx, rec)
        f = sd_flow()
        chain.respond(f)
        rec.response(f)
        f.error = tflow.terr("client went away")
        rec.error(f)
        chain.respond(sd_flow())
    assert [x["seq"] for x in lines(path)] == [1, 2]


def test_unclassified_flow_is_classified_for_the_record(tmp_path: Path, rec):
    path = tmp_path / "run.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path))
        chain = Chain(tctx, rec)
        f = sd_flow()
        chain.router.request(f)
        f.response = created()
        rec.response(f)  # the classifier did not run
    assert lines(path)[0]["classification"]["id"] == "201.created"


def test_provenance_is_recorded(tmp_path: Path, rec):
    path = tmp_path / "run.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path))
        chain = Chain(tctx, rec)
        f = sd_flow()
        chain.router.request(f)
        common.set_provenance(f, source="injected", rule="throttle-writes", phase="request")
        f.response = created()
        rec.response(f)
    assert lines(path)[0]["provenance"] == {
        "source": "injected", "rule": "throttle-writes", "phase": "request",
    }


def test_records_the_url_the_title_asked_for(tmp_path: Path, rec):
    path = tmp_path / "run.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path))
        chain = Chain(tctx, rec)
        tctx.configure(chain.router, mpsd_upstream="http://127.0.0.1:8081")
        f = sd_flow()
        chain.respond(f)
    assert f.request.host == "127.0.0.1"
    assert lines(path)[0]["request"]["url"] == f"https://sessiondirectory.xboxlive.com{LOBBY}"


def test_extra_redacted_header(tmp_path: Path, rec):
    path = tmp_path / "run.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path), mpsd_redact=["x-xbl-debug"])
        Chain(tctx, rec).respond(sd_flow())
    headers = dict(lines(path)[0]["response"]["headers"])
    assert headers["X-Xbl-Debug"] == recording.redact_value("node=7")
    assert headers["Set-Cookie"].startswith("redacted:")


def test_no_redact_is_loud_and_raw(tmp_path: Path, rec, caplog):
    caplog.set_level("INFO")
    path = tmp_path / "run.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path), mpsd_no_redact=True)
        assert "mpsd_no_redact is on" in caplog.text
        assert any(r.levelname == "WARNING" and "clear text" in r.getMessage()
                   for r in caplog.records)
        Chain(tctx, rec).respond(sd_flow())
    assert dict(lines(path)[0]["request"]["headers"])["authorization"] == TOKEN


def test_redaction_comes_back_when_no_redact_is_turned_off(tmp_path: Path, rec):
    path = tmp_path / "run.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path), mpsd_no_redact=True)
        tctx.configure(rec, mpsd_no_redact=False)
        Chain(tctx, rec).respond(sd_flow())
    assert TOKEN not in path.read_text()


def test_disk_full_exits(tmp_path: Path, rec, monkeypatch, capsys):
    path = tmp_path / "run.jsonl"

    def full(self: recording.Writer, record: dict[str, Any]) -> int:
        raise OSError(28, "No space left on device")

    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path))
        chain = Chain(tctx, rec)
        monkeypatch.setattr(recording.Writer, "write", full)
        with pytest.raises(SystemExit) as e:
            chain.respond(sd_flow())
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert f"Error while writing to {path}" in err
    assert "No space left on device" in err


@pytest.mark.parametrize("where", ["missing-dir/run.jsonl", "."])
def test_unopenable_path(tmp_path: Path, rec, where):
    path = tmp_path / where
    with taddons.context(rec) as tctx:
        with pytest.raises(exceptions.OptionsError, match=f"Cannot open mpsd_record file {path}"):
            tctx.configure(rec, mpsd_record=str(path))
    assert rec.writer is None


def test_inert_without_a_file(tmp_path: Path, rec):
    with taddons.context(rec) as tctx:
        chain = Chain(tctx, rec)
        f = sd_flow()
        chain.respond(f)
    assert rec.writer is None
    assert "seq" not in common.mark(f)
    assert list(tmp_path.iterdir()) == []


def test_appends_to_an_existing_recording(tmp_path: Path, rec):
    path = tmp_path / "run.jsonl"
    for _ in range(2):
        r = recorder.Recorder()
        with taddons.context(r) as tctx:
            tctx.configure(r, mpsd_record=str(path))
            Chain(tctx, r).respond(sd_flow())
        r.done()
    assert [x["seq"] for x in lines(path)] == [1, 2]


def test_switching_files_closes_the_old_one(tmp_path: Path, rec):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(first))
        assert open_files(first) == 1
        tctx.configure(rec, mpsd_record=str(second))
        assert open_files(first) == 0
        Chain(tctx, rec).respond(sd_flow())
        rec.done()
        assert rec.writer is None
        assert open_files(second) == 0
    assert lines(first) == []
    assert len(lines(second)) == 1


def test_keeps_no_flows(tmp_path: Path, rec):
    path = tmp_path / "run.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path))
        chain = Chain(tctx, rec)
        refs = []
        for _ in range(20):
            f = sd_flow()
            chain.respond(f)
            refs.append(weakref.ref(f))
        del f
        gc.collect()
        assert [r() for r in refs] == [None] * 20
    assert len(lines(path)) == 20


def test_redaction_does_not_depend_on_what_was_recorded_before(tmp_path: Path, rec):
    """A record built with redaction off is never handed out again with it on."""
    path = tmp_path / "run.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path), mpsd_no_redact=True)
        chain = Chain(tctx, rec)
        f = sd_flow()
        chain.respond(f)
        tctx.configure(rec, mpsd_no_redact=False)
        del common.mark(f)["seq"]  # the same flow, unchanged, recorded once more
        rec.response(f)
    clear, redacted = (dict(r["request"]["headers"])["authorization"] for r in lines(path))
    assert clear == TOKEN
    assert redacted == recording.redact_value(TOKEN)


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def odd_flow(kind: str) -> http.HTTPFlow:
    f = sd_flow()
    if kind == "deep":
        f.request.content = deep_json(1000)
    elif kind == "path":
        f.request.data.path = LOBBY.encode() + b"/caf\xe9"
    elif kind == "header":
        f.request.headers[b"X-Title"] = b"Caf\xff Racer"
    return f


@pytest.mark.parametrize("kind", ["deep", "path", "header"])
def test_an_exchange_with_odd_bytes_gets_the_next_record(tmp_path: Path, rec, kind: str):
    path = tmp_path / "run.jsonl"
    with taddons.context(rec) as tctx:
        tctx.configure(rec, mpsd_record=str(path))
        chain = Chain(tctx, rec)
        chain.respond(sd_flow())
        odd = odd_flow(kind)
        chain.respond(odd)
        chain.respond(sd_flow())
    assert common.mark(odd)["seq"] == 2
    records = list(recording.read(path, strict=True))
    assert [r["seq"] for r in records] == [1, 2, 3]
    exchange = recording.to_exchange(records[1])
    assert exchange.seq == 2
    assert exchange.response is not None and exchange.response.status == 201
    request = exchange.request
    if kind == "deep":
        assert request.body == deep_json(1000)
    elif kind == "path":
        assert model.to_bytes(request.path) == LOBBY.encode() + b"/caf\xe9"
    else:
        assert model.to_bytes(request.headers.get("X-Title")) == b"Caf\xff Racer"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_fifo_is_refused_as_a_recording_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    addon = recorder.Recorder()
    with taddons.context(addon) as tctx:
        with pytest.raises(exceptions.OptionsError, match="not a regular file"):
            tctx.configure(addon, mpsd_record=str(fifo))
