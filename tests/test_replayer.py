"""Replayer addon (and the StandIn after it): recorded answers in the request hook,
policies, pace, options, and recordings refused at load."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.addonmanager import Loader
from mitmproxy.test import taddons
from mitmproxy.test import tflow

from mpsdproxy import classify
from mpsdproxy import faults
from mpsdproxy import recording
from mpsdproxy import replay
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.addons import replayer
from mpsdproxy.addons import router
from mpsdproxy.addons import standin

HOST = "https://sessiondirectory.xboxlive.com"
SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"{HOST}/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/lobby-1"
ME = {"members": {"me": {"constants": {"system": {"xuid": "1001", "initialize": True}},
                         "properties": {"system": {"active": True}}}}}


def doc(change: int) -> dict[str, Any]:
    return {"constants": {"system": {"maxMembersCount": 8}, "custom": {}},
            "properties": {"system": {}, "custom": {}},
            "members": {"0": {"constants": {"system": {"xuid": "1001", "index": 0}}}},
            "membersInfo": {"first": 0, "next": 1, "count": 1, "accepted": 1},
            "changeNumber": change}


def make_flow(method: str, url: str, body: Any = None,
              headers: list[tuple[str, str]] | None = None) -> http.HTTPFlow:
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None
                                                 else b"")
    fields = [("Authorization", "XBL3.0 x=alice;token-of-alice"),
              ("x-xbl-contract-version", "107"), *(headers or [])]
    f = tflow.tflow(req=http.Request.make(method, url, raw,
                                          [(k.encode(), v.encode()) for k, v in fields]))
    f.request.timestamp_start = time.time()
    return f


def answer(status: int, body: Any = None, headers: list[tuple[str, str]] | None = None,
           reason: str | None = None) -> http.Response:
    raw = body if isinstance(body, bytes) else (faults.encode_json(body) if body is not None
                                                 else b"")
    fields = list(headers or [])
    if body is not None and not isinstance(body, bytes):
        fields.insert(0, ("Content-Type", "application/json; charset=utf-8"))
    response = http.Response.make(status, b"", [(k.encode(), v.encode()) for k, v in fields])
    response.raw_content = raw  # as it came off the wire, even when encoded
    if reason:
        response.reason = reason
    response.timestamp_end = response.timestamp_start = time.time()
    return response


class Recording:
    """Writes records exactly as the recorder does, from flows the router marked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.router = router.Router()
        self.writer = recording.Writer(path)

    def add(self, f: http.HTTPFlow, response: http.Response | None,
            duration_ms: float = 20.0) -> Recording:
        with taddons.context(self.router):
            self.router.request(f)
        if response is None:
            f.error = tflow.terr("server disconnected")
        else:
            f.response = response
            f.response.timestamp_end = f.request.timestamp_start + duration_ms / 1000
        exchange = flows.exchange_of(f)
        self.writer.write(recording.to_record(exchange, recording.Redactor(),
                                              classify.classify(exchange)))
        return self

    def close(self) -> Path:
        self.writer.close()
        return self.path


@pytest.fixture
def lifecycle(tmp_path: Path) -> Path:
    """Create, two polls with different answers, a conditional write, a read of a member."""
    rec = Recording(tmp_path / "lifecycle.jsonl")
    rec.add(make_flow("PUT", LOBBY, ME), answer(201, doc(1), [("ETag", '"e1"')]))
    rec.add(make_flow("GET", LOBBY), answer(200, doc(1), [("ETag", '"e1"'),
                                                          ("X-Xbl-Debug", "a"),
                                                          ("X-Xbl-Debug", "b")]))
    rec.add(make_flow("GET", LOBBY), answer(200, doc(2), [("ETag", '"e2"')]))
    rec.add(make_flow("PUT", LOBBY, {"properties": {"custom": {"mode": "ctf"}}},
                      [("If-Match", '"e1"')]),
            answer(412, doc(2), [("ETag", '"e2"'), ("Cache-Control", "no-cache, no-store")]))
    rec.add(make_flow("GET", LOBBY + "/members/7"), answer(204, reason="No Content"),
            duration_ms=300.0)
    return rec.close()


class Proxy:
    """The router, the replayer and the stand-in in one context, as the proxy chains them."""

    def __init__(self, tctx: taddons.context, rp: replayer.Replayer,
                 stand_in: standin.StandIn) -> None:
        self.tctx = tctx
        self.rp = rp
        self.router = router.Router()
        tctx.master.addons.add(self.router)
        self.stand_in = stand_in

    def send(self, f: http.HTTPFlow) -> Any:
        """The request hooks in chain order (what the replayer held, returned), then the
        response hooks of a flow answered there."""
        self.router.request(f)
        held = self.rp.request(f)
        self.stand_in.request(f)
        if f.response is not None:
            self.rp.response(f)
        return held

    def remaining(self) -> int:
        return self.tctx.master.commands.call("mpsd.replay.remaining")


@pytest.fixture
def rp() -> Any:
    addon = replayer.Replayer()
    yield addon
    addon.done()


@contextlib.contextmanager
def replaying(rp: replayer.Replayer, path: Path, **options: Any) -> Iterator[Proxy]:
    """Context with the replayer and the stand-in configured; yields a Proxy."""
    stand_in = standin.StandIn()
    with taddons.context(rp, stand_in) as tctx:
        tctx.configure(rp, mpsd_replay=[str(path)], **options)
        yield Proxy(tctx, rp, stand_in)


# -- serving ---------------------------------------------------------------------------------


def test_answers_are_the_recorded_bytes(rp: replayer.Replayer, lifecycle: Path) -> None:
    records = list(recording.read(lifecycle, strict=True))
    with replaying(rp, lifecycle) as proxy:
        f = make_flow("GET", LOBBY)
        assert proxy.send(f) is None
    assert f.response is not None
    assert (f.response.status_code, f.response.reason) == (200, "OK")
    assert f.response.raw_content == recording.decode_body(records[1]["response"]["body"])
    assert f.response.headers.fields == (
        (b"Content-Type", b"application/json; charset=utf-8"), (b"ETag", b'"e1"'),
        (b"X-Xbl-Debug", b"a"), (b"X-Xbl-Debug", b"b"),
        (b"Content-Length", str(len(f.response.raw_content)).encode()),
    )
    assert f.is_replay == "response"
    assert common.provenance(f) == {"source": "replayed", "record": 2, "file": str(lifecycle)}


def test_identical_requests_get_answers_in_recorded_order(rp: replayer.Replayer,
                                                          lifecycle: Path) -> None:
    with replaying(rp, lifecycle) as proxy:
        flows = [make_flow("GET", LOBBY) for _ in range(3)]
        for f in flows:
            proxy.send(f)
    assert [f.response.headers["ETag"] for f in flows] == ['"e1"', '"e2"', '"e2"']
    assert [common.provenance(f).get("record") for f in flows] == [2, 3, 3]
    assert common.provenance(flows[2])["repeat"] is True


def test_precondition_with_a_replayed_etag_gets_the_recorded_412(rp: replayer.Replayer,
                                                                  lifecycle: Path) -> None:
    """The title writes with the ETag the replay just gave it ("e2"); the recorded write
    carried "e1". Still the same request: the recorded 412 comes back, no other."""
    with replaying(rp, lifecycle) as proxy:
        for _ in range(2):
            proxy.send(make_flow("GET", LOBBY))
        f = make_flow("PUT", LOBBY, {"properties": {"custom": {"mode": "ctf"}}},
                      [("If-Match", '"e2"')])
        proxy.send(f)
    assert f.response is not None and f.response.status_code == 412
    assert common.provenance(f)["record"] == 4


def test_served_responses_are_each_their_own(rp: replayer.Replayer, lifecycle: Path) -> None:
    """Two flows given the same recorded answer (repeat-last): changing one leaves the
    other as recorded."""
    with replaying(rp, lifecycle, mpsd_replay_exhausted="repeat-last") as proxy:
        flows_ = [make_flow("GET", LOBBY) for _ in range(4)]
        for f in flows_:
            proxy.send(f)
    served, again = flows_[2].response, flows_[3].response
    assert served is not None and again is not None and again is not served
    assert (again.headers, again.raw_content) == (served.headers, served.raw_content)
    served.headers["ETag"] = '"changed"'
    served.headers.add("X-Added", "1")
    served.content = b"changed"
    served.status_code = 500
    assert again.headers["ETag"] == '"e2"' and "X-Added" not in again.headers
    assert json.loads(again.content) == doc(2) and again.status_code == 200
    assert again.timestamp_start is not None


def test_pace_changes_take_effect(rp: replayer.Replayer, lifecycle: Path) -> None:
    with replaying(rp, lifecycle) as proxy:
        assert proxy.send(make_flow("GET", LOBBY + "/members/7")) is None
        proxy.tctx.configure(rp, mpsd_replay_pace="recorded")
        held = proxy.send(make_flow("GET", LOBBY + "/members/7"))
        assert held is not None
        held.close()  # an un-awaited coroutine: never run
        proxy.tctx.configure(rp, mpsd_replay_pace="fast")
        assert proxy.send(make_flow("GET", LOBBY + "/members/7")) is None


class TermLog:
    """mitmproxy's termlog option, without the terminal."""

    def load(self, loader: Loader) -> None:
        loader.add_option("termlog_verbosity", str, "info", "as in termlog")


@pytest.mark.parametrize("verbosity,logged", [("info", False), ("debug", True), (None, True)])
def test_each_answer_is_logged_only_when_debug_shows(rp: replayer.Replayer, lifecycle: Path,
                                                     caplog: pytest.LogCaptureFixture,
                                                     verbosity: str | None,
                                                     logged: bool) -> None:
    """A debug record per answer costs an event round through every addon: with the
    termlog it is made only at termlog_verbosity=debug (without one, always)."""
    caplog.set_level("DEBUG")
    addons = [TermLog(), rp] if verbosity else [rp]
    with taddons.context(*addons) as tctx:
        if verbosity:
            tctx.options.termlog_verbosity = verbosity
        tctx.configure(rp, mpsd_replay=[str(lifecycle)])
        proxy = Proxy(tctx, rp, standin.StandIn())
        proxy.send(make_flow("GET", LOBBY))
    assert ("replayed record #2" in caplog.text) is logged


def test_recorded_exchange_without_response_is_killed(rp: replayer.Replayer,
                                                      tmp_path: Path) -> None:
    path = Recording(tmp_path / "r.jsonl").add(make_flow("GET", LOBBY), None).close()
    with replaying(rp, path) as proxy:
        f = make_flow("GET", LOBBY)
        proxy.send(f)
    assert f.response is None
    assert f.error is not None and f.error.msg == f.error.KILLED_MESSAGE
    assert common.provenance(f)["record"] == 1


def test_decoded_body_goes_out_encoded_as_labelled(rp: replayer.Replayer,
                                                   tmp_path: Path) -> None:
    """The recorder keeps bodies decoded: replayed under their recorded Content-Encoding,
    they are encoded again, so the title decodes the recorded document."""
    plain = faults.encode_json(doc(1))
    rec = Recording(tmp_path / "r.jsonl")
    rec.add(make_flow("GET", LOBBY), answer(200, gzip.compress(plain), [
        ("Content-Type", "application/json"), ("Content-Encoding", "gzip")]))
    with replaying(rp, rec.close()) as proxy:
        f = make_flow("GET", LOBBY)
        proxy.send(f)
    assert f.response is not None
    assert f.response.get_content(strict=True) == plain
    assert f.response.headers["Content-Length"] == str(len(f.response.raw_content))


def test_unmarked_flows_pass_untouched(rp: replayer.Replayer, lifecycle: Path) -> None:
    with replaying(rp, lifecycle):
        f = make_flow("GET", "https://example.com/serviceconfigs")
        rp.request(f)
    assert f.response is None and f.error is None
    assert common.mark(f) is None


def test_already_handled(rp: replayer.Replayer, lifecycle: Path) -> None:
    with replaying(rp, lifecycle) as proxy:
        killed = make_flow("GET", LOBBY)
        killed.kill()
        proxy.send(killed)
        answered = make_flow("GET", LOBBY)
        answered.response = answer(503)
        proxy.send(answered)
        nxt = make_flow("GET", LOBBY)
        proxy.send(nxt)
    assert killed.response is None
    assert answered.response.status_code == 503
    assert common.provenance(nxt)["record"] == 2  # nothing was consumed by the two above


def test_inert_without_recordings(rp: replayer.Replayer) -> None:
    stand_in = standin.StandIn()
    with taddons.context(rp, stand_in) as tctx:
        proxy = Proxy(tctx, rp, stand_in)
        f = make_flow("GET", LOBBY)
        proxy.send(f)
        assert proxy.remaining() == 0
    assert f.response is None


# -- policies --------------------------------------------------------------------------------


def test_unmatched_error_is_a_502_naming_the_near_miss(rp: replayer.Replayer, lifecycle: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")
    with replaying(rp, lifecycle) as proxy:
        f = make_flow("PUT", LOBBY, {"properties": {"custom": {"mode": "tdm"}}},
                      [("If-Match", '"e1"')])
        proxy.send(f)
    assert f.response is not None and f.response.status_code == 502
    assert f.response.headers["X-Mpsdproxy-Replay"] == "unmatched"
    text = f.response.text
    assert text.startswith(f"mpsdproxy replay: no recorded answer for PUT {LOBBY} "
                           "(mpsd_replay_unmatched=error); closest recorded request is #4")
    assert 'body (properties.custom.mode: "tdm" here, "ctf" recorded)' in text
    assert text.strip().removeprefix("mpsdproxy replay: ") in caplog.text
    assert common.provenance(f)["source"] == "replay-error"


def test_unmatched_forward_leaves_the_flow_to_go_upstream(rp: replayer.Replayer, lifecycle: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    caplog.set_level("WARNING")
    with replaying(rp, lifecycle, mpsd_replay_unmatched="forward") as proxy:
        f = make_flow("DELETE", LOBBY + "/members/me")
        proxy.send(f)
    assert f.response is None and f.error is None
    assert common.provenance(f)["source"] == "forwarded"
    assert common.provenance(f)["replay"] == "unmatched"
    assert "closest recorded request is #" in caplog.text


def test_unmatched_emulate_answers_from_the_seeded_stand_in(rp: replayer.Replayer,
                                                            lifecycle: Path) -> None:
    """The stand-in knows the recorded session (as last seen) and answers a request the
    recording lacks; its ETag then counts as one of the replay's."""
    with replaying(rp, lifecycle, mpsd_replay_unmatched="emulate") as proxy:
        first = make_flow("GET", LOBBY)
        proxy.send(first)  # replayed: the title now holds changeNumber 1, "e1"
        f = make_flow("PUT", LOBBY, {"properties": {"custom": {"mode": "tdm"}}},
                      [("If-Match", '"e1"')])
        proxy.send(f)
        assert f.response is not None and f.response.status_code == 200, f.response.text
        assert common.provenance(f)["source"] == "emulated"
        written = json.loads(f.response.content)
        assert written["properties"]["custom"]["mode"] == "tdm"
        assert written["changeNumber"] == 2
        # the recorded conditional write, with the stand-in's ETag: the recorded 412
        g = make_flow("PUT", LOBBY, {"properties": {"custom": {"mode": "ctf"}}},
                      [("If-Match", f.response.headers["ETag"])])
        proxy.send(g)
        assert g.response is not None and g.response.status_code == 412
        assert common.provenance(g)["record"] == 4


def test_unmatched_policy_holds_once_the_recording_is_used_up(rp: replayer.Replayer,
                                                              lifecycle: Path) -> None:
    with replaying(rp, lifecycle) as proxy:
        for _ in range(3):
            proxy.send(make_flow("GET", LOBBY))
        proxy.send(make_flow("PUT", LOBBY, ME))
        proxy.send(make_flow("PUT", LOBBY, {"properties": {"custom": {"mode": "ctf"}}},
                             [("If-Match", '"e1"')]))
        proxy.send(make_flow("GET", LOBBY + "/members/7"))
        assert proxy.remaining() == 0
        f = make_flow("GET", LOBBY + "/members/8")
        proxy.send(f)
    assert f.response is not None and f.response.status_code == 502


@pytest.mark.parametrize("policy,status", [("repeat-last", 204), ("error", 502),
                                           ("forward", None)])
def test_exhausted_policies(rp: replayer.Replayer, lifecycle: Path, policy: str,
                            status: int | None) -> None:
    with replaying(rp, lifecycle, mpsd_replay_exhausted=policy) as proxy:
        proxy.send(make_flow("GET", LOBBY + "/members/7"))
        f = make_flow("GET", LOBBY + "/members/7")
        proxy.send(f)
    assert (f.response.status_code if f.response else None) == status
    if policy == "error":
        assert "all 1 recorded answers" in f.response.text
        assert f.response.headers["X-Mpsdproxy-Replay"] == "exhausted"


def test_policies_change_at_runtime(rp: replayer.Replayer, lifecycle: Path) -> None:
    with replaying(rp, lifecycle) as proxy:
        proxy.tctx.configure(rp, mpsd_replay_unmatched="forward")
        f = make_flow("DELETE", LOBBY)
        proxy.send(f)
    assert f.response is None


# -- pace ------------------------------------------------------------------------------------


def test_recorded_pace_holds_the_answer_without_blocking(rp: replayer.Replayer,
                                                         lifecycle: Path) -> None:
    with replaying(rp, lifecycle, mpsd_replay_pace="recorded") as proxy:
        slow, fast = make_flow("GET", LOBBY + "/members/7"), make_flow("GET", LOBBY)

        async def both() -> tuple[float, float]:
            started = time.monotonic()
            done: dict[str, float] = {}

            async def one(name: str, f: http.HTTPFlow) -> None:
                pending = proxy.send(f)
                if pending is not None:
                    await pending
                done[name] = time.monotonic() - started

            await asyncio.gather(one("slow", slow), one("fast", fast))
            return done["slow"], done["fast"]

        slow_took, fast_took = asyncio.run(both())
    assert slow.response is not None and slow.response.status_code == 204
    assert 0.25 <= slow_took < 5  # recorded 300 ms
    assert fast_took < 0.25  # recorded 20 ms, not held behind the slow one


@pytest.mark.parametrize("duration", ["1e400", "Infinity", "NaN", "-5", "true", "1e300"])
def test_recorded_pace_never_holds_for_a_duration_that_is_no_time(
        rp: replayer.Replayer, lifecycle: Path, duration: str) -> None:
    """A duration that is not a finite number of ms at least 0 (or beyond what the index's
    floats hold) is unknown: the answer goes out at once instead of after forever."""
    lines = lifecycle.read_text().splitlines()
    lines[-1] = re.sub(r'"duration_ms": ?[^,}]+', f'"duration_ms": {duration}', lines[-1])
    assert duration in lines[-1]
    lifecycle.write_text("\n".join(lines) + "\n")
    with replaying(rp, lifecycle, mpsd_replay_pace="recorded") as proxy:
        f = make_flow("GET", LOBBY + "/members/7")
        assert proxy.send(f) is None  # nothing to await: no hold
    assert f.response is not None and f.response.status_code == 204


# -- options ---------------------------------------------------------------------------------


def test_missing_file(rp: replayer.Replayer, tmp_path: Path) -> None:
    with taddons.context(rp) as tctx:
        with pytest.raises(exceptions.OptionsError,
                           match=r"Cannot read mpsd_replay file .*nope.jsonl: No such file"):
            tctx.configure(rp, mpsd_replay=[str(tmp_path / "nope.jsonl")])
        assert tctx.master.commands.call("mpsd.replay.remaining") == 0


def test_corrupt_line_stops_the_load(rp: replayer.Replayer, lifecycle: Path) -> None:
    with open(lifecycle, "a") as f:
        f.write("{oops\n")
    with taddons.context(rp) as tctx:
        with pytest.raises(exceptions.OptionsError, match=r"Cannot read mpsd_replay file "
                                                          r".*lifecycle.jsonl:7: not valid JSON"):
            tctx.configure(rp, mpsd_replay=[str(lifecycle)])


def test_truncated_last_line_is_only_reported(rp: replayer.Replayer, lifecycle: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")
    with open(lifecycle, "a") as f:
        f.write('{"seq":6,"requ')
    with replaying(rp, lifecycle) as proxy:
        assert proxy.remaining() == 5
    assert "lifecycle.jsonl:7: truncated last line" in caplog.text


def test_a_failed_load_keeps_the_replay_in_force(rp: replayer.Replayer, lifecycle: Path,
                                                 tmp_path: Path) -> None:
    with replaying(rp, lifecycle) as proxy:
        with pytest.raises(exceptions.OptionsError):
            proxy.tctx.configure(rp, mpsd_replay=[str(tmp_path / "nope.jsonl")])
        f = make_flow("GET", LOBBY)
        proxy.send(f)
    assert common.provenance(f)["record"] == 2


@pytest.mark.parametrize("option,value,error", [
    ("mpsd_replay_use_headers", ["Authorization"],
     "Cannot parse mpsd_replay_use_headers option Authorization: Authorization is redacted"),
    ("mpsd_replay_ignore_payload_params", ["a..b"],
     "Cannot parse mpsd_replay_ignore_payload_params option a..b: should not have an empty"),
    ("mpsd_replay_unmatched", "drop", "Cannot parse mpsd_replay_unmatched option drop: 'drop' "
     "is not a valid choice. Valid choices are: 'forward', 'emulate', 'error'."),
    ("mpsd_replay_exhausted", "rewind", "Valid choices are: 'repeat-last', 'error', 'forward'"),
    ("mpsd_replay_pace", "slow", "Valid choices are: 'fast', 'recorded'"),
])
def test_bad_options(rp: replayer.Replayer, option: str, value: Any, error: str) -> None:
    with taddons.context(rp) as tctx:
        with pytest.raises(exceptions.OptionsError, match=error):
            tctx.configure(rp, **{option: value})


def test_matching_options_rehash_and_keep_what_was_served(rp: replayer.Replayer,
                                                          lifecycle: Path) -> None:
    with replaying(rp, lifecycle) as proxy:
        proxy.send(make_flow("GET", LOBBY))  # record 2 served
        elsewhere = LOBBY.replace(HOST, "https://momatch.xboxlive.com:8443")
        f = make_flow("GET", elsewhere)
        proxy.send(f)
        assert f.response is not None and f.response.status_code == 502
        proxy.tctx.configure(rp, mpsd_replay_ignore_host=True)
        g = make_flow("GET", elsewhere)
        proxy.send(g)
    assert common.provenance(g)["record"] == 3


def test_use_headers_joins_the_match(rp: replayer.Replayer, lifecycle: Path) -> None:
    with replaying(rp, lifecycle, mpsd_replay_use_headers=["x-xbl-contract-version"]) as proxy:
        same = make_flow("GET", LOBBY)
        proxy.send(same)
        other = make_flow("GET", LOBBY)
        other.request.headers["x-xbl-contract-version"] = "105"
        proxy.send(other)
    assert common.provenance(same)["record"] == 2
    assert other.response is not None and other.response.status_code == 502
    assert "header x-xbl-contract-version" in other.response.text


class ConnectionStrategy:
    """mitmproxy's proxyserver option, without the proxy server."""

    def load(self, loader: Loader) -> None:
        loader.add_option("connection_strategy", str, "eager", "as in proxyserver",
                          choices=("eager", "lazy"))


def test_replay_makes_connections_lazy(rp: replayer.Replayer, lifecycle: Path) -> None:
    with taddons.context(ConnectionStrategy(), rp) as tctx:
        assert tctx.options.connection_strategy == "eager"
        tctx.configure(rp, mpsd_replay=[str(lifecycle)])
        assert tctx.options.connection_strategy == "lazy"


def test_a_failing_replay_still_never_forwards(rp: replayer.Replayer, lifecycle: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """The recording is rewritten under a running replay: the answer is a 502 naming the
    problem, never a request to the service."""
    with replaying(rp, lifecycle, mpsd_replay_unmatched="forward") as proxy:
        lifecycle.write_text(lifecycle.read_text().replace('"seq":2,', '"seq":20,'))
        f = make_flow("GET", LOBBY)
        proxy.send(f)
    assert f.response is not None and f.response.status_code == 502
    assert "no longer holds record #2" in f.response.text
    assert "the replay failed" in caplog.text


# -- recordings no wire could carry ------------------------------------------------------------


@pytest.mark.parametrize("change,problem", [
    (lambda r: r["response"]["headers"].append(["X-A", "a\r\nSet-Cookie: x=1"]),
     "header X-A holds CR, LF or NUL"),
    (lambda r: r["response"].update(status=0), "status should be an integer in 100-599, not 0"),
    (lambda r: r["response"].update(status=99999), "not 99999"),
    (lambda r: r["response"].update(reason="OK\r\n\r\n<html>"), "reason holds CR, LF"),
])
def test_a_record_no_wire_could_carry_is_refused_at_load(rp: replayer.Replayer,
                                                         lifecycle: Path, change: Any,
                                                         problem: str) -> None:
    lines = lifecycle.read_text().splitlines(keepends=True)
    record = json.loads(lines[3])  # seq 3
    change(record)
    lines[3] = json.dumps(record) + "\n"
    lifecycle.write_text("".join(lines))
    with taddons.context(rp) as tctx:
        with pytest.raises(exceptions.OptionsError) as caught:
            tctx.configure(rp, mpsd_replay=[str(lifecycle)])
        assert tctx.master.commands.call("mpsd.replay.remaining") == 0
    assert str(caught.value).startswith(f"Cannot read mpsd_replay file {lifecycle}:4: ")
    assert problem in str(caught.value)


# -- the hand-over to the stand-in -------------------------------------------------------------


def test_emulate_hands_the_flow_over_and_answers_nothing(rp: replayer.Replayer,
                                                         lifecycle: Path) -> None:
    """Without a stand-in in the chain the replayer only marks the flow: the documents the
    title has seen go along, once."""
    with taddons.context(rp) as tctx:
        tctx.configure(rp, mpsd_replay=[str(lifecycle)], mpsd_replay_unmatched="emulate")
        proxy = Proxy(tctx, rp, standin.StandIn())  # a stand-in that was never configured
        proxy.router.request(read := make_flow("GET", LOBBY))
        rp.request(read)
        first, second = make_flow("DELETE", LOBBY), make_flow("DELETE", LOBBY)
        for f in (first, second):
            proxy.router.request(f)
            assert rp.request(f) is None
    assert first.response is None and first.error is None
    mark = first.metadata[replay.HANDOFF_KEY]
    assert mark["reason"] == "unmatched" and "no recorded answer for DELETE" in mark["note"]
    ((path, document, etag),) = mark["seeds"]
    assert path.endswith("/sessions/lobby-1") and document == doc(1) and etag == '"e1"'
    assert second.metadata[replay.HANDOFF_KEY]["seeds"] == []  # handed over already
