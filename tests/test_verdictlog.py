"""VerdictLog: a verdict line as soon as it is decided (a fail at ERROR), a summary at the end."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from mpsdproxy import model
from mpsdproxy import resources
from mpsdproxy import verdicts
from mpsdproxy.addons import common
from mpsdproxy.addons import verdictlog
from mpsdproxy.addons.later import AfterAnswer

HOST = "sessiondirectory.xboxlive.com"
LOBBY = ("/serviceconfigs/7492baca-c1b4-440d-a391-b7ef00000001/sessiontemplates/LobbySession"
         "/sessions/lobby-1")
T0 = 1_800_000_000.0


def flow(at: float, status: int | None = 200, *, method: str = "GET", path: str = LOBBY,
         response_headers: dict[str, str] | None = None, user: str = "alice",
         marked: bool = True, seq: int | None = None) -> http.HTTPFlow:
    """A finished flow at T0 + `at`, marked as the router marks session-directory flows."""
    request = tutils.treq(host=HOST, port=443, scheme=b"https", method=method.encode(),
                          path=path.encode(), content=b"",
                          headers=http.Headers(host=HOST, authorization=f"XBL3.0 x={user};t"))
    f = tflow.tflow(req=request)
    f.request.timestamp_start = T0 + at
    f.request.timestamp_end = T0 + at + 0.001
    if status is None:
        f.error = tflow.terr("connection refused")
        f.error.timestamp = T0 + at + 0.01
    else:
        f.response = tutils.tresp(status_code=status, content=b"",
                                  headers=http.Headers(**(response_headers or {})))
        f.response.timestamp_start = T0 + at + 0.005
        f.response.timestamp_end = T0 + at + 0.01
    if marked:
        f.metadata[common.KEY] = {"resource": resources.parse(path).to_dict(),
                                  "provenance": dict(common.FORWARDED)}
        if seq is not None:
            f.metadata[common.KEY]["seq"] = seq
    return f


def run(log: verdictlog.VerdictLog, *flows: http.HTTPFlow) -> None:
    for f in flows:
        if f.response is not None:
            log.response(f)
        else:
            log.error(f)


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == verdictlog.logger.name and r.levelno == level]


def test_a_broken_retry_after_is_an_error_line_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = verdictlog.VerdictLog()
    with taddons.context(log):
        run(log, flow(0, 503, response_headers={"retry-after": "5"}), flow(1))
        errors = records(caplog, logging.ERROR)
        assert len(errors) == 1
        assert errors[0].startswith("verdict FAIL Retry-After honoured: GET sessions/lobby-1 "
                                    "(record 2), the same API (GET session lobbysession), "
                                    "was sent 990 ms after the 503")
        assert errors[0].endswith("[records 1, 2; gaps 990 ms]")


def test_a_honoured_retry_after_passes_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = verdictlog.VerdictLog()
    with taddons.context(log):
        run(log, flow(0, 429, response_headers={"retry-after": "2"}), flow(3))
        passes = [m for m in records(caplog, logging.INFO) if "Retry-After honoured" in m]
        assert passes == [passes[0]]
        assert "PASS Retry-After honoured: waited 2990 ms" in passes[0]
        assert not records(caplog, logging.ERROR)


def test_the_recorders_seq_numbers_name_the_records(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = verdictlog.VerdictLog()
    with taddons.context(log):
        run(log, flow(0, 503, response_headers={"retry-after": "5"}, seq=41), flow(1, seq=42))
    assert "[records 41, 42;" in records(caplog, logging.ERROR)[0]


def test_the_ticker_decides_what_waits_for_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = verdictlog.VerdictLog()
    with taddons.context(log):
        run(log, flow(0, 503, response_headers={"retry-after": "5"}))
        log.tick(T0 + 6)
        assert not records(caplog, logging.INFO)  # within the reorder grace
        log.tick(T0 + 20)
        assert any("PASS Retry-After honoured: made no call to the same API"
                   in m for m in records(caplog, logging.INFO))


def test_running_starts_a_ticker_that_done_stops(caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(verdictlog, "TICK_S", 0.01)
    log = verdictlog.VerdictLog()

    async def session() -> None:
        log.running()
        run(log, flow(time.time() - T0 - 60, 503, response_headers={"retry-after": "5"}))
        for _ in range(200):
            if records(caplog, logging.INFO):
                break
            await asyncio.sleep(0.01)
        log.done()
        await asyncio.sleep(0)  # the cancelled ticker ends
        assert asyncio.all_tasks() == {asyncio.current_task()}

    with taddons.context(log):
        asyncio.run(session())
    assert any("PASS Retry-After honoured: made no call to the same API (GET session "
               "lobbysession) after the 503 with Retry-After 5 s (record 1): quiet for the "
               "whole 5 s" in m
               for m in records(caplog, logging.INFO))


def test_done_logs_the_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = verdictlog.VerdictLog()
    with taddons.context(log):
        run(log, flow(0, 503, response_headers={"retry-after": "5"}), flow(1), flow(2, None))
        log.done()
        log.done()  # once only
    summaries = [m for m in records(caplog, logging.ERROR) if m.startswith("mpsd verdicts:")]
    assert summaries == [
        "mpsd verdicts: 1 fail, 0 warn, 1 pass, 15 not-applicable; "
        "failed: Retry-After honoured (1)"]


def test_unmarked_flows_are_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = verdictlog.VerdictLog()
    with taddons.context(log):
        run(log, flow(0, 503, response_headers={"retry-after": "5"}, marked=False),
            flow(1, marked=False))
        assert log.engine is not None and log.engine.fed == 0
    assert not records(caplog, logging.ERROR)


def test_mpsd_verdicts_off_judges_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = verdictlog.VerdictLog()
    with taddons.context(log) as tctx:
        tctx.configure(log, mpsd_verdicts=False)
        run(log, flow(0, 503, response_headers={"retry-after": "5"}), flow(1))
        log.done()
    assert log.engine is None
    assert not [r for r in caplog.records if r.name == verdictlog.logger.name]


def test_mpsd_limits_are_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "limits.yaml"
    good.write_text("version: 1\nrules:\n  retry_after_scope: resource\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  retry_after_scope: nowhere\n")
    log = verdictlog.VerdictLog()
    with taddons.context(log) as tctx:
        tctx.configure(log, mpsd_limits=str(good))
        assert log.engine is not None
        assert log.engine.settings.retry_after_scope == "resource"
        with pytest.raises(exceptions.OptionsError,
                           match=r"Cannot parse mpsd_limits option .*bad.yaml:3:.*"
                                 r"rules.retry_after_scope: should be one of"):
            tctx.configure(log, mpsd_limits=str(bad))


class Spy(verdicts.Engine):
    """The real engine, keeping what it was fed."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[model.Exchange] = []

    def feed(self, exchange: model.Exchange) -> list[verdicts.Verdict]:
        self.exchanges.append(exchange)
        return super().feed(exchange)


def test_the_engine_gets_the_exchange_numbered_as_recorded() -> None:
    log = verdictlog.VerdictLog()
    with taddons.context(log):
        log.engine = spy = Spy()
        run(log, flow(0, 503, response_headers={"retry-after": "5"}, seq=7), flow(1))
    first, second = spy.exchanges
    assert (first.seq, second.seq) == (7, 2)
    assert first.start == T0 and first.status == 503
    assert first.response is not None
    assert first.response.headers.get("retry-after") == "5"
    assert first.resource.kind == "session"


def test_no_verdict_line_carries_a_token(caplog: pytest.LogCaptureFixture) -> None:
    """Clients are named by their redacted Authorization, however the engine is fed."""
    caplog.set_level(logging.DEBUG)
    log = verdictlog.VerdictLog()
    with taddons.context(log):
        run(log, *(flow(i * 0.1, 503, response_headers={"retry-after": "5"})
                   for i in range(5)))
        log.done()
    lines = [r.getMessage() for r in caplog.records if r.name == verdictlog.logger.name]
    assert any("FAIL" in line for line in lines)
    assert not any("alice;t" in line for line in lines)


def test_judging_waits_until_the_answer_is_out() -> None:
    log = verdictlog.VerdictLog(AfterAnswer())

    async def hook_round() -> None:
        log.engine = spy = Spy()
        log.response(flow(0))
        assert spy.exchanges == []  # still inside the hook
        await asyncio.sleep(0)
        assert len(spy.exchanges) == 1

    with taddons.context(log):
        asyncio.run(hook_round())
